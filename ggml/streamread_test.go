//go:build unix

package ggml

import (
	"encoding/binary"
	"syscall"
	"testing"
)

// streamReadRef is the checksum idefics2_stream_read computes: the regions, concatenated, are cut into one share per
// thread (ends on 64-byte boundaries, the last share to the end); each share's piece of a region sums its 8-byte
// little-endian words over whole 32-byte runs from the piece's start, and the bytes after them one by one.
func streamReadRef(regions [][]byte, threads int) uint64 {
	total := 0
	for _, r := range regions {
		total += len(r)
	}
	var sum uint64
	for t := 0; t < threads; t++ {
		lo, hi := total/threads*t&^63, total/threads*(t+1)
		if t+1 == threads {
			hi = total
		} else {
			hi &^= 63
		}
		off := 0
		for _, r := range regions {
			a, b := off, off+len(r)
			off = b
			s, e := max(a, lo), min(b, hi)
			if s >= e {
				continue
			}
			p := r[s-a : e-a]
			n := len(p) / 32 * 32
			for i := 0; i < n; i += 8 {
				sum += binary.LittleEndian.Uint64(p[i:])
			}
			for _, c := range p[n:] {
				sum += uint64(c)
			}
		}
	}
	return sum
}

func TestStreamRead(t *testing.T) {
	mem, err := syscall.Mmap(-1, 0, 1<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Skipf("anonymous mapping: %v", err)
	}
	defer syscall.Munmap(mem)
	for i := range mem {
		mem[i] = byte(i*131 + i>>9)
	}
	for _, c := range []struct {
		name    string
		sizes   []int
		threads int
	}{
		{"one region", []int{1 << 18}, 1},
		{"one region, 2 threads", []int{1 << 18}, 2},
		{"odd sizes", []int{1000, 7, 65537, 31, 4096 + 3}, 1},
		{"odd sizes, 2 threads", []int{1000, 7, 65537, 31, 4096 + 3}, 2},
		{"odd sizes, 3 threads", []int{1000, 7, 65537, 31, 4096 + 3}, 3},
		{"many threads, little data", []int{100, 28}, 8},
		{"empty regions", []int{0, 64, 0}, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			var regions [][]byte
			off := 0
			for _, n := range c.sizes {
				regions = append(regions, mem[off:off+n])
				off += n + 13 // regions start at arbitrary offsets
			}
			_, sum, err := StreamRead(regions, c.threads)
			if err != nil {
				t.Fatal(err)
			}
			if want := streamReadRef(regions, c.threads); sum != want {
				t.Fatalf("checksum %#x, want %#x", sum, want)
			}
			// Every byte counts: changing the last one changes the sum.
			last := regions[len(regions)-1]
			if len(last) == 0 {
				last = regions[1]
			}
			last[len(last)-1]++
			_, sum2, _ := StreamRead(regions, c.threads)
			last[len(last)-1]--
			if sum2 == sum {
				t.Fatal("checksum did not change with the data")
			}
		})
	}
	if _, _, err := StreamRead([][]byte{mem[:64]}, 0); err == nil {
		t.Fatal("0 threads accepted")
	}
	if d, sum, err := StreamRead(nil, 2); err != nil || d != 0 || sum != 0 {
		t.Fatalf("no regions: %v %v %v", d, sum, err)
	}
}

// BenchmarkStreamRead reports the read rate of 1 GiB with 1 and 2 threads.
func BenchmarkStreamRead(b *testing.B) {
	mem, err := syscall.Mmap(-1, 0, 1<<30, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		b.Skipf("anonymous mapping: %v", err)
	}
	defer syscall.Munmap(mem)
	for i := 0; i < len(mem); i += 4096 {
		mem[i] = 1
	}
	for _, threads := range []int{1, 2} {
		b.Run(map[int]string{1: "1thread", 2: "2threads"}[threads], func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, _, err := StreamRead([][]byte{mem}, threads); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(mem))*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
	}
}

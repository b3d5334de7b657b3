package quant

import (
	"runtime"
	"testing"
)

// cpuMeter adds a "MB/cpu-s" metric to a benchmark: bytes processed per second of the
// benchmark thread's CPU time (see threadCPU). Start it after setup, call stop after the loop.
func cpuMeter(b *testing.B) (stop func(bytesPerOp int64)) {
	runtime.LockOSThread()
	t0, ok := threadCPU()
	return func(bytesPerOp int64) {
		t1, _ := threadCPU()
		runtime.UnlockOSThread()
		if ok && t1 > t0 {
			b.ReportMetric(float64(bytesPerOp)*float64(b.N)/(t1-t0).Seconds()/1e6, "MB/cpu-s")
		}
	}
}

// BenchmarkQuantize measures encoding throughput on one goroutine (MB/s of float32 input per
// core): 64 rows of 4096 N(0, 0.02²) values, the shape of a weight slice.
func BenchmarkQuantize(b *testing.B) {
	src := normals(21, 64*4096, 0.02)
	for _, typ := range allEncodeTypes {
		b.Run(typ.String(), func(b *testing.B) {
			rowSize, _ := typ.RowSize(4096)
			dst := make([]byte, 64*rowSize)
			b.SetBytes(int64(4 * len(src)))
			stop := cpuMeter(b)
			for i := 0; i < b.N; i++ {
				if err := quantizeChunk(typ, dst, src, 0); err != nil {
					b.Fatal(err)
				}
			}
			stop(int64(4 * len(src)))
		})
	}
}

// BenchmarkQuantizeParallel is Quantize with its default GOMAXPROCS workers.
func BenchmarkQuantizeParallel(b *testing.B) {
	src := normals(21, 256*4096, 0.02)
	for _, typ := range []Type{Q8_0, Q4_K, Q6_K, NF4} {
		b.Run(typ.String(), func(b *testing.B) {
			b.SetBytes(int64(4 * len(src)))
			for i := 0; i < b.N; i++ {
				if _, err := Quantize(typ, src, 4096); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDequantize measures decoding throughput on one goroutine (MB/s of float32 output).
func BenchmarkDequantize(b *testing.B) {
	src := normals(22, 64*4096, 0.02)
	for _, typ := range allEncodeTypes {
		b.Run(typ.String(), func(b *testing.B) {
			enc, err := Quantize(typ, src, 4096)
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]float32, len(src))
			b.SetBytes(int64(4 * len(src)))
			for i := 0; i < b.N; i++ {
				dequantizeChunk(typ, dst, enc)
			}
		})
	}
}

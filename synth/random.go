package synth

import (
	"encoding/binary"
	"hash/fnv"
	"math"
	"math/bits"
)

// chunkValues is the number of values generated (and written) as one unit of work. Each chunk
// has its own generator state derived from (seed, tensor name, chunk index), which is what makes
// the output independent of the worker count.
const chunkValues = 1 << 20

// splitmix64 is the SplitMix64 finalizer (Steele, Lea, Flood 2014): a bijective 64-bit mix used
// to derive independent generator states from the seed.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// tensorKey is the part of a chunk's generator state that depends on the seed and tensor name.
func tensorKey(seed uint64, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return splitmix64(seed ^ splitmix64(h.Sum64()))
}

// rng is wyrand (Wang Yi's 64-bit generator: a Weyl sequence finalized by a 128-bit multiply);
// it is fast, passes BigCrush and PractRand, and its output is identical on every platform.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0xa0761d6478bd642f
	hi, lo := bits.Mul64(r.s, r.s^0xe7037ed1a0b428db)
	return hi ^ lo
}

// normalScale is 1/sd of the raw draw of normal: Binomial(32, ½) has variance 8 and each of the
// two uniforms 1/12.
var normalScale = float32(1 / math.Sqrt(8+2.0/12))

// normal returns an approximately standard normal float32 from one 64-bit draw, using only
// integer and exactly rounded float32 operations so the value is the same on every platform: the
// centred popcount of 32 random bits (Binomial(32, ½), by the central limit theorem close to a
// normal) plus two uniforms on [0, 1) that smooth the lattice into a piecewise-linear density.
// The tails stop at ±5.9 sd and the excess kurtosis is −0.07 (a true normal's is 0); neither
// matters for benchmarking, which is what the values are for.
func (r *rng) normal() float32 {
	u := r.next()
	c := bits.OnesCount64(u >> 32)
	u1 := uint32(u>>16) & 0xffff
	u2 := uint32(u) & 0xffff
	// (c − 16) + (u1 + u2 + 1)/65536 − 1: mean 0. The sum is an integer below 2^24, exact in float32.
	raw := float32(int32(c-17)<<16+int32(u1+u2+1)) * (1.0 / 65536)
	return raw * normalScale
}

// fill writes the values [off, off+n) of tensor t, key its tensorKey, as little-endian dtype
// values into dst (n·elemSize bytes). Normal values are drawn chunk by chunk, so off must be a
// multiple of chunkValues.
func fill(dst []byte, t Tensor, key uint64, off int64, n int, dtype string, std float32) {
	var v float32
	switch t.Init {
	case Ones:
		v = 1
	case Zeros:
		v = 0
	}
	if t.Init != Normal {
		switch dtype {
		case "BF16":
			b := bf16(v)
			for i := 0; i < n; i++ {
				binary.LittleEndian.PutUint16(dst[2*i:], b)
			}
		case "F32":
			b := math.Float32bits(v)
			for i := 0; i < n; i++ {
				binary.LittleEndian.PutUint32(dst[4*i:], b)
			}
		}
		return
	}
	r := rng{s: splitmix64(key + uint64(off/chunkValues))}
	switch dtype {
	case "BF16":
		dst = dst[:2*n]
		for i := 0; i+1 < len(dst); i += 2 {
			binary.LittleEndian.PutUint16(dst[i:], bf16(r.normal()*std))
		}
	case "F32":
		dst = dst[:4*n]
		for i := 0; i+3 < len(dst); i += 4 {
			binary.LittleEndian.PutUint32(dst[i:], math.Float32bits(r.normal()*std))
		}
	}
}

// bf16 rounds a finite float32 to bfloat16, to nearest with ties to even (torch's conversion).
func bf16(f float32) uint16 {
	b := math.Float32bits(f)
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

//go:build amd64 && !purego

package quant

import "github.com/klauspost/cpuid/v2"

// hasAVX2 reports whether the vertical AVX2 fits can run (CPU and OS support).
var hasAVX2 = cpuid.CPU.Supports(cpuid.AVX2)

func init() {
	if hasAVX2 {
		fastFit = fitAVX2
		fastFits = append(fastFits, fitAVX2)
	}
}

// qkx2Frame is the memory qkx2AVX2 works in. Row i, lane j holds value i of sub-block j. The
// assembly addresses the fields by the offsets in the comments (checked by TestFrameLayout).
type qkx2Frame struct {
	x       [32][8]float32        // 0: values
	w       [32][8]float32        // 1024: weights
	L       [32][8]int32          // 2048: levels of the best fit (output)
	laux    [32][8]int32          // 3072: levels of the current candidate
	num     [maxNStep + 1]float32 // 4096: kParams.num
	nmaxF   float32               // 4192: float32(nmax)
	nmaxI   int32                 // 4196: nmax
	nstep   int64                 // 4200: ≥ 1
	scale   [8]float32            // 4208: output scale
	theMin  [8]float32            // 4240: output −min
	min     [8]float32            // 4272: scratch
	max     [8]float32            // 4304
	sumW    [8]float32            // 4336
	sumX    [8]float32            // 4368
	best    [8]float32            // 4400
	minOrig [8]float32            // 4432
	flat    [8]float32            // 4464: lanes with max == min (all bits set)
	d       [8]float32            // 4496: kLevelsAVX2 input: sub-block scales
	dm      [8]float32            // 4528: kLevelsAVX2 input: sub-block offsets
}

// qkx2AVX2 computes the weights of quantize_row_q{4,5}_K_ref (w = sqrtf(Σx²/32) + |x|) and
// runs make_qkx2_quants (use_mad false, nstep ≥ 1) on the 8 lanes of f.
//
//go:noescape
func qkx2AVX2(f *qkx2Frame)

// kLevelsAVX2 is the second pass of quantize_row_q{4,5}_K_ref on the 8 lanes of f: where
// d ≠ 0, L = clamp(nearest_int((x + dm)/d), 0, nmax); elsewhere L is kept.
//
//go:noescape
func kLevelsAVX2(f *qkx2Frame)

// kFitAVX2 is the AVX2 kFit: the 8 fits in one vertical pass.
func kFitAVX2(x *[QK_K]float32, L *[QK_K]uint8, p *kParams, scales, mins *[8]float32) {
	var f qkx2Frame
	kFrameAVX2(&f, x, p)
	*scales = f.scale
	*mins = f.theMin
	kFrameLevels(&f, L)
}

// kFrameAVX2 loads x and p into f and runs the fits.
func kFrameAVX2(f *qkx2Frame, x *[QK_K]float32, p *kParams) {
	for j := 0; j < 8; j++ {
		xs := (*[32]float32)(x[32*j : 32*j+32])
		for i, v := range xs {
			f.x[i][j] = v
		}
	}
	f.num = p.num
	f.nmaxF = float32(p.nmax)
	f.nmaxI = int32(p.nmax)
	f.nstep = int64(p.nstep)
	qkx2AVX2(f)
}

// kFrameLevels copies the levels of f (row i, lane j) to L (value 32j + i).
func kFrameLevels(f *qkx2Frame, L *[QK_K]uint8) {
	for j := 0; j < 8; j++ {
		l := (*[32]uint8)(L[32*j : 32*j+32])
		for i := range l {
			l[i] = uint8(f.L[i][j])
		}
	}
}

// kScalesLevelsAVX2 is kScalesLevels with both passes in assembly.
func kScalesLevelsAVX2(x *[QK_K]float32, y []byte, L *[QK_K]uint8, p *kParams) {
	var f qkx2Frame
	kFrameAVX2(&f, x, p)
	kHeader(y, &f.scale, &f.theMin)
	for j := 0; j < 8; j++ {
		f.d[j], f.dm[j] = kSubScales(y, j)
	}
	kLevelsAVX2(&f)
	kFrameLevels(&f, L)
}

// qxFrame is the memory qxAVX2 works in: row i, lane j holds value i of group j.
type qxFrame struct {
	x     [16][8]float32 // 0: values
	L     [16][8]int32   // 512: l + nmax of the best fit, 0 for an all-zero group (output)
	laux  [16][8]int32   // 1024: l of the current candidate
	num   [20]float32    // 1536: −nmax, then −(nmax + 0.1·is) for is = −9…9 without 0
	nmaxI int32          // 1616: nmax
	negN  int32          // 1620: −nmax
	nmax1 int32          // 1624: nmax − 1
	_     int32          // 1628
	scale [8]float32     // 1632: output scale
	max   [8]float32     // 1664: scratch
	best  [8]float32     // 1696
	small [8]float32     // 1728: all-zero lanes (all bits set)
	d     [8]float32     // 1760: qxLevelsAVX2 input: group scales
	w     [16][8]float32 // 1792: scratch: x*x (rmse_type 1 weights)
	wx    [16][8]float32 // 2304: scratch: w*x
}

// qxAVX2 runs make_qx_quants (rmse_type 1, no importance weights) on the 8 lanes of f.
//
//go:noescape
func qxAVX2(f *qxFrame)

// qxLevelsAVX2 is the second pass of quantize_row_q6_K_ref on the 8 lanes of f: where d ≠ 0,
// L = clamp(nearest_int(x/d), −nmax, nmax − 1) + nmax; elsewhere L is kept.
//
//go:noescape
func qxLevelsAVX2(f *qxFrame)

// q6Num holds the numerators of the inverse scales make_qx_quants tries for nmax = 32, in
// ggml's order of operations.
var q6Num = func() (n [20]float32) {
	const nmax = 32
	n[0] = -nmax
	k := 1
	for is := -9; is <= 9; is++ {
		if is != 0 {
			n[k] = -(nmax + float32(0.1*float32(is)))
			k++
		}
	}
	return n
}()

// q6FitAVX2 is the AVX2 q6Fit: two vertical passes of 8 groups.
func q6FitAVX2(x *[QK_K]float32, L *[QK_K]int8, scales *[QK_K / 16]float32) {
	var f [2]qxFrame
	q6FramesAVX2(&f, x, scales)
	q6FrameLevels(&f, L)
}

// q6FramesAVX2 loads the groups of x into the two frames (groups 8h…8h+7 in f[h]) and runs
// the fits.
func q6FramesAVX2(f *[2]qxFrame, x *[QK_K]float32, scales *[QK_K / 16]float32) {
	for h := range f {
		fr := &f[h]
		fr.num = q6Num
		fr.nmaxI, fr.negN, fr.nmax1 = 32, -32, 31
		for j := 0; j < 8; j++ {
			xs := (*[16]float32)(x[16*(8*h+j) : 16*(8*h+j)+16])
			for i, v := range xs {
				fr.x[i][j] = v
			}
		}
		qxAVX2(fr)
		copy(scales[8*h:8*h+8], fr.scale[:])
	}
}

// q6FrameLevels copies the levels of the frames to L.
func q6FrameLevels(f *[2]qxFrame, L *[QK_K]int8) {
	for h := range f {
		for j := 0; j < 8; j++ {
			g := 8*h + j
			l := (*[16]int8)(L[16*g : 16*g+16])
			for i := range l {
				l[i] = int8(f[h].L[i][j])
			}
		}
	}
}

// q6ScalesLevelsAVX2 fits the groups, writes the block header (q6Header) and requantizes
// against it, both passes in assembly; false means the block was all zero and is complete.
func q6ScalesLevelsAVX2(x *[QK_K]float32, y []byte, L *[QK_K]int8) bool {
	var f [2]qxFrame
	var scales [QK_K / 16]float32
	q6FramesAVX2(&f, x, &scales)
	if !q6Header(y, &scales) {
		return false
	}
	d0 := getF16(y[208:])
	for h := range f {
		for j := 0; j < 8; j++ {
			f[h].d[j] = d0 * float32(int8(y[192+8*h+j]))
		}
		qxLevelsAVX2(&f[h])
	}
	q6FrameLevels(&f, L)
	return true
}

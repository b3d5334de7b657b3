package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// K-quants: 256-value super-blocks. Encoders transcribe quantize_row_q{4,5,6,8}_K_ref
// (ggml-quants.c), which ggml_quantize_chunk calls when no importance matrix is given; decoders
// transcribe dequantize_row_*. Layouts (ggml-common.h), little-endian:
//
//	Q4_K (144 B): d fp16 | dmin fp16 | scales[12] (8 6-bit scales + 8 6-bit mins) | qs[128]
//	Q5_K (176 B): d fp16 | dmin fp16 | scales[12] | qh[32] | qs[128]
//	Q6_K (210 B): ql[128] | qh[64] | scales[16] int8 | d fp16
//	Q8_K (292 B): d f32 | qs[256] int8 | bsums[16] int16
//
// Every product that feeds an addition is wrapped in float32(…) so Go cannot fuse it into an
// FMA; ggml's C is compiled without contraction on x86-64 and rounds each operation.
//
// The costly part of the Q4_K/Q5_K/Q6_K encoders is the search for each group's scale
// (make_qkx2_quants, make_qx_quants). It has a reference here (kFitRef, q6FitRef: the
// transcription) and faster implementations selected by fitImpl (kquants_fast.go: pure Go, and
// AVX2 assembly on amd64), all byte-identical; the encoders use the fastest the CPU supports,
// tests compare every one with the reference.

// groupMaxEps is GROUP_MAX_EPS (ggml-quants.c): below it a group counts as all zero.
const groupMaxEps float32 = 1e-15

// nearestInt transcribes ggml's nearest_int: round to nearest (ties to even) through the
// 1.5·2^23 magic number. Its assert (|fval| ≤ 4194303) is compiled out with NDEBUG; outside
// that range the result is the same garbage ggml computes.
func nearestInt(fval float32) int {
	val := fval + 12582912
	i := int32(math.Float32bits(val))
	return int((i & 0x007fffff) - 0x00400000)
}

// makeQXQuants transcribes make_qx_quants with rmse_type = 1 and qw = NULL, the only case the
// reference Q6_K quantizer uses: a symmetric scale chosen by a small search around −nmax/max
// minimizing Σ x²·(x − s·l)². L receives l + nmax.
func makeQXQuants(x []float32, nmax int, L []int8) float32 {
	n := len(x)
	L = L[:n]
	var max, amax float32
	for _, v := range x {
		ax := absf(v)
		if ax > amax {
			amax = ax
			max = v
		}
	}
	if amax < groupMaxEps {
		for i := range L {
			L[i] = 0
		}
		return 0
	}
	fnmax := float32(nmax)
	iscale := -fnmax / max
	var sumlx, suml2 float32
	for i, v := range x {
		l := nearestInt(float32(iscale * v))
		l = max_(-nmax, min(nmax-1, l))
		L[i] = int8(l + nmax)
		w := float32(v * v)
		fl := float32(l)
		sumlx += float32(float32(w*v) * fl)
		suml2 += float32(float32(w*fl) * fl)
	}
	var scale float32
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	best := float32(scale * sumlx)
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(fnmax + float32(0.1*float32(is))) / max
		sumlx, suml2 = 0, 0
		for _, v := range x {
			l := nearestInt(float32(iscale * v))
			l = max_(-nmax, min(nmax-1, l))
			w := float32(v * v)
			fl := float32(l)
			sumlx += float32(float32(w*v) * fl)
			suml2 += float32(float32(w*fl) * fl)
		}
		if suml2 > 0 && float32(sumlx*sumlx) > float32(best*suml2) {
			for i, v := range x {
				l := nearestInt(float32(iscale * v))
				L[i] = int8(nmax + max_(-nmax, min(nmax-1, l)))
			}
			scale = sumlx / suml2
			best = float32(scale * sumlx)
		}
	}
	return scale
}

// makeQKX2Quants transcribes make_qkx2_quants with use_mad = false: an asymmetric
// (scale, min) fit of x to levels 0…nmax minimizing Σ w·(s·l + m − x)², searching iscale over
// nstep+1 candidates. It returns the scale and −min (the_min).
func makeQKX2Quants(x, weights []float32, nmax int, L, Laux []uint8, rmin, rdelta float32, nstep int) (scale, theMin float32) {
	n := len(x)
	weights = weights[:n]
	L = L[:n]
	Laux = Laux[:n]
	fnmax := float32(nmax)

	min_ := x[0]
	max__ := x[0]
	sumW := weights[0]
	sumX := float32(sumW * x[0])
	for i := 1; i < n; i++ {
		if x[i] < min_ {
			min_ = x[i]
		}
		if x[i] > max__ {
			max__ = x[i]
		}
		w := weights[i]
		sumW += w
		sumX += float32(w * x[i])
	}
	if min_ > 0 {
		min_ = 0
	}
	if max__ == min_ {
		for i := range L {
			L[i] = 0
		}
		return 0, -min_
	}
	iscale := fnmax / (max__ - min_)
	scale = 1 / iscale
	var bestError float32
	for i, v := range x {
		l := nearestInt(float32(iscale * (v - min_)))
		L[i] = uint8(max_(0, min(nmax, l)))
		diff := float32(float32(scale*float32(L[i]))+min_) - v
		diff = float32(diff * diff)
		bestError += float32(weights[i] * diff)
	}
	if nstep < 1 {
		return scale, -min_
	}
	for is := 0; is <= nstep; is++ {
		iscale = (float32(rmin+float32(rdelta*float32(is))) + fnmax) / (max__ - min_)
		var sumL, sumL2, sumXL float32
		for i, v := range x {
			l := nearestInt(float32(iscale * (v - min_)))
			l = max_(0, min(nmax, l))
			Laux[i] = uint8(l)
			w := weights[i]
			fl := float32(l)
			sumL += float32(w * fl)
			sumL2 += float32(float32(w*fl) * fl)
			sumXL += float32(float32(w*fl) * v)
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D > 0 {
			thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
			thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
			if thisMin > 0 {
				thisMin = 0
				thisScale = sumXL / sumL2
			}
			var curError float32
			for i, v := range x {
				diff := float32(float32(thisScale*float32(Laux[i]))+thisMin) - v
				diff = float32(diff * diff)
				curError += float32(weights[i] * diff)
			}
			if curError < bestError {
				copy(L, Laux)
				bestError = curError
				scale = thisScale
				min_ = thisMin
			}
		}
	}
	return scale, -min_
}

// max_ is the integer MAX; named so it does not shadow the float variables called max.
func max_(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// getScaleMinK4 transcribes get_scale_min_k4: unpacks the j-th 6-bit scale and min.
func getScaleMinK4(j int, q []byte) (d, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	d = q[j+4]&0xF | (q[j-4]>>6)<<4
	m = q[j+4]>>4 | (q[j]>>6)<<4
	return d, m
}

// packScalesK4 stores 8 6-bit scales and mins the way quantize_row_q4_K_ref does.
func packScalesK4(scales []byte, ls, lm *[8]uint8) {
	for j := 0; j < 8; j++ {
		if j < 4 {
			scales[j] = ls[j]
			scales[j+4] = lm[j]
		} else {
			scales[j+4] = ls[j]&0xF | (lm[j]&0xF)<<4
			scales[j-4] |= (ls[j] >> 4) << 6
			scales[j] |= (lm[j] >> 4) << 6
		}
	}
}

// kParams are the make_qkx2_quants settings of a K-quant type (quantize_row_q{4,5}_K_ref).
type kParams struct {
	nmax         int
	rmin, rdelta float32
	nstep        int
	// num[is] is the numerator rmin + rdelta·is + nmax of the candidate inverse scales, is =
	// 0…nstep, rounded in ggml's order.
	num [maxNStep + 1]float32
}

// maxNStep bounds kParams.nstep (Q4_K uses 20, Q5_K 15).
const maxNStep = 23

func newKParams(nmax int, rmin, rdelta float32, nstep int) *kParams {
	p := &kParams{nmax: nmax, rmin: rmin, rdelta: rdelta, nstep: nstep}
	for is := 0; is <= nstep; is++ {
		p.num[is] = float32(rmin+float32(rdelta*float32(is))) + float32(nmax)
	}
	return p
}

var (
	q4KParams = newKParams(15, -1, 0.1, 20)   // quantize_row_q4_K_ref
	q5KParams = newKParams(31, -0.5, 0.1, 15) // quantize_row_q5_K_ref
)

// fitImpl selects an implementation of the K-quant fits. Every implementation computes the same
// bits as the reference; they differ in speed only.
type fitImpl uint8

const (
	fitRef  fitImpl = iota // line-by-line transcription of ggml (makeQKX2Quants, makeQXQuants)
	fitGo                  // pure-Go fast path (kquants_fast.go)
	fitAVX2                // vertical AVX2 assembly (kquants_amd64.s)
)

func (f fitImpl) String() string {
	switch f {
	case fitRef:
		return "ref"
	case fitGo:
		return "go"
	case fitAVX2:
		return "avx2"
	}
	return fmt.Sprintf("fitImpl(%d)", uint8(f))
}

// kFit computes the per-32 fits of a Q4_K/Q5_K super-block with impl: scales[j] and mins[j]
// (the_min) as make_qkx2_quants returns them for x[32j:32j+32] with its weights, L the levels
// of the fit. (A switch rather than a function value, so the arrays stay on the stack.)
func kFit(impl fitImpl, x *[QK_K]float32, L *[QK_K]uint8, p *kParams, scales, mins *[8]float32) {
	switch impl {
	case fitAVX2:
		kFitAVX2(x, L, p, scales, mins)
	case fitGo:
		kFitGo(x, L, p, scales, mins)
	default:
		kFitRef(x, L, p, scales, mins)
	}
}

// kWeights computes the weights quantize_row_q{4,5}_K_ref passes to make_qkx2_quants for one
// sub-block: av_x + |x|, with av_x = sqrtf(Σx²/32).
func kWeights(xs *[32]float32, w *[32]float32) {
	var sumX2 float32
	for _, v := range xs {
		sumX2 += float32(v * v)
	}
	// sqrtf through float64: the float64 square root rounded to float32 is the correctly
	// rounded float32 square root (53 ≥ 2·24 + 2), i.e. sqrtf.
	avX := float32(math.Sqrt(float64(sumX2 / 32)))
	for l, v := range xs {
		w[l] = avX + absf(v)
	}
}

// kFitRef is the reference kFit: makeQKX2Quants, a line-by-line transcription, on each
// sub-block.
func kFitRef(x *[QK_K]float32, L *[QK_K]uint8, p *kParams, scales, mins *[8]float32) {
	var weights [32]float32
	var laux [32]uint8
	for j := 0; j < 8; j++ {
		xs := (*[32]float32)(x[32*j : 32*j+32])
		kWeights(xs, &weights)
		scales[j], mins[j] = makeQKX2Quants(xs[:], weights[:], p.nmax, L[32*j:32*j+32], laux[:], p.rmin, p.rdelta, p.nstep)
	}
}

// kScalesLevels fills the header of a Q4_K/Q5_K block (d, dmin and the 6-bit scales and mins,
// y[0:16]) and L with the final levels, as quantize_row_q{4,5}_K_ref does: per-32 fits, 6-bit
// quantization of their scales and mins, requantization against those.
func kScalesLevels(impl fitImpl, x *[QK_K]float32, y []byte, L *[QK_K]uint8, p *kParams) {
	if impl == fitAVX2 {
		kScalesLevelsAVX2(x, y, L, p)
		return
	}
	var mins, scales [8]float32
	kFit(impl, x, L, p, &scales, &mins)
	kHeader(y, &scales, &mins)
	kLevels(x[:], y, L[:], p.nmax)
}

// kHeader quantizes the 8 scales and mins of the fits to 6 bits against their maxima and writes
// d, dmin and the packed scales (y[0:16]).
func kHeader(y []byte, scales, mins *[8]float32) {
	var maxScale, maxMin float32
	for j := 0; j < 8; j++ {
		if scales[j] > maxScale {
			maxScale = scales[j]
		}
		if mins[j] > maxMin {
			maxMin = mins[j]
		}
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	var ls, lm [8]uint8
	for j := 0; j < 8; j++ {
		ls[j] = min(63, uint8(nearestInt(float32(invScale*scales[j]))))
		lm[j] = min(63, uint8(nearestInt(float32(invMin*mins[j]))))
	}
	packScalesK4(y[4:16], &ls, &lm)
	putF16(y[0:], maxScale/63)
	putF16(y[2:], maxMin/63)
}

// kSubScales returns the scale d0·sc and offset dmin·m of sub-block j that the second pass of
// quantize_row_q{4,5}_K_ref requantizes against.
func kSubScales(y []byte, j int) (d, dm float32) {
	sc, m := getScaleMinK4(j, y[4:16])
	return getF16(y[0:]) * float32(sc), float32(getF16(y[2:]) * float32(m))
}

// kLevels requantizes x against the 6-bit scales stored in y (as quantize_row_q{4,5}_K_ref's
// second pass does), leaving L untouched for sub-blocks whose scale is zero.
func kLevels(x []float32, y []byte, L []uint8, nmax int) {
	for j := 0; j < 8; j++ {
		d, dm := kSubScales(y, j)
		if d == 0 {
			continue
		}
		for ii := 0; ii < 32; ii++ {
			l := nearestInt((x[32*j+ii] + dm) / d)
			L[32*j+ii] = uint8(max_(0, min(nmax, l)))
		}
	}
}

// quantizeBlockQ4_K encodes one super-block as quantize_row_q4_K_ref does, with the fastest
// fit available.
func quantizeBlockQ4_K(x []float32, y []byte) { quantizeQ4K(x, y, fastFit) }

// quantizeBlockQ4_KRef is quantizeBlockQ4_K with the reference fit.
func quantizeBlockQ4_KRef(x []float32, y []byte) { quantizeQ4K(x, y, fitRef) }

// quantizeQ4K transcribes one super-block of quantize_row_q4_K_ref.
func quantizeQ4K(xs []float32, y []byte, fit fitImpl) {
	x := (*[QK_K]float32)(xs)
	y = y[:144]
	var L [QK_K]uint8
	kScalesLevels(fit, x, y, &L, q4KParams)
	q := y[16:]
	for j := 0; j < QK_K; j += 64 {
		for l := 0; l < 32; l++ {
			q[l] = L[j+l] | L[j+l+32]<<4
		}
		q = q[32:]
	}
}

func dequantizeBlockQ4_K(x []byte, y []float32) {
	x = x[:144]
	y = y[:QK_K]
	d := getF16(x[0:])
	min_ := getF16(x[2:])
	q := x[16:]
	is := 0
	for j := 0; j < QK_K; j += 64 {
		sc, m := getScaleMinK4(is, x[4:16])
		d1 := d * float32(sc)
		m1 := float32(min_ * float32(m))
		sc, m = getScaleMinK4(is+1, x[4:16])
		d2 := d * float32(sc)
		m2 := float32(min_ * float32(m))
		for l := 0; l < 32; l++ {
			y[j+l] = float32(d1*float32(q[l]&0xF)) - m1
		}
		for l := 0; l < 32; l++ {
			y[j+32+l] = float32(d2*float32(q[l]>>4)) - m2
		}
		q = q[32:]
		is += 2
	}
}

// quantizeBlockQ5_K encodes one super-block as quantize_row_q5_K_ref does, with the fastest
// fit available.
func quantizeBlockQ5_K(x []float32, y []byte) { quantizeQ5K(x, y, fastFit) }

// quantizeBlockQ5_KRef is quantizeBlockQ5_K with the reference fit.
func quantizeBlockQ5_KRef(x []float32, y []byte) { quantizeQ5K(x, y, fitRef) }

// quantizeQ5K transcribes one super-block of quantize_row_q5_K_ref.
func quantizeQ5K(xs []float32, y []byte, fit fitImpl) {
	x := (*[QK_K]float32)(xs)
	y = y[:176]
	var L [QK_K]uint8
	kScalesLevels(fit, x, y, &L, q5KParams)
	qh := y[16:48]
	ql := y[48:176]
	for i := range qh {
		qh[i] = 0
	}
	shift := 0
	for n := 0; n < QK_K; n += 64 {
		for j := 0; j < 32; j++ {
			// Levels are at most 31: bit 4 goes to qh, the low nibble to ql.
			l1 := L[n+j]
			l2 := L[n+j+32]
			qh[j] |= (l1>>4)<<shift | (l2>>4)<<(shift+1)
			ql[j] = l1&0xF | (l2&0xF)<<4
		}
		shift += 2
		ql = ql[32:]
	}
}

func dequantizeBlockQ5_K(x []byte, y []float32) {
	x = x[:176]
	y = y[:QK_K]
	d := getF16(x[0:])
	min_ := getF16(x[2:])
	qh := x[16:48]
	ql := x[48:176]
	is := 0
	var u1, u2 uint8 = 1, 2
	for j := 0; j < QK_K; j += 64 {
		sc, m := getScaleMinK4(is, x[4:16])
		d1 := d * float32(sc)
		m1 := float32(min_ * float32(m))
		sc, m = getScaleMinK4(is+1, x[4:16])
		d2 := d * float32(sc)
		m2 := float32(min_ * float32(m))
		for l := 0; l < 32; l++ {
			q := int(ql[l] & 0xF)
			if qh[l]&u1 != 0 {
				q += 16
			}
			y[j+l] = float32(d1*float32(q)) - m1
		}
		for l := 0; l < 32; l++ {
			q := int(ql[l] >> 4)
			if qh[l]&u2 != 0 {
				q += 16
			}
			y[j+32+l] = float32(d2*float32(q)) - m2
		}
		ql = ql[32:]
		is += 2
		u1 <<= 2
		u2 <<= 2
	}
}

// q6Fit computes the 16 symmetric fits of a Q6_K super-block with impl: scales[ib] as
// make_qx_quants (nmax 32, rmse_type 1) returns it for x[16ib:16ib+16], L its levels (l + 32; 0
// for an all-zero group).
func q6Fit(impl fitImpl, x *[QK_K]float32, L *[QK_K]int8, scales *[QK_K / 16]float32) {
	switch impl {
	case fitAVX2:
		q6FitAVX2(x, L, scales)
	case fitGo:
		q6FitGo(x, L, scales)
	default:
		q6FitRef(x, L, scales)
	}
}

// q6FitRef is the reference q6Fit: makeQXQuants, a line-by-line transcription, on each group.
func q6FitRef(x *[QK_K]float32, L *[QK_K]int8, scales *[QK_K / 16]float32) {
	for ib := 0; ib < QK_K/16; ib++ {
		scales[ib] = makeQXQuants(x[16*ib:16*ib+16], 32, L[16*ib:16*ib+16])
	}
}

// quantizeBlockQ6_K encodes one super-block as quantize_row_q6_K_ref does, with the fastest
// fit available.
func quantizeBlockQ6_K(x []float32, y []byte) { quantizeQ6K(x, y, fastFit) }

// quantizeBlockQ6_KRef is quantizeBlockQ6_K with the reference fit.
func quantizeBlockQ6_KRef(x []float32, y []byte) { quantizeQ6K(x, y, fitRef) }

// quantizeQ6K transcribes one super-block of quantize_row_q6_K_ref.
func quantizeQ6K(xs []float32, y []byte, fit fitImpl) {
	x := (*[QK_K]float32)(xs)
	y = y[:210]
	var L [QK_K]int8
	if !q6ScalesLevels(fit, x, y, &L) {
		return
	}
	ql := y[0:128]
	qh := y[128:192]
	for j := 0; j < QK_K; j += 128 {
		for l := 0; l < 32; l++ {
			q1 := uint8(L[j+l]) & 0xF
			q2 := uint8(L[j+l+32]) & 0xF
			q3 := uint8(L[j+l+64]) & 0xF
			q4 := uint8(L[j+l+96]) & 0xF
			ql[l] = q1 | q3<<4
			ql[l+32] = q2 | q4<<4
			qh[l] = uint8(int(L[j+l])>>4 | (int(L[j+l+32])>>4)<<2 | (int(L[j+l+64])>>4)<<4 | (int(L[j+l+96])>>4)<<6)
		}
		ql = ql[64:]
		qh = qh[32:]
	}
}

// q6ScalesLevels fits the 16 groups of a Q6_K block with impl, writes the header (q6Header)
// and fills L with the final levels, requantized against the header's scales as
// quantize_row_q6_K_ref does. It returns false when the block was all zero and is complete.
func q6ScalesLevels(impl fitImpl, x *[QK_K]float32, y []byte, L *[QK_K]int8) bool {
	if impl == fitAVX2 {
		return q6ScalesLevelsAVX2(x, y, L)
	}
	var scales [QK_K / 16]float32
	q6Fit(impl, x, L, &scales)
	if !q6Header(y, &scales) {
		return false
	}
	d0 := getF16(y[208:])
	for j := 0; j < QK_K/16; j++ {
		d := d0 * float32(int8(y[192+j]))
		if d == 0 {
			continue
		}
		for ii := 0; ii < 16; ii++ {
			l := nearestInt(x[16*j+ii] / d)
			l = max_(-32, min(31, l))
			L[16*j+ii] = int8(l + 32)
		}
	}
	return true
}

// q6Header quantizes the 16 group scales of a Q6_K block to int8 against the one of largest
// magnitude and writes them and d (y[192:210]). When every group is all zero it zeroes the
// whole block and returns false: the block is complete.
func q6Header(y []byte, scales *[QK_K / 16]float32) bool {
	var maxScale, maxAbsScale float32
	for _, scale := range scales {
		abs := absf(scale)
		if abs > maxAbsScale {
			maxAbsScale = abs
			maxScale = scale
		}
	}
	if maxAbsScale < groupMaxEps {
		for i := range y {
			y[i] = 0
		}
		return false
	}
	iscale := -128 / maxScale
	putF16(y[208:], 1/iscale)
	for ib, scale := range scales {
		y[192+ib] = uint8(int8(min(127, nearestInt(float32(iscale*scale)))))
	}
	return true
}

func dequantizeBlockQ6_K(x []byte, y []float32) {
	x = x[:210]
	y = y[:QK_K]
	d := getF16(x[208:])
	ql := x[0:128]
	qh := x[128:192]
	sc := x[192:208]
	for n := 0; n < QK_K; n += 128 {
		for l := 0; l < 32; l++ {
			is := l / 16
			q1 := int8(ql[l]&0xF|((qh[l]>>0)&3)<<4) - 32
			q2 := int8(ql[l+32]&0xF|((qh[l]>>2)&3)<<4) - 32
			q3 := int8(ql[l]>>4|((qh[l]>>4)&3)<<4) - 32
			q4 := int8(ql[l+32]>>4|((qh[l]>>6)&3)<<4) - 32
			y[n+l] = float32(d*float32(int8(sc[is]))) * float32(q1)
			y[n+l+32] = float32(d*float32(int8(sc[is+2]))) * float32(q2)
			y[n+l+64] = float32(d*float32(int8(sc[is+4]))) * float32(q3)
			y[n+l+96] = float32(d*float32(int8(sc[is+6]))) * float32(q4)
		}
		ql = ql[64:]
		qh = qh[32:]
		sc = sc[8:]
	}
}

// quantizeBlockQ8_K transcribes one super-block of quantize_row_q8_K_ref (ggml uses Q8_K for
// the activations of K-quant dot products; it is not a storage type of model files).
func quantizeBlockQ8_K(x []float32, y []byte) {
	x = x[:QK_K]
	y = y[:292]
	var max, amax float32
	for _, v := range x {
		ax := absf(v)
		if ax > amax {
			amax = ax
			max = v
		}
	}
	if amax == 0 {
		binary.LittleEndian.PutUint32(y[0:], 0)
		for i := 4; i < 4+QK_K; i++ {
			y[i] = 0
		}
		// ggml leaves bsums untouched here; this package zeroes them so output never depends
		// on what the destination held before (see the Q8_K note in quantize_test.go).
		for i := 4 + QK_K; i < 292; i++ {
			y[i] = 0
		}
		return
	}
	iscale := -127 / max
	qs := y[4 : 4+QK_K]
	for j, v := range x {
		qs[j] = uint8(int8(min(127, nearestInt(float32(iscale*v)))))
	}
	for j := 0; j < QK_K/16; j++ {
		sum := 0
		for ii := 0; ii < 16; ii++ {
			sum += int(int8(qs[16*j+ii]))
		}
		binary.LittleEndian.PutUint16(y[4+QK_K+2*j:], uint16(int16(sum)))
	}
	binary.LittleEndian.PutUint32(y[0:], math.Float32bits(1/iscale))
}

func dequantizeBlockQ8_K(x []byte, y []float32) {
	x = x[:292]
	y = y[:QK_K]
	d := math.Float32frombits(binary.LittleEndian.Uint32(x[0:]))
	for j := range y {
		y[j] = d * float32(int8(x[4+j]))
	}
}

package quant

// Fast K-quant fits. The reference fits (makeQKX2Quants, makeQXQuants) transcribe ggml line by
// line; the fits here return the same bits with less work, using only transformations that
// provably keep every float32 operation that reaches the output, in the same order.
//
// Pure Go (makeQKX2QuantsGo) can only do less work, not reorder it: the scalar loops are bound
// by the latency of their float32 sums, which must stay sequential. It skips and hoists:
//
//   - The fit and error of a candidate scale whose levels equal those of the previous
//     candidate are skipped: the sums, the fit and the error of a candidate depend only on its
//     levels (and the fixed inputs), so it would repeat the previous candidate's outcome, which
//     was either accepted (then accepting it again changes nothing) or rejected against a best
//     error that has not changed since.
//   - The error sum of a candidate stops as soon as its partial sum is no longer below the best
//     error: every term w·diff² is ≥ 0 or NaN, and adding a term ≥ 0 in round-to-nearest never
//     decreases a sum, so the candidate could not be accepted.
//   - x − min is computed once per change of min instead of once per candidate: the same
//     float32 operation on the same operands, so the same values.
//   - Fixed-size arrays instead of slices, so the compiler drops the bounds checks.
//
// On amd64 with AVX2 the fits run vertically in assembly instead (kquants_amd64.s): the 8
// sub-blocks of a Q4_K/Q5_K super-block, or 8 of the 16 groups of a Q6_K super-block, occupy
// the 8 lanes of a vector register and each lane executes exactly the reference's scalar
// sequence of IEEE operations (no FMA, no reassociation); branches become per-lane masks.

// fastFit is the fit the encoders use: the assembly where the CPU has it (set by an init
// function in kquants_amd64.go), else the pure-Go fast path.
var fastFit = fitGo

// fastFits lists the fast fits this build can run, for tests and benchmarks (the amd64 init
// function adds fitAVX2 when the CPU has AVX2).
var fastFits = []fitImpl{fitGo}

// nearestInt32 is nearestInt returning an int32.
func nearestInt32(fval float32) int32 {
	return int32(nearestInt(fval))
}

// kFitGo is the pure-Go fast kFit.
func kFitGo(x *[QK_K]float32, L *[QK_K]uint8, p *kParams, scales, mins *[8]float32) {
	var w [32]float32
	for j := 0; j < 8; j++ {
		xs := (*[32]float32)(x[32*j : 32*j+32])
		kWeights(xs, &w)
		scales[j], mins[j] = makeQKX2QuantsGo(xs, &w, p, (*[32]uint8)(L[32*j:32*j+32]))
	}
}

// makeQKX2QuantsGo is makeQKX2Quants (nstep ≥ 1) with the optimizations of this file.
func makeQKX2QuantsGo(x, w *[32]float32, p *kParams, L *[32]uint8) (scale, theMin float32) {
	nmax := int32(p.nmax)
	fnmax := float32(p.nmax)
	min_, max__ := x[0], x[0]
	sumW := w[0]
	sumX := float32(sumW * x[0])
	for i := 1; i < 32; i++ {
		if x[i] < min_ {
			min_ = x[i]
		}
		if x[i] > max__ {
			max__ = x[i]
		}
		sumW += w[i]
		sumX += float32(w[i] * x[i])
	}
	if min_ > 0 {
		min_ = 0
	}
	if max__ == min_ {
		*L = [32]uint8{}
		return 0, -min_
	}
	var xm [32]float32 // x − min, recomputed when min changes
	for i, v := range x {
		xm[i] = v - min_
	}
	iscale := fnmax / (max__ - min_)
	scale = 1 / iscale
	var bestError float32
	for i, v := range x {
		l := min(nmax, max(0, nearestInt32(float32(iscale*xm[i]))))
		L[i] = uint8(l)
		diff := float32(float32(scale*float32(l))+min_) - v
		bestError += float32(w[i] * float32(diff*diff))
	}
	var laux [32]uint8
	for is := 0; is <= p.nstep; is++ {
		iscale = p.num[is] / (max__ - min_)
		// Levels and sums in one pass (the levels are free under the latency of the sums);
		// changed records whether any level differs from the previous candidate's.
		var sumL, sumL2, sumXL float32
		var changed uint8
		for i, v := range xm {
			l := uint8(min(nmax, max(0, nearestInt32(float32(iscale*v)))))
			changed |= l ^ laux[i]
			laux[i] = l
			fl := float32(l)
			wl := float32(w[i] * fl)
			sumL += wl
			sumL2 += float32(wl * fl)
			sumXL += float32(wl * x[i])
		}
		if is > 0 && changed == 0 {
			continue
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if !(D > 0) {
			continue
		}
		thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
		thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
		if thisMin > 0 {
			thisMin = 0
			thisScale = sumXL / sumL2
		}
		var curError float32
		for i0 := 0; i0 < 32; i0 += 8 {
			for i := i0; i < i0+8; i++ {
				diff := float32(float32(thisScale*float32(laux[i]))+thisMin) - x[i]
				curError += float32(w[i] * float32(diff*diff))
			}
			if !(curError < bestError) {
				break
			}
		}
		if curError < bestError {
			*L = laux
			bestError = curError
			scale = thisScale
			min_ = thisMin
			for i, v := range x {
				xm[i] = v - min_
			}
		}
	}
	return scale, -min_
}

// q6FitGo is the pure-Go q6Fit: the reference. The transformations of this file gave nothing
// measurable for make_qx_quants (a candidate is just its levels and two sums, computed in the
// same pass; there is no error pass to skip), so there is no separate version to keep exact.
func q6FitGo(x *[QK_K]float32, L *[QK_K]int8, scales *[QK_K / 16]float32) {
	q6FitRef(x, L, scales)
}

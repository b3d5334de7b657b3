package graph

import "math"

// torchVecWidth is the number of float lanes of PyTorch's CPU Vectorized<float> (256-bit: 8) in the build that
// produced the reference table; arange's vectorized path rounds each group's base to float32 first.
const torchVecWidth = 8

// torchArange mirrors torch.arange(start, end, step) for a float32 result on the CPU (torch 1.13,
// RangeFactoriesKernel): the length is ceil((end − start) / step) in float64; elements of full 8-lane groups are
// float32(float64(float32(start + step·g)) + j·step) for group base g and lane j, the tail is float32(start + step·i).
func torchArange(start, end, step float64) []float32 {
	n := int(math.Ceil((end - start) / step))
	if n < 0 {
		n = 0
	}
	out := make([]float32, n)
	full := n / torchVecWidth * torchVecWidth
	for i := range out {
		if i < full {
			j := i % torchVecWidth
			base := float32(start + step*float64(i-j))
			out[i] = float32(float64(base) + float64(j)*step)
		} else {
			out[i] = float32(start + step*float64(i))
		}
	}
	return out
}

// bucketRight is torch.bucketize(x, boundaries, right=True): the number of boundaries ≤ x.
func bucketRight(x float32, boundaries []float32) int {
	lo, hi := 0, len(boundaries)
	for lo < hi {
		m := (lo + hi) / 2
		if boundaries[m] <= x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// PositionBuckets returns, for an image whose real patch grid has n rows (or columns), the bucket of each row in a
// position table of side buckets per side, exactly as Idefics2VisionEmbeddings computes it:
// boundaries = arange(1/S, 1, 1/S) (Python float step), coords = arange(0, 1 − 1e-6, 1/n) where 1/n is a float32
// tensor (the patch count is a tensor), then bucketize(coords, boundaries, right=True). The float32 rounding
// makes this differ from ⌊S·i/n⌋ for some n (25, 49, 50, 55, 58 with S = 70); the result is pinned by a table
// recorded from transformers in the tests.
func PositionBuckets(n, side int) []int {
	boundaries := torchArange(1/float64(side), 1.0, 1/float64(side))
	coords := torchArange(0, 1-1e-6, float64(float32(1/float64(n))))
	out := make([]int, len(coords))
	for i, c := range coords {
		out[i] = bucketRight(c, boundaries)
	}
	return out
}

// PositionIDs returns the position-table row of each patch of a rows×cols grid, row-major.
func PositionIDs(rows, cols, side int) []int32 {
	bh := PositionBuckets(rows, side)
	bw := PositionBuckets(cols, side)
	ids := make([]int32, 0, rows*cols)
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			ids = append(ids, int32(bh[min(r, len(bh)-1)]*side+bw[min(c, len(bw)-1)]))
		}
	}
	return ids
}

//go:build !amd64 || purego

package quant

// Builds without the assembly never select fitAVX2 (fastFits does not list it); these stubs keep
// the dispatching functions total by falling back to the pure-Go fast path.

func kFitAVX2(x *[QK_K]float32, L *[QK_K]uint8, p *kParams, scales, mins *[8]float32) {
	kFitGo(x, L, p, scales, mins)
}

func q6FitAVX2(x *[QK_K]float32, L *[QK_K]int8, scales *[QK_K / 16]float32) {
	q6FitGo(x, L, scales)
}

func kScalesLevelsAVX2(x *[QK_K]float32, y []byte, L *[QK_K]uint8, p *kParams) {
	kScalesLevels(fitGo, x, y, L, p)
}

func q6ScalesLevelsAVX2(x *[QK_K]float32, y []byte, L *[QK_K]int8) bool {
	return q6ScalesLevels(fitGo, x, y, L)
}

//go:build amd64 && !purego

package quant

import "unsafe"

type offsetCheck struct {
	name      string
	got, want uintptr
}

// frameOffsets pairs each frame field with the offset kquants_amd64.s uses for it.
func frameOffsets() []offsetCheck {
	var k qkx2Frame
	var q qxFrame
	return []offsetCheck{
		{"qkx2Frame.x", unsafe.Offsetof(k.x), 0},
		{"qkx2Frame.w", unsafe.Offsetof(k.w), 1024},
		{"qkx2Frame.L", unsafe.Offsetof(k.L), 2048},
		{"qkx2Frame.laux", unsafe.Offsetof(k.laux), 3072},
		{"qkx2Frame.num", unsafe.Offsetof(k.num), 4096},
		{"qkx2Frame.nmaxF", unsafe.Offsetof(k.nmaxF), 4192},
		{"qkx2Frame.nmaxI", unsafe.Offsetof(k.nmaxI), 4196},
		{"qkx2Frame.nstep", unsafe.Offsetof(k.nstep), 4200},
		{"qkx2Frame.scale", unsafe.Offsetof(k.scale), 4208},
		{"qkx2Frame.theMin", unsafe.Offsetof(k.theMin), 4240},
		{"qkx2Frame.min", unsafe.Offsetof(k.min), 4272},
		{"qkx2Frame.max", unsafe.Offsetof(k.max), 4304},
		{"qkx2Frame.sumW", unsafe.Offsetof(k.sumW), 4336},
		{"qkx2Frame.sumX", unsafe.Offsetof(k.sumX), 4368},
		{"qkx2Frame.best", unsafe.Offsetof(k.best), 4400},
		{"qkx2Frame.minOrig", unsafe.Offsetof(k.minOrig), 4432},
		{"qkx2Frame.flat", unsafe.Offsetof(k.flat), 4464},
		{"qkx2Frame.d", unsafe.Offsetof(k.d), 4496},
		{"qkx2Frame.dm", unsafe.Offsetof(k.dm), 4528},
		{"qxFrame.x", unsafe.Offsetof(q.x), 0},
		{"qxFrame.L", unsafe.Offsetof(q.L), 512},
		{"qxFrame.laux", unsafe.Offsetof(q.laux), 1024},
		{"qxFrame.num", unsafe.Offsetof(q.num), 1536},
		{"qxFrame.nmaxI", unsafe.Offsetof(q.nmaxI), 1616},
		{"qxFrame.negN", unsafe.Offsetof(q.negN), 1620},
		{"qxFrame.nmax1", unsafe.Offsetof(q.nmax1), 1624},
		{"qxFrame.scale", unsafe.Offsetof(q.scale), 1632},
		{"qxFrame.max", unsafe.Offsetof(q.max), 1664},
		{"qxFrame.best", unsafe.Offsetof(q.best), 1696},
		{"qxFrame.small", unsafe.Offsetof(q.small), 1728},
		{"qxFrame.d", unsafe.Offsetof(q.d), 1760},
		{"qxFrame.w", unsafe.Offsetof(q.w), 1792},
		{"qxFrame.wx", unsafe.Offsetof(q.wx), 2304},
	}
}

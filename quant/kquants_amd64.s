//go:build amd64 && !purego

#include "textflag.h"

// Vertical K-quant fits (see kquants_fast.go). Each of the 8 lanes runs the scalar reference
// (makeQKX2Quants, makeQXQuants) with the same IEEE single-precision operations in the same
// order: VADDPS/VSUBPS/VMULPS/VDIVPS round exactly like the scalar SSE instructions Go and gcc
// emit, and no FMA is used. nearest_int is the same magic-number trick on the bit patterns;
// MIN/MAX clamps are VPMINSD/VPMAXSD on the integers; branches are per-lane masks.
//
// Plan 9 operand order: the destination is last and sources are reversed, so
// "VSUBPS A, B, D" is D = B − A, "VCMPPS $p, A, B, D" is D = (B p A), and
// "VBLENDVPS M, T, F, D" is D = M ? T : F (per lane, by the sign bit of M).

DATA qconst<>+0(SB)/4, $0x4b400000  // 12582912.0 = 1.5·2^23 (nearest_int)
DATA qconst<>+4(SB)/4, $0x007fffff  // mantissa mask
DATA qconst<>+8(SB)/4, $0x00400000  // nearest_int offset
DATA qconst<>+12(SB)/4, $0x3f800000 // 1.0
DATA qconst<>+16(SB)/4, $0x80000000 // sign bit
DATA qconst<>+20(SB)/4, $0x7fffffff // abs mask
DATA qconst<>+24(SB)/4, $0x26901d7d // GROUP_MAX_EPS = 1e-15f
DATA qconst<>+28(SB)/4, $0x42000000 // 32.0
GLOBL qconst<>(SB), RODATA|NOPTR, $32

// qkx2Frame offsets (kquants_amd64.go).
#define KX 0
#define KW 1024
#define KL 2048
#define KLAUX 3072
#define KNUM 4096
#define KNMAXF 4192
#define KNMAXI 4196
#define KNSTEP 4200
#define KSCALE 4208
#define KTHEMIN 4240
#define KMIN 4272
#define KMAX 4304
#define KSUMW 4336
#define KSUMX 4368
#define KBEST 4400
#define KMINORIG 4432
#define KFLAT 4464
#define KD 4496
#define KDM 4528

// NEARESTINT converts the floats of r (holding fval + 12582912) to nearest_int's integers:
// (bits & 0x7fffff) − 0x400000. Needs Y14 = mask, Y13 = offset.
#define NEARESTINT(r) \
	VPAND  Y14, r, r; \
	VPSUBD Y13, r, r

// func qkx2AVX2(f *qkx2Frame)
//
// Registers kept across the function: Y15 magic, Y14 mantissa mask, Y13 offset, Y12 nmax (int),
// Y11 zero.
TEXT ·qkx2AVX2(SB), NOSPLIT, $0-8
	MOVQ f+0(FP), DI
	VBROADCASTSS qconst<>+0(SB), Y15
	VBROADCASTSS qconst<>+4(SB), Y14
	VBROADCASTSS qconst<>+8(SB), Y13
	VPBROADCASTD KNMAXI(DI), Y12
	VXORPS       Y11, Y11, Y11

	// Weights (quantize_row_q{4,5}_K_ref): av_x = sqrtf(sum_x2/32), w = av_x + fabsf(x).
	// VSQRTPS is the correctly rounded single-precision square root, as sqrtf.
	VXORPS Y0, Y0, Y0
	MOVQ   DI, SI
	MOVQ   $32, CX

sumx2:
	VMOVUPS KX(SI), Y1
	VMULPS  Y1, Y1, Y1
	VADDPS  Y1, Y0, Y0          // sum_x2 += x*x
	ADDQ    $32, SI
	DECQ    CX
	JNZ     sumx2
	VBROADCASTSS qconst<>+28(SB), Y1
	VDIVPS       Y1, Y0, Y0     // sum_x2/32
	VSQRTPS      Y0, Y0         // av_x
	VBROADCASTSS qconst<>+20(SB), Y2
	MOVQ         DI, SI
	MOVQ         $32, CX

weights:
	VANDPS  KX(SI), Y2, Y1      // fabsf(x)
	VADDPS  Y1, Y0, Y1          // av_x + fabsf(x)
	VMOVUPS Y1, KW(SI)
	ADDQ    $32, SI
	DECQ    CX
	JNZ     weights

	// min, max, sum_w, sum_x over the 32 rows.
	VMOVUPS KX(DI), Y0          // min = x[0]
	VMOVAPS Y0, Y1              // max = x[0]
	VMOVUPS KW(DI), Y2          // sum_w = w[0]
	VMULPS  Y0, Y2, Y3          // sum_x = w[0]*x[0]
	LEAQ    32(DI), SI
	MOVQ    $31, CX

minmax:
	VMOVUPS KX(SI), Y4
	VMOVUPS KW(SI), Y5
	VMINPS  Y0, Y4, Y0          // min = x < min ? x : min
	VMAXPS  Y1, Y4, Y1          // max = x > max ? x : max
	VADDPS  Y5, Y2, Y2          // sum_w += w
	VMULPS  Y4, Y5, Y6
	VADDPS  Y6, Y3, Y3          // sum_x += w*x
	ADDQ    $32, SI
	DECQ    CX
	JNZ     minmax

	VCMPPS  $0x0e, Y11, Y0, Y6  // min > 0
	VANDNPS Y0, Y6, Y0          // → min = 0
	VMOVUPS Y0, KMIN(DI)
	VMOVUPS Y0, KMINORIG(DI)
	VMOVUPS Y1, KMAX(DI)
	VMOVUPS Y2, KSUMW(DI)
	VMOVUPS Y3, KSUMX(DI)
	VCMPPS  $0x00, Y0, Y1, Y6   // max == min: flat lanes
	VMOVUPS Y6, KFLAT(DI)

	// Initial fit: iscale = nmax/(max − min), scale = 1/iscale, best_error.
	VSUBPS       Y0, Y1, Y7     // max − min
	VBROADCASTSS KNMAXF(DI), Y8
	VDIVPS       Y7, Y8, Y9     // iscale
	VBROADCASTSS qconst<>+12(SB), Y10
	VDIVPS       Y9, Y10, Y10   // scale
	VXORPS       Y8, Y8, Y8     // best_error
	MOVQ         DI, SI
	MOVQ         $32, CX

initial:
	VMOVUPS   KX(SI), Y4
	VSUBPS    Y0, Y4, Y5        // x − min
	VMULPS    Y9, Y5, Y5        // iscale*(x − min)
	VADDPS    Y15, Y5, Y5
	NEARESTINT(Y5)
	VPMINSD   Y12, Y5, Y5       // MIN(nmax, l)
	VPMAXSD   Y11, Y5, Y5       // MAX(0, ·)
	VMOVDQU   Y5, KL(SI)
	VCVTDQ2PS Y5, Y5
	VMULPS    Y10, Y5, Y5       // scale*L
	VADDPS    Y0, Y5, Y5        // + min
	VSUBPS    Y4, Y5, Y5        // − x
	VMULPS    Y5, Y5, Y5        // diff*diff
	VMULPS    KW(SI), Y5, Y5    // w*diff
	VADDPS    Y5, Y8, Y8
	ADDQ      $32, SI
	DECQ      CX
	JNZ       initial
	VMOVUPS   Y8, KBEST(DI)
	VMOVUPS   Y10, KSCALE(DI)

	// Candidates is = 0…nstep.
	XORQ R8, R8

candidate:
	VMOVUPS      KMIN(DI), Y0
	VMOVUPS      KMAX(DI), Y1
	VSUBPS       Y0, Y1, Y1     // max − min
	VBROADCASTSS KNUM(DI)(R8*4), Y9
	VDIVPS       Y1, Y9, Y9     // iscale = (rmin + rdelta*is + nmax)/(max − min)
	VXORPS       Y8, Y8, Y8     // sum_l
	VXORPS       Y7, Y7, Y7     // sum_l2
	VXORPS       Y6, Y6, Y6     // sum_xl
	MOVQ         DI, SI
	MOVQ         $32, CX

sums:
	VMOVUPS   KX(SI), Y4
	VSUBPS    Y0, Y4, Y5
	VMULPS    Y9, Y5, Y5
	VADDPS    Y15, Y5, Y5
	NEARESTINT(Y5)
	VPMINSD   Y12, Y5, Y5
	VPMAXSD   Y11, Y5, Y5
	VMOVDQU   Y5, KLAUX(SI)
	VCVTDQ2PS Y5, Y5            // l
	VMULPS    KW(SI), Y5, Y3    // w*l
	VADDPS    Y3, Y8, Y8        // sum_l += w*l
	VMULPS    Y5, Y3, Y2
	VADDPS    Y2, Y7, Y7        // sum_l2 += w*l*l
	VMULPS    Y4, Y3, Y2
	VADDPS    Y2, Y6, Y6        // sum_xl += w*l*x
	ADDQ      $32, SI
	DECQ      CX
	JNZ       sums

	VMOVUPS KSUMW(DI), Y0
	VMOVUPS KSUMX(DI), Y1
	VMULPS  Y7, Y0, Y2          // sum_w*sum_l2
	VMULPS  Y8, Y8, Y3          // sum_l*sum_l
	VSUBPS  Y3, Y2, Y2          // D
	VMULPS  Y6, Y0, Y3          // sum_w*sum_xl
	VMULPS  Y8, Y1, Y4          // sum_x*sum_l
	VSUBPS  Y4, Y3, Y3
	VDIVPS  Y2, Y3, Y3          // this_scale
	VMULPS  Y1, Y7, Y4          // sum_l2*sum_x
	VMULPS  Y6, Y8, Y5          // sum_l*sum_xl
	VSUBPS  Y5, Y4, Y4
	VDIVPS  Y2, Y4, Y4          // this_min
	VCMPPS  $0x0e, Y11, Y4, Y5  // this_min > 0:
	VANDNPS Y4, Y5, Y4          //   this_min = 0
	VDIVPS  Y7, Y6, Y0          //   this_scale = sum_xl/sum_l2
	VBLENDVPS Y5, Y0, Y3, Y3
	VCMPPS  $0x0e, Y11, Y2, Y2  // D > 0

	VXORPS Y8, Y8, Y8           // cur_error
	MOVQ   DI, SI
	MOVQ   $32, CX

errloop:
	VCVTDQ2PS KLAUX(SI), Y5
	VMULPS    Y3, Y5, Y5        // this_scale*Laux
	VADDPS    Y4, Y5, Y5        // + this_min
	VSUBPS    KX(SI), Y5, Y5    // − x
	VMULPS    Y5, Y5, Y5
	VMULPS    KW(SI), Y5, Y5
	VADDPS    Y5, Y8, Y8
	ADDQ      $32, SI
	DECQ      CX
	JNZ       errloop

	VMOVUPS   KBEST(DI), Y0
	VCMPPS    $0x01, Y0, Y8, Y1 // cur_error < best_error
	VANDPS    Y2, Y1, Y1        // and D > 0
	VMOVMSKPS Y1, AX
	TESTL     AX, AX
	JZ        nextcandidate
	VBLENDVPS Y1, Y8, Y0, Y0
	VMOVUPS   Y0, KBEST(DI)
	VMOVUPS   KSCALE(DI), Y0
	VBLENDVPS Y1, Y3, Y0, Y0
	VMOVUPS   Y0, KSCALE(DI)
	VMOVUPS   KMIN(DI), Y0
	VBLENDVPS Y1, Y4, Y0, Y0
	VMOVUPS   Y0, KMIN(DI)
	MOVQ      DI, SI
	MOVQ      $32, CX

copylevels:
	VMOVDQU   KL(SI), Y0
	VBLENDVPS Y1, KLAUX(SI), Y0, Y0
	VMOVDQU   Y0, KL(SI)
	ADDQ      $32, SI
	DECQ      CX
	JNZ       copylevels

nextcandidate:
	INCQ R8
	CMPQ R8, KNSTEP(DI)
	JLE  candidate

	// Flat lanes: L = 0, scale = 0, the_min = −min as it was before the search.
	VMOVUPS      KFLAT(DI), Y1
	VMOVUPS      KMIN(DI), Y0
	VBLENDVPS    Y1, KMINORIG(DI), Y0, Y0
	VBROADCASTSS qconst<>+16(SB), Y2
	VXORPS       Y2, Y0, Y0
	VMOVUPS      Y0, KTHEMIN(DI)
	VMOVUPS      KSCALE(DI), Y0
	VANDNPS      Y0, Y1, Y0
	VMOVUPS      Y0, KSCALE(DI)
	MOVQ         DI, SI
	MOVQ         $32, CX

clearflat:
	VMOVDQU KL(SI), Y0
	VANDNPS Y0, Y1, Y0
	VMOVDQU Y0, KL(SI)
	ADDQ    $32, SI
	DECQ    CX
	JNZ     clearflat

	VZEROUPPER
	RET

// func kLevelsAVX2(f *qkx2Frame)
TEXT ·kLevelsAVX2(SB), NOSPLIT, $0-8
	MOVQ f+0(FP), DI
	VBROADCASTSS qconst<>+0(SB), Y15
	VBROADCASTSS qconst<>+4(SB), Y14
	VBROADCASTSS qconst<>+8(SB), Y13
	VPBROADCASTD KNMAXI(DI), Y12
	VXORPS       Y11, Y11, Y11
	VMOVUPS      KD(DI), Y10
	VMOVUPS      KDM(DI), Y9
	VCMPPS       $0x00, Y11, Y10, Y8 // d == 0: keep the fit's levels
	MOVQ         DI, SI
	MOVQ         $32, CX

klevels:
	VMOVUPS   KX(SI), Y0
	VADDPS    Y9, Y0, Y0        // x + dm
	VDIVPS    Y10, Y0, Y0       // (x + dm)/d
	VADDPS    Y15, Y0, Y0
	NEARESTINT(Y0)
	VPMINSD   Y12, Y0, Y0
	VPMAXSD   Y11, Y0, Y0
	VMOVDQU   KL(SI), Y1
	VBLENDVPS Y8, Y1, Y0, Y0
	VMOVDQU   Y0, KL(SI)
	ADDQ      $32, SI
	DECQ      CX
	JNZ       klevels
	VZEROUPPER
	RET

// qxFrame offsets (kquants_amd64.go).
#define QX 0
#define QL 512
#define QLAUX 1024
#define QNUM 1536
#define QNMAXI 1616
#define QNEGN 1620
#define QNMAX1 1624
#define QSCALE 1632
#define QMAX 1664
#define QBEST 1696
#define QSMALL 1728
#define QD 1760
#define QW 1792
#define QWX 2304

// func qxAVX2(f *qxFrame)
//
// Registers kept across the function: Y15 magic, Y14 mantissa mask, Y13 offset, Y12 −nmax,
// Y11 nmax − 1, Y10 nmax (ints), Y9 zero.
TEXT ·qxAVX2(SB), NOSPLIT, $0-8
	MOVQ f+0(FP), DI
	VBROADCASTSS qconst<>+0(SB), Y15
	VBROADCASTSS qconst<>+4(SB), Y14
	VBROADCASTSS qconst<>+8(SB), Y13
	VPBROADCASTD QNEGN(DI), Y12
	VPBROADCASTD QNMAX1(DI), Y11
	VPBROADCASTD QNMAXI(DI), Y10
	VXORPS       Y9, Y9, Y9

	// max = the value of largest magnitude (first one on ties), amax = its magnitude.
	VXORPS       Y0, Y0, Y0     // max
	VXORPS       Y1, Y1, Y1     // amax
	VBROADCASTSS qconst<>+20(SB), Y2
	MOVQ         DI, SI
	MOVQ         $16, CX

qxmax:
	VMOVUPS   QX(SI), Y4
	VANDPS    Y2, Y4, Y5        // ax = fabsf(x)
	VCMPPS    $0x0e, Y1, Y5, Y6 // ax > amax
	VBLENDVPS Y6, Y5, Y1, Y1
	VBLENDVPS Y6, Y4, Y0, Y0
	VMULPS    Y4, Y4, Y5        // w = x*x and w*x, the same in every candidate
	VMOVUPS   Y5, QW(SI)
	VMULPS    Y4, Y5, Y5
	VMOVUPS   Y5, QWX(SI)
	ADDQ      $32, SI
	DECQ      CX
	JNZ       qxmax
	VMOVUPS      Y0, QMAX(DI)
	VBROADCASTSS qconst<>+24(SB), Y2
	VCMPPS       $0x01, Y2, Y1, Y1 // amax < GROUP_MAX_EPS
	VMOVUPS      Y1, QSMALL(DI)

	// Candidate 0 is the initial fit (iscale = −nmax/max), candidates 1…18 are is = −9…9
	// without 0 (iscale = −(nmax + 0.1*is)/max); QNUM holds the numerators.
	XORQ R8, R8

qxcandidate:
	VBROADCASTSS QNUM(DI)(R8*4), Y8
	VDIVPS       QMAX(DI), Y8, Y8 // iscale
	VXORPS       Y2, Y2, Y2       // sum_lx
	VXORPS       Y3, Y3, Y3       // sum_l2
	MOVQ         DI, SI
	MOVQ         $16, CX

qxsums:
	VMOVUPS   QX(SI), Y4
	VMULPS    Y8, Y4, Y5        // iscale*x
	VADDPS    Y15, Y5, Y5
	NEARESTINT(Y5)
	VPMINSD   Y11, Y5, Y5       // MIN(nmax − 1, l)
	VPMAXSD   Y12, Y5, Y5       // MAX(−nmax, ·)
	VMOVDQU   Y5, QLAUX(SI)
	VCVTDQ2PS Y5, Y5            // l
	VMULPS    QWX(SI), Y5, Y7   // w*x*l
	VADDPS    Y7, Y2, Y2        // sum_lx
	VMULPS    QW(SI), Y5, Y6    // w*l
	VMULPS    Y5, Y6, Y6        // w*l*l
	VADDPS    Y6, Y3, Y3        // sum_l2
	ADDQ      $32, SI
	DECQ      CX
	JNZ       qxsums

	TESTQ R8, R8
	JNZ   qxaccept

	// Initial fit: L = l + nmax; scale = sum_l2 ? sum_lx/sum_l2 : 0; best = scale*sum_lx.
	VPCMPEQD  Y1, Y1, Y1        // every lane takes it
	VDIVPS    Y3, Y2, Y0
	VCMPPS    $0x00, Y9, Y3, Y4 // sum_l2 == 0
	VANDNPS   Y0, Y4, Y0
	VMOVUPS   Y0, QSCALE(DI)
	VMULPS    Y2, Y0, Y0
	VMOVUPS   Y0, QBEST(DI)
	JMP       qxcopylevels

qxaccept:
	VMULPS    Y2, Y2, Y0        // sum_lx*sum_lx
	VMULPS    QBEST(DI), Y3, Y1 // best*sum_l2
	VCMPPS    $0x0e, Y1, Y0, Y0 // sum_lx² > best*sum_l2
	VCMPPS    $0x0e, Y9, Y3, Y1 // sum_l2 > 0
	VANDPS    Y1, Y0, Y1
	VMOVMSKPS Y1, AX
	TESTL     AX, AX
	JZ        qxnext
	VDIVPS    Y3, Y2, Y0        // scale = sum_lx/sum_l2
	VMOVUPS   QSCALE(DI), Y4
	VBLENDVPS Y1, Y0, Y4, Y4
	VMOVUPS   Y4, QSCALE(DI)
	VMULPS    Y2, Y0, Y0        // best = scale*sum_lx
	VMOVUPS   QBEST(DI), Y4
	VBLENDVPS Y1, Y0, Y4, Y4
	VMOVUPS   Y4, QBEST(DI)

qxcopylevels:
	MOVQ DI, SI
	MOVQ $16, CX

qxcopy:
	VMOVDQU   QLAUX(SI), Y4
	VPADDD    Y10, Y4, Y4       // l + nmax
	VMOVDQU   QL(SI), Y5
	VBLENDVPS Y1, Y4, Y5, Y5
	VMOVDQU   Y5, QL(SI)
	ADDQ      $32, SI
	DECQ      CX
	JNZ       qxcopy

qxnext:
	INCQ R8
	CMPQ R8, $19
	JLT  qxcandidate

	// All-zero lanes: L = 0, scale = 0.
	VMOVUPS QSMALL(DI), Y1
	VMOVUPS QSCALE(DI), Y0
	VANDNPS Y0, Y1, Y0
	VMOVUPS Y0, QSCALE(DI)
	MOVQ    DI, SI
	MOVQ    $16, CX

qxclear:
	VMOVDQU QL(SI), Y0
	VANDNPS Y0, Y1, Y0
	VMOVDQU Y0, QL(SI)
	ADDQ    $32, SI
	DECQ    CX
	JNZ     qxclear

	VZEROUPPER
	RET

// func qxLevelsAVX2(f *qxFrame)
TEXT ·qxLevelsAVX2(SB), NOSPLIT, $0-8
	MOVQ f+0(FP), DI
	VBROADCASTSS qconst<>+0(SB), Y15
	VBROADCASTSS qconst<>+4(SB), Y14
	VBROADCASTSS qconst<>+8(SB), Y13
	VPBROADCASTD QNEGN(DI), Y12
	VPBROADCASTD QNMAX1(DI), Y11
	VPBROADCASTD QNMAXI(DI), Y10
	VXORPS       Y9, Y9, Y9
	VMOVUPS      QD(DI), Y7
	VCMPPS       $0x00, Y9, Y7, Y8 // d == 0: keep the fit's levels
	MOVQ         DI, SI
	MOVQ         $16, CX

qxlevels:
	VMOVUPS   QX(SI), Y0
	VDIVPS    Y7, Y0, Y0        // x/d
	VADDPS    Y15, Y0, Y0
	NEARESTINT(Y0)
	VPMINSD   Y11, Y0, Y0
	VPMAXSD   Y12, Y0, Y0
	VPADDD    Y10, Y0, Y0       // + nmax
	VMOVDQU   QL(SI), Y1
	VBLENDVPS Y8, Y1, Y0, Y0
	VMOVDQU   Y0, QL(SI)
	ADDQ      $32, SI
	DECQ      CX
	JNZ       qxlevels
	VZEROUPPER
	RET

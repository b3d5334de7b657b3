// Fused short-head attention on the CPU (attn.h): a scalar path, an AVX2 (with FMA) path, an
// AVX-512F path and, on AArch64, a NEON path, chosen at run time. The x86 functions are compiled
// with target attributes, so the file builds for baseline x86-64 and the vector code only runs after
// __builtin_cpu_supports said the CPU has it. The AVX2 and NEON paths keep the same packing and
// steps, 8 and 4 floats per vector.
//
// Work items are (query head, block of ATTN_QB queries). For one item:
//   1. scores s = (q·scale)·kᵀ for the block against every key, from keys packed per key head into
//      tiles [16 keys][hd] transposed, so the product broadcasts one query value and multiplies 16
//      keys at once (no horizontal sums, whatever the head size);
//   2. s ← exp(s − max) per query row, with the row sum kept aside;
//   3. o = s·v over blocks of ATTN_KB keys (values packed per key head, rows padded to a multiple
//      of 16 floats; a block stays in the core's L2 while every query of the item passes over it),
//      and the output row is o / sum.
// The score block is ATTN_QB × nk floats (314 KB for 4,900 keys): it stays in L2 as well, where
// the unfused graph writes and reads a score matrix of nq × nk per head through memory.

#include "attn.h"
#include "isacap.h"
#include "vexp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define ATTN_HAVE_X86 1
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#define ATTN_HAVE_NEON 1
#include <arm_neon.h>
#endif

#define ATTN_QB 16  // queries per work item
#define ATTN_KB 512 // keys per block of the value product

typedef struct {
    const char * q;
    const char * k;
    const char * v;
    size_t qnb1, qnb2, knb1, knb2, vnb1, vnb2;
    char * dst;
    size_t dnb1;
    int64_t hd, heads, kvh, nq, nk;
    float scale;
} attn_args;

typedef struct {
    int64_t nkp, hdv; // keys rounded up to 16, head size rounded up to 16
    float * kt;       // [nkp/16][hd][16]: key tiles, transposed
    float * vp;       // [nkp][hdv]: values, rows zero-padded
    float * s;        // [ATTN_QB][nkp]: scores, then unnormalized probabilities
    float * qs;       // [ATTN_QB][hd]: queries times scale (rows past the block's end are zero)
    float * o;        // [ATTN_QB][hdv]: output accumulators
    float l[ATTN_QB]; // row sums of the probabilities
    int64_t packed;   // key head packed in kt and vp, or -1
} attn_scratch;

static inline int64_t attn_round16(int64_t n) { return (n + 15) & ~(int64_t) 15; }

static inline const float * attn_row(const char * base, size_t nb1, size_t nb2, int64_t head, int64_t tok) {
    return (const float *) (base + (size_t) head * nb1 + (size_t) tok * nb2);
}

static void * attn_alloc(size_t n) {
    n = (n + 63) & ~(size_t) 63;
    void * p = aligned_alloc(64, n == 0 ? 64 : n);
    if (p == NULL) {
        fprintf(stderr, "idefics2 attention: cannot allocate %zu bytes of scratch\n", n);
        abort();
    }
    return p;
}

static void attn_scratch_init(attn_scratch * w, const attn_args * a) {
    w->nkp = attn_round16(a->nk);
    w->hdv = attn_round16(a->hd);
    w->kt = (float *) attn_alloc((size_t) w->nkp * (size_t) a->hd * sizeof(float));
    w->vp = (float *) attn_alloc((size_t) w->nkp * (size_t) w->hdv * sizeof(float));
    w->s = (float *) attn_alloc((size_t) ATTN_QB * (size_t) w->nkp * sizeof(float));
    memset(w->s, 0, (size_t) ATTN_QB * (size_t) w->nkp * sizeof(float)); // rows a path reads past its queries
    w->qs = (float *) attn_alloc((size_t) ATTN_QB * (size_t) a->hd * sizeof(float));
    w->o = (float *) attn_alloc((size_t) ATTN_QB * (size_t) w->hdv * sizeof(float));
    w->packed = -1;
}

static void attn_scratch_free(attn_scratch * w) {
    free(w->kt);
    free(w->vp);
    free(w->s);
    free(w->qs);
    free(w->o);
}

// Packs key head g into kt and vp (padding keys and value columns are zero).
static void attn_pack(attn_scratch * w, const attn_args * a, int64_t g) {
    if (w->packed == g) return;
    const int64_t hd = a->hd, nk = a->nk, nkp = w->nkp, hdv = w->hdv;
    for (int64_t j = 0; j < nkp; j++) {
        float * kt = w->kt + (j >> 4) * hd * 16 + (j & 15);
        float * vp = w->vp + j * hdv;
        if (j < nk) {
            const float * kr = attn_row(a->k, a->knb1, a->knb2, g, j);
            const float * vr = attn_row(a->v, a->vnb1, a->vnb2, g, j);
            for (int64_t d = 0; d < hd; d++) kt[d * 16] = kr[d];
            memcpy(vp, vr, (size_t) hd * sizeof(float));
            for (int64_t d = hd; d < hdv; d++) vp[d] = 0.0f;
        } else {
            for (int64_t d = 0; d < hd; d++) kt[d * 16] = 0.0f;
            memset(vp, 0, (size_t) hdv * sizeof(float));
        }
    }
    w->packed = g;
}

// Copies the item's queries times scale into qs; returns how many there are.
static int attn_load_queries(attn_scratch * w, const attn_args * a, int64_t h, int64_t q0) {
    const int n = (int) (a->nq - q0 < ATTN_QB ? a->nq - q0 : ATTN_QB);
    for (int i = 0; i < ATTN_QB; i++) {
        float * dst = w->qs + (int64_t) i * a->hd;
        if (i < n) {
            const float * src = attn_row(a->q, a->qnb1, a->qnb2, h, q0 + i);
            for (int64_t d = 0; d < a->hd; d++) dst[d] = src[d] * a->scale;
        } else {
            memset(dst, 0, (size_t) a->hd * sizeof(float));
        }
    }
    return n;
}

static inline float * attn_out_row(const attn_args * a, int64_t h, int64_t tok) {
    return (float *) (a->dst + (size_t) tok * a->dnb1) + h * a->hd;
}

// ---------------------------------------------------------------------------------------------
// Scalar

static void attn_item_scalar(attn_scratch * w, const attn_args * a, int64_t h, int64_t q0) {
    const int64_t hd = a->hd, nk = a->nk, nkp = w->nkp, hdv = w->hdv;
    const int n = attn_load_queries(w, a, h, q0);
    for (int i = 0; i < n; i++) {
        const float * qi = w->qs + (int64_t) i * hd;
        float * si = w->s + (int64_t) i * nkp;
        float m = -INFINITY;
        for (int64_t j = 0; j < nk; j++) {
            const float * kt = w->kt + (j >> 4) * hd * 16 + (j & 15);
            float t = 0.0f;
            for (int64_t d = 0; d < hd; d++) t += qi[d] * kt[d * 16];
            si[j] = t;
            if (t > m) m = t;
        }
        float l = 0.0f;
        for (int64_t j = 0; j < nk; j++) {
            si[j] = expf(si[j] - m);
            l += si[j];
        }
        float * oi = w->o + (int64_t) i * hdv;
        for (int64_t d = 0; d < hd; d++) oi[d] = 0.0f;
        for (int64_t j = 0; j < nk; j++) {
            const float * vj = w->vp + j * hdv;
            for (int64_t d = 0; d < hd; d++) oi[d] += si[j] * vj[d];
        }
        float * out = attn_out_row(a, h, q0 + i);
        for (int64_t d = 0; d < hd; d++) out[d] = oi[d] / l;
    }
}

// ---------------------------------------------------------------------------------------------
// AVX-512F

#ifdef ATTN_HAVE_X86

// Scores of 8 queries (qs rows i0 …) against nt (1 or 2) tiles of 16 keys starting at tile jt.
__attribute__((target("avx512f"), always_inline))
static inline void attn_scores8(const attn_scratch * w, int64_t hd, int i0, int64_t jt, const int nt) {
    __m512 acc[8][2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        acc[i][0] = _mm512_setzero_ps();
        acc[i][1] = _mm512_setzero_ps();
    }
    const float * k0 = w->kt + jt * hd * 16;
    const float * k1 = k0 + hd * 16;
    const float * q = w->qs + (int64_t) i0 * hd;
    for (int64_t d = 0; d < hd; d++) {
        const __m512 kv0 = _mm512_load_ps(k0 + d * 16);
        const __m512 kv1 = nt > 1 ? _mm512_load_ps(k1 + d * 16) : kv0;
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            const __m512 b = _mm512_set1_ps(q[i * hd + d]);
            acc[i][0] = _mm512_fmadd_ps(b, kv0, acc[i][0]);
            if (nt > 1) acc[i][1] = _mm512_fmadd_ps(b, kv1, acc[i][1]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        float * s = w->s + (int64_t) (i0 + i) * w->nkp + jt * 16;
        _mm512_store_ps(s, acc[i][0]);
        if (nt > 1) _mm512_store_ps(s + 16, acc[i][1]);
    }
}

// o[i0 … i0+qt) += s[i0 … i0+qt)[j0 … j1) · vp[j0 … j1), nv vectors of 16 per value row.
__attribute__((target("avx512f"), always_inline))
static inline void attn_pv(const attn_scratch * w, int i0, int64_t j0, int64_t j1, const int qt, const int nv) {
    __m512 acc[4][8];
    const int64_t hdv = w->hdv, nkp = w->nkp;
#pragma GCC unroll 4
    for (int i = 0; i < qt; i++) {
#pragma GCC unroll 8
        for (int t = 0; t < nv; t++) acc[i][t] = _mm512_load_ps(w->o + (int64_t) (i0 + i) * hdv + 16 * t);
    }
    const float * s = w->s + (int64_t) i0 * nkp;
    for (int64_t j = j0; j < j1; j++) {
        const float * vj = w->vp + j * hdv;
        __m512 vv[8];
#pragma GCC unroll 8
        for (int t = 0; t < nv; t++) vv[t] = _mm512_load_ps(vj + 16 * t);
#pragma GCC unroll 4
        for (int i = 0; i < qt; i++) {
            const __m512 b = _mm512_set1_ps(s[i * nkp + j]);
#pragma GCC unroll 8
            for (int t = 0; t < nv; t++) acc[i][t] = _mm512_fmadd_ps(b, vv[t], acc[i][t]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < qt; i++) {
#pragma GCC unroll 8
        for (int t = 0; t < nv; t++) _mm512_store_ps(w->o + (int64_t) (i0 + i) * hdv + 16 * t, acc[i][t]);
    }
}

#define ATTN_PV_CASE(NV, QT)                                                  \
    case NV:                                                                  \
        for (int i0 = 0; i0 < n; i0 += QT) attn_pv(w, i0, j0, j1, QT, NV); \
        break;

__attribute__((target("avx512f")))
static void attn_item_avx512(attn_scratch * w, const attn_args * a, int64_t h, int64_t q0) {
    const int64_t hd = a->hd, nk = a->nk, nkp = w->nkp, hdv = w->hdv;
    const int64_t ntiles = nkp / 16;
    const int n = attn_load_queries(w, a, h, q0);

    // 1. Scores.
    int64_t jt = 0;
    for (; jt + 2 <= ntiles; jt += 2) {
        for (int i0 = 0; i0 < n; i0 += 8) attn_scores8(w, hd, i0, jt, 2);
    }
    if (jt < ntiles) {
        for (int i0 = 0; i0 < n; i0 += 8) attn_scores8(w, hd, i0, jt, 1);
    }

    // 2. Probabilities (unnormalized) and row sums; padding keys get 0.
    const int64_t full = nk & ~(int64_t) 15;
    const __mmask16 tail = (__mmask16) ((1u << (nk - full)) - 1u);
    for (int i = 0; i < n; i++) {
        float * s = w->s + (int64_t) i * nkp;
        __m512 mv = _mm512_set1_ps(-INFINITY);
        for (int64_t j = 0; j < full; j += 16) mv = _mm512_max_ps(mv, _mm512_load_ps(s + j));
        if (tail) mv = _mm512_mask_max_ps(mv, tail, mv, _mm512_load_ps(s + full));
        const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
        __m512 lv = _mm512_setzero_ps();
        for (int64_t j = 0; j < full; j += 16) {
            const __m512 e = idefics2_exp512(_mm512_sub_ps(_mm512_load_ps(s + j), m));
            _mm512_store_ps(s + j, e);
            lv = _mm512_add_ps(lv, e);
        }
        if (full < nkp) {
            const __m512 e = _mm512_maskz_mov_ps(tail, idefics2_exp512(_mm512_sub_ps(_mm512_load_ps(s + full), m)));
            _mm512_store_ps(s + full, e);
            lv = _mm512_add_ps(lv, e);
        }
        w->l[i] = _mm512_reduce_add_ps(lv);
    }

    // 3. Values, over blocks of keys.
    memset(w->o, 0, (size_t) ATTN_QB * (size_t) hdv * sizeof(float));
    for (int64_t j0 = 0; j0 < nk; j0 += ATTN_KB) {
        const int64_t j1 = j0 + ATTN_KB < nk ? j0 + ATTN_KB : nk;
        switch (hdv / 16) {
            ATTN_PV_CASE(1, 4)
            ATTN_PV_CASE(2, 4)
            ATTN_PV_CASE(3, 4)
            ATTN_PV_CASE(4, 4)
            ATTN_PV_CASE(5, 4)
            ATTN_PV_CASE(6, 4)
            ATTN_PV_CASE(7, 2)
            ATTN_PV_CASE(8, 2)
        }
    }
    const __mmask16 dtail = (__mmask16) ((1u << (hd & 15)) - 1u);
    for (int i = 0; i < n; i++) {
        const __m512 inv = _mm512_set1_ps(1.0f / w->l[i]);
        const float * o = w->o + (int64_t) i * hdv;
        float * out = attn_out_row(a, h, q0 + i);
        int64_t d = 0;
        for (; d + 16 <= hd; d += 16) _mm512_storeu_ps(out + d, _mm512_mul_ps(_mm512_load_ps(o + d), inv));
        if (d < hd) _mm512_mask_storeu_ps(out + d, dtail, _mm512_mul_ps(_mm512_load_ps(o + d), inv));
    }
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA

// Scores of nq queries (qs rows i0 …; nq is 4 or 6, a constant at each call) against the tile of 16 keys jt: 6
// queries give 12 accumulators, the most that leave registers for the two key vectors and the broadcast query value.
__attribute__((target("avx2,fma"), always_inline))
static inline void attn_scores_avx2(const attn_scratch * w, int64_t hd, int i0, int64_t jt, const int nq) {
    __m256 acc[6][2];
#pragma GCC unroll 6
    for (int i = 0; i < nq; i++) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
    }
    const float * k0 = w->kt + jt * hd * 16;
    const float * q = w->qs + (int64_t) i0 * hd;
    for (int64_t d = 0; d < hd; d++) {
        const __m256 kv0 = _mm256_load_ps(k0 + d * 16);
        const __m256 kv1 = _mm256_load_ps(k0 + d * 16 + 8);
#pragma GCC unroll 6
        for (int i = 0; i < nq; i++) {
            const __m256 b = _mm256_broadcast_ss(q + i * hd + d);
            acc[i][0] = _mm256_fmadd_ps(b, kv0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(b, kv1, acc[i][1]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < nq; i++) {
        float * s = w->s + (int64_t) (i0 + i) * w->nkp + jt * 16;
        _mm256_store_ps(s, acc[i][0]);
        _mm256_store_ps(s + 8, acc[i][1]);
    }
}

// o[i0 … i0+4) += s[i0 … i0+4)[j0 … j1) · vp[j0 … j1), value columns 8·v0 … 8·(v0+nv), nv ≤ 3.
__attribute__((target("avx2,fma"), always_inline))
static inline void attn_pv4_avx2(const attn_scratch * w, int i0, int64_t j0, int64_t j1, int v0, const int nv) {
    __m256 acc[4][3];
    const int64_t hdv = w->hdv, nkp = w->nkp;
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
#pragma GCC unroll 3
        for (int t = 0; t < nv; t++) acc[i][t] = _mm256_load_ps(w->o + (int64_t) (i0 + i) * hdv + 8 * (v0 + t));
    }
    const float * s = w->s + (int64_t) i0 * nkp;
    for (int64_t j = j0; j < j1; j++) {
        const float * vj = w->vp + j * hdv + 8 * v0;
        __m256 vv[3];
#pragma GCC unroll 3
        for (int t = 0; t < nv; t++) vv[t] = _mm256_load_ps(vj + 8 * t);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const __m256 b = _mm256_broadcast_ss(s + i * nkp + j);
#pragma GCC unroll 3
            for (int t = 0; t < nv; t++) acc[i][t] = _mm256_fmadd_ps(b, vv[t], acc[i][t]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
#pragma GCC unroll 3
        for (int t = 0; t < nv; t++) _mm256_store_ps(w->o + (int64_t) (i0 + i) * hdv + 8 * (v0 + t), acc[i][t]);
    }
}

__attribute__((target("avx2,fma")))
static void attn_item_avx2(attn_scratch * w, const attn_args * a, int64_t h, int64_t q0) {
    const int64_t hd = a->hd, nk = a->nk, nkp = w->nkp, hdv = w->hdv;
    const int64_t ntiles = nkp / 16;
    const int n = attn_load_queries(w, a, h, q0);

    // 1. Scores, 6 queries at a time while 6 rows fit in the block and more than 4 are left, else 4 (rows up to
    //    n rounded up to 4 or 6; the rows past n have zero queries).
    for (int64_t jt = 0; jt < ntiles; jt++) {
        for (int i0 = 0; i0 < n;) {
            if (i0 + 6 <= ATTN_QB && n - i0 > 4) {
                attn_scores_avx2(w, hd, i0, jt, 6);
                i0 += 6;
            } else {
                attn_scores_avx2(w, hd, i0, jt, 4);
                i0 += 4;
            }
        }
    }

    // 2. Probabilities (unnormalized) and row sums; padding keys get 0.
    const int64_t full = nk & ~(int64_t) 7;
    for (int i = 0; i < n; i++) {
        float * s = w->s + (int64_t) i * nkp;
        __m256 mv = _mm256_set1_ps(-INFINITY);
        for (int64_t j = 0; j < full; j += 8) mv = _mm256_max_ps(mv, _mm256_load_ps(s + j));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
        float mx = _mm_cvtss_f32(m4);
        for (int64_t j = full; j < nk; j++) mx = s[j] > mx ? s[j] : mx;
        const __m256 m = _mm256_set1_ps(mx);
        __m256 lv = _mm256_setzero_ps();
        for (int64_t j = 0; j < full; j += 8) {
            const __m256 e = idefics2_exp256(_mm256_sub_ps(_mm256_load_ps(s + j), m));
            _mm256_store_ps(s + j, e);
            lv = _mm256_add_ps(lv, e);
        }
        if (full < nkp) {
            // The last 8 columns: keys past nk are padding.
            const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32((int) full), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int) nk), idx));
            const __m256 e = _mm256_and_ps(keep, idefics2_exp256(_mm256_sub_ps(_mm256_load_ps(s + full), m)));
            _mm256_store_ps(s + full, e);
            lv = _mm256_add_ps(lv, e);
            for (int64_t j = full + 8; j < nkp; j++) s[j] = 0.0f;
        }
        __m128 l4 = _mm_add_ps(_mm256_castps256_ps128(lv), _mm256_extractf128_ps(lv, 1));
        l4 = _mm_add_ps(l4, _mm_movehl_ps(l4, l4));
        l4 = _mm_add_ss(l4, _mm_shuffle_ps(l4, l4, 1));
        w->l[i] = _mm_cvtss_f32(l4);
    }

    // 3. Values, over blocks of keys, 4 queries and up to 3 vectors of 8 value columns at a time (the head size
    //    rounded up to 8; rows up to n rounded up to 4, whose scores step 1 wrote or the scratch's zeros).
    memset(w->o, 0, (size_t) ATTN_QB * (size_t) hdv * sizeof(float));
    const int nvt = (int) ((hd + 7) / 8);
    for (int64_t j0 = 0; j0 < nk; j0 += ATTN_KB) {
        const int64_t j1 = j0 + ATTN_KB < nk ? j0 + ATTN_KB : nk;
        for (int i0 = 0; i0 < n; i0 += 4) {
            for (int v0 = 0; v0 < nvt; v0 += 3) {
                switch (nvt - v0 < 3 ? nvt - v0 : 3) {
                case 1: attn_pv4_avx2(w, i0, j0, j1, v0, 1); break;
                case 2: attn_pv4_avx2(w, i0, j0, j1, v0, 2); break;
                case 3: attn_pv4_avx2(w, i0, j0, j1, v0, 3); break;
                }
            }
        }
    }
    for (int i = 0; i < n; i++) {
        const __m256 inv = _mm256_set1_ps(1.0f / w->l[i]);
        const float * o = w->o + (int64_t) i * hdv;
        float * out = attn_out_row(a, h, q0 + i);
        int64_t d = 0;
        for (; d + 8 <= hd; d += 8) _mm256_storeu_ps(out + d, _mm256_mul_ps(_mm256_load_ps(o + d), inv));
        for (; d < hd; d++) out[d] = o[d] * (1.0f / w->l[i]);
    }
}

#endif // ATTN_HAVE_X86

// ---------------------------------------------------------------------------------------------
// NEON (AArch64)

#ifdef ATTN_HAVE_NEON

// Scores of 4 queries (qs rows i0 …) against the tile of 16 keys jt.
static inline void attn_scores4_neon(const attn_scratch * w, int64_t hd, int i0, int64_t jt) {
    float32x4_t acc[4][4];
    for (int i = 0; i < 4; i++) {
        for (int t = 0; t < 4; t++) acc[i][t] = vdupq_n_f32(0.0f);
    }
    const float * k0 = w->kt + jt * hd * 16;
    const float * q = w->qs + (int64_t) i0 * hd;
    for (int64_t d = 0; d < hd; d++) {
        float32x4_t kv[4];
        for (int t = 0; t < 4; t++) kv[t] = vld1q_f32(k0 + d * 16 + 4 * t);
        for (int i = 0; i < 4; i++) {
            const float32x4_t b = vdupq_n_f32(q[i * hd + d]);
            for (int t = 0; t < 4; t++) acc[i][t] = vfmaq_f32(acc[i][t], b, kv[t]);
        }
    }
    for (int i = 0; i < 4; i++) {
        float * s = w->s + (int64_t) (i0 + i) * w->nkp + jt * 16;
        for (int t = 0; t < 4; t++) vst1q_f32(s + 4 * t, acc[i][t]);
    }
}

// o[i0 … i0+2) += s[i0 … i0+2)[j0 … j1) · vp[j0 … j1), value columns 4·v0 … 4·(v0+nv).
static inline __attribute__((always_inline)) void attn_pv_neon(const attn_scratch * w, int i0, int64_t j0, int64_t j1, int v0,
                                                               const int nv) {
    float32x4_t acc[2][8];
    const int64_t hdv = w->hdv, nkp = w->nkp;
    for (int i = 0; i < 2; i++) {
        for (int t = 0; t < nv; t++) acc[i][t] = vld1q_f32(w->o + (int64_t) (i0 + i) * hdv + 4 * (v0 + t));
    }
    const float * s = w->s + (int64_t) i0 * nkp;
    for (int64_t j = j0; j < j1; j++) {
        const float * vj = w->vp + j * hdv + 4 * v0;
        const float32x4_t b0 = vdupq_n_f32(s[j]), b1 = vdupq_n_f32(s[nkp + j]);
        for (int t = 0; t < nv; t++) {
            const float32x4_t vv = vld1q_f32(vj + 4 * t);
            acc[0][t] = vfmaq_f32(acc[0][t], b0, vv);
            acc[1][t] = vfmaq_f32(acc[1][t], b1, vv);
        }
    }
    for (int i = 0; i < 2; i++) {
        for (int t = 0; t < nv; t++) vst1q_f32(w->o + (int64_t) (i0 + i) * hdv + 4 * (v0 + t), acc[i][t]);
    }
}

static void attn_item_neon(attn_scratch * w, const attn_args * a, int64_t h, int64_t q0) {
    const int64_t hd = a->hd, nk = a->nk, nkp = w->nkp, hdv = w->hdv;
    const int64_t ntiles = nkp / 16;
    const int n = attn_load_queries(w, a, h, q0);

    // 1. Scores (rows up to n rounded up to 4; the rows past n have zero queries).
    for (int64_t jt = 0; jt < ntiles; jt++) {
        for (int i0 = 0; i0 < n; i0 += 4) attn_scores4_neon(w, hd, i0, jt);
    }

    // 2. Probabilities (unnormalized) and row sums; padding keys get 0.
    const int64_t full = nk & ~(int64_t) 3;
    for (int i = 0; i < n; i++) {
        float * s = w->s + (int64_t) i * nkp;
        float32x4_t mv = vdupq_n_f32(-INFINITY);
        for (int64_t j = 0; j < full; j += 4) mv = vmaxq_f32(mv, vld1q_f32(s + j));
        float mx = vmaxvq_f32(mv);
        for (int64_t j = full; j < nk; j++) mx = s[j] > mx ? s[j] : mx;
        const float32x4_t m = vdupq_n_f32(mx);
        float32x4_t lv = vdupq_n_f32(0.0f);
        for (int64_t j = 0; j < full; j += 4) {
            const float32x4_t e = idefics2_exp128(vsubq_f32(vld1q_f32(s + j), m));
            vst1q_f32(s + j, e);
            lv = vaddq_f32(lv, e);
        }
        if (full < nkp) {
            // The last 4 columns: keys past nk are padding.
            const int32_t lanes[4] = { 0, 1, 2, 3 };
            const uint32x4_t keep = vcltq_s32(vaddq_s32(vdupq_n_s32((int32_t) full), vld1q_s32(lanes)), vdupq_n_s32((int32_t) nk));
            const float32x4_t e = idefics2_exp128(vsubq_f32(vld1q_f32(s + full), m));
            const float32x4_t ek = vreinterpretq_f32_u32(vandq_u32(keep, vreinterpretq_u32_f32(e)));
            vst1q_f32(s + full, ek);
            lv = vaddq_f32(lv, ek);
            for (int64_t j = full + 4; j < nkp; j++) s[j] = 0.0f;
        }
        w->l[i] = vaddvq_f32(lv);
    }

    // 3. Values, over blocks of keys, 2 queries and up to 8 vectors of 4 value columns at a time (hdv is a
    // multiple of 16, so the column count is a multiple of 4 vectors).
    memset(w->o, 0, (size_t) ATTN_QB * (size_t) hdv * sizeof(float));
    const int nvt = (int) (hdv / 4);
    for (int64_t j0 = 0; j0 < nk; j0 += ATTN_KB) {
        const int64_t j1 = j0 + ATTN_KB < nk ? j0 + ATTN_KB : nk;
        for (int i0 = 0; i0 < n; i0 += 2) {
            for (int v0 = 0; v0 < nvt; v0 += 8) {
                if (nvt - v0 >= 8) {
                    attn_pv_neon(w, i0, j0, j1, v0, 8);
                } else {
                    attn_pv_neon(w, i0, j0, j1, v0, 4);
                }
            }
        }
    }
    for (int i = 0; i < n; i++) {
        const float32x4_t inv = vdupq_n_f32(1.0f / w->l[i]);
        const float * o = w->o + (int64_t) i * hdv;
        float * out = attn_out_row(a, h, q0 + i);
        int64_t d = 0;
        for (; d + 4 <= hd; d += 4) vst1q_f32(out + d, vmulq_f32(vld1q_f32(o + d), inv));
        for (; d < hd; d++) out[d] = o[d] * (1.0f / w->l[i]);
    }
}

#endif // ATTN_HAVE_NEON

// ---------------------------------------------------------------------------------------------
// Dispatch

static int attn_detect(void) {
#if defined(ATTN_HAVE_X86)
    __builtin_cpu_init();
    if (idefics2_isa_allows(IDEFICS2_ISA_AVX512) && __builtin_cpu_supports("avx512f")) return IDEFICS2_ATTN_AVX512;
    if (idefics2_isa_allows(IDEFICS2_ISA_AVX2) && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c")) {
        return IDEFICS2_ATTN_AVX2;
    }
#endif
#if defined(ATTN_HAVE_NEON)
    return IDEFICS2_ATTN_NEON;
#endif
    return IDEFICS2_ATTN_SCALAR;
}

static int attn_best = -1;    // detected once; racing first calls store the same value
static int attn_current = -1; // -1: use attn_best

int idefics2_attn_best_isa(void) {
    int b = __atomic_load_n(&attn_best, __ATOMIC_ACQUIRE);
    if (b < 0) {
        b = attn_detect();
        __atomic_store_n(&attn_best, b, __ATOMIC_RELEASE);
    }
    return b;
}

int idefics2_attn_isa(void) {
    const int c = __atomic_load_n(&attn_current, __ATOMIC_ACQUIRE);
    return c >= 0 ? c : idefics2_attn_best_isa();
}

int idefics2_attn_set_isa(int isa) {
    const int best = idefics2_attn_best_isa();
    // A CPU with AVX-512F has AVX2 and FMA too (every one made), so the AVX2 path runs wherever the best is a vector one.
    if (!(isa == -1 || isa == IDEFICS2_ATTN_SCALAR || (isa == IDEFICS2_ATTN_AVX512 && best == IDEFICS2_ATTN_AVX512) ||
          (isa == IDEFICS2_ATTN_AVX2 && (best == IDEFICS2_ATTN_AVX2 || best == IDEFICS2_ATTN_AVX512)) ||
          (isa == IDEFICS2_ATTN_NEON && best == IDEFICS2_ATTN_NEON))) {
        return -1;
    }
    __atomic_store_n(&attn_current, isa, __ATOMIC_RELEASE);
    return 0;
}

// Custom op body: threads take contiguous ranges of (head, query block) items, so each packs few
// key heads.
static void attn_custom_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    const struct ggml_tensor * q = dst->src[0];
    const struct ggml_tensor * k = dst->src[1];
    const struct ggml_tensor * v = dst->src[2];
    attn_args a;
    a.q = (const char *) q->data;
    a.k = (const char *) k->data;
    a.v = (const char *) v->data;
    a.qnb1 = q->nb[1];
    a.qnb2 = q->nb[2];
    a.knb1 = k->nb[1];
    a.knb2 = k->nb[2];
    a.vnb1 = v->nb[1];
    a.vnb2 = v->nb[2];
    a.dst = (char *) dst->data;
    a.dnb1 = dst->nb[1];
    a.hd = q->ne[0];
    a.heads = q->ne[1];
    a.nq = q->ne[2];
    a.kvh = k->ne[1];
    a.nk = k->ne[2];
    uint32_t bits = (uint32_t) (uintptr_t) userdata;
    memcpy(&a.scale, &bits, sizeof a.scale);

    const int64_t blocks = (a.nq + ATTN_QB - 1) / ATTN_QB;
    const int64_t items = a.heads * blocks;
    const int64_t i0 = items * ith / nth, i1 = items * (ith + 1) / nth;
    if (i0 >= i1) return;
    const int isa = idefics2_attn_isa();
    const int64_t group = a.heads / a.kvh;
    attn_scratch w;
    attn_scratch_init(&w, &a);
    for (int64_t it = i0; it < i1; it++) {
        const int64_t h = it / blocks, q0 = (it % blocks) * ATTN_QB;
        attn_pack(&w, &a, h / group);
#ifdef ATTN_HAVE_X86
        if (isa == IDEFICS2_ATTN_AVX512) {
            attn_item_avx512(&w, &a, h, q0);
            continue;
        }
        if (isa == IDEFICS2_ATTN_AVX2) {
            attn_item_avx2(&w, &a, h, q0);
            continue;
        }
#endif
#ifdef ATTN_HAVE_NEON
        if (isa == IDEFICS2_ATTN_NEON) {
            attn_item_neon(&w, &a, h, q0);
            continue;
        }
#endif
        attn_item_scalar(&w, &a, h, q0);
    }
    attn_scratch_free(&w);
}

struct ggml_tensor * idefics2_attn(struct ggml_context * ctx, struct ggml_tensor * q,
                                   struct ggml_tensor * k, struct ggml_tensor * v, float scale) {
    struct ggml_tensor * args[3] = { q, k, v };
    uint32_t bits;
    memcpy(&bits, &scale, sizeof bits);
    return ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0] * q->ne[1], q->ne[2], 1, 1, args, 3,
                          attn_custom_op, GGML_N_TASKS_MAX, (void *) (uintptr_t) bits);
}

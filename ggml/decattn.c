// Decode-step attention over a KV cache (decattn.h): a scalar path, an AVX2 (with FMA and F16C) path, an AVX-512F
// path and, on AArch64, a NEON path, chosen with the fused attention's setting (idefics2_attn_isa, attn.h). The
// AVX2 and NEON paths take the same steps 8 and 4 keys and dimensions at a time.
//
// One work item is (token t, key head g) with the G = heads / kv_heads query heads that share g. Keys are taken in
// blocks of DECATTN_KB: the G scores of each key (one pass over its row), then the block's maximum per head, the
// rescaling of the running sums (online softmax), exp, and the value product o_h[d] += Σ_j p_h[j]·vt[d][j], one
// pass over each value row for all G heads. Fully masked blocks are skipped.

#include "decattn.h"
#include "attn.h"
#include "vexp.h"

#include <math.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define DECATTN_HAVE_X86 1
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#define DECATTN_HAVE_NEON 1
#include <arm_neon.h>
#endif

#define DECATTN_KB 256 // keys per block

typedef struct {
    const char * q;
    const char * k;
    const char * vt;
    const char * mask;
    char * dst;
    size_t qnb1, qnb2, knb1, knb2, vnb1, vnb2, mnb1, dnb1;
    int64_t hd, heads, kvh, n, nk;
    int f16;
    float scale;
} decattn_args;

static inline float decattn_load1(const char * p, int64_t i, int f16) {
    return f16 ? ggml_fp16_to_fp32(((const ggml_fp16_t *) p)[i]) : ((const float *) p)[i];
}

static inline float decattn_mask(const decattn_args * a, int64_t t, int64_t j) {
    return a->mask ? ((const float *) (a->mask + t * a->mnb1))[j] : 0.0f;
}

// One item, scalar. s: [G][DECATTN_KB] scratch.
static void decattn_item_scalar(const decattn_args * a, int64_t t, int64_t g, float * s) {
    const int64_t G = a->heads / a->kvh, hd = a->hd;
    float m[IDEFICS2_DECATTN_MAX_GROUP], l[IDEFICS2_DECATTN_MAX_GROUP];
    float o[IDEFICS2_DECATTN_MAX_GROUP][IDEFICS2_DECATTN_MAX_HEAD];
    for (int64_t h = 0; h < G; h++) {
        m[h] = -INFINITY;
        l[h] = 0.0f;
        memset(o[h], 0, sizeof(float) * hd);
    }
    for (int64_t j0 = 0; j0 < a->nk; j0 += DECATTN_KB) {
        const int64_t nb = a->nk - j0 < DECATTN_KB ? a->nk - j0 : DECATTN_KB;
        for (int64_t h = 0; h < G; h++) {
            const float * qh = (const float *) (a->q + t * a->qnb2 + (g * G + h) * a->qnb1);
            float bm = -INFINITY;
            for (int64_t j = 0; j < nb; j++) {
                const float mk = decattn_mask(a, t, j0 + j);
                float v = -INFINITY;
                if (mk != -INFINITY) {
                    const char * kr = a->k + g * a->knb1 + (j0 + j) * a->knb2;
                    float dot = 0.0f;
                    for (int64_t d = 0; d < hd; d++) dot += qh[d] * decattn_load1(kr, d, a->f16);
                    v = dot * a->scale + mk;
                }
                s[h * DECATTN_KB + j] = v;
                bm = v > bm ? v : bm;
            }
            if (bm == -INFINITY) {
                for (int64_t j = 0; j < nb; j++) s[h * DECATTN_KB + j] = 0.0f;
                continue;
            }
            const float mn = bm > m[h] ? bm : m[h];
            const float c = expf(m[h] - mn); // 0 while nothing was seen (m = −Inf)
            l[h] *= c;
            for (int64_t d = 0; d < hd; d++) o[h][d] *= c;
            m[h] = mn;
            for (int64_t j = 0; j < nb; j++) {
                const float p = expf(s[h * DECATTN_KB + j] - mn);
                s[h * DECATTN_KB + j] = p;
                l[h] += p;
            }
        }
        for (int64_t d = 0; d < hd; d++) {
            const char * vr = a->vt + g * a->vnb2 + d * a->vnb1;
            for (int64_t h = 0; h < G; h++) {
                float acc = 0.0f;
                for (int64_t j = 0; j < nb; j++) acc += s[h * DECATTN_KB + j] * decattn_load1(vr, j0 + j, a->f16);
                o[h][d] += acc;
            }
        }
    }
    for (int64_t h = 0; h < G; h++) {
        float * out = (float *) (a->dst + t * a->dnb1) + (g * G + h) * hd;
        const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
        for (int64_t d = 0; d < hd; d++) out[d] = o[h][d] * inv;
    }
}

#ifdef DECATTN_HAVE_X86

__attribute__((target("avx512f,f16c"), always_inline))
static inline __m512 decattn_load16(const char * p, int64_t i, const int f16) {
    if (f16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) ((const ggml_fp16_t *) p + i)));
    return _mm512_loadu_ps((const float *) p + i);
}

// The first cnt (< 16) values from i, zero-filled to 16.
__attribute__((target("avx512f,f16c"), always_inline))
static inline __m512 decattn_load16_part(const char * p, int64_t i, int64_t cnt, const int f16) {
    if (f16) {
        ggml_fp16_t tmp[16] = { 0 };
        memcpy(tmp, (const ggml_fp16_t *) p + i, sizeof(ggml_fp16_t) * cnt);
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) tmp));
    }
    return _mm512_maskz_loadu_ps((__mmask16) ((1u << cnt) - 1), (const float *) p + i);
}

// Lane i of the result is the sum of v[i]'s 16 lanes: a tree of unpacks and 128-bit shuffles instead of 16
// horizontal reductions.
__attribute__((target("avx512f"), always_inline))
static inline __m512 decattn_hsum16(const __m512 * v) {
    __m512 x[8], z[4];
    for (int i = 0; i < 8; i++) {
        // per 128-bit lane: (a0+a2, b0+b2, a1+a3, b1+b3) for a = v[2i], b = v[2i+1]
        x[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    }
    for (int i = 0; i < 4; i++) {
        // per 128-bit lane: that lane's sums of v[4i], …, v[4i+3]
        const __m512d a = _mm512_castps_pd(x[2 * i]), b = _mm512_castps_pd(x[2 * i + 1]);
        z[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    const __m512 r0 = _mm512_add_ps(_mm512_shuffle_f32x4(z[0], z[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                    _mm512_shuffle_f32x4(z[0], z[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512 r1 = _mm512_add_ps(_mm512_shuffle_f32x4(z[2], z[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                    _mm512_shuffle_f32x4(z[2], z[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(r0, r1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(r0, r1, _MM_SHUFFLE(3, 1, 3, 1)));
}

// Dot products of the query qp (nv vectors, zero-padded) with the keys at kr0 + i·knb, i < cnt; lane i of the
// result (0 for i ≥ cnt).
__attribute__((target("avx512f,f16c"), always_inline))
static inline __m512 decattn_scores16(const float * qp, int64_t nv, int64_t hd, const char * kr0, size_t knb, const int cnt,
                                      const int f16) {
    const int64_t hd16 = hd & ~(int64_t) 15;
    __m512 acc[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t v = 0; v < nv; v++) {
        const __m512 qv = _mm512_load_ps(qp + 16 * v);
        if (16 * v < hd16) {
#pragma GCC unroll 16
            for (int i = 0; i < cnt; i++) acc[i] = _mm512_fmadd_ps(qv, decattn_load16(kr0 + i * knb, 16 * v, f16), acc[i]);
        } else {
            for (int i = 0; i < cnt; i++) acc[i] = _mm512_fmadd_ps(qv, decattn_load16_part(kr0 + i * knb, 16 * v, hd - hd16, f16), acc[i]);
        }
    }
    return decattn_hsum16(acc);
}

// Σ_j p[j]·row_i[j0 + j] over j < nb for the value rows at vr0 + i·vnb, i < cnt (p zero-padded to a multiple of
// 16); lane i of the result.
__attribute__((target("avx512f,f16c"), always_inline))
static inline __m512 decattn_values16(const float * p, const char * vr0, size_t vnb, int64_t j0, int64_t nb, const int cnt,
                                      const int f16) {
    const int64_t nbf = nb & ~(int64_t) 15;
    __m512 acc[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t j = 0; j < nbf; j += 16) {
        const __m512 pv = _mm512_loadu_ps(p + j);
#pragma GCC unroll 16
        for (int i = 0; i < cnt; i++) acc[i] = _mm512_fmadd_ps(pv, decattn_load16(vr0 + i * vnb, j0 + j, f16), acc[i]);
    }
    if (nbf < nb) {
        const __m512 pv = _mm512_loadu_ps(p + nbf);
        for (int i = 0; i < cnt; i++) acc[i] = _mm512_fmadd_ps(pv, decattn_load16_part(vr0 + i * vnb, j0 + nbf, nb - nbf, f16), acc[i]);
    }
    return decattn_hsum16(acc);
}

__attribute__((target("avx512f,f16c"), always_inline))
static inline void decattn_item_avx512_t(const decattn_args * a, int64_t t, int64_t g, float * s, const int f16) {
    const int64_t G = a->heads / a->kvh, hd = a->hd;
    const int64_t nv = (hd + 15) / 16;
    float m[IDEFICS2_DECATTN_MAX_GROUP], l[IDEFICS2_DECATTN_MAX_GROUP];
    // o[h]: head h's output accumulator and qp[h] its query, hd floats zero-padded to a multiple of 16.
    float o[IDEFICS2_DECATTN_MAX_GROUP][IDEFICS2_DECATTN_MAX_HEAD] __attribute__((aligned(64)));
    float qp[IDEFICS2_DECATTN_MAX_GROUP][IDEFICS2_DECATTN_MAX_HEAD] __attribute__((aligned(64)));
    for (int64_t h = 0; h < G; h++) {
        m[h] = -INFINITY;
        l[h] = 0.0f;
        memset(o[h], 0, sizeof(float) * 16 * nv);
        memset(qp[h], 0, sizeof(float) * 16 * nv);
        memcpy(qp[h], a->q + t * a->qnb2 + (g * G + h) * a->qnb1, sizeof(float) * hd);
    }
    const float * mrow = a->mask ? (const float *) (a->mask + t * a->mnb1) : NULL;
    const __m512 scale = _mm512_set1_ps(a->scale), ninf = _mm512_set1_ps(-INFINITY);
    for (int64_t j0 = 0; j0 < a->nk; j0 += DECATTN_KB) {
        const int64_t nb = a->nk - j0 < DECATTN_KB ? a->nk - j0 : DECATTN_KB;
        const int64_t nb16 = (nb + 15) & ~(int64_t) 15;
        int any = !mrow;
        for (int64_t j = 0; j < nb && !any; j++) any = mrow[j0 + j] != -INFINITY;
        if (!any) continue;
        // Scores, 16 keys at a time (masked and padded keys: −Inf).
        for (int64_t jb = 0; jb < nb16; jb += 16) {
            const int64_t cnt = nb - jb < 16 ? nb - jb : 16;
            float mk[16];
            for (int64_t i = 0; i < 16; i++) mk[i] = i >= cnt ? -INFINITY : mrow ? mrow[j0 + jb + i] : 0.0f;
            const __m512 mkv = _mm512_loadu_ps(mk);
            const char * kr0 = a->k + g * a->knb1 + (j0 + jb) * a->knb2;
            for (int64_t h = 0; h < G; h++) {
                const __m512 sc = cnt == 16 ? decattn_scores16(qp[h], nv, hd, kr0, a->knb2, 16, f16)
                                            : decattn_scores16(qp[h], nv, hd, kr0, a->knb2, (int) cnt, f16);
                _mm512_storeu_ps(s + h * DECATTN_KB + jb, _mm512_fmadd_ps(sc, scale, mkv));
            }
        }
        // Online softmax per head; the block's probabilities replace its scores (masked and padded keys: 0).
        for (int64_t h = 0; h < G; h++) {
            float * sh = s + h * DECATTN_KB;
            __m512 bmv = ninf;
            for (int64_t j = 0; j < nb16; j += 16) bmv = _mm512_max_ps(bmv, _mm512_loadu_ps(sh + j));
            const float bm = _mm512_reduce_max_ps(bmv);
            if (bm == -INFINITY) { // no key of the block visible to this row
                memset(sh, 0, sizeof(float) * nb16);
                continue;
            }
            const float mn = bm > m[h] ? bm : m[h];
            const float c = expf(m[h] - mn); // 0 while nothing was seen (m = −Inf)
            if (c != 1.0f) {
                const __m512 cv = _mm512_set1_ps(c);
                for (int64_t v = 0; v < nv; v++) _mm512_store_ps(o[h] + 16 * v, _mm512_mul_ps(_mm512_load_ps(o[h] + 16 * v), cv));
                l[h] *= c;
            }
            m[h] = mn;
            const __m512 mv = _mm512_set1_ps(mn);
            __m512 lv = _mm512_setzero_ps();
            for (int64_t j = 0; j < nb16; j += 16) {
                const __m512 x = _mm512_loadu_ps(sh + j);
                // idefics2_exp512 clamps −Inf to a tiny value: masked keys get exactly 0.
                const __m512 p = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, ninf, _CMP_NEQ_OQ), idefics2_exp512(_mm512_sub_ps(x, mv)));
                _mm512_storeu_ps(sh + j, p);
                lv = _mm512_add_ps(lv, p);
            }
            l[h] += _mm512_reduce_add_ps(lv);
        }
        // Values, 16 dimensions at a time: 16 rows of vt against each head's probabilities.
        for (int64_t d0 = 0; d0 < hd; d0 += 16) {
            const int64_t cnt = hd - d0 < 16 ? hd - d0 : 16;
            const char * vr0 = a->vt + g * a->vnb2 + d0 * a->vnb1;
            for (int64_t h = 0; h < G; h++) {
                const float * ph = s + h * DECATTN_KB;
                const __m512 x = cnt == 16 ? decattn_values16(ph, vr0, a->vnb1, j0, nb, 16, f16)
                                           : decattn_values16(ph, vr0, a->vnb1, j0, nb, (int) cnt, f16);
                _mm512_store_ps(o[h] + d0, _mm512_add_ps(_mm512_load_ps(o[h] + d0), x));
            }
        }
    }
    for (int64_t h = 0; h < G; h++) {
        float * out = (float *) (a->dst + t * a->dnb1) + (g * G + h) * hd;
        const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
        for (int64_t d = 0; d < hd; d++) out[d] = o[h][d] * inv;
    }
}

__attribute__((target("avx512f,f16c")))
static void decattn_item_avx512(const decattn_args * a, int64_t t, int64_t g, float * s) {
    if (a->f16) {
        decattn_item_avx512_t(a, t, g, s, 1);
    } else {
        decattn_item_avx512_t(a, t, g, s, 0);
    }
}

__attribute__((target("avx2,fma,f16c"), always_inline))
static inline __m256 decattn_load8(const char * p, int64_t i, const int f16) {
    if (f16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) ((const ggml_fp16_t *) p + i)));
    return _mm256_loadu_ps((const float *) p + i);
}

// The first cnt (< 8) values from i, zero-filled to 8.
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline __m256 decattn_load8_part(const char * p, int64_t i, int64_t cnt, const int f16) {
    if (f16) {
        ggml_fp16_t tmp[8] = { 0 };
        memcpy(tmp, (const ggml_fp16_t *) p + i, sizeof(ggml_fp16_t) * cnt);
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) tmp));
    }
    float tmp[8] = { 0 };
    memcpy(tmp, (const float *) p + i, sizeof(float) * cnt);
    return _mm256_loadu_ps(tmp);
}

// Lane i of the result is the sum of v[i]'s 8 lanes.
__attribute__((target("avx2,fma"), always_inline))
static inline __m256 decattn_hsum8(const __m256 * v) {
    const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// decattn_scores16 for 8 keys (qp zero-padded to a multiple of 8).
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline __m256 decattn_scores8(const float * qp, int64_t nv, int64_t hd, const char * kr0, size_t knb, const int cnt,
                                     const int f16) {
    const int64_t hd8 = hd & ~(int64_t) 7;
    __m256 acc[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t v = 0; v < nv; v++) {
        const __m256 qv = _mm256_load_ps(qp + 8 * v);
        if (8 * v < hd8) {
#pragma GCC unroll 8
            for (int i = 0; i < cnt; i++) acc[i] = _mm256_fmadd_ps(qv, decattn_load8(kr0 + i * knb, 8 * v, f16), acc[i]);
        } else {
            for (int i = 0; i < cnt; i++) acc[i] = _mm256_fmadd_ps(qv, decattn_load8_part(kr0 + i * knb, 8 * v, hd - hd8, f16), acc[i]);
        }
    }
    return decattn_hsum8(acc);
}

// decattn_values16 for 8 value rows (p zero-padded to a multiple of 8).
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline __m256 decattn_values8(const float * p, const char * vr0, size_t vnb, int64_t j0, int64_t nb, const int cnt,
                                     const int f16) {
    const int64_t nbf = nb & ~(int64_t) 7;
    __m256 acc[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t j = 0; j < nbf; j += 8) {
        const __m256 pv = _mm256_loadu_ps(p + j);
#pragma GCC unroll 8
        for (int i = 0; i < cnt; i++) acc[i] = _mm256_fmadd_ps(pv, decattn_load8(vr0 + i * vnb, j0 + j, f16), acc[i]);
    }
    if (nbf < nb) {
        const __m256 pv = _mm256_loadu_ps(p + nbf);
        for (int i = 0; i < cnt; i++) acc[i] = _mm256_fmadd_ps(pv, decattn_load8_part(vr0 + i * vnb, j0 + nbf, nb - nbf, f16), acc[i]);
    }
    return decattn_hsum8(acc);
}

__attribute__((target("avx2,fma"), always_inline))
static inline float decattn_hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

__attribute__((target("avx2,fma"), always_inline))
static inline float decattn_hadd8(__m256 v) {
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    m = _mm_add_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void decattn_item_avx2_t(const decattn_args * a, int64_t t, int64_t g, float * s, const int f16) {
    const int64_t G = a->heads / a->kvh, hd = a->hd;
    const int64_t nv = (hd + 7) / 8;
    float m[IDEFICS2_DECATTN_MAX_GROUP], l[IDEFICS2_DECATTN_MAX_GROUP];
    // o[h]: head h's output accumulator and qp[h] its query, hd floats zero-padded to a multiple of 8.
    float o[IDEFICS2_DECATTN_MAX_GROUP][IDEFICS2_DECATTN_MAX_HEAD] __attribute__((aligned(32)));
    float qp[IDEFICS2_DECATTN_MAX_GROUP][IDEFICS2_DECATTN_MAX_HEAD] __attribute__((aligned(32)));
    for (int64_t h = 0; h < G; h++) {
        m[h] = -INFINITY;
        l[h] = 0.0f;
        memset(o[h], 0, sizeof(float) * 8 * nv);
        memset(qp[h], 0, sizeof(float) * 8 * nv);
        memcpy(qp[h], a->q + t * a->qnb2 + (g * G + h) * a->qnb1, sizeof(float) * hd);
    }
    const float * mrow = a->mask ? (const float *) (a->mask + t * a->mnb1) : NULL;
    const __m256 scale = _mm256_set1_ps(a->scale), ninf = _mm256_set1_ps(-INFINITY);
    for (int64_t j0 = 0; j0 < a->nk; j0 += DECATTN_KB) {
        const int64_t nb = a->nk - j0 < DECATTN_KB ? a->nk - j0 : DECATTN_KB;
        const int64_t nb8 = (nb + 7) & ~(int64_t) 7;
        int any = !mrow;
        for (int64_t j = 0; j < nb && !any; j++) any = mrow[j0 + j] != -INFINITY;
        if (!any) continue;
        // Scores, 8 keys at a time (masked and padded keys: −Inf).
        for (int64_t jb = 0; jb < nb8; jb += 8) {
            const int64_t cnt = nb - jb < 8 ? nb - jb : 8;
            float mk[8];
            for (int64_t i = 0; i < 8; i++) mk[i] = i >= cnt ? -INFINITY : mrow ? mrow[j0 + jb + i] : 0.0f;
            const __m256 mkv = _mm256_loadu_ps(mk);
            const char * kr0 = a->k + g * a->knb1 + (j0 + jb) * a->knb2;
            for (int64_t h = 0; h < G; h++) {
                const __m256 sc = cnt == 8 ? decattn_scores8(qp[h], nv, hd, kr0, a->knb2, 8, f16)
                                           : decattn_scores8(qp[h], nv, hd, kr0, a->knb2, (int) cnt, f16);
                _mm256_storeu_ps(s + h * DECATTN_KB + jb, _mm256_fmadd_ps(sc, scale, mkv));
            }
        }
        // Online softmax per head; the block's probabilities replace its scores (masked and padded keys: 0).
        for (int64_t h = 0; h < G; h++) {
            float * sh = s + h * DECATTN_KB;
            __m256 bmv = ninf;
            for (int64_t j = 0; j < nb8; j += 8) bmv = _mm256_max_ps(bmv, _mm256_loadu_ps(sh + j));
            const float bm = decattn_hmax8(bmv);
            if (bm == -INFINITY) { // no key of the block visible to this row
                memset(sh, 0, sizeof(float) * nb8);
                continue;
            }
            const float mn = bm > m[h] ? bm : m[h];
            const float c = expf(m[h] - mn); // 0 while nothing was seen (m = −Inf)
            if (c != 1.0f) {
                const __m256 cv = _mm256_set1_ps(c);
                for (int64_t v = 0; v < nv; v++) _mm256_store_ps(o[h] + 8 * v, _mm256_mul_ps(_mm256_load_ps(o[h] + 8 * v), cv));
                l[h] *= c;
            }
            m[h] = mn;
            const __m256 mv = _mm256_set1_ps(mn);
            __m256 lv = _mm256_setzero_ps();
            for (int64_t j = 0; j < nb8; j += 8) {
                const __m256 x = _mm256_loadu_ps(sh + j);
                // idefics2_exp256 clamps −Inf to a tiny value: masked keys get exactly 0.
                const __m256 p = _mm256_and_ps(_mm256_cmp_ps(x, ninf, _CMP_NEQ_OQ), idefics2_exp256(_mm256_sub_ps(x, mv)));
                _mm256_storeu_ps(sh + j, p);
                lv = _mm256_add_ps(lv, p);
            }
            l[h] += decattn_hadd8(lv);
        }
        // Values, 8 dimensions at a time: 8 rows of vt against each head's probabilities.
        for (int64_t d0 = 0; d0 < hd; d0 += 8) {
            const int64_t cnt = hd - d0 < 8 ? hd - d0 : 8;
            const char * vr0 = a->vt + g * a->vnb2 + d0 * a->vnb1;
            for (int64_t h = 0; h < G; h++) {
                const float * ph = s + h * DECATTN_KB;
                const __m256 x = cnt == 8 ? decattn_values8(ph, vr0, a->vnb1, j0, nb, 8, f16)
                                          : decattn_values8(ph, vr0, a->vnb1, j0, nb, (int) cnt, f16);
                _mm256_store_ps(o[h] + d0, _mm256_add_ps(_mm256_load_ps(o[h] + d0), x));
            }
        }
    }
    for (int64_t h = 0; h < G; h++) {
        float * out = (float *) (a->dst + t * a->dnb1) + (g * G + h) * hd;
        const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
        for (int64_t d = 0; d < hd; d++) out[d] = o[h][d] * inv;
    }
}

__attribute__((target("avx2,fma,f16c")))
static void decattn_item_avx2(const decattn_args * a, int64_t t, int64_t g, float * s) {
    if (a->f16) {
        decattn_item_avx2_t(a, t, g, s, 1);
    } else {
        decattn_item_avx2_t(a, t, g, s, 0);
    }
}

#endif // DECATTN_HAVE_X86

#ifdef DECATTN_HAVE_NEON

static inline float32x4_t decattn_load4(const char * p, int64_t i, const int f16) {
    if (f16) return vcvt_f32_f16(vld1_f16((const float16_t *) ((const ggml_fp16_t *) p + i)));
    return vld1q_f32((const float *) p + i);
}

// The first cnt (< 4) values from i, zero-filled to 4.
static inline float32x4_t decattn_load4_part(const char * p, int64_t i, int64_t cnt, const int f16) {
    if (f16) {
        ggml_fp16_t tmp[4] = { 0 };
        memcpy(tmp, (const ggml_fp16_t *) p + i, sizeof(ggml_fp16_t) * cnt);
        return vcvt_f32_f16(vld1_f16((const float16_t *) tmp));
    }
    float tmp[4] = { 0 };
    memcpy(tmp, (const float *) p + i, sizeof(float) * cnt);
    return vld1q_f32(tmp);
}

// Lane i of the result is the sum of v[i]'s 4 lanes.
static inline float32x4_t decattn_hsum4(const float32x4_t * v) {
    return vpaddq_f32(vpaddq_f32(v[0], v[1]), vpaddq_f32(v[2], v[3]));
}

// The scores of 4 keys (qp zero-padded to a multiple of 4).
static inline __attribute__((always_inline)) float32x4_t decattn_scores4(const float * qp, int64_t nv, int64_t hd, const char * kr0,
                                                                         size_t knb, const int cnt, const int f16) {
    const int64_t hd4 = hd & ~(int64_t) 3;
    float32x4_t acc[4];
    for (int i = 0; i < 4; i++) acc[i] = vdupq_n_f32(0.0f);
    for (int64_t v = 0; v < nv; v++) {
        const float32x4_t qv = vld1q_f32(qp + 4 * v);
        if (4 * v < hd4) {
            for (int i = 0; i < cnt; i++) acc[i] = vfmaq_f32(acc[i], qv, decattn_load4(kr0 + i * knb, 4 * v, f16));
        } else {
            for (int i = 0; i < cnt; i++) acc[i] = vfmaq_f32(acc[i], qv, decattn_load4_part(kr0 + i * knb, 4 * v, hd - hd4, f16));
        }
    }
    return decattn_hsum4(acc);
}

// Σ_j p[j]·row_i[j0 + j] over j < nb for the value rows at vr0 + i·vnb, i < cnt (p zero-padded to a multiple of
// 4); lane i of the result.
static inline __attribute__((always_inline)) float32x4_t decattn_values4(const float * p, const char * vr0, size_t vnb, int64_t j0,
                                                                         int64_t nb, const int cnt, const int f16) {
    const int64_t nbf = nb & ~(int64_t) 3;
    float32x4_t acc[4];
    for (int i = 0; i < 4; i++) acc[i] = vdupq_n_f32(0.0f);
    for (int64_t j = 0; j < nbf; j += 4) {
        const float32x4_t pv = vld1q_f32(p + j);
        for (int i = 0; i < cnt; i++) acc[i] = vfmaq_f32(acc[i], pv, decattn_load4(vr0 + i * vnb, j0 + j, f16));
    }
    if (nbf < nb) {
        const float32x4_t pv = vld1q_f32(p + nbf);
        for (int i = 0; i < cnt; i++) acc[i] = vfmaq_f32(acc[i], pv, decattn_load4_part(vr0 + i * vnb, j0 + nbf, nb - nbf, f16));
    }
    return decattn_hsum4(acc);
}

static inline __attribute__((always_inline)) void decattn_item_neon_t(const decattn_args * a, int64_t t, int64_t g, float * s,
                                                                      const int f16) {
    const int64_t G = a->heads / a->kvh, hd = a->hd;
    const int64_t nv = (hd + 3) / 4;
    float m[IDEFICS2_DECATTN_MAX_GROUP], l[IDEFICS2_DECATTN_MAX_GROUP];
    // o[h]: head h's output accumulator and qp[h] its query, hd floats zero-padded to a multiple of 4.
    float o[IDEFICS2_DECATTN_MAX_GROUP][IDEFICS2_DECATTN_MAX_HEAD] __attribute__((aligned(16)));
    float qp[IDEFICS2_DECATTN_MAX_GROUP][IDEFICS2_DECATTN_MAX_HEAD] __attribute__((aligned(16)));
    for (int64_t h = 0; h < G; h++) {
        m[h] = -INFINITY;
        l[h] = 0.0f;
        memset(o[h], 0, sizeof(float) * 4 * nv);
        memset(qp[h], 0, sizeof(float) * 4 * nv);
        memcpy(qp[h], a->q + t * a->qnb2 + (g * G + h) * a->qnb1, sizeof(float) * hd);
    }
    const float * mrow = a->mask ? (const float *) (a->mask + t * a->mnb1) : NULL;
    const float32x4_t scale = vdupq_n_f32(a->scale), ninf = vdupq_n_f32(-INFINITY);
    for (int64_t j0 = 0; j0 < a->nk; j0 += DECATTN_KB) {
        const int64_t nb = a->nk - j0 < DECATTN_KB ? a->nk - j0 : DECATTN_KB;
        const int64_t nb4 = (nb + 3) & ~(int64_t) 3;
        int any = !mrow;
        for (int64_t j = 0; j < nb && !any; j++) any = mrow[j0 + j] != -INFINITY;
        if (!any) continue;
        // Scores, 4 keys at a time (masked and padded keys: −Inf).
        for (int64_t jb = 0; jb < nb4; jb += 4) {
            const int64_t cnt = nb - jb < 4 ? nb - jb : 4;
            float mk[4];
            for (int64_t i = 0; i < 4; i++) mk[i] = i >= cnt ? -INFINITY : mrow ? mrow[j0 + jb + i] : 0.0f;
            const float32x4_t mkv = vld1q_f32(mk);
            const char * kr0 = a->k + g * a->knb1 + (j0 + jb) * a->knb2;
            for (int64_t h = 0; h < G; h++) {
                const float32x4_t sc = cnt == 4 ? decattn_scores4(qp[h], nv, hd, kr0, a->knb2, 4, f16)
                                                : decattn_scores4(qp[h], nv, hd, kr0, a->knb2, (int) cnt, f16);
                vst1q_f32(s + h * DECATTN_KB + jb, vfmaq_f32(mkv, sc, scale));
            }
        }
        // Online softmax per head; the block's probabilities replace its scores (masked and padded keys: 0).
        for (int64_t h = 0; h < G; h++) {
            float * sh = s + h * DECATTN_KB;
            float32x4_t bmv = ninf;
            for (int64_t j = 0; j < nb4; j += 4) bmv = vmaxq_f32(bmv, vld1q_f32(sh + j));
            const float bm = vmaxvq_f32(bmv);
            if (bm == -INFINITY) { // no key of the block visible to this row
                memset(sh, 0, sizeof(float) * nb4);
                continue;
            }
            const float mn = bm > m[h] ? bm : m[h];
            const float c = expf(m[h] - mn); // 0 while nothing was seen (m = −Inf)
            if (c != 1.0f) {
                const float32x4_t cv = vdupq_n_f32(c);
                for (int64_t v = 0; v < nv; v++) vst1q_f32(o[h] + 4 * v, vmulq_f32(vld1q_f32(o[h] + 4 * v), cv));
                l[h] *= c;
            }
            m[h] = mn;
            const float32x4_t mv = vdupq_n_f32(mn);
            float32x4_t lv = vdupq_n_f32(0.0f);
            for (int64_t j = 0; j < nb4; j += 4) {
                const float32x4_t x = vld1q_f32(sh + j);
                // idefics2_exp128 clamps −Inf to a tiny value: masked keys get exactly 0.
                const uint32x4_t seen = vmvnq_u32(vceqq_f32(x, ninf));
                const float32x4_t p = vreinterpretq_f32_u32(vandq_u32(seen, vreinterpretq_u32_f32(idefics2_exp128(vsubq_f32(x, mv)))));
                vst1q_f32(sh + j, p);
                lv = vaddq_f32(lv, p);
            }
            l[h] += vaddvq_f32(lv);
        }
        // Values, 4 dimensions at a time: 4 rows of vt against each head's probabilities.
        for (int64_t d0 = 0; d0 < hd; d0 += 4) {
            const int64_t cnt = hd - d0 < 4 ? hd - d0 : 4;
            const char * vr0 = a->vt + g * a->vnb2 + d0 * a->vnb1;
            for (int64_t h = 0; h < G; h++) {
                const float * ph = s + h * DECATTN_KB;
                const float32x4_t x = cnt == 4 ? decattn_values4(ph, vr0, a->vnb1, j0, nb, 4, f16)
                                               : decattn_values4(ph, vr0, a->vnb1, j0, nb, (int) cnt, f16);
                vst1q_f32(o[h] + d0, vaddq_f32(vld1q_f32(o[h] + d0), x));
            }
        }
    }
    for (int64_t h = 0; h < G; h++) {
        float * out = (float *) (a->dst + t * a->dnb1) + (g * G + h) * hd;
        const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
        for (int64_t d = 0; d < hd; d++) out[d] = o[h][d] * inv;
    }
}

static void decattn_item_neon(const decattn_args * a, int64_t t, int64_t g, float * s) {
    if (a->f16) {
        decattn_item_neon_t(a, t, g, s, 1);
    } else {
        decattn_item_neon_t(a, t, g, s, 0);
    }
}

#endif // DECATTN_HAVE_NEON

static void decattn_custom_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    const struct ggml_tensor * q = dst->src[0];
    const struct ggml_tensor * k = dst->src[1];
    const struct ggml_tensor * vt = dst->src[2];
    const struct ggml_tensor * mask = dst->src[3];
    decattn_args a;
    a.q = (const char *) q->data;
    a.k = (const char *) k->data;
    a.vt = (const char *) vt->data;
    a.mask = mask ? (const char *) mask->data : NULL;
    a.dst = (char *) dst->data;
    a.qnb1 = q->nb[1];
    a.qnb2 = q->nb[2];
    a.knb1 = k->nb[1];
    a.knb2 = k->nb[2];
    a.vnb1 = vt->nb[1];
    a.vnb2 = vt->nb[2];
    a.mnb1 = mask ? mask->nb[1] : 0;
    a.dnb1 = dst->nb[1];
    a.hd = q->ne[0];
    a.heads = q->ne[1];
    a.n = q->ne[2];
    a.kvh = k->ne[1];
    a.nk = k->ne[2];
    a.f16 = k->type == GGML_TYPE_F16;
    uint32_t bits = (uint32_t) (uintptr_t) userdata;
    memcpy(&a.scale, &bits, sizeof a.scale);

    float s[IDEFICS2_DECATTN_MAX_GROUP * DECATTN_KB] __attribute__((aligned(64)));
    const int64_t items = a.n * a.kvh;
    const int isa = idefics2_attn_isa();
    for (int64_t it = ith; it < items; it += nth) {
        const int64_t t = it / a.kvh, g = it % a.kvh;
#ifdef DECATTN_HAVE_X86
        if (isa == IDEFICS2_ATTN_AVX512) {
            decattn_item_avx512(&a, t, g, s);
            continue;
        }
        if (isa == IDEFICS2_ATTN_AVX2) {
            decattn_item_avx2(&a, t, g, s);
            continue;
        }
#endif
#ifdef DECATTN_HAVE_NEON
        if (isa == IDEFICS2_ATTN_NEON) {
            decattn_item_neon(&a, t, g, s);
            continue;
        }
#endif
        (void) isa;
        decattn_item_scalar(&a, t, g, s);
    }
}

struct ggml_tensor * idefics2_decode_attn(struct ggml_context * ctx, struct ggml_tensor * q, struct ggml_tensor * k,
                                          struct ggml_tensor * vt, struct ggml_tensor * mask, float scale) {
    struct ggml_tensor * args[4] = { q, k, vt, mask };
    uint32_t bits;
    memcpy(&bits, &scale, sizeof bits);
    return ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0] * q->ne[1], q->ne[2], 1, 1, args, mask ? 4 : 3,
                          decattn_custom_op, GGML_N_TASKS_MAX, (void *) (uintptr_t) bits);
}

// Read-bandwidth probe (streamread.h). The AVX-512 and AVX2 loops are compiled with target attributes and run
// only after __builtin_cpu_supports said the CPU has them; the portable loop reads 8 bytes at a time.

#include "streamread.h"
#include "isacap.h"

#include <pthread.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define STREAMREAD_HAVE_X86 1
#include <immintrin.h>
#endif

typedef uint64_t (*streamread_fn)(const uint8_t * p, size_t n);

static uint64_t streamread_portable(const uint8_t * p, size_t n) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint64_t v[4];
        memcpy(v, p + i, sizeof v);
        s0 += v[0];
        s1 += v[1];
        s2 += v[2];
        s3 += v[3];
    }
    for (; i < n; i++) s0 += p[i];
    return s0 + s1 + s2 + s3;
}

#ifdef STREAMREAD_HAVE_X86
__attribute__((target("avx512f")))
static uint64_t streamread_avx512(const uint8_t * p, size_t n) {
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 256 <= n; i += 256) {
        s0 = _mm512_add_epi64(s0, _mm512_loadu_si512((const void *) (p + i)));
        s1 = _mm512_add_epi64(s1, _mm512_loadu_si512((const void *) (p + i + 64)));
        s2 = _mm512_add_epi64(s2, _mm512_loadu_si512((const void *) (p + i + 128)));
        s3 = _mm512_add_epi64(s3, _mm512_loadu_si512((const void *) (p + i + 192)));
    }
    const uint64_t s = (uint64_t) _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
    return s + streamread_portable(p + i, n - i);
}

__attribute__((target("avx2")))
static uint64_t streamread_avx2(const uint8_t * p, size_t n) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        s0 = _mm256_add_epi64(s0, _mm256_loadu_si256((const __m256i *) (p + i)));
        s1 = _mm256_add_epi64(s1, _mm256_loadu_si256((const __m256i *) (p + i + 32)));
        s2 = _mm256_add_epi64(s2, _mm256_loadu_si256((const __m256i *) (p + i + 64)));
        s3 = _mm256_add_epi64(s3, _mm256_loadu_si256((const __m256i *) (p + i + 96)));
    }
    uint64_t v[4];
    _mm256_storeu_si256((__m256i *) v, _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3)));
    return v[0] + v[1] + v[2] + v[3] + streamread_portable(p + i, n - i);
}
#endif

static streamread_fn streamread_pick(void) {
#ifdef STREAMREAD_HAVE_X86
    __builtin_cpu_init();
    if (idefics2_isa_allows(IDEFICS2_ISA_AVX512) && __builtin_cpu_supports("avx512f")) return streamread_avx512;
    if (idefics2_isa_allows(IDEFICS2_ISA_AVX2) && __builtin_cpu_supports("avx2")) return streamread_avx2;
#endif
    return streamread_portable;
}

struct streamread_job {
    const uint8_t * const * ptrs;
    const size_t * sizes;
    int n;
    size_t lo, hi; // byte range of the concatenated regions
    streamread_fn fn;
    uint64_t sum;
};

static void * streamread_run(void * arg) {
    struct streamread_job * j = arg;
    size_t off = 0;
    uint64_t sum = 0;
    for (int i = 0; i < j->n && off < j->hi; i++) {
        const size_t a = off, b = off + j->sizes[i];
        off = b;
        const size_t lo = a > j->lo ? a : j->lo, hi = b < j->hi ? b : j->hi;
        if (lo < hi) sum += j->fn(j->ptrs[i] + (lo - a), hi - lo);
    }
    j->sum = sum;
    return NULL;
}

#define STREAMREAD_MAX_THREADS 256

int idefics2_stream_read(const uint8_t * const * ptrs, const size_t * sizes, int n, int threads, uint64_t * sum) {
    *sum = 0;
    if (threads < 1 || threads > STREAMREAD_MAX_THREADS) return -1;
    size_t total = 0;
    for (int i = 0; i < n; i++) total += sizes[i];
    const streamread_fn fn = streamread_pick();
    struct streamread_job jobs[STREAMREAD_MAX_THREADS];
    pthread_t tids[STREAMREAD_MAX_THREADS];
    for (int t = 0; t < threads; t++) {
        // Shares end on 64-byte boundaries, so that no cache line is read by two threads.
        size_t lo = total / threads * t, hi = t + 1 == threads ? total : total / threads * (t + 1);
        lo &= ~(size_t) 63;
        if (t + 1 < threads) hi &= ~(size_t) 63;
        jobs[t] = (struct streamread_job) { ptrs, sizes, n, lo, hi, fn, 0 };
    }
    int started = 0;
    for (int t = 1; t < threads; t++, started++) {
        if (pthread_create(&tids[t], NULL, streamread_run, &jobs[t]) != 0) break;
    }
    if (started + 1 < threads) {
        for (int t = 1; t <= started; t++) pthread_join(tids[t], NULL);
        return -1;
    }
    streamread_run(&jobs[0]);
    uint64_t s = jobs[0].sum;
    for (int t = 1; t < threads; t++) {
        pthread_join(tids[t], NULL);
        s += jobs[t].sum;
    }
    *sum = s;
    return 0;
}

// The instruction-set cap (IDEFICS2_MAX_ISA): this project's kernels take no path above it, so that one machine can
// run as a smaller CPU would. The levels are ordered; the default is the highest.
#pragma once

enum {
    IDEFICS2_ISA_PORTABLE = 0,  // baseline x86-64 (and any other architecture)
    IDEFICS2_ISA_AVX2 = 1,      // AVX2, FMA, F16C
    IDEFICS2_ISA_AVX2_VNNI = 2, // AVX2 with AVX-VNNI
    IDEFICS2_ISA_AVX512 = 3,    // AVX-512 (F, BW, and VNNI where a path needs it)
};

int idefics2_isa_cap(void);
void idefics2_set_isa_cap(int level);

// idefics2_isa_allows reports whether a path of the given level may run under the cap.
static inline int idefics2_isa_allows(int level) { return level <= idefics2_isa_cap(); }

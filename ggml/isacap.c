#include "isacap.h"

// Set once by the Go package's init, before any kernel detects its path.
static int isa_cap = IDEFICS2_ISA_AVX512;

int idefics2_isa_cap(void) { return __atomic_load_n(&isa_cap, __ATOMIC_ACQUIRE); }

void idefics2_set_isa_cap(int level) { __atomic_store_n(&isa_cap, level, __ATOMIC_RELEASE); }

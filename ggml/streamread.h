// A read-bandwidth probe: threads read a list of memory regions once, as the weights of a model are read once per
// generated token, so that the time of one pass is the memory's lower bound on a decoding step.
#ifndef IDEFICS2_STREAMREAD_H
#define IDEFICS2_STREAMREAD_H

#include <stddef.h>
#include <stdint.h>

// Reads every byte of regions ptrs[i] (sizes[i] bytes, i < n) with threads threads (1 to 256; each takes an equal
// share of the total, in order) and stores a checksum of what it read in *sum, so that the loads are not optimized
// away. Returns 0, or -1 when a thread could not be started (the pass is then incomplete).
int idefics2_stream_read(const uint8_t * const * ptrs, const size_t * sizes, int n, int threads, uint64_t * sum);

#endif

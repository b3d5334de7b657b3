#!/usr/bin/env bash
# Prints the instruction-set levels (IDEFICS2_MAX_ISA values) this machine can run, lowest first: portable always,
# then avx2, avx2-vnni and avx512 as far as the CPU's flags reach. Linux x86-64 reads /proc/cpuinfo; elsewhere only
# portable is listed (the cap orders x86-64 levels).
set -euo pipefail
levels=(portable)
if [ "$(uname -m)" = x86_64 ] && [ -r /proc/cpuinfo ]; then
  flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
  has() { for f in "$@"; do [[ $flags == *" $f "* ]] || return 1; done; }
  if has avx2 fma f16c; then
    levels+=(avx2)
    has avx_vnni && levels+=(avx2-vnni)
    has avx512f avx512bw && levels+=(avx512)
  fi
fi
echo "${levels[@]}"

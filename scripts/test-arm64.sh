#!/usr/bin/env bash
# Cross-builds the ggml, quant and graph tests for linux/arm64 and runs them under qemu-user: they check that the
# NEON paths (ggml's portable CPU backend as compiled for aarch64, this project's kernels' arm64 paths, the Go
# quantizers) give the same results as on x86-64 — exactness, not speed. qemu's default CPU has the dot-product and
# int8 matrix-multiply extensions (the tests force each path in turn); the ggml tests run a second time on one
# without either, their path checks again on one with dot products only, and the ggml and graph tests once more with
# ggml's AArch64 CPU variants loaded (cross-built with cmake when it is present). When the shared checks folder is present
# (../shared/checks), its parity check also runs on the p1 fixture cases with arm64 builds of both binaries.
#
# Needs: a C cross compiler and qemu-user (Debian: gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user).
# Environment: GO (default go), ARM64_SYSROOT (default /usr/aarch64-linux-gnu, the target's libc for qemu),
# ARM64_PACKAGES (default "ggml quant graph"), SHARED (default ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
for tool in aarch64-linux-gnu-gcc aarch64-linux-gnu-g++ qemu-aarch64; do
  command -v "$tool" >/dev/null || {
    echo "test-arm64: $tool not found; install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user (Debian) and rerun" >&2
    exit 1
  }
done
sysroot=${ARM64_SYSROOT:-/usr/aarch64-linux-gnu}
[ -d "$sysroot/lib" ] || { echo "test-arm64: no aarch64 libc under $sysroot (ARM64_SYSROOT)" >&2; exit 1; }
packages=${ARM64_PACKAGES:-ggml quant graph}
shared=${SHARED:-../shared}

# ggml's headers come from the pinned ollama module, as in the Makefile.
if [ -z "${CGO_CPPFLAGS:-}" ]; then
  "$GO" mod download github.com/ollama/ollama
  CGO_CPPFLAGS="-I$("$GO" list -m -f '{{.Dir}}' github.com/ollama/ollama)/ml/backend/ggml/ggml/include"
  export CGO_CPPFLAGS
fi

out=$(mktemp -d "${TMPDIR:-/tmp}/idefics2-arm64.XXXXXX")
trap 'rm -rf "$out"' EXIT
root=$(pwd)

cross() {
  # ggml's reference quantizers are defined by their unfused float arithmetic, as x86-64 compiles them (no FMA
  # without -mfma); gcc contracts a*b+c into one fused instruction on aarch64 by default, which changes the last
  # bits of the C reference the tests compare with. Intrinsics (NEON's vfma) are explicit and unaffected.
  CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ \
    CGO_CFLAGS="-O2 -g -ffp-contract=off" IDEFICS2_LIB_DIR= "$GO" "$@"
}
qemu() {
  # Children a test starts from its own binary go through the same emulator (internal/testexec). arm_libs: the
  # folder of ggml's AArch64 CPU variants to load (none: the portable backend built into the binary).
  QEMU_LD_PREFIX=$sysroot IDEFICS2_TEST_EXEC=qemu-aarch64 IDEFICS2_LIB_DIR=${arm_libs:-} qemu-aarch64 "$@"
}

status=0
for p in $packages; do
  echo "== linux/arm64 (qemu-user): ./$p"
  cross test -c -o "$out/$p.test" "./$p"
  # The test binary runs in its package folder, as go test runs it.
  if (cd "$p" && qemu "$out/$p.test" -test.count=1 -test.timeout=30m); then
    echo "ok   ./$p (linux/arm64)"
  else
    echo "FAIL ./$p (linux/arm64)"; status=1
  fi
done

# The ggml tests again on a CPU without the dot-product extension (qemu's Cortex-A53; qemu-user reads QEMU_CPU, and
# the tests' child processes inherit it), so that the paths such CPUs take are checked too: the 16-row layouts'
# scalar kernels and the NF4 stream kernel's NEON path.
if [[ " $packages " == *" ggml "* ]]; then
  echo "== linux/arm64 (qemu-user, cortex-a53: no dot products): ./ggml"
  if (cd ggml && QEMU_CPU=cortex-a53 qemu "$out/ggml.test" -test.count=1 -test.timeout=30m); then
    echo "ok   ./ggml (linux/arm64, cortex-a53)"
  else
    echo "FAIL ./ggml (linux/arm64, cortex-a53)"; status=1
  fi
fi

# The path checks on a CPU with dot products but not the int8 matrix multiply (qemu's Cortex-A76): the kernels must
# find the dot-product path best there.
if [[ " $packages " == *" ggml "* ]]; then
  echo "== linux/arm64 (qemu-user, cortex-a76: dot products, no i8mm): ./ggml -run ISA"
  if (cd ggml && QEMU_CPU=cortex-a76 qemu "$out/ggml.test" -test.count=1 -test.run 'ISA' -test.v | grep -E '^(---|ok|FAIL|PASS)|paths|best'); then
    echo "ok   ./ggml ISA (linux/arm64, cortex-a76)"
  else
    echo "FAIL ./ggml ISA (linux/arm64, cortex-a76)"; status=1
  fi
fi

# ggml's AArch64 CPU variants (scripts/ggml-cpu-variants.sh, cross-built once and cached), as `make build` builds
# them on an ARM Linux machine: the ggml and graph tests again with them loaded (qemu's CPU scores armv8.2_1 best).
if command -v cmake >/dev/null; then
  libs=$(GGML_CROSS=aarch64-linux-gnu GO=$GO scripts/ggml-cpu-variants.sh)
  for p in ggml graph; do
    [[ " $packages " == *" $p "* ]] || continue
    echo "== linux/arm64 (qemu-user, ggml's AArch64 CPU variants from $libs): ./$p"
    if (cd "$p" && arm_libs=$libs qemu "$out/$p.test" -test.count=1 -test.timeout=30m); then
      echo "ok   ./$p (linux/arm64, ggml's CPU variants)"
    else
      echo "FAIL ./$p (linux/arm64, ggml's CPU variants)"; status=1
    fi
  done
else
  echo "test-arm64: cmake not found: ggml's AArch64 CPU variants are not built, and the tests above ran on the portable backend only"
fi

if [ -x "$shared/checks/parity.sh" ] && [ -d "$shared/fixtures/hf/cases" ]; then
  echo "== linux/arm64 (qemu-user): $shared/checks/parity.sh on the p1 cases"
  fix=$(cd "$shared/fixtures/hf" && pwd)
  cross build -o "$out/arm64/convert" ./cmd/convert
  cross build -o "$out/arm64/idefics2-run" ./cmd/idefics2-run
  # A project folder whose bin/ runs the arm64 binaries through qemu, and a fixture folder with the p1 cases only.
  proj=$out/proj; mkdir -p "$proj/bin" "$out/fix/cases"
  for b in convert idefics2-run; do
    printf '#!/bin/sh\nQEMU_LD_PREFIX=%s IDEFICS2_LIB_DIR= exec qemu-aarch64 %s "$@"\n' "$sysroot" "$out/arm64/$b" >"$proj/bin/$b"
    chmod +x "$proj/bin/$b"
  done
  ln -s "$fix/checkpoints" "$out/fix/checkpoints"; ln -s "$fix/images" "$out/fix/images"
  for c in "$fix"/cases/p1_*; do ln -s "$c" "$out/fix/cases/"; done
  # The checks build the project unless their per-commit cache says it is built: mark it, in a cache of our own.
  mkdir -p "$out/tmp/idefics2-checks/none"; touch "$out/tmp/idefics2-checks/none/built"
  checks=$(cd "$shared/checks" && pwd)
  if (cd "$proj" && TMPDIR=$out/tmp bash "$checks/parity.sh" "$out/fix"); then
    echo "ok   parity p1 (linux/arm64)"
  else
    echo "FAIL parity p1 (linux/arm64)"; status=1
  fi
else
  echo "test-arm64: $shared/checks not present: the shared parity check is not run (the graph tests above include the Hugging Face parity tests on testdata/hf)"
fi
exit $status

#!/usr/bin/env bash
# Builds ggml's per-ISA CPU backend libraries (libggml-cpu-<variant>.so + libggml-base.so) from the pinned
# github.com/ollama/ollama module with its own CMake files, and caches them outside the clone, keyed by the module
# version, the variants, the compiler and the flags. Prints the cache folder on stdout.
#
#   scripts/ggml-cpu-variants.sh            build if missing, print the folder
#   scripts/ggml-cpu-variants.sh --dir      print the folder only (may not exist yet)
#
# Without cmake it builds nothing and says so in one line: the binaries then use the portable CPU backend they carry.
#
# GGML_CPU_REPACK=ON: ollama's CMake adds ggml's src folder directly, skipping ggml's top-level options, so the
# repacked (row-interleaved) weight layout would otherwise be compiled out.
#
# zen4 (AVX-512 with VBMI, VNNI and BF16: AMD Zen 4/5, Intel Sapphire Rapids and later) is not among ollama's
# variants; its definition (ggml's own variant feature list) is added to a build-time copy of the module's CMake
# files, so BF16 weights use the AVX512-BF16 dot products (BENCHMARKS.md, "Images", has F16 and BF16 figures).
#
# Linux on AArch64 gets ggml's armv8.0_1 (NEON) and armv8.2_1 (dot products), each scored against the CPU's hardware
# capabilities at start. The others are left out, from what their tests gave under qemu (no ARM machine was at hand):
# armv8.2_2 multiplies F16 matrices with half-precision accumulators (FP16 arithmetic), which moved the run-time
# LoRA route on a Q8_0 base 1.72× as far from the exact model as the merged one (graph's TestLoRAQuantizedBases
# allows 1.5×); the SVE variants (armv8.2_3, armv8.6_1 with i8mm, armv8.6_2) gave wrong products (mul_mat of F32 and
# Q5_0 weights, conv2d) under qemu 7.2 and 10.0.
#
# Environment: GGML_CPU_VARIANTS (default for x86-64: "haswell skylakex icelake alderlake zen4"; for AArch64 Linux:
# "armv8.0_1 armv8.2_1"; the binary also carries a portable CPU backend for older CPUs), IDEFICS2_CACHE
# (default ~/.cache/idefics2-go), GO (default go), GGML_CROSS (a GNU target triple, e.g. aarch64-linux-gnu: build for
# that Linux target with its cross compilers, as `make test-arm64` does).
set -euo pipefail
GO=${GO:-go}
arch=$(uname -m)
os=$(uname -s)
cross=${GGML_CROSS:-}
cross_flags=""
if [ -n "$cross" ]; then
  arch=${cross%%-*}
  os=Linux
  for tool in "$cross-gcc" "$cross-g++"; do
    command -v "$tool" >/dev/null || { echo "ggml-cpu-variants: GGML_CROSS=$cross: $tool not found" >&2; exit 1; }
  done
  cross_flags="-DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=$arch -DCMAKE_C_COMPILER=$cross-gcc -DCMAKE_CXX_COMPILER=$cross-g++"
fi
cache_root=${IDEFICS2_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/idefics2-go}
moddir=$($GO list -m -f '{{.Dir}}' github.com/ollama/ollama)
modver=$($GO list -m -f '{{.Version}}' github.com/ollama/ollama)
case "$os/$arch" in
  Linux/x86_64) default_variants="haswell skylakex icelake alderlake zen4" ;;
  Linux/aarch64) default_variants="armv8.0_1 armv8.2_1" ;;
  *) default_variants="" ;;
esac
variants=${GGML_CPU_VARIANTS-$default_variants}
cc=${CC:-cc}
[ -n "$cross" ] && cc=$cross-gcc
cc_ver=$( ($cc --version 2>/dev/null || true) | head -n1)
flags="-DCMAKE_BUILD_TYPE=Release -DGGML_CCACHE=OFF -DGGML_CPU_REPACK=ON -DCMAKE_BUILD_RPATH=\$ORIGIN"
# ollama's CMake asks for all variants on x86-64 only; on AArch64 it would build one for the build machine's CPU.
[ "$arch" = aarch64 ] && flags="$flags -DGGML_CPU_ALL_VARIANTS=ON -DGGML_NATIVE=OFF"
[ -n "$cross_flags" ] && flags="$flags $cross_flags"
key=$(printf '%s\n' "$modver" "$variants" "$cc_ver" "$flags" "$os/$arch" | sha256sum | cut -c1-16)
dir=$cache_root/ggml-cpu/$modver-$key

if [ "${1:-}" = "--dir" ]; then echo "$dir"; exit 0; fi
if [ -z "$variants" ]; then
  echo "ggml-cpu-variants: no per-ISA variants for $os/$arch; the portable CPU backend compiled into the binary is used" >&2
  mkdir -p "$dir"; echo "$dir"; exit 0
fi
if [ -f "$dir/.complete" ]; then echo "$dir"; exit 0; fi
if ! command -v cmake >/dev/null; then
  # Without cmake the binaries still run, on ggml's portable CPU backend compiled into them by cgo.
  echo "ggml-cpu-variants: cmake not found: using the portable CPU backend built into the binaries, without ggml's AVX2 and AVX-512 variants or their repacked layouts; install cmake (apt-get install cmake, brew install cmake) and rerun to build them" >&2
  echo "$dir"; exit 0
fi

build=$(mktemp -d "${TMPDIR:-/tmp}/idefics2-ggml-build.XXXXXX")
trap 'rm -rf "$build"' EXIT
targets=""
for v in $variants; do targets="$targets ggml-cpu-$v"; done
echo "ggml-cpu-variants: building$targets from ollama $modver (cached in $dir)" >&2
src=$moddir
copy_sources() {
  # A build-time copy of the CMake files and ggml sources, for the changes below.
  [ "$src" != "$moddir" ] && return
  src=$build/src
  mkdir -p "$src/ml/backend/ggml"
  cp "$moddir/CMakeLists.txt" "$src/"
  cp -r "$moddir/ml/backend/ggml/ggml" "$src/ml/backend/ggml/"
  chmod -R u+w "$src"
}
if [ -n "$cross" ]; then
  # CMake refuses install(... RUNTIME_DEPENDENCIES ...) when cross-compiling; only the build step is used here.
  copy_sources
  sed -i -E '/^\s*(RUNTIME_DEPENDENCIES|DIRECTORIES|PRE_INCLUDE_REGEXES|PRE_EXCLUDE_REGEXES|POST_INCLUDE_REGEXES|POST_EXCLUDE_REGEXES)\b/d' "$src/CMakeLists.txt"
fi
case " $variants " in
  *" zen4 "*)
    # The zen4 variant added after icelake.
    copy_sources
    lists=$src/ml/backend/ggml/ggml/src/CMakeLists.txt
    grep -q 'ggml_add_cpu_backend_variant(icelake ' "$lists" ||
      { echo "ggml-cpu-variants: $modver's CMake has no icelake variant line to add zen4 after; build without zen4 (GGML_CPU_VARIANTS)" >&2; exit 1; }
    sed -i 's/^\(\s*\)ggml_add_cpu_backend_variant(icelake .*$/&\n\1ggml_add_cpu_backend_variant(zen4 SSE42 AVX F16C AVX2 BMI2 FMA AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16)/' "$lists"
    ;;
esac
# shellcheck disable=SC2086
cmake -S "$src" -B "$build/out" $flags >"$build/configure.log" 2>&1 || { tail -n 20 "$build/configure.log" >&2; exit 1; }
# shellcheck disable=SC2086
cmake --build "$build/out" --target $targets -j "$(nproc 2>/dev/null || echo 2)" >"$build/build.log" 2>&1 ||
  { tail -n 30 "$build/build.log" >&2; exit 1; }
tmp=$(mktemp -d "$cache_root/.tmp.XXXXXX" 2>/dev/null || { mkdir -p "$cache_root"; mktemp -d "$cache_root/.tmp.XXXXXX"; })
cp -P "$build"/out/lib/ollama/libggml-base.so* "$tmp"/
for v in $variants; do cp "$build/out/lib/ollama/libggml-cpu-$v.so" "$tmp"/; done
touch "$tmp/.complete"
mkdir -p "$(dirname "$dir")"
rm -rf "$dir"
mv "$tmp" "$dir"
echo "$dir"

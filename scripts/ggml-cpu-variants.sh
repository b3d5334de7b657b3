#!/usr/bin/env bash
# Builds ggml's per-ISA CPU backend libraries (libggml-cpu-<variant>.so + libggml-base.so) from the pinned
# github.com/ollama/ollama module with its own CMake files, and caches them outside the clone, keyed by the module
# version, the variants, the compiler and the flags. Prints the cache folder on stdout.
#
#   scripts/ggml-cpu-variants.sh            build if missing, print the folder
#   scripts/ggml-cpu-variants.sh --dir      print the folder only (may not exist yet)
#
# GGML_CPU_REPACK=ON: ollama's CMake adds ggml's src folder directly, skipping ggml's top-level options, so the
# repacked (row-interleaved) weight layout would otherwise be compiled out.
#
# Environment: GGML_CPU_VARIANTS (default for x86-64: "haswell skylakex icelake alderlake"; the binary also carries
# a portable CPU backend for older CPUs), IDEFICS2_CACHE (default ~/.cache/idefics2-go), GO (default go).
set -euo pipefail
GO=${GO:-go}
arch=$(uname -m)
os=$(uname -s)
cache_root=${IDEFICS2_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/idefics2-go}
moddir=$($GO list -m -f '{{.Dir}}' github.com/ollama/ollama)
modver=$($GO list -m -f '{{.Version}}' github.com/ollama/ollama)
case "$os/$arch" in
  Linux/x86_64) default_variants="haswell skylakex icelake alderlake" ;;
  *) default_variants="" ;;
esac
variants=${GGML_CPU_VARIANTS-$default_variants}
cc_ver=$( (${CC:-cc} --version 2>/dev/null || true) | head -n1)
flags="-DCMAKE_BUILD_TYPE=Release -DGGML_CCACHE=OFF -DGGML_CPU_REPACK=ON -DCMAKE_BUILD_RPATH=\$ORIGIN"
key=$(printf '%s\n' "$modver" "$variants" "$cc_ver" "$flags" "$os/$arch" | sha256sum | cut -c1-16)
dir=$cache_root/ggml-cpu/$modver-$key

if [ "${1:-}" = "--dir" ]; then echo "$dir"; exit 0; fi
if [ -z "$variants" ]; then
  echo "ggml-cpu-variants: no per-ISA variants for $os/$arch; the portable CPU backend compiled into the binary is used" >&2
  mkdir -p "$dir"; echo "$dir"; exit 0
fi
if [ -f "$dir/.complete" ]; then echo "$dir"; exit 0; fi
command -v cmake >/dev/null || { echo "ggml-cpu-variants: cmake is needed (apt-get install cmake)" >&2; exit 1; }

build=$(mktemp -d "${TMPDIR:-/tmp}/idefics2-ggml-build.XXXXXX")
trap 'rm -rf "$build"' EXIT
targets=""
for v in $variants; do targets="$targets ggml-cpu-$v"; done
echo "ggml-cpu-variants: building$targets from ollama $modver (cached in $dir)" >&2
# shellcheck disable=SC2086
cmake -S "$moddir" -B "$build" $flags >"$build/configure.log" 2>&1 || { tail -n 20 "$build/configure.log" >&2; exit 1; }
# shellcheck disable=SC2086
cmake --build "$build" --target $targets -j "$(nproc 2>/dev/null || echo 2)" >"$build/build.log" 2>&1 ||
  { tail -n 30 "$build/build.log" >&2; exit 1; }
tmp=$(mktemp -d "$cache_root/.tmp.XXXXXX" 2>/dev/null || { mkdir -p "$cache_root"; mktemp -d "$cache_root/.tmp.XXXXXX"; })
cp -P "$build"/lib/ollama/libggml-base.so* "$tmp"/
for v in $variants; do cp "$build/lib/ollama/libggml-cpu-$v.so" "$tmp"/; done
touch "$tmp/.complete"
mkdir -p "$(dirname "$dir")"
rm -rf "$dir"
mv "$tmp" "$dir"
echo "$dir"

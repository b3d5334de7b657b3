#!/usr/bin/env bash
# Builds ggml's Vulkan backend library (libggml-vulkan.so) from the pinned github.com/ollama/ollama module with its
# own CMake files, and caches it outside the clone beside the CPU variants (scripts/ggml-cpu-variants.sh), keyed by
# the module version, the compiler, the shader compiler, the Vulkan headers and the flags. Prints the cache folder.
#
#   scripts/ggml-vulkan.sh            build if missing, print the folder
#   scripts/ggml-vulkan.sh --dir      print the folder only (may not exist yet)
#
# Needs cmake, a C++ compiler, the Vulkan headers and loader (Debian: libvulkan-dev) and glslc (Debian: glslc);
# without them it says which is missing and exits 1. Compiling the shaders takes most of the time (README.md,
# "GPU backends", says how long); the build runs at nice 10 so that it yields to interactive work.
#
# ggml's CMake decides which shader extensions glslc knows by compiling small test shaders; the ollama module
# leaves them out, and a missing test file reads as "supported", so an older glslc (Debian 12's) then fails on
# cooperative-matrix shaders. The build therefore runs on a build-time copy of the CMake files and ggml sources
# with this project's own test shaders (scripts/vulkan-feature-tests/) put where the module lacks them.
#
# The library links libggml-base.so by its soname; the one built with the CPU variants (same module, same flags)
# is the one it loads, so only libggml-vulkan.so is cached here.
#
# Environment: IDEFICS2_CACHE (default ~/.cache/idefics2-go), GO (default go), JOBS (default: all cores).
set -euo pipefail
GO=${GO:-go}
arch=$(uname -m)
os=$(uname -s)
cache_root=${IDEFICS2_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/idefics2-go}
moddir=$($GO list -m -f '{{.Dir}}' github.com/ollama/ollama)
modver=$($GO list -m -f '{{.Version}}' github.com/ollama/ollama)
cc_ver=$( (${CXX:-c++} --version 2>/dev/null || true) | head -n1)
glslc_ver=$( (glslc --version 2>/dev/null || true) | head -n1)
vk_hdr=$(grep -hs '^#define VK_HEADER_VERSION ' /usr/include/vulkan/vulkan_core.h /usr/local/include/vulkan/vulkan_core.h | head -n1 || true)
flags="-DCMAKE_BUILD_TYPE=Release -DGGML_CCACHE=OFF -DGGML_CPU_REPACK=ON -DCMAKE_BUILD_RPATH=\$ORIGIN -DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=ON"
here=$(cd "$(dirname "$0")" && pwd)
tests_sum=$(cat "$here"/vulkan-feature-tests/*.comp | sha256sum | cut -c1-16)
key=$(printf '%s\n' "$modver" "$cc_ver" "$glslc_ver" "$vk_hdr" "$flags" "$os/$arch" "$tests_sum" | sha256sum | cut -c1-16)
dir=$cache_root/ggml-vulkan/$modver-$key

if [ "${1:-}" = "--dir" ]; then echo "$dir"; exit 0; fi
if [ -f "$dir/.complete" ]; then echo "$dir"; exit 0; fi
missing=()
command -v cmake >/dev/null || missing+=("cmake")
command -v glslc >/dev/null || missing+=("glslc (apt-get install glslc)")
[ -n "$vk_hdr" ] || missing+=("the Vulkan headers (apt-get install libvulkan-dev)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "ggml-vulkan: cannot build the Vulkan backend: missing $(IFS=,; echo "${missing[*]}")" >&2
  exit 1
fi

build=$(mktemp -d "${TMPDIR:-/tmp}/idefics2-vulkan-build.XXXXXX")
trap 'rm -rf "$build"' EXIT
echo "ggml-vulkan: building ggml-vulkan from ollama $modver (cached in $dir)" >&2
start=$(date +%s)
src=$build/src
mkdir -p "$src/ml/backend/ggml"
cp "$moddir/CMakeLists.txt" "$src/"
cp -r "$moddir/ml/backend/ggml/ggml" "$src/ml/backend/ggml/"
chmod -R u+w "$src"
vk=$src/ml/backend/ggml/ggml/src/ggml-vulkan
mkdir -p "$vk/vulkan-shaders/feature-tests"
for t in $(grep -o 'feature-tests/[a-z0-9_]*\.comp' "$vk/CMakeLists.txt" | sort -u); do
  [ -f "$vk/vulkan-shaders/$t" ] && continue
  [ -f "$here/vulkan-feature-tests/${t#feature-tests/}" ] ||
    { echo "ggml-vulkan: $modver's CMake tests glslc with $t, which neither the module nor scripts/vulkan-feature-tests has" >&2; exit 1; }
  cp "$here/vulkan-feature-tests/${t#feature-tests/}" "$vk/vulkan-shaders/$t"
done
# Vulkan headers older than 1.3.261 (Debian 12 ships 1.3.239) lack VK_EXT_layer_settings, which ggml-vulkan uses
# only to switch on the validation layer's best-practice checks when that layer is installed: with such headers
# the instance is created without those settings.
cpp=$vk/ggml-vulkan.cpp
if grep -q 'VkBool32 enable_best_practice = layer_settings;' "$cpp" && grep -q 'instance_create_info(.*&layer_setting_info);' "$cpp"; then
  sed -i -e 's/^\(\s*\)VkBool32 enable_best_practice = layer_settings;/#if VK_HEADER_VERSION >= 261\n&/' \
    -e 's/^\(\s*\)vk::InstanceCreateInfo instance_create_info(\(.*\), &layer_setting_info);/&\n#else\n\1vk::InstanceCreateInfo instance_create_info(\2);\n#endif/' "$cpp"
fi
# shellcheck disable=SC2086
cmake -S "$src" -B "$build/out" $flags >"$build/configure.log" 2>&1 || { tail -n 20 "$build/configure.log" >&2; exit 1; }
grep -q 'Vulkan found' "$build/configure.log" ||
  { echo "ggml-vulkan: CMake found no Vulkan (see below)" >&2; tail -n 20 "$build/configure.log" >&2; exit 1; }
nice -n 10 cmake --build "$build/out" --target ggml-vulkan -j "${JOBS:-$(nproc 2>/dev/null || echo 2)}" >"$build/build.log" 2>&1 || {
  mkdir -p "$cache_root/ggml-vulkan"; cp "$build/build.log" "$cache_root/ggml-vulkan/failed-build.log"
  grep -m 20 'error' "$build/build.log" >&2
  echo "ggml-vulkan: build failed; the whole log is $cache_root/ggml-vulkan/failed-build.log" >&2; exit 1; }
tmp=$(mktemp -d "$cache_root/.tmp.XXXXXX" 2>/dev/null || { mkdir -p "$cache_root"; mktemp -d "$cache_root/.tmp.XXXXXX"; })
cp "$build/out/lib/ollama/libggml-vulkan.so" "$tmp"/
echo "$(( $(date +%s) - start ))" >"$tmp/build-seconds"
touch "$tmp/.complete"
mkdir -p "$(dirname "$dir")"
rm -rf "$dir"
mv "$tmp" "$dir"
echo "ggml-vulkan: built in $(cat "$dir/build-seconds") s" >&2
echo "$dir"

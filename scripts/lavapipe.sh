#!/usr/bin/env bash
# Installs Mesa's lavapipe (the software Vulkan device that `make test-vulkan` runs on) at version 25 or later.
#
# Mesa 22.3's lavapipe (Debian bookworm's mesa-vulkan-drivers) frees a block twice on its queue thread when
# ggml-vulkan runs the vision graphs and then a prompt with image rows: glibc aborts the process ("double free or
# corruption") in about two of three runs of the Hugging Face parity tests. Mesa 25 does not (README.md, "GPU
# backends"). On bookworm this script takes mesa-vulkan-drivers from bookworm-backports; on newer Debian and Ubuntu
# releases the distribution's own package is recent enough.
#
# Usage: scripts/lavapipe.sh          install or upgrade when needed (apt-get; root)
#        scripts/lavapipe.sh --check  exit 1 with a message when the installed lavapipe is older than Mesa 25
set -euo pipefail

min_major=25

installed_major() {
  local v
  v=$(dpkg-query -W -f '${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  v=${v#*:}
  echo "${v%%.*}"
}

ok() {
  local m
  m=$(installed_major)
  [ -n "$m" ] && [ "$m" -ge "$min_major" ] 2>/dev/null
}

if [ "${1:-}" = "--check" ]; then
  if ! command -v dpkg-query >/dev/null; then
    exit 0 # not a Debian-based system: nothing to check here
  fi
  if ok; then
    exit 0
  fi
  echo "lavapipe: mesa-vulkan-drivers $(dpkg-query -W -f '${Version}' mesa-vulkan-drivers 2>/dev/null || echo 'not installed')" \
    "is older than Mesa $min_major, whose lavapipe aborts ggml-vulkan runs with a double free; run scripts/lavapipe.sh" >&2
  exit 1
fi

if ok; then
  echo "lavapipe: mesa-vulkan-drivers $(dpkg-query -W -f '${Version}' mesa-vulkan-drivers)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
target=()
if [ "$codename" = bookworm ]; then
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat >/etc/apt/sources.list.d/bookworm-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  target=(-t bookworm-backports)
fi
apt-get update -qq
apt-get install -y -qq "${target[@]}" mesa-vulkan-drivers
if ! ok; then
  echo "lavapipe: could not install Mesa $min_major or later (have $(dpkg-query -W -f '${Version}' mesa-vulkan-drivers))" >&2
  exit 1
fi
echo "lavapipe: mesa-vulkan-drivers $(dpkg-query -W -f '${Version}' mesa-vulkan-drivers)"

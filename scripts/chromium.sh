#!/usr/bin/env bash
# Makes sure a Chromium or Chrome executable is on PATH for `make test-browser`: installs Debian's chromium package
# with apt-get when none is found (as root, or through sudo).
set -euo pipefail
for b in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$b" >/dev/null; then
    exit 0
  fi
done
if ! command -v apt-get >/dev/null; then
  echo "chromium.sh: no Chromium or Chrome on PATH and no apt-get to install Debian's chromium; install one" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "chromium.sh: installing chromium needs root (or sudo)" >&2; exit 1; }
  sudo=sudo
fi
echo "chromium.sh: installing Debian's chromium (apt-get install chromium)" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null

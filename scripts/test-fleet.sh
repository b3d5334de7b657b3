#!/usr/bin/env bash
# make test-fleet: the scale-out test (internal/fleettest, build tag fleet). Installs HAProxy from the distribution
# when it is absent (Debian/Ubuntu: apt-get, as root or through sudo), builds the binaries, then runs the test: two
# `serve` replicas of the demo model on loopback ports behind HAProxy, 200 requests with images from 8 clients,
# SIGTERM to one replica mid-load.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
if ! command -v haproxy >/dev/null; then
  if ! command -v apt-get >/dev/null; then
    echo "test-fleet: haproxy is not installed and there is no apt-get to install it; install HAProxy (2.2 or later)" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "test-fleet: installing haproxy needs root or sudo" >&2; exit 1; }
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq haproxy >/dev/null
fi
haproxy -v | sed -n 1p
make --no-print-directory build
"$GO" test -tags fleet -count=1 -v -run TestFleet ./internal/fleettest/

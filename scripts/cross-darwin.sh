#!/usr/bin/env bash
# Builds and vets, for darwin/arm64 with cgo off, every package of the module that does not need cgo (all but ggml/
# and the packages above it), so that the pure-Go half of the project is checked for macOS on Apple Silicon without
# a Mac. The cgo half (ggml/ and what imports it) builds on a Mac only: `make metal` there.
#
# Environment: GO (default go), GOOS/GOARCH (default darwin/arm64, for other targets).
set -euo pipefail
GO=${GO:-go}
export CGO_ENABLED=0 GOOS=${GOOS:-darwin} GOARCH=${GOARCH:-arm64}
mod=$($GO list -m)
cgo_pkg=$mod/ggml
pkgs=()
skipped=()
while read -r pkg deps; do
  case " $pkg $deps " in
    *" $cgo_pkg "*) skipped+=("${pkg#"$mod"/}") ;;
    *) pkgs+=("$pkg") ;;
  esac
done < <(CGO_ENABLED=1 $GO list -f '{{.ImportPath}} {{join .Deps " "}}' ./...)
[ ${#pkgs[@]} -gt 0 ] || { echo "cross-darwin: no package without cgo found" >&2; exit 1; }
echo "cross-darwin: $GOOS/$GOARCH, cgo off: building and vetting ${#pkgs[@]} packages (cgo packages left to a $GOOS machine: ${skipped[*]:-none})"
$GO build "${pkgs[@]}"
$GO vet "${pkgs[@]}"

#!/usr/bin/env bash
# Builds helm from the Go module proxy into ~/.cache/somafractal/helm-<version>/bin,
# for the chart test (lint, render, server-side dry-run against the test
# kube-apiserver). Idempotent: exits at once when the binary is there.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-3.16.4}"
CACHE="${SOMAFRACTAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/somafractal}"
OUT="$CACHE/helm-$HELM_VERSION/bin"

if [ -x "$OUT/helm" ]; then
  echo "$OUT"
  exit 0
fi

export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" CGO_ENABLED=0 GOTOOLCHAIN=local
mkdir -p "$OUT"
echo "building helm v$HELM_VERSION" >&2
GOBIN="$OUT.tmp" go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
mv "$OUT.tmp/helm" "$OUT/helm"
rmdir "$OUT.tmp"
echo "$OUT"

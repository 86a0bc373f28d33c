#!/usr/bin/env bash
# Builds Kubernetes from the Go module proxy. Idempotent: exits at once when the
# binaries for these versions are already there; prints their directory.
#   scripts/build-kube.sh        etcd, kube-apiserver, kube-controller-manager, kubectl
#                                -> ~/.cache/somafractal/kube-<version>-etcd-<version>/bin
#   scripts/build-kube.sh node   kubelet, kube-scheduler (the real-pods test node)
#                                -> ~/.cache/somafractal/kube-node-<version>/bin
set -euo pipefail
SET="${1:-control-plane}"

KUBE_VERSION="${KUBE_VERSION:-1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
CACHE="${SOMAFRACTAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/somafractal}"
case "$SET" in
  control-plane)
    BASE="$CACHE/kube-$KUBE_VERSION-etcd-$ETCD_VERSION"
    BINARIES=(etcd kube-apiserver kube-controller-manager kubectl) ;;
  node)
    BASE="$CACHE/kube-node-$KUBE_VERSION"
    BINARIES=(kubelet kube-scheduler) ;;
  *) echo "usage: $0 [control-plane|node]" >&2; exit 2 ;;
esac
OUT="$BASE/bin"

have_all() {
  for b in "${BINARIES[@]}"; do [ -x "$OUT/$b" ] || return 1; done
}
if have_all; then
  echo "$OUT"
  exit 0
fi

# GOMODCACHE/GOCACHE/GOPROXY from the environment win (e.g. a private build
# cache while another build uses the shared one).
export GOMODCACHE="${GOMODCACHE:-$CACHE/go/mod}" GOCACHE="${GOCACHE:-$CACHE/go/build}" GOFLAGS=-mod=mod CGO_ENABLED=0
export GOTOOLCHAIN=local
mkdir -p "$OUT"
SRC="$BASE/src"
rm -rf "$SRC"
mkdir -p "$SRC/kube" "$SRC/etcd"

# --- kube: k8s.io/kubernetes pins its staging modules at v0.0.0; point each at
# the published v0.<minor>.<patch> taken from that release's own go.mod.
cd "$SRC/kube"
cat > go.mod <<MOD
module somafractal.local/kubebuild

go 1.24

require k8s.io/kubernetes v$KUBE_VERSION
MOD
kube_mod="$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
staging_version="v0.${KUBE_VERSION#1.}"
grep -oE 'k8s.io/[a-z0-9-]+ => ./staging' "$kube_mod" | awk '{print $1}' | sort -u | while read -r m; do
  echo "replace $m => $m $staging_version" >> go.mod
done

mkdir -p cmd/kube-apiserver cmd/kube-controller-manager cmd/kubectl cmd/kubelet cmd/kube-scheduler
cat > cmd/kube-apiserver/main.go <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
GO
cat > cmd/kube-controller-manager/main.go <<'GO'
package main

import (
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() { os.Exit(cli.Run(app.NewControllerManagerCommand())) }
GO
cat > cmd/kubectl/main.go <<'GO'
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}
GO
if [ "$SET" = node ]; then
cat > cmd/kubelet/main.go <<'GO'
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() { os.Exit(cli.Run(app.NewKubeletCommand(context.Background()))) }
GO
cat > cmd/kube-scheduler/main.go <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() { os.Exit(cli.Run(app.NewSchedulerCommand())) }
GO
fi
go mod tidy
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${KUBE_VERSION#1.}"
ldflags="${ldflags%.*}"  # gitMinor is the minor only
for b in "${BINARIES[@]}"; do
  [ "$b" = etcd ] && continue
  echo "building $b v$KUBE_VERSION (first time takes several minutes)" >&2
  go build -trimpath -ldflags "$ldflags" -o "$OUT/$b.tmp" "./cmd/$b"
  mv "$OUT/$b.tmp" "$OUT/$b"
done

if [ "$SET" = node ]; then
  have_all
  echo "$OUT"
  exit 0
fi

# --- etcd
cd "$SRC/etcd"
cat > go.mod <<MOD
module somafractal.local/etcdbuild

go 1.24

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
MOD
cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
go mod tidy
echo "building etcd v$ETCD_VERSION" >&2
go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" .
mv "$OUT/etcd.tmp" "$OUT/etcd"

have_all
echo "$OUT"

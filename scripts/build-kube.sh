#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager and kubectl from the Go
# module proxy into ~/.cache/somafractal/kube-<version>/bin. Idempotent: exits
# at once when the binaries for these versions are already there.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
CACHE="${SOMAFRACTAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/somafractal}"
OUT="$CACHE/kube-$KUBE_VERSION-etcd-$ETCD_VERSION/bin"
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl)

have_all() {
  for b in "${BINARIES[@]}"; do [ -x "$OUT/$b" ] || return 1; done
}
if have_all; then
  echo "$OUT"
  exit 0
fi

export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOFLAGS=-mod=mod CGO_ENABLED=0
export GOTOOLCHAIN=local
mkdir -p "$OUT"
SRC="$CACHE/kube-$KUBE_VERSION-etcd-$ETCD_VERSION/src"
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

mkdir -p cmd/kube-apiserver cmd/kube-controller-manager cmd/kubectl
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
go mod tidy
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${KUBE_VERSION#1.}"
ldflags="${ldflags%.*}"  # gitMinor is the minor only
for b in kube-apiserver kube-controller-manager kubectl; do
  echo "building $b v$KUBE_VERSION (first time takes several minutes)" >&2
  go build -trimpath -ldflags "$ldflags" -o "$OUT/$b.tmp" "./cmd/$b"
  mv "$OUT/$b.tmp" "$OUT/$b"
done

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

#!/usr/bin/env bash
# `make deploy`: the dev backing services (deploy/dev/backends.yaml) and the
# operator chart on the current kubectl context (made by `make kind-up`), with
# the images `make images` built and `make kind-load` loaded. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBECTL="${KUBECTL:-kubectl}" HELM="${HELM:-helm}"
DEV=somafractal-dev
$KUBECTL create namespace $DEV --dry-run=client -o yaml | $KUBECTL apply -f -
if ! $KUBECTL get secret backends -n $DEV >/dev/null 2>&1; then
  $KUBECTL create secret generic backends -n $DEV \
    --from-literal=postgres-password="$(openssl rand -hex 16)" \
    --from-literal=redis-password="$(openssl rand -hex 16)" \
    --from-literal=qdrant-api-key="$(openssl rand -hex 24)"
fi
$KUBECTL apply -f deploy/dev/backends.yaml
for d in postgres redis kafka qdrant; do $KUBECTL rollout status deploy/$d -n $DEV --timeout=300s; done
secret() { $KUBECTL get secret backends -n $DEV -o "jsonpath={.data.$1}" | base64 -d; }
declare -A REF
while read -r name ref _; do REF[$name]=$ref; done < <(scripts/build-images.sh)
op=${REF[memory-operator]}
$HELM upgrade --install somafractal charts/somafractal-operator -n somafractal-system --create-namespace \
  --set image.repository="${op%:*}" --set image.tag="${op##*:}" --set image.pullPolicy=Never \
  --set runtimeImage="${REF[memory-runtime]}" --set runtimeImagePullPolicy=Never \
  --set postgres.adminDsn="postgresql://postgres:$(secret postgres-password)@postgres.$DEV.svc:5432/memory" \
  --set redis.adminUrl="redis://default:$(secret redis-password)@redis.$DEV.svc:6379/0" \
  --set kafka.bootstrap="kafka.$DEV.svc:9092" \
  --set qdrant.url="http://qdrant.$DEV.svc:6333" --set qdrant.apiKey="$(secret qdrant-api-key)" \
  --set 'watchNamespaces={tenants}'
$KUBECTL rollout status deploy/somafractal -n somafractal-system --timeout=300s

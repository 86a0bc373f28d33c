#!/usr/bin/env bash
# Builds the operator and runtime images (and the test node's pause image) with no
# image registry: a Debian bookworm base made by mmdebstrap, imported into podman,
# then the project's own Dockerfiles on top of it, offline, from a wheelhouse
# downloaded from the hash-locked requirements/*.txt.
#
# Cached by content under ~/.cache/somafractal/images: each image's key hashes
# everything it is built from (base, Dockerfile, locks, package sources), and an
# image whose OCI archive exists is not rebuilt. Prints one line per image:
#   <name> <reference> <oci-archive>
# podman keeps its state in a temporary directory, removed (and unmounted) at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${SOMAFRACTAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/somafractal}"
OUT="$CACHE/images"
PY="${PYTHON:-.venv/bin/python}"
mkdir -p "$OUT"
log() { echo "build-images: $*" >&2; }
hash_of() { sha256sum | cut -c1-16; }
files_hash() { find "$@" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z \
  | xargs -0 sha256sum | hash_of; }

# --- Debian base: python3 + venv + CA certificates, nothing else. SOURCE_DATE_EPOCH
# makes the tarball the same bytes for the same package versions.
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_PACKAGES=python3,python3-venv,ca-certificates
base_key=$(printf '%s\n' "$SUITE" "$BASE_PACKAGES" v1 | hash_of)
BASE_DIR="$CACHE/debian-base-$SUITE-$base_key"
if [ ! -f "$BASE_DIR/rootfs.tar" ]; then
  log "building the Debian $SUITE base with mmdebstrap (once)"
  mkdir -p "$BASE_DIR"
  SOURCE_DATE_EPOCH=1735689600 nice -n 10 mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
    --include="$BASE_PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='chroot "$1" dpkg-query -W > "$1/packages.txt"' \
    --customize-hook='copy-out /packages.txt '"$BASE_DIR" \
    --customize-hook='rm -rf "$1"/packages.txt "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$SUITE" "$BASE_DIR/rootfs.tar.tmp" "$MIRROR"
  mv "$BASE_DIR/rootfs.tar.tmp" "$BASE_DIR/rootfs.tar"
fi
BASE_REF="localhost/somafractal-debian:$base_key"
BASE_PYTHON=$(awk '$1 == "python3.11-minimal" {split($2, v, "-"); print v[1]}' "$BASE_DIR/packages.txt")

for_image() {  # <lock>: the lock's requirements whose markers hold for the base's Python, unmarked
  "$PY" - "$1" "$BASE_PYTHON" <<'PYCODE'
import sys
from packaging.markers import Marker, default_environment
lock, version = sys.argv[1], sys.argv[2]
env = default_environment() | {"python_full_version": version, "python_version": version[:4]}
for block in open(lock).read().replace("\\\n", " ").splitlines():
    if not block.strip() or block.lstrip().startswith("#"):
        continue
    spec, _, rest = block.partition(" --hash")
    req, _, marker = spec.partition(";")
    if not marker.strip() or Marker(marker.strip()).evaluate(env):
        print(f"{req.strip()} --hash{rest}")
PYCODE
}

# --- keys of the images
runtime_key=$( { echo "$base_key"; cat runtime/Dockerfile requirements/runtime.txt requirements/model.txt;
  files_hash runtime/memory_runtime memory_contract; } | hash_of)
operator_key=$( { echo "$base_key"; cat operator/Dockerfile requirements/operator.txt;
  files_hash operator/memory_operator memory_contract; } | hash_of)
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] && "$BUSYBOX" --help 2>&1 | grep -q static || BUSYBOX=$(dpkg -L busybox-static | grep '/bin/busybox$')
pause_key=$(sha256sum "$BUSYBOX" | hash_of)
declare -A KEYS=([memory-runtime]=$runtime_key [memory-operator]=$operator_key [pause]=$pause_key)
declare -A DOCKERFILES=([memory-runtime]=runtime/Dockerfile [memory-operator]=operator/Dockerfile)
archive() { echo "$OUT/$1-${KEYS[$1]}.oci.tar"; }

missing=()
for name in memory-runtime memory-operator pause; do [ -f "$(archive "$name")" ] || missing+=("$name"); done

if [ ${#missing[@]} -gt 0 ]; then
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/somafractal-podman.XXXXXX")
  # podman's own state outside --root/--runroot/--tmpdir: a blob-info cache and
  # its run dir. Removed afterwards unless they were there before.
  created=()
  for d in /var/lib/containers /run/libpod; do [ -e "$d" ] || created+=("$d"); done
  cleanup() {
    mountpoint -q "$WORK/root/overlay" && umount "$WORK/root/overlay"
    rm -rf "$WORK" "${created[@]}"
  }
  trap cleanup EXIT
  # runc: crun refuses cgroup v1 hybrid hosts; ulimits below the machine's hard limit.
  cat > "$WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
CONF
  podman=(env CONTAINERS_CONF="$WORK/containers.conf" podman --root "$WORK/root" \
    --runroot "$WORK/run" --tmpdir "$WORK/tmp" --storage-driver overlay)
  save() {  # <name> <reference>
    "${podman[@]}" save --quiet --format oci-archive -o "$(archive "$1").tmp" "$2" >/dev/null
    mv "$(archive "$1").tmp" "$(archive "$1")"
  }
  for name in "${missing[@]}"; do
    ref="localhost/$name:${KEYS[$name]}"
    if [ "$name" = pause ]; then
      mkdir -p "$WORK/pause" && cp "$BUSYBOX" "$WORK/pause/busybox"
      printf 'FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox", "sleep", "2147483647"]\n' \
        > "$WORK/pause/Containerfile"
      log "building $ref"
      "${podman[@]}" build --quiet --network=none -t "$ref" "$WORK/pause" >/dev/null
      save "$name" "$ref"; continue
    fi
    if ! "${podman[@]}" image exists "$BASE_REF"; then
      "${podman[@]}" import --quiet "$BASE_DIR/rootfs.tar" "$BASE_REF" >/dev/null
    fi
    wheels="$CACHE/wheels"
    for lock in requirements/${name#memory-}.txt $([ "$name" = memory-runtime ] && echo requirements/model.txt); do
      log "downloading the wheels of $lock into $wheels"
      # pip download judges environment markers by the Python running it; the
      # image's Python decides (e.g. python_full_version < "3.11.3"), so resolve
      # the markers for it first.
      for_image "$lock" > "$WORK/$(basename "$lock")"
      "$PY" -m pip download -q --disable-pip-version-check --require-hashes --no-deps \
        --only-binary=:all: -d "$wheels" -r "$WORK/$(basename "$lock")"
    done
    log "building $ref"
    nice -n 10 "${podman[@]}" build --quiet --pull=never --network=none --volume "$wheels:/wheels:ro" \
      --build-arg BASE_IMAGE="$BASE_REF" --build-arg PIP_INSTALL_OPTIONS="--no-index --find-links=/wheels" \
      -f "${DOCKERFILES[$name]}" -t "$ref" . >/dev/null
    save "$name" "$ref"
  done
fi
for name in memory-runtime memory-operator pause; do
  # keep this archive and the two newest others (other checkouts may use other keys)
  { ls -t "$OUT/$name"-*.oci.tar | grep -vxF "$(archive "$name")" || true; } | tail -n +3 | xargs -r rm -f
  echo "$name localhost/$name:${KEYS[$name]} $(archive "$name")"
done

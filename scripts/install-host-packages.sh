#!/usr/bin/env bash
# Debian packages the image build and the real-pods test cluster need:
#   mmdebstrap      the images' Debian base (no image registry is reachable on the build machine)
#   podman + runc   builds the images from that base (crun refuses cgroup v1 hybrid hosts)
#   containerd      the test node's container runtime (kubelet talks CRI to it)
#   containernetworking-plugins  bridge + host-local CNI for the test node's pods
#   busybox-static  the pause image (sandbox) is one static busybox
#   iptables        the CNI bridge plugin and kubelet manage their own chains
# Idempotent: does nothing when every package is installed.
set -euo pipefail
PACKAGES=(mmdebstrap podman runc containerd containernetworking-plugins busybox-static iptables)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run this script as root, or apt-get install them)" >&2
  exit 1
fi
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

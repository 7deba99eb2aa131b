#!/usr/bin/env bash
# promtool (Debian's prometheus package), to check and unit-test the alert rules in deploy/.
# Idempotent. The package's own Prometheus server is kept from starting: only the tool is used.
set -euo pipefail
if ! command -v promtool >/dev/null; then
  [[ $(id -u) -eq 0 ]] || { echo "promtool missing; run: sudo apt-get install prometheus" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  our_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    # Tells the package's scripts not to start the server (exit 101: "action forbidden").
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    our_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  {
    apt-get -q -o DPkg::Lock::Timeout=300 update &&
      apt-get -q -y -o DPkg::Lock::Timeout=300 install --no-install-recommends prometheus
  } >/tmp/flashorder-promtool-install.log 2>&1 || { tail -20 /tmp/flashorder-promtool-install.log >&2; exit 1; }
  [[ -z $our_policy ]] || rm -f /usr/sbin/policy-rc.d
fi
command -v promtool

#!/usr/bin/env bash
# Debian's headless Chromium and its driver, for the tests that drive a real browser.
# Idempotent: installs only what is missing. Prints the browser's path.
set -euo pipefail
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  [[ $(id -u) -eq 0 ]] || { echo "chromium missing; run: sudo apt-get install chromium chromium-driver" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  {
    apt-get -q -o DPkg::Lock::Timeout=300 update &&
      apt-get -q -y -o DPkg::Lock::Timeout=300 install --no-install-recommends chromium chromium-driver
  } >/tmp/flashorder-chromium-install.log 2>&1 || { tail -20 /tmp/flashorder-chromium-install.log >&2; exit 1; }
fi
command -v chromium

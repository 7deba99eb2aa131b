#!/usr/bin/env bash
# Headless Chromium for the browser tests, from Debian's packages: the browser (driven by
# Playwright through executable_path=/usr/bin/chromium) and its WebDriver (for Selenium).
# Idempotent: a machine that has both returns at once. Needs root (CI runs as root).
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Another install may hold apt's lock for a while: wait for it rather than fail.
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
apt_get update -qq
apt_get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
/usr/bin/chromium --version

#!/usr/bin/env bash
# Headless Chromium and a Japanese font, from Debian's packages, for the poster screenshot test.
# Needs root (as in CI); elsewhere it says what to install and the screenshot test is skipped.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && fc-list :lang=ja 2>/dev/null | grep -q .; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "tests/browser.sh: install the Debian packages chromium and fonts-ipafont-gothic for the poster test" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq chromium fonts-ipafont-gothic >/dev/null

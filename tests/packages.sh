#!/usr/bin/env bash
# System packages the tests use, from Debian: headless Chromium, its WebDriver (the answer page driven
# end to end) and a Japanese font (mail and poster rendering), nginx (the TLS proxy in front of gunicorn), PostgreSQL's server (the second
# engine: the tests initdb their own cluster in a temporary folder). Needs root (as in CI); elsewhere
# it says what to install and those tests are skipped.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
fc-list :lang=ja 2>/dev/null | grep -q . || need+=(fonts-ipafont-gothic)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ]; then
  echo "tests/packages.sh: install the Debian packages ${need[*]} for the browser, proxy and PostgreSQL tests" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Packages are installed, never started as services: the tests start what they need themselves.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq >/dev/null
apt-get install -y -qq "${need[@]}" >/dev/null

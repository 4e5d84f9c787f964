#!/usr/bin/env bash
# System packages the tests use: mosquitto (the tests start their own brokers with the
# project's configuration), mosquitto-clients (mosquitto_pub as an outside client) and
# Node.js with npm (TimescaleDB's SQL runs in PGlite, PostgreSQL compiled to WebAssembly) and
# Chromium (the duty console is tested in a real browser, driven by Playwright under Node.js).
# Installed from Debian's packages when missing and we may (root with apt-get).
set -euo pipefail
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (Debian packages) for the test suite" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "the tests need: ${missing[*]} (e.g. apt-get install ${missing[*]})" >&2
exit 1

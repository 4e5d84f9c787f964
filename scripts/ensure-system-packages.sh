#!/usr/bin/env bash
# The tests start their own mosquitto with the project's configuration. Install it from
# Debian's packages when it is missing and we may (root with apt-get); otherwise say so.
set -euo pipefail
if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing mosquitto (Debian package) for the test suite" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
  exit 0
fi
echo "the tests need mosquitto: install it (e.g. apt-get install mosquitto mosquitto-clients)" >&2
exit 1

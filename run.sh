#!/usr/bin/env bash
# Sets up everything and runs the demo: offsite with the demo registry and simulated devices.
# Uses OFFSITE_DATABASE_URL / OFFSITE_MQTT_URL when set; otherwise starts an embedded
# PostgreSQL and a broker (mosquitto when installed, else amqtt) under ./.offsite.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/setup-env.sh embedded
exec .venv/bin/offsite demo "$@"

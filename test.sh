#!/usr/bin/env bash
# Sets up everything and runs the checks: ruff, mypy (strict) and the whole test suite
# against a real PostgreSQL and real mosquitto brokers the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/setup-env.sh embedded,dev
scripts/ensure-system-packages.sh
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
.venv/bin/mypy
exec .venv/bin/pytest "$@"

#!/usr/bin/env bash
# Builds the wheel, installs it with the test extras into a fresh virtual
# environment, and runs the test suite against the installed package (not
# the source tree). Usage: bash scripts/test.sh [pytest args...]
# PYTHON picks the interpreter (default python3); VENV the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${VENV:-.venv-test}"
"${PYTHON:-python3}" -m venv --clear "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
rm -rf dist
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$venv/bin/python" -m pip wheel -q --no-deps -Cbuild-dir="build/wheel-{wheel_tag}" -w dist .
wheel=$(ls dist/virtrigaud_resilience-*.whl)
"$venv/bin/python" -m pip install -q "${wheel}[test,bench]"
# Two workers, a test file each at a time (module fixtures such as a
# redis-server or a fleet of processes start once): the suite waits on
# servers and timers for a third of its time, so this halves it on 2 cores.
# PYTEST_WORKERS=0 runs it in one process.
exec "$venv/bin/python" -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"

#!/usr/bin/env bash
# The package on a free-threaded CPython 3.13 (GIL disabled): builds the
# interpreter (cached outside the checkout), the cp313t wheel for it, installs the
# wheel with the few test dependencies that have free-threaded wheels, checks
# that importing it leaves the GIL disabled, and runs the thread-stress tests
# (marker `threads`) and the core test files. The adapters' tests (grpcio,
# redis, httpx, ...) are left out: their dependencies may have no cp313t wheel.
# Prints the time of each step. Usage: bash scripts/test-freethreaded.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
unset PYTHON_GIL  # the wheel itself must keep the GIL off
start=$SECONDS
step() { echo "-- $1 ($((SECONDS - start)) s)"; }

python="$(bash scripts/build-freethreaded-python.sh)"
step "interpreter: $python"

venv=build/venv-3.13t
dist=build/dist-3.13t
"$python" -m venv --clear "$venv"
rm -rf "$dist"
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$venv/bin/python" -m pip wheel -q --no-deps -Cbuild-dir="build/wheel-{wheel_tag}" -w "$dist" .
step "wheel: $(basename "$dist"/virtrigaud_resilience-*.whl)"
# Wheels only: an sdist of a test tool would need its own toolchain here.
"$venv/bin/python" -m pip install -q --only-binary=:all: "$dist"/virtrigaud_resilience-*.whl \
  pytest pytest-asyncio pytest-benchmark hypothesis
"$venv/bin/python" -c 'import sys, virtrigaud_resilience
assert not sys._is_gil_enabled(), "importing virtrigaud_resilience enabled the GIL"'
step "installed; the GIL stays disabled"

"$venv/bin/python" -X faulthandler -m pytest -q -p no:cacheprovider -m threads \
  tests/test_threads.py "$@"
step "thread-stress tests"
# one_shot, hook_lifetime and argument_forwarding race threads on one object;
# their hammers can only lose a race where the GIL is off, so they run here.
core=(breaker token_bucket policy retry bulkhead backoff cancellation errors durations events
      conditions finalisers_at_exit subclass_patching one_shot hook_lifetime argument_forwarding)
"$venv/bin/python" -X faulthandler -m pytest -q -p no:cacheprovider \
  $(printf "tests/test_%s.py " "${core[@]}") "$@"
step "core tests"

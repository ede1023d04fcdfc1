#!/usr/bin/env bash
# C++ stress tests under ThreadSanitizer, or the microbenchmark.
#   cpp/tests/run_stress.sh [build-dir]           TSan build + stress_test (default build/stress-tsan)
#   cpp/tests/run_stress.sh --bench [build-dir]   Release build + microbench (default build/bench)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CMAKE_BUILD_PARALLEL_LEVEL=2

if [[ "${1:-}" == "--bench" ]]; then
  build="${2:-$root/build/bench}"
  cmake -S "$root" -B "$build" -DVIRTRIGAUD_BUILD_STRESS=ON -DVIRTRIGAUD_SANITIZE_THREAD=OFF \
    -DCMAKE_BUILD_TYPE=Release
  cmake --build "$build" --target microbench
  exec "$build/microbench"
fi

build="${1:-$root/build/stress-tsan}"
cmake -S "$root" -B "$build" -DVIRTRIGAUD_BUILD_STRESS=ON -DVIRTRIGAUD_SANITIZE_THREAD=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" --target stress_test
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}" \
  "$build/stress_test" 2>&1 | tee "$log" || status=$?
if grep -q "WARNING: ThreadSanitizer" "$log"; then
  echo "run_stress.sh: ThreadSanitizer reported a problem" >&2
  exit 1
fi
exit "$status"

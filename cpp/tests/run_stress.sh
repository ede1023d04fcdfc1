#!/usr/bin/env bash
# C++ stress tests under ThreadSanitizer or AddressSanitizer+UBSan, or the microbenchmark.
#   cpp/tests/run_stress.sh [build-dir]           TSan build + stress_test (default build/stress-tsan)
#   cpp/tests/run_stress.sh --asan [build-dir]    ASan+UBSan build + stress_test (default build/stress-asan);
#                                                 any report is fatal (-fno-sanitize-recover=all)
#   cpp/tests/run_stress.sh --bench [build-dir]   Release build + microbench (default build/bench)
# Extra arguments for stress_test (SCALE [NAME]) go in STRESS_ARGS.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
read -r -a stress_args <<<"${STRESS_ARGS:-}"

if [[ "${1:-}" == "--bench" ]]; then
  build="${2:-$root/build/bench}"
  cmake -S "$root" -B "$build" -DVIRTRIGAUD_BUILD_STRESS=ON -DVIRTRIGAUD_SANITIZE_THREAD=OFF \
    -DVIRTRIGAUD_SANITIZE_ADDRESS_UB=OFF -DCMAKE_BUILD_TYPE=Release
  cmake --build "$build" --target microbench
  exec "$build/microbench"
fi

if [[ "${1:-}" == "--asan" ]]; then
  build="${2:-$root/build/stress-asan}"
  cmake -S "$root" -B "$build" -DVIRTRIGAUD_BUILD_STRESS=ON -DVIRTRIGAUD_SANITIZE_THREAD=OFF \
    -DVIRTRIGAUD_SANITIZE_ADDRESS_UB=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
  cmake --build "$build" --target stress_test
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  status=0
  ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
    "$build/stress_test" "${stress_args[@]}" 2>&1 | tee "$log" || status=$?
  if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$log"; then
    echo "run_stress.sh: AddressSanitizer/UBSan reported a problem" >&2
    exit 1
  fi
  exit "$status"
fi

build="${1:-$root/build/stress-tsan}"
cmake -S "$root" -B "$build" -DVIRTRIGAUD_BUILD_STRESS=ON -DVIRTRIGAUD_SANITIZE_THREAD=ON \
  -DVIRTRIGAUD_SANITIZE_ADDRESS_UB=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" --target stress_test
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}" \
  "$build/stress_test" "${stress_args[@]}" 2>&1 | tee "$log" || status=$?
if grep -q "WARNING: ThreadSanitizer" "$log"; then
  echo "run_stress.sh: ThreadSanitizer reported a problem" >&2
  exit 1
fi
exit "$status"

#!/usr/bin/env bash
# The C++ core on AArch64, from this x86-64 machine: cross-builds the stress
# suite and the microbenchmark with GCC (g++-aarch64-linux-gnu) and with Clang
# (--target=aarch64-linux-gnu, on the cross GCC's libstdc++ and sysroot), and
# runs stress_test under qemu-aarch64 on a CPU without the ARMv8.1 atomics
# (cortex-a72: the LDAXP/STLXP path of atomic_pair.hpp) and on one with them
# (max: CASPAL, chosen at run time).
#   scripts/cross-aarch64.sh [build-root]     (default build/aarch64)
# STRESS_ARGS: arguments for stress_test (default "0": each case once; under
# the emulator the suite runs several times slower than natively).
# Installs qemu-user, g++-aarch64-linux-gnu and clang from apt when missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
builds="${1:-$root/build/aarch64}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
read -r -a stress_args <<<"${STRESS_ARGS:-0}"
sysroot=/usr/aarch64-linux-gnu

if ! command -v qemu-aarch64 >/dev/null 2>&1 || ! command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 ||
  ! command -v clang++ >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user g++-aarch64-linux-gnu clang >/dev/null
fi

# configure NAME CMAKE-ARGS...: a Release cross build of the stress targets.
configure() {
  local name="$1"
  shift
  cmake -S "$root" -B "$builds/$name" -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
    -DCMAKE_FIND_ROOT_PATH="$sysroot" -DCMAKE_BUILD_TYPE=Release -DVIRTRIGAUD_BUILD_STRESS=ON \
    -DVIRTRIGAUD_SANITIZE_THREAD=OFF -DVIRTRIGAUD_SANITIZE_ADDRESS_UB=OFF "$@" >/dev/null
  cmake --build "$builds/$name" --target stress_test microbench
}

configure gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++
configure clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_CXX_COMPILER_TARGET=aarch64-linux-gnu
echo "cross-aarch64.sh: built in ${SECONDS} s"

# run BUILD CPU [NAME]: stress_test of that build on that CPU (all cases, or
# those whose name contains NAME). Every run goes ahead; failures are counted.
failed=0
run() {
  local name="$1" cpu="$2" args=("${stress_args[@]}")
  [[ -n "${3:-}" ]] && args=("${args[0]:-0}" "$3")
  echo "== stress_test ${args[*]} on AArch64 ($name build, qemu -cpu $cpu)"
  qemu-aarch64 -L "$sysroot" -cpu "$cpu" "$builds/$name/stress_test" "${args[@]}" ||
    failed=$((failed + 1))
}

# The whole suite for each compiler on each CPU: on a quiet 2-core machine
# about 10 s a run, 75 s with both builds (plus the install, once). On a
# loaded machine AARCH64_FULL_MATRIX=0 halves the runs: the whole suite once
# per compiler and once per CPU (GCC without LSE, Clang with it), and only
# the 16-byte CAS check (atomic_pair_consistent_reads) on the other two pairs.
run gcc cortex-a72
run clang max
if [[ "${AARCH64_FULL_MATRIX:-1}" == 1 ]]; then
  run gcc max
  run clang cortex-a72
else
  run gcc max atomic_pair
  run clang cortex-a72 atomic_pair
fi
echo "cross-aarch64.sh: built and ran in ${SECONDS} s; ${failed} run(s) failed"
exit $((failed > 0))

#!/usr/bin/env bash
# Runs each fuzz target in fuzz/ (atheris, libFuzzer) for a bounded time
# against the package installed in a virtual environment, and exits non-zero
# if any target crashes (an exception the target does not allow, a broken
# property, a hang past FUZZ_TIMEOUT seconds on one input, or memory past
# 2 GB).
#
# Usage: bash scripts/fuzz.sh [target...]     (default: every fuzz/fuzz_*.py)
#   VENV           the environment whose python runs the targets (default
#                  .venv-test, which scripts/test.sh leaves with the package
#                  installed); atheris and PyYAML are installed into it if missing
#   PYTHON         the interpreter to use instead of "$VENV/bin/python"
#   FUZZ_SECONDS   seconds per target (default 20)
#   FUZZ_TIMEOUT   seconds one input may take before it counts as a hang (default 10)
#   FUZZ_OUT       where new inputs and crash reproducers go (default build/fuzz)
#
# The committed seeds in fuzz/corpus/<target>/ are read, never written: new
# inputs go to $FUZZ_OUT/<target>/corpus. A crash leaves its input in
# $FUZZ_OUT/<target>/crash-*; replay it with: $PYTHON fuzz/<target>.py FILE
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-${VENV:-.venv-test}/bin/python}"
seconds="${FUZZ_SECONDS:-20}"
timeout="${FUZZ_TIMEOUT:-10}"
out="${FUZZ_OUT:-build/fuzz}"

if ! "$python" -c 'import virtrigaud_resilience' >/dev/null 2>&1; then
  echo "fuzz.sh: $python cannot import virtrigaud_resilience" \
    "(run scripts/test.sh first, or set VENV or PYTHON)" >&2
  exit 2
fi
if ! "$python" -c 'import atheris, yaml' >/dev/null 2>&1; then
  "$python" -m pip install -q atheris pyyaml
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for file in fuzz/fuzz_*.py; do
    targets+=("$(basename "$file" .py)")
  done
fi

failed=()
for target in "${targets[@]}"; do
  work="$out/$target"
  mkdir -p "$work/corpus"
  seeds=()
  [ -d "fuzz/corpus/$target" ] && seeds=("fuzz/corpus/$target")
  dict=()
  [ -f "fuzz/$target.dict" ] && dict=("-dict=fuzz/$target.dict")
  echo "== $target: ${seconds}s"
  # The first corpus directory is where libFuzzer writes; the seeds come second.
  if "$python" "fuzz/$target.py" -max_total_time="$seconds" -timeout="$timeout" \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/" \
      ${dict[@]+"${dict[@]}"} "$work/corpus" ${seeds[@]+"${seeds[@]}"}; then
    echo "== $target: no crash"
  else
    reproducer=$(ls -t "$work"/crash-* "$work"/timeout-* "$work"/oom-* 2>/dev/null | head -1 || true)
    echo "== $target: CRASH (reproducer: ${reproducer:-none written})" >&2
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: crashed: ${failed[*]}" >&2
  exit 1
fi

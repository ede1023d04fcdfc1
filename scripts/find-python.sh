#!/usr/bin/env bash
# Prints the path of a working CPython X.Y interpreter, or nothing (exit 1).
# Usage: bash scripts/find-python.sh 3.12
# Tries pythonX.Y on PATH, then pyenv's versions: a pyenv shim may exist for a
# version that is not active, so each candidate must actually run and be X.Y.
set -uo pipefail
want="${1:?usage: find-python.sh X.Y}"
major="${want%%.*}"
minor="${want#*.}"
candidates=("python$want")
if root=$(pyenv root 2>/dev/null); then
  candidates+=("$root"/versions/"$want".*/bin/python"$want")
fi
for candidate in "${candidates[@]}"; do
  if "$candidate" -c "import sys; assert sys.version_info[:2] == ($major, $minor)" \
      >/dev/null 2>&1; then
    command -v "$candidate" 2>/dev/null || echo "$candidate"
    exit 0
  fi
done
exit 1

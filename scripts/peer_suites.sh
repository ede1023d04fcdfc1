#!/usr/bin/env bash
# Runs tenacity's own test suite (from its sdist on PyPI) against
# virtrigaud_resilience.compat.tenacity, with `tenacity` and every
# `tenacity.*` submodule aliased to the drop-in. Nothing is kept: the sdist
# is unpacked in a temporary folder. (backoff's sdist ships no tests.)
#   bash scripts/peer_suites.sh            # with the current python (PYTHON=...)
# Needs the package installed with the test extra (tornado), and pip's access
# to the package index.
set -euo pipefail
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$python" -m pip download -q --no-binary :all: --no-deps "tenacity>=9,<10" -d "$work"
tar -xzf "$work"/tenacity-*.tar.gz -C "$work"
suite="$work/suite"
mkdir "$suite"
cp -r "$work"/tenacity-*/tests "$suite/tests"
cat > "$suite/conftest.py" <<'PY'
import importlib, pkgutil, sys
import virtrigaud_resilience.compat.tenacity as compat
sys.modules["tenacity"] = compat
for info in pkgutil.walk_packages(compat.__path__, compat.__name__ + "."):
    try:
        sys.modules["tenacity." + info.name[len(compat.__name__) + 1:]] = \
            importlib.import_module(info.name)
    except ImportError:  # tornadoweb without tornado
        pass
PY
cd "$suite"
"$python" -c "import virtrigaud_resilience.compat.tenacity"
exec "$python" -m pytest -q -p no:cacheprovider -o addopts= tests

#!/usr/bin/env bash
# Builds the documentation site with `mkdocs build --strict`: a broken link,
# a missing anchor or snippet, or a docstring griffe cannot read fails it.
# Installs only the `docs` extra's requirements (from pyproject.toml) into a
# virtual environment of its own, not the package: griffe reads the source
# statically, so nothing is compiled. The site goes to a temporary directory
# (removed) unless SITE_DIR names one. Usage: bash scripts/build-docs.sh
# PYTHON picks the interpreter (default python3, 3.11+ for tomllib); VENV the
# environment (default .venv-docs, reused between runs).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${VENV:-.venv-docs}"
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
mapfile -t requirements < <("$venv/bin/python" -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["docs"]))')
# --no-compile: byte-compiling every installed module (Pygments' lexers alone
# are hundreds) is work the build mostly never uses; it compiles what it imports.
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-compile "${requirements[@]}"

site="${SITE_DIR:-}"
if [ -z "$site" ]; then
  site=$(mktemp -d)
  trap 'rm -rf "$site"' EXIT
fi
# NO_MKDOCS_2_WARNING: mkdocs-material's notice about MkDocs 2.0, printed on every build.
NO_MKDOCS_2_WARNING=1 "$venv/bin/python" -m mkdocs build --strict --site-dir "$site"

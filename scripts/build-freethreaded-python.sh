#!/usr/bin/env bash
# Builds a free-threaded CPython 3.13 (configure --disable-gil) from Debian's
# python3.13 source package and installs it under a cache folder outside the
# checkout (VIRTRIGAUD_CACHE_DIR, default ~/.cache/virtrigaud-resilience), so a
# fresh clone on the same machine (CI) reuses it; prints the interpreter's path.
# Cached: when the installed interpreter runs and reports the GIL disabled, a
# second run only prints the path.
#
# Debian 12 (bookworm) has no python3.13, so a deb-src line for the release
# that has it (trixie) is added under /etc/apt/sources.list.d/ (needs root).
# No archive host is named here: the URI is the one this machine's apt
# configuration already takes Debian packages from.
#
# The upstream tarball of the source package is built as released (Debian's
# patches adapt CPython to Debian's /usr layout and are left out, so the
# interpreter behaves like any other built from source under its own prefix).
#
# Usage: bash scripts/build-freethreaded-python.sh [prefix]
#   (default $VIRTRIGAUD_CACHE_DIR/python3.13t)
# Environment: MAKE_JOBS (default 2), SOURCE_RELEASE (default trixie).
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${VIRTRIGAUD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/virtrigaud-resilience}"
prefix="$(realpath -m "${1:-$cache/python3.13t}")"
python="$prefix/bin/python3.13t"
release="${SOURCE_RELEASE:-trixie}"
jobs="${MAKE_JOBS:-2}"

if "$python" -c 'import sys; sys.exit(sys._is_gil_enabled())' 2>/dev/null; then
  echo "$python"
  exit 0
fi

# The URI of the Debian archive in the machine's apt sources: the first deb
# entry (one-line *.list or deb822 *.sources) whose suite is this system's
# release, so security and third-party repositories are never picked.
debian_archive_uri() {
  local codename
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:?}")"
  local files=()
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  awk -v codename="$codename" '
    # one-line format: deb [options] uri suite components...
    /^[[:space:]]*deb[[:space:]]/ {
      i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) == codename) { print $i; exit }
      next
    }
    # deb822 format: stanzas separated by blank lines
    /^[[:space:]]*$/ { flush(); next }
    /^URIs:/   { uris = $2 }
    /^Types:/  { types = $0 }
    /^Suites:/ { suites = $0 }
    function flush() {
      if (uris != "" && types ~ /[[:space:]]deb([[:space:]]|$)/ &&
          (" " suites " ") ~ ("[[:space:]]" codename "[[:space:]]")) { print uris; exit }
      uris = ""; types = ""; suites = ""
    }
    END { flush() }
  ' "${files[@]}" | head -n1
}

add_source_release() {
  local list=/etc/apt/sources.list.d/"$release"-src.sources
  if [ -f "$list" ]; then return; fi
  local uri
  uri="$(debian_archive_uri)"
  if [ -z "$uri" ]; then
    echo "no Debian archive URI found in the apt sources" >&2
    exit 1
  fi
  cat > "$list" <<EOF
Types: deb-src
URIs: $uri
Suites: $release
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt-get update -qq >&2
}

work="$(realpath -m build/cpython-src)"
start=$SECONDS
if ! ls "$work"/python3.13_*.orig.tar.* >/dev/null 2>&1; then
  add_source_release
  mkdir -p "$work"
  (cd "$work" && apt-get source --download-only -qq "python3.13/$release" >&2)
fi
tarball="$(ls "$work"/python3.13_*.orig.tar.* | head -n1)"
src="$work/src"
rm -rf "$src" && mkdir -p "$src"
tar -xf "$tarball" -C "$src" --strip-components=1
echo "source: $(basename "$tarball") ($((SECONDS - start)) s)" >&2

objdir="$work/obj"
log="$work/build.log"
rm -rf "$objdir" && mkdir -p "$objdir"
cd "$objdir"
# Quiet unless it fails: then the log's tail says why.
logged() { "$@" >>"$log" 2>&1 || { tail -n 40 "$log" >&2; echo "failed: $* (log: $log)" >&2; exit 1; }; }
: >"$log"
# No PGO/LTO: the build must stay within minutes on two cores; the bench
# compares 1 and 2 threads on the same interpreter, so its ratios do not
# depend on those optimisations.
logged "$src/configure" --disable-gil --prefix="$prefix" --with-ensurepip=install \
  --disable-test-modules
echo "configured ($((SECONDS - start)) s)" >&2
logged make -j"$jobs"
echo "built ($((SECONDS - start)) s)" >&2
logged make install
echo "installed ($((SECONDS - start)) s)" >&2
cd / && rm -rf "$objdir" "$src"
"$python" -c 'import sys; assert not sys._is_gil_enabled(), "GIL is enabled"'
echo "$python"

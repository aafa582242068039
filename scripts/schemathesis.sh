#!/usr/bin/env bash
# Schemathesis (from PyPI, pinned) against a running cairn's /openapi.json, every check and every
# phase (examples, coverage, fuzzing, stateful), with test/schemathesis/schemathesis.toml.
#
# Usage: scripts/schemathesis.sh <base-url> [extra schemathesis run options...]
#   e.g. scripts/schemathesis.sh http://127.0.0.1:8000 -H 'Authorization: Bearer t1'
# Installs into ~/.cache/cairn (CAIRN_CACHE_DIR) once; later runs reuse it.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE_DIR=${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}

log() { printf '[schemathesis] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

[[ $# -ge 1 ]] || die "usage: $0 <base-url> [schemathesis run options...]"
base=${1%/}
shift

# Python 3.11 before 3.11.8 fails inside Hypothesis ("AST constructor recursion depth mismatch",
# a CPython bug), so a newer Python is preferred where one is installed (pyenv included).
python_version_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; }
pick_python() {
  local candidate
  for candidate in python3.13 python3.12; do
    if command -v "$candidate" >/dev/null && python_version_ok "$candidate"; then
      command -v "$candidate"
      return
    fi
  done
  local root
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  for candidate in $(ls -d "$root"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do
    if python_version_ok "$candidate"; then
      echo "$candidate"
      return
    fi
  done
  command -v python3 || die "python3 not found"
}

python=$(pick_python)
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv=$CACHE_DIR/schemathesis-$SCHEMATHESIS_VERSION-py$pyver
if [[ ! -f $venv/.complete ]]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION with $python (python $pyver) into $venv"
  rm -rf "$venv"
  mkdir -p "$CACHE_DIR"
  "$python" -m venv "$venv" || die "python -m venv failed (apt-get install -y python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" ||
    die "pip install schemathesis==$SCHEMATHESIS_VERSION failed"
  touch "$venv/.complete"
fi

cd "$(mktemp -d)"
exec "$venv/bin/schemathesis" --no-color --config-file "$REPO_ROOT/test/schemathesis/schemathesis.toml" \
  run "$base/openapi.json" --url "$base" --checks all \
  --phases examples,coverage,fuzzing,stateful "$@"

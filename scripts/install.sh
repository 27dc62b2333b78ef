#!/usr/bin/env bash
# Install refinery into a virtual environment, .venv at the repository root (created if missing,
# reused otherwise). Nothing is installed outside it.
#
#   bash scripts/install.sh          refinery and what the demo and the local pipeline need
#   bash scripts/install.sh --test   the same, plus every extra the test suite needs
#                                    (torch, transformers, ray, boto3/moto, duckdb, datasets, ...)
#
# PYTHON=/path/to/python3.11 picks the interpreter the venv is made from (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}
test=0
for arg in "$@"; do
  case "$arg" in
    --test) test=1 ;;
    -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (options: --test, --help)" >&2; exit 2 ;;
  esac
done

fail() { echo "install.sh: $*" >&2; exit 1; }
is_311() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

if [ -x "$VENV/bin/python" ] && is_311 "$VENV/bin/python" && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "==> reusing the virtual environment $VENV ($("$VENV/bin/python" -V 2>&1))"
else
  [ -e "$VENV" ] && fail "$VENV exists but is not a working Python >= 3.11 virtual environment: remove it (rm -rf $VENV) and run this again"
  command -v "$PYTHON" >/dev/null 2>&1 || fail "$PYTHON not found: install Python >= 3.11, or set PYTHON=/path/to/python3.11"
  is_311 "$PYTHON" || fail "refinery needs Python >= 3.11, but $PYTHON is $("$PYTHON" -V 2>&1): install 3.11 or newer, or set PYTHON=/path/to/python3.11"
  echo "==> creating the virtual environment $VENV ($("$PYTHON" -V 2>&1))"
  if ! "$PYTHON" -m venv "$VENV" >/dev/null; then
    rm -rf "$VENV"
    fail "'$PYTHON -m venv' failed: on Debian/Ubuntu install the venv module (apt-get install python3-venv) and run this again"
  fi
  echo '*' > "$VENV/.gitignore"  # git ignores the venv (Python >= 3.13 writes this file itself)
fi

# -qq: errors only (this machine kind's pip configuration warns once per package about an absent
# local index directory, which would bury the output)
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -qq "$@"; }
install() { pip install --no-warn-conflicts "$@"; }

if [ "$test" = 1 ]; then
  # torch first, on its own: the pinned CPU build lies on this machine kind's disk, and asked for
  # alone pip takes it instead of resolving a CUDA build for packages that only say "torch".
  echo "==> installing torch 2.13.0 (CPU) (a minute or two)"
  install "torch==2.13.0"
  echo "==> installing refinery with the test extras (ray, aws, classifiers, test)"
  install -e ".[test]"
else
  echo "==> installing refinery and what the demo needs (about a minute; no torch, ray or boto3: those are extras in pyproject.toml)"
  install -e .
fi
# The UT1 domain blocklist (4.5M domains) ships inside the datatrove wheel; we use only that data
# file, so install the wheel without its dependency tree.
install --no-deps "datatrove==0.10.1"
# pip would report datatrove's missing dependencies as conflicts at every install (that is why the
# installs above pass --no-warn-conflicts): check here, leaving datatrove out.
conflicts=$("$VENV/bin/python" -m pip check 2>&1 | grep -v -e '^datatrove ' -e '^No broken requirements' || true)
if [ -n "$conflicts" ]; then
  echo "install.sh: warning: pip check reports conflicting requirements in $VENV:" >&2
  echo "$conflicts" >&2
fi

# Byte-compile refinery's own modules (pip compiles only what it installs into the venv, and an
# editable install is not): every process imports them (the command, each pool worker, the extract
# helper, each Ray worker), and where PYTHONDONTWRITEBYTECODE is set (this machine kind sets it) each
# one compiled them again from source: ~0.1-0.2 s of CPU per process. A file edited later is newer
# than its .pyc, so Python compiles it again as before (nothing stale is ever run).
"$VENV/bin/python" -m compileall -q -j 0 refinery jobs classifiers benchmarks >/dev/null \
  || echo "install.sh: warning: could not byte-compile refinery's modules (they are compiled when imported)" >&2

echo "==> done: $VENV holds refinery $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("refinery"))')" \
  "($(du -sh "$VENV" 2>/dev/null | cut -f1), ${SECONDS} s)"
echo "    activate it with:  . $VENV/bin/activate      (or run $VENV/bin/refinery directly)"

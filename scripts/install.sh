#!/usr/bin/env bash
# Install refinery and everything its demo and tests need, on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --upgrade pip
# torch first, on its own: the pinned CPU build lies on this machine kind's disk, and asked for
# alone pip takes it instead of resolving a CUDA build for packages that only say "torch"
python3 -m pip install --quiet "torch==2.13.0"
python3 -m pip install --quiet -e ".[test,ray,aws,classifiers]"
# The UT1 domain blocklist (4.5M domains) ships inside the datatrove wheel; we use only that
# data file, so install the wheel without its (large) dependency tree.
python3 -m pip install --quiet --no-deps "datatrove==0.10.1"

#!/usr/bin/env bash
# Install refinery and everything its demo and tests need, on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --upgrade pip
python3 -m pip install --quiet -e ".[test,ray,aws]"
# The UT1 domain blocklist (4.5M domains) ships inside the datatrove wheel; we use only that
# data file, so install the wheel without its (large) dependency tree.
python3 -m pip install --quiet --no-deps "datatrove==0.10.1"

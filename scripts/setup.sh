#!/usr/bin/env bash
# Create .venv (if missing) and install the project with the given extras. Shared by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# PyYAML must come as a wheel: its old sdists fail to build on current setuptools.
.venv/bin/python -m pip install --quiet --only-binary=pyyaml -e ".${1:-}"

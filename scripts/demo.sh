#!/usr/bin/env bash
# Install everything and make the demo ad (15 s, Korean copy) into ./demo_output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/sparklio demo --out demo_output

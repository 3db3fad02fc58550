#!/usr/bin/env bash
# Install everything (with the test extras) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "[dev]"
# tests/test_browser.py drives the OS's Chromium through Playwright (no browser download): install
# Debian's package where we may; elsewhere that test skips with the reason (and fails with CI=true).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install chromium; tests/test_browser.py cannot run" >&2
fi
exec .venv/bin/python -m pytest "$@"

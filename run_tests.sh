#!/usr/bin/env bash
# Sets up ./.venv (first run only), the browser the web page's test drives, and runs the test suite.
# Extra arguments go to pytest.
set -e
cd "$(dirname "$0")"
. tools/ensure_venv.sh
. tools/ensure_browser.sh
python -m pytest -q "$@"

#!/usr/bin/env bash
# Sets up ./.venv (first run only) and runs the test suite. Extra arguments go to pytest.
set -e
cd "$(dirname "$0")"
. tools/ensure_venv.sh
python -m pytest -q "$@"

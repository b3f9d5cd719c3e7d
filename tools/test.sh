#!/usr/bin/env bash
# The test suite on a fresh machine: set up, lint, then pytest (slow tests included). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup_env.sh

ruff check ssl_audio tools tests
python -m pytest "$@"

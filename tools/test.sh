#!/usr/bin/env bash
# The test suite on a fresh machine: set up, then pytest (slow tests included). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup_env.sh

python -m pytest "$@"

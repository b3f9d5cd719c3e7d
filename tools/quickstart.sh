#!/usr/bin/env bash
# The main job on a fresh machine: set up, build the demo corpus, write its manifest, run the pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup_env.sh

python tools/make_demo_corpus.py --out data/demo
ssl-audio manifest data/demo/audio/unlabeled --out data/demo/manifest --valid-fraction 0.05
ssl-audio data-pass recipes/demo_data.yaml

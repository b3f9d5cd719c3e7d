#!/usr/bin/env bash
# The main job on a fresh machine: set up, build the demo corpus, pretrain a tiny HuBERT for two iterations,
# then probe random init, MFCC and both iterations on keywords, speakers and transcription.
# Re-running skips what is done (corpus, clustering stages, finished training, cached probe features).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup_env.sh

demo=data/demo
if [ ! -f "$demo/corpus.json" ]; then
  python tools/make_demo_corpus.py --out "$demo"
fi
if [ ! -f "$demo/manifest/train.tsv" ]; then
  ssl-audio manifest "$demo/audio/unlabeled" --out "$demo/manifest" --valid-fraction 0.05
fi
ssl-audio data-pass recipes/demo_data.yaml

# HuBERT: iteration 1 learns k-means labels of MFCCs, iteration 2 those of its own layer 3.
ssl-audio hubert-iterate recipes/tiny_hubert.yaml
run=checkpoints/tiny_hubert
newest() { ls -d "$1"/step_* | sort | tail -n 1; }
iter1=$(newest "$run/iter1/model")
iter2=$(newest "$run/iter2/model")

probes=runs/quickstart_probes
cache="$probes/cache"
probe_all() {  # name, then the featurizer arguments
  local name=$1; shift
  ssl-audio probe classify "$@" --train "$demo/keywords_train.tsv" --test "$demo/keywords_test.tsv" \
    --out "$probes/keywords/$name" --cache "$cache"
  ssl-audio probe verify "$@" --train "$demo/sentences_train.tsv" --test "$demo/sentences_test.tsv" \
    --out "$probes/speakers/$name" --cache "$cache"
  ssl-audio probe ctc "$@" --train "$demo/sentences_train.tsv" --test "$demo/sentences_test.tsv" \
    --out "$probes/transcripts/$name" --cache "$cache"
}
probe_all random --baseline random --checkpoint "$iter1"
probe_all mfcc --baseline mfcc
probe_all hubert_iter1 --checkpoint "$iter1"
probe_all hubert_iter2 --checkpoint "$iter2"

echo
echo "Probes on the demo corpus (keywords: accuracy; speakers: EER on unseen speakers; transcripts: CER):"
ssl-audio probe-report "$probes"/{keywords,speakers,transcripts}/{random,mfcc,hubert_iter1,hubert_iter2} \
  | tee "$probes/report.md"

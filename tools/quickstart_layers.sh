#!/usr/bin/env bash
# Where the quickstart's models keep or lose speaker and noise-robust keyword information, layer by layer (#17):
# every layer probed alone (--all-layers) for random init and both HuBERT rounds, speaker verification with
# SUPERB's statistics-pooling head, and the noisy keywords per SNR bucket. Run after tools/quickstart.sh; it reads
# the quickstart's checkpoints and feature cache, so it only trains heads (3.0 minutes measured on one core).
#   bash tools/quickstart_layers.sh [--frontend logmel|wave]    # writes runs/quickstart_layers{_logmel}/
set -euo pipefail
cd "$(dirname "$0")/.."

frontend=logmel
case ${1:-} in
  --frontend) frontend=${2:?--frontend needs logmel or wave} ;;
  --frontend=*) frontend=${1#--frontend=} ;;
  "") ;;
  *) echo "usage: bash tools/quickstart_layers.sh [--frontend logmel|wave]" >&2; exit 2 ;;
esac
source tools/quickstart_common.sh
set_frontend_suffix "$frontend"

source .venv/bin/activate
demo=data/demo
cache=runs/quickstart_probes$suffix/cache
out=runs/quickstart_layers$suffix
iter1=$(newest "checkpoints/tiny_hubert$suffix/iter1/model")
iter2=$(newest "checkpoints/tiny_hubert$suffix/iter2/model")
declare -A source=(
  [random]="--baseline random --checkpoint $iter1" [hubert_iter1]="--checkpoint $iter1"
  [hubert_iter2]="--checkpoint $iter2"
)
for name in random hubert_iter1 hubert_iter2; do
  # shellcheck disable=SC2086  # the featurizer arguments are words
  set -- ${source[$name]}
  ssl-audio probe verify "$@" --all-layers --train "$demo/sentences_train.tsv" --test "$demo/sentences_test.tsv" \
    --out "$out/speakers/$name" --cache "$cache"
  ssl-audio probe verify "$@" --head stats --train "$demo/sentences_train.tsv" --test "$demo/sentences_test.tsv" \
    --out "$out/speakers_stats/$name" --cache "$cache"
  ssl-audio probe classify "$@" --all-layers --by-snr --train "$demo/keywords_train.tsv" \
    --test "$demo/keywords_test_noisy.tsv" --out "$out/keywords_noisy/$name" --cache "$cache"
done
ssl-audio probe verify --baseline mfcc --head stats --train "$demo/sentences_train.tsv" \
  --test "$demo/sentences_test.tsv" --out "$out/speakers_stats/mfcc" --cache "$cache"
ssl-audio probe classify --baseline mfcc --by-snr --train "$demo/keywords_train.tsv" \
  --test "$demo/keywords_test_noisy.tsv" --out "$out/keywords_noisy/mfcc" --cache "$cache"
ssl-audio probe-layers "$out"/speakers/{random,hubert_iter1,hubert_iter2} --out "$out/speakers_eer.png"
ssl-audio probe-layers "$out"/keywords_noisy/{random,hubert_iter1,hubert_iter2} --out "$out/keywords_noisy.png"
echo
echo "Speaker verification with the statistics-pooling head, and noisy keywords, all layers weighted:"
ssl-audio probe-report "$out"/speakers_stats/{random,mfcc,hubert_iter1,hubert_iter2} \
  "$out"/keywords_noisy/{random,mfcc,hubert_iter1,hubert_iter2} | tee "$out/report.md"
echo "layer plots: $out/speakers_eer.png, $out/keywords_noisy.png"

#!/usr/bin/env bash
# The main job on a fresh machine: set up, build the demo corpus, pretrain a tiny HuBERT for two iterations,
# then probe random init, MFCC and both iterations on keywords (clean and noisy), speakers and transcription.
#   bash tools/quickstart.sh                      # HuBERT (the default)
#   bash tools/quickstart.sh --family wav2vec2    # or wavlm, or several: --family hubert,wavlm / --family all
#   bash tools/quickstart.sh --frontend wave      # the waveform conv stack instead of log-mel (the default)
#   bash tools/quickstart.sh --probe-seeds 3      # every probe head trained 3 times: mean, std and each
# Re-running skips what is done (corpus, clustering stages, finished training, cached probe features).
set -euo pipefail
cd "$(dirname "$0")/.."

families=hubert
frontend=logmel
probe_seeds=1
while [ $# -gt 0 ]; do
  case $1 in
    --family) families=${2:?--family needs hubert, wav2vec2, wavlm or all}; shift 2 ;;
    --family=*) families=${1#--family=}; shift ;;
    --frontend) frontend=${2:?--frontend needs logmel or wave}; shift 2 ;;
    --frontend=*) frontend=${1#--frontend=}; shift ;;
    --probe-seeds) probe_seeds=${2:?--probe-seeds needs a count}; shift 2 ;;
    --probe-seeds=*) probe_seeds=${1#--probe-seeds=}; shift ;;
    *) echo "usage: bash tools/quickstart.sh [--family hubert|wav2vec2|wavlm|all (comma-separated)]" \
         "[--frontend logmel|wave] [--probe-seeds N]" >&2; exit 2 ;;
  esac
done
# Log-mel (Whisper's features and conv1d stem, 50 Hz) by default: at equal CPU minutes it beat the waveform conv
# stack on every probe (README, "Front-ends and objectives at equal CPU minutes"), and its step costs about half.
source tools/quickstart_common.sh
set_frontend_suffix "$frontend"
[ "$families" = all ] && families=hubert,wav2vec2,wavlm
for family in ${families//,/ }; do
  case $family in hubert|wav2vec2|wavlm) ;; *) echo "unknown family '$family'" >&2; exit 2 ;; esac
done

source tools/setup_env.sh

# One torch thread per command unless SSL_AUDIO_TORCH_THREADS says otherwise: the tiny models are too small for a
# second one, and the data worker needs a core. On 2 idle cores one thread trained 91 audio-s/s against 72 with two,
# and probe features ran 100 utt/s against 60. A fixed choice, not one from the load: the same command gives the same
# table (the thread count changes float sums, so the table differs from a run with another count in the last digits).
export SSL_AUDIO_TORCH_THREADS=${SSL_AUDIO_TORCH_THREADS:-1}

demo=data/demo
if [ ! -f "$demo/corpus.json" ]; then
  python tools/make_demo_corpus.py --out "$demo"
fi
if [ ! -f "$demo/keywords_test_noisy.tsv" ]; then  # corpora built before the noisy copy existed
  python tools/make_demo_corpus.py --out "$demo" --noisy-only
fi
if [ ! -f "$demo/manifest/train.tsv" ]; then
  ssl-audio manifest "$demo/audio/unlabeled" --out "$demo/manifest" --valid-fraction 0.05
fi
ssl-audio data-pass recipes/demo_data.yaml

probes=runs/quickstart_probes$suffix
cache="$probes/cache"
probe_all() {  # name, then the featurizer arguments
  local name=$1; shift
  ssl-audio probe classify "$@" --train "$demo/keywords_train.tsv" --test "$demo/keywords_test.tsv" \
    --out "$probes/keywords/$name" --cache "$cache" --seeds "$probe_seeds"
  # the same head, trained on clean keywords, tested on the noisy copy (0-10 dB SNR)
  ssl-audio probe classify "$@" --train "$demo/keywords_train.tsv" --test "$demo/keywords_test_noisy.tsv" \
    --out "$probes/keywords_noisy/$name" --cache "$cache" --seeds "$probe_seeds"
  ssl-audio probe verify "$@" --train "$demo/sentences_train.tsv" --test "$demo/sentences_test.tsv" \
    --out "$probes/speakers/$name" --cache "$cache" --seeds "$probe_seeds"
  ssl-audio probe ctc "$@" --train "$demo/sentences_train.tsv" --test "$demo/sentences_test.tsv" \
    --out "$probes/transcripts/$name" --cache "$cache" --seeds "$probe_seeds"
}

# MFCC needs no model: its probes run on the second core while the first one trains (same results, less waiting).
mkdir -p "$probes"
probe_all mfcc --baseline mfcc > "$probes/mfcc.log" 2>&1 &
mfcc_job=$!
trap 'kill "$mfcc_job" 2>/dev/null || true' EXIT  # a failed stage stops it too

columns=()
first=  # the first trained model: the random-init baseline takes its architecture
for family in ${families//,/ }; do
  case $family in
    hubert)  # iteration 1 learns k-means labels of MFCCs, iteration 2 those of its own layer
      # the log-mel recipe mixes noise into its inputs (multi-condition pretraining, targets from clean audio)
      ensure_noise recipes/tiny_hubert$suffix.yaml
      ssl-audio hubert-iterate recipes/tiny_hubert$suffix.yaml
      first=${first:-$(newest checkpoints/tiny_hubert$suffix/iter1/model)}
      probe_all hubert_iter1 --checkpoint "$(newest checkpoints/tiny_hubert$suffix/iter1/model)"
      probe_all hubert_iter2 --checkpoint "$(newest checkpoints/tiny_hubert$suffix/iter2/model)"
      columns+=(hubert_iter1 hubert_iter2) ;;
    wav2vec2)  # contrastive prediction of its own quantised latents
      ssl-audio pretrain recipes/tiny_wav2vec2$suffix.yaml --resume auto
      first=${first:-$(newest checkpoints/tiny_wav2vec2$suffix)}
      probe_all wav2vec2 --checkpoint "$(newest checkpoints/tiny_wav2vec2$suffix)"
      columns+=(wav2vec2) ;;
    wavlm)  # HuBERT's two rounds with gated relative position bias and denoising mixtures (speech or noise)
      ensure_noise recipes/tiny_wavlm$suffix.yaml
      ssl-audio hubert-iterate recipes/tiny_wavlm$suffix.yaml
      first=${first:-$(newest checkpoints/tiny_wavlm$suffix/iter1/model)}
      probe_all wavlm_iter1 --checkpoint "$(newest checkpoints/tiny_wavlm$suffix/iter1/model)"
      probe_all wavlm_iter2 --checkpoint "$(newest checkpoints/tiny_wavlm$suffix/iter2/model)"
      columns+=(wavlm_iter1 wavlm_iter2) ;;
  esac
done
probe_all random --baseline random --checkpoint "$first"  # the same architecture, untrained
if ! wait "$mfcc_job"; then
  cat "$probes/mfcc.log" >&2
  echo "quickstart: the MFCC probes failed (log above: $probes/mfcc.log)" >&2
  exit 1
fi

echo
echo "Probes on the demo corpus (keywords: accuracy, clean and at 0-10 dB SNR; speakers: EER on unseen speakers;"
echo "transcripts: CER):"
ssl-audio probe-report "$probes"/{keywords,keywords_noisy,speakers,transcripts}/{random,mfcc} \
  $(for c in "${columns[@]}"; do echo "$probes"/{keywords,keywords_noisy,speakers,transcripts}/"$c"; done) \
  | tee "$probes/report.md"

# shellcheck shell=bash
# Sourced by tools/quickstart.sh and tools/quickstart_layers.sh: what both need to find the quickstart's runs.

# The recipe / checkpoint / run-folder suffix of a front-end: log-mel recipes end in _logmel, the waveform ones
# have none. Exits the calling script on an unknown name.
set_frontend_suffix() {
  case $1 in
    logmel) suffix=_logmel ;;
    wave) suffix= ;;
    *) echo "unknown frontend '$1' (logmel or wave)" >&2; exit 2 ;;
  esac
}

newest() { ls -d "$1"/step_* | sort | tail -n 1; }  # the newest step folder of a run

# The synthetic noise clips (data/noise) when a recipe mixes them in and they are not there yet.
ensure_noise() {
  if grep -q "noise_manifest: data/noise" "$1" && [ ! -f data/noise/train.tsv ]; then
    python tools/make_noise_manifest.py --out data/noise
  fi
}

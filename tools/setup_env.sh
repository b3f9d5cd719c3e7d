#!/usr/bin/env bash
# Source me from the repository root: makes .venv, installs ssl_audio with its dev extras, and makes
# sure espeak-ng (the demo corpus's voice) is present. Safe to run again: it skips what is done.
set -euo pipefail

need_apt() {  # install Debian packages when apt is there and we may use it; otherwise say what to install
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing $* with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    echo "setup: installing $* with sudo apt-get"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "setup: please install $* (Debian/Ubuntu: apt-get install $*; Fedora: dnf install espeak-ng;" \
      "macOS: brew install espeak-ng), then run this again" >&2
    return 1
  fi
}

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || { echo "setup: $PYTHON not found: install Python >= 3.10" >&2; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "setup: ssl_audio needs Python >= 3.10, $PYTHON is $("$PYTHON" -V)" >&2; exit 1; }

if ! ldconfig -p 2>/dev/null | grep -q 'libespeak-ng\.so' || ! command -v espeak-ng >/dev/null; then
  need_apt espeak-ng
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv 2>/dev/null || { need_apt python3-venv && rm -rf .venv && "$PYTHON" -m venv .venv; }
fi
# Reinstall only when the package metadata changed since the last install.
stamp=.venv/.ssl_audio-installed
want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing ssl_audio and its dependencies into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
  echo "$want" > "$stamp"
fi
# shellcheck disable=SC1091
source .venv/bin/activate

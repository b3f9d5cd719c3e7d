"""tools/check_hf_upstream.py, the documented command: an export loads as s3prl's hf_wav2vec2_custom /
hf_hubert_custom and ESPnet's HuggingFaceFrontend load it (re-enacted with transformers alone: neither package is
installed here) and gives ssl_audio's hidden states."""

import subprocess
import sys
from pathlib import Path

import pytest

from ssl_audio.interop.convert import convert, write_step_folder
from tests.interop.test_hf import ours_random

TOOL = Path(__file__).resolve().parents[2] / "tools" / "check_hf_upstream.py"


@pytest.mark.slow  # ~30 s per case on 2 shared cores: a subprocess importing transformers 3 times over
@pytest.mark.parametrize(("family", "mode"), [("wav2vec2", "group_norm"), ("hubert", "layer_norm")])
def test_export_through_the_upstreams_loading_matches_ours(tmp_path, family, mode):
    step = write_step_folder(ours_random(family, mode=mode, pre_ln=mode == "layer_norm"), tmp_path / "run").path
    convert(step, tmp_path / "hf", target="hf")
    # fp32, 2 layers of width 64 on weights of order 0.1: ~1e-6 absolute; 1e-5 leaves an order of magnitude.
    done = subprocess.run(
        [sys.executable, str(TOOL), str(step), str(tmp_path / "hf"), "--atol", "1e-5"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("s3prl hf upstream: 3 hidden states, max |difference| ")
    assert lines[1].startswith("espnet huggingface frontend: last_hidden_state, max |difference| ")
    assert all(float(line.rsplit(" ", 1)[1]) <= 1e-5 for line in lines)

"""ProbeConfig: range checks when built (so a bad value fails before any audio is encoded), and the probe command
building it through the config loader with today's options and defaults.

Oracle: the allowed range of each field, written out by hand from what the probe does with it (epochs and batch
size are counts, Adam needs a positive rate, minDCF needs a prior in (0, 1) and positive costs), and the option
list and defaults of `ssl-audio probe` as they were before the config loader built it.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.checks import FieldError
from ssl_audio.cli import _probe_config, build_parser, main
from ssl_audio.configs import from_dict
from ssl_audio.probe.config import ProbeConfig

COUNT, COUNT0, POSITIVE = (
    "must be an integer >= 1, got {}",
    "must be an integer >= 0, got {}",
    "must be finite and > 0, got {}",
)
REFUSED = [  # (field, value, the value as the message shows it, the rule)
    ("epochs", 0, "0", COUNT),
    ("batch_size", 0, "0", COUNT),
    ("seeds", 0, "0", COUNT),
    ("max_trials", 0, "0", COUNT),
    ("layer", -1, "-1", COUNT0),
    ("lr", 0, "0.0", POSITIVE),
    ("lr", math.nan, "nan", POSITIVE),
    ("c_miss", 0, "0.0", POSITIVE),
    ("c_fa", -1, "-1.0", POSITIVE),
    ("p_target", 0, "0.0", "must be in (0, 1), got {}"),
    ("p_target", 1, "1.0", "must be in (0, 1), got {}"),
    ("task", "asr", "'asr'", "must be one of classify, verify, ctc, frames, noisy, got {}"),
]
BASE = {"task": "verify", "train": "train.tsv", "test": "test.tsv"}


@pytest.mark.parametrize(("key", "value", "shown", "rule"), REFUSED)
def test_out_of_range_fields_are_refused_naming_the_key(key: str, value: object, shown: str, rule: str) -> None:
    with pytest.raises(
        ValueError, match=f"^config key '{key}': {rule.format(shown)}$".replace("(", r"\(").replace(")", r"\)")
    ):
        from_dict({**BASE, key: value}, schema=ProbeConfig)


def test_fields_that_exclude_each_other() -> None:
    with pytest.raises(FieldError, match=r"^ProbeConfig\.weighted: excludes layer"):
        ProbeConfig(**BASE, layer=2, weighted=True)
    with pytest.raises(FieldError, match=r"^ProbeConfig\.max_trials: give a trial list .* not both$"):
        ProbeConfig(**BASE, trials="trials.txt", max_trials=10)
    with pytest.raises(FieldError, match=r"^ProbeConfig\.by_snr: draws the trials of each SNR bucket"):
        ProbeConfig(**BASE, trials="trials.txt", by_snr=True)
    with pytest.raises(FieldError, match=r"^ProbeConfig\.head: stats pools utterances: .* not 'ctc'$"):
        ProbeConfig(**{**BASE, "task": "ctc"}, head="stats")
    with pytest.raises(FieldError, match=r"^ProbeConfig\.head: must be one of linear, stats, got 'mlp'$"):
        ProbeConfig(**BASE, head="mlp")


def test_edge_values_are_accepted() -> None:
    cfg = ProbeConfig(**BASE, layer=0, epochs=1, batch_size=1, seeds=1, max_trials=1, p_target=1e-9, c_miss=1e-9)
    assert (cfg.layer, cfg.p_target, cfg.c_miss) == (0, 1e-9, 1e-9)


def _parse(*words: str) -> ProbeConfig:
    return _probe_config(build_parser().parse_args(["probe", *words]))


def test_the_command_line_keeps_its_defaults() -> None:
    cfg = _parse("classify", "--train", "a.tsv", "--test", "b.tsv")
    assert cfg == ProbeConfig(
        task="classify", train="a.tsv", test="b.tsv", label_column=None, alignments=None, layer=None, weighted=False,
        all_layers=False, epochs=None, lr=None, batch_size=32, seed=0, seeds=1, p_target=0.01, c_miss=1.0, c_fa=1.0,
        max_trials=None, trials=None,
    )  # fmt: skip


def test_every_option_reaches_the_config() -> None:
    cfg = _parse(
        "verify", "--train", "a.tsv", "--test", "b.tsv", "--label-column", "spk", "--alignments", "al.jsonl",
        "--layer", "3", "--all-layers", "--epochs", "5", "--lr", "0.5", "--batch-size", "4", "--seed", "7",
        "--seeds", "2", "--p-target", "0.05", "--c-miss", "2", "--c-fa", "3", "--trials", "t.txt",
        "--head", "stats",
    )  # fmt: skip
    expected = dict(
        label_column="spk", alignments="al.jsonl", layer=3, weighted=False, all_layers=True, epochs=5, lr=0.5,
        batch_size=4, seed=7, seeds=2, p_target=0.05, c_miss=2.0, c_fa=3.0, trials="t.txt", head="stats",
    )  # fmt: skip
    assert cfg == ProbeConfig(task="verify", train="a.tsv", test="b.tsv", max_trials=None, **expected)
    assert _parse("ctc", "--train", "a", "--test", "b", "--weighted", "--max-trials", "9").weighted is True
    assert _parse("classify", "--train", "a", "--test", "b", "--by-snr").by_snr is True


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "200"}


def test_help_keeps_every_option_without_importing_torch() -> None:
    probe = [sys.executable, "-m", "ssl_audio.cli", "probe", "--help"]
    out = subprocess.run(probe, env=_env(), capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    options = ["--checkpoint STEP_DIR", "--baseline {random,mfcc,logmel}", "--train TRAIN", "--test TEST",
               "--layer LAYER", "--weighted", "--all-layers", "--head {linear,stats}", "--by-snr", "--out OUT",
               "--cache CACHE",
               "--label-column LABEL_COLUMN", "--alignments ALIGNMENTS", "--epochs EPOCHS", "--lr LR",
               "--batch-size BATCH_SIZE", "--seed SEED", "--seeds SEEDS", "--p-target P_TARGET", "--c-miss C_MISS",
               "--c-fa C_FA", "--max-trials MAX_TRIALS", "--trials FILE", "--device DEVICE",
               "--dtype {fp32,bf16}"]  # fmt: skip
    listed = [line.split("  ")[1] for line in out.stdout.splitlines() if line.startswith("  --")]
    assert listed == options
    assert out.stdout.startswith("usage: ssl-audio probe ") and "{classify,verify,ctc,frames,noisy}" in out.stdout
    modules = "sorted(m for m in sys.modules if m.split('.')[0] == 'torch')"
    check = f"import sys; from ssl_audio.cli import build_parser; build_parser(); print({modules})"
    out = subprocess.run([sys.executable, "-c", check], env=_env(), capture_output=True, text=True, check=False)
    assert out.stdout == "[]\n", out.stderr


def _table(folder: Path) -> str:
    """Four clips of two speakers: a table every task but frames can run on."""
    rng = np.random.default_rng(0)
    for name in "abcd":
        sf.write(folder / f"{name}.wav", (0.1 * rng.standard_normal(4000)).astype(np.float32), SAMPLE_RATE)
    (folder / "t.tsv").write_text("path\tspeaker\na.wav\tx\nb.wav\tx\nc.wav\ty\nd.wav\ty\n")
    return str(folder / "t.tsv")


BAD_VALUES = [  # (option, value, message)
    ("--epochs", "0", "config key 'epochs': must be an integer >= 1, got 0"),
    ("--p-target", "1", "config key 'p_target': must be in (0, 1), got 1.0"),
    ("--batch-size", "0", "config key 'batch_size': must be an integer >= 1, got 0"),
    ("--lr", "-1", "config key 'lr': must be finite and > 0, got -1.0"),
    ("--c-miss", "0", "config key 'c_miss': must be finite and > 0, got 0.0"),
    ("--max-trials", "0", "config key 'max_trials': must be an integer >= 1, got 0"),
    ("--layer", "-1", "config key 'layer': must be an integer >= 0, got -1"),
]


@pytest.mark.slow  # each case starts python and imports torch: 5-15 s on 2 shared cores
@pytest.mark.parametrize(("option", "value", "message"), BAD_VALUES[:2])
def test_cli_refuses_bad_values_before_encoding(tmp_path: Path, option: str, value: str, message: str) -> None:
    """Before, verify took --epochs 0 silently (it trains only with --weighted) and refused --p-target 1 only
    after every file was encoded and cached."""
    table, out = _table(tmp_path), tmp_path / "out"
    args = ["probe", "verify", "--baseline", "mfcc", "--train", table, "--test", table, "--out", str(out)]
    cmd = [sys.executable, "-m", "ssl_audio.cli", *args, "--device", "cpu", f"{option}={value}"]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr) == (2, f"ssl-audio probe: error: {message}\n")
    assert not out.exists()  # nothing encoded, nothing written


def test_cli_refuses_every_bad_value_in_process(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table, out = _table(tmp_path), tmp_path / "out"
    for option, value, message in BAD_VALUES:
        args = ["probe", "classify", "--baseline", "mfcc", "--train", table, "--test", table, "--out", str(out)]
        assert main([*args, f"{option}={value}"]) == 2
        assert capsys.readouterr().err == f"ssl-audio probe: error: {message}\n"
        assert not out.exists()

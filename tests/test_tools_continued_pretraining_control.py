"""tools/continued_pretraining_control.py: the plan of the control, checked without training.

Oracles: the two arms' commands are equal but for their audio and run folder (written out by hand); every command
is accepted by the parser and config loader that would run it (the iterate config with its round, each probe's
ProbeConfig); a dry run writes nothing.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest

from ssl_audio.cli import _probe_config, build_parser
from ssl_audio.cluster.iterate import IterateConfig
from ssl_audio.configs import load_config
from tools import continued_pretraining_control as cpt

REPO = Path(__file__).resolve().parents[1]
START = REPO / "tests" / "fixtures" / "checkpoints" / "hubert" / "step_00000001"
MICRO = (  # --set overrides reach both arms' pretraining section (parsed here, not trained)
    "pretrain.model.config.encoder.dim=16",
    "pretrain.model.config.encoder.num_layers=1",
)


def _control(tmp_path: Path, **changes: object) -> cpt.Control:
    args = argparse.Namespace(
        start=str(START), corpus=str(tmp_path / "corpus"), audio_dir="audio/unlabeled", out=str(tmp_path / "out"),
        updates=7, recipe=str(REPO / "recipes" / "continue_pretraining.yaml"), layer=1, k=5, snr_range="0,20",
        seed=3, probe_seeds=2, set=list(MICRO),
    )  # fmt: skip
    for key, value in changes.items():
        setattr(args, key, value)
    return cpt.build_control(args)


def test_the_arms_differ_only_in_their_audio_and_run_folder(tmp_path: Path) -> None:
    c = _control(tmp_path)
    assert c.family == "hubert" and c.model_dir("noisy") == tmp_path / "out" / "noisy" / "iter1" / "model"
    steps = {s.name: s for s in cpt.training_steps(c)}
    assert list(steps) == ["manifest clean", "manifest noisy", "continue clean", "continue noisy"]
    out = tmp_path / "out"
    key = "pretrain.data.manifest_dir="
    swap = {
        str(tmp_path / "corpus" / "audio" / "unlabeled"): str(out / "noisy" / "audio" / "unlabeled"),
        str(out / "manifests" / "clean"): str(out / "manifests" / "noisy"),
        f"run_dir={out / 'clean'}": f"run_dir={out / 'noisy'}",
        f"{key}{out / 'manifests' / 'clean'}": f"{key}{out / 'manifests' / 'noisy'}",
    }  # fmt: skip
    for kind in ("manifest", "continue"):
        clean, noisy = steps[f"{kind} clean"].argv, steps[f"{kind} noisy"].argv
        assert tuple(swap.get(word, word) for word in clean) == noisy and clean != noisy
    argv = steps["continue noisy"].argv
    assert argv[:4] == (*cpt.SSL_AUDIO, "hubert-iterate")
    cfg = load_config(argv[4], list(argv[5:]), schema=IterateConfig)  # the command's own config loader
    assert cfg.run_dir == str(out / "noisy") and cfg.seed == 3 and cfg.pretrain["seed"] == 3
    (round_,) = cfg.iterations
    assert (round_.source, round_.layer, round_.k) == (str(START), 1, 5)
    assert round_.overrides == (f"init.checkpoint={START}", "train.max_updates=7")
    assert cfg.pretrain["data"]["manifest_dir"] == str(out / "manifests" / "noisy")
    assert cfg.pretrain["init"]["reset_heads"] is True and cfg.pretrain["model"]["config"]["encoder"]["dim"] == 16


def test_wav2vec2_arms_continue_with_pretrain(tmp_path: Path) -> None:
    c = _control(tmp_path, set=[])
    c = cpt.Control(**{**c.__dict__, "family": "wav2vec2", "recipe": "recipes/tiny_wav2vec2.yaml"})
    argv = [s.argv for s in cpt.training_steps(c) if s.name == "continue clean"][0]
    assert argv[3:5] == ("pretrain", "recipes/tiny_wav2vec2.yaml")
    assert f"init.checkpoint={START}" in argv and "train.max_updates=7" in argv and argv[-2:] == ("--resume", "auto")
    assert c.model_dir("clean") == tmp_path / "out" / "clean"


def test_probe_commands_parse_and_use_the_newest_steps(tmp_path: Path) -> None:
    c = _control(tmp_path)
    for step in ("step_00000005", "step_00000007"):
        (c.model_dir("clean") / step).mkdir(parents=True)
    steps = cpt.probe_steps(c)
    assert len(steps) == 3 * 6 + 1 and steps[-1].name == "report"
    checkpoints = {s.argv[s.argv.index("--checkpoint") + 1] for s in steps[:-1]}
    assert checkpoints == {
        str(START),
        str(c.model_dir("clean") / "step_00000007"),
        str(c.model_dir("noisy") / "step_<newest>"),
    }
    parser = build_parser()
    for step in steps[:-1]:
        args = parser.parse_args(list(step.argv[3:]))
        cfg = _probe_config(args)  # range and option checks of the probe itself
        assert cfg.seeds == 2 and step.done == Path(args.out) / "results.json"
    by_name = {s.name: _probe_config(parser.parse_args(list(s.argv[3:]))) for s in steps[:-1]}
    assert by_name["probe noisy noisy"].by_snr and by_name["probe noisy noisy"].all_layers
    assert by_name["probe speakers_stats start"].head == "stats"
    multi = by_name["probe keywords_snr_multi_heads clean"]
    assert multi.train.endswith("keywords_train_snr.tsv") and multi.test.endswith("keywords_test_snr.tsv")
    assert not by_name["probe keywords_snr_clean_heads clean"].train.endswith("_snr.tsv")
    assert steps[-1].argv[3] == "probe-report" and len(steps[-1].argv) == 4 + 18  # every run in one table


def test_dry_run_prints_every_command_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    argv = ["--start", str(START), "--corpus", str(tmp_path), "--out", str(out), "--updates", "4", "--dry-run"]
    assert cpt.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    commands = [line for line in printed if not line.startswith("#")]
    assert len(commands) == 4 + 2 + 19 and not out.exists()
    assert shlex.split(commands[2])[3] == "hubert-iterate" and "train.max_updates=4" in commands[2]
    with pytest.raises(SystemExit):
        cpt.main([*argv[:-2], "0"])  # --updates 0

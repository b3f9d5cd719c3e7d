"""tools/frontend_table.py: the run length from a calibration, and the one-round recipe it writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.tool_loader import load_tool

table = load_tool("frontend_table")


def test_updates_fill_the_budget_at_the_calibrated_rate() -> None:
    # 2 min at 30 audio-s per s is 3,600 audio-s: 600 batches of 6 s
    assert table.updates_for_budget(2.0, 30.0, 6.0) == 600
    with pytest.raises(ValueError, match="rate 0"):
        table.updates_for_budget(2.0, 0.0, 6.0)


def test_hubert_recipe_is_cut_to_round_one_with_the_budgeted_updates(tmp_path: Path) -> None:
    path = table.arm_recipe("recipes/tiny_hubert.yaml", True, tmp_path / "arm", 120)
    cfg = yaml.safe_load(path.read_text())
    assert len(cfg["iterations"]) == 1 and cfg["iterations"][0]["source"] == "mfcc"
    assert not any(o.startswith("train.max_updates") for o in cfg["iterations"][0].get("overrides", []))
    assert cfg["pretrain"]["train"]["max_updates"] == 120
    assert cfg["pretrain"]["schedule"]["warmup_updates"] == 12  # a tenth of the run, under the recipe's 50
    assert cfg["run_dir"] == str(tmp_path / "arm")


def test_seed_and_overrides_reach_the_pretraining_section_only(tmp_path: Path) -> None:
    sets = ("data.mixing.prob=0.5", "optim.lr=1e-4")
    cfg = yaml.safe_load(
        table.arm_recipe("recipes/tiny_wavlm_logmel.yaml", True, tmp_path / "a", 10, 7, sets).read_text()
    )
    assert cfg["pretrain"]["seed"] == 7 and cfg["seed"] == 0  # the k-means labels keep the recipe's seed
    assert cfg["pretrain"]["data"]["mixing"] == {"prob": 0.5, "noise_prob": 0.5, "noise_manifest": "data/noise"}
    assert cfg["pretrain"]["optim"]["lr"] == 1e-4
    cfg = yaml.safe_load(
        table.arm_recipe("recipes/tiny_wav2vec2_logmel.yaml", False, tmp_path / "b", 10, 3, sets[1:]).read_text()
    )
    assert cfg["seed"] == 3 and cfg["optim"]["lr"] == 1e-4 and cfg["train"]["max_updates"] == 10
    with pytest.raises(ValueError, match="expected key=value"):
        table.arm_recipe("recipes/tiny_bestrq.yaml", False, tmp_path / "c", 10, None, ("optim.lr",))


def test_the_noise_manifest_is_made_only_for_a_recipe_that_mixes_noise_and_lacks_it(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    calls = []
    monkeypatch.setattr(table, "run", lambda cmd, log, **_: calls.append(cmd))
    recipe = yaml.safe_load(Path("recipes/tiny_wavlm_logmel.yaml").read_text())
    noise = tmp_path / "noise"
    recipe["pretrain"]["data"]["mixing"]["noise_manifest"] = str(noise)
    path = tmp_path / "wavlm.yaml"
    path.write_text(yaml.safe_dump(recipe))
    table.make_noise_manifest("recipes/tiny_wav2vec2_logmel.yaml", False, tmp_path / "log")  # no mixing
    assert calls == []
    table.make_noise_manifest(str(path), True, tmp_path / "log")
    assert calls and calls[0][1:] == ["tools/make_noise_manifest.py", "--out", str(noise)]
    noise.mkdir()
    (noise / "train.tsv").write_text("")
    table.make_noise_manifest(str(path), True, tmp_path / "log")
    assert len(calls) == 1  # present: not made again


def test_metric_is_found_at_the_top_or_one_level_down() -> None:
    assert table.find_metric({"accuracy": 0.5}, "accuracy") == 0.5
    assert table.find_metric({"task": "ctc", "metrics": {"cer": 0.7}}, "cer") == 0.7
    with pytest.raises(KeyError, match="'eer'"):
        table.find_metric({"accuracy": 0.5}, "eer")


def test_the_log_mel_front_end_arm_trains_on_clean_inputs_and_the_mc_arm_as_its_recipe(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    written, real_recipe = {}, table.arm_recipe

    def fake_recipe(recipe, iterate, run_dir, updates, seed=None, overrides=()):  # noqa: ANN001, ANN202
        written[run_dir.name] = yaml.safe_load(
            real_recipe(recipe, iterate, run_dir, updates, seed, overrides).read_text()
        )
        return run_dir.with_suffix(".yaml")

    monkeypatch.setattr(table, "arm_recipe", fake_recipe)
    monkeypatch.setattr(table, "run", lambda cmd, log, **_: 0.0)
    monkeypatch.setattr(table, "last_rate", lambda log: 50.0)
    monkeypatch.setattr(table, "newest", lambda folder: folder / "step_1")
    for arm in ("hubert_logmel", "hubert_logmel_mc"):
        (tmp_path / "out" / arm).mkdir(parents=True)  # what the (faked) training would make
        table.train_arm(arm, tmp_path / "out", 0.1, overrides=("optim.lr=0.001",))
    clean, mc = written["hubert_logmel"]["pretrain"], written["hubert_logmel_mc"]["pretrain"]
    assert clean["data"]["mixing"]["prob"] == 0.0 and clean["data"]["conditions"]["reverb_prob"] == 0.0
    assert clean["data"]["conditions"]["channel_prob"] == 0.0 and clean["optim"]["lr"] == 0.001  # --set still applies
    recipe = yaml.safe_load(Path("recipes/tiny_hubert_logmel.yaml").read_text())["pretrain"]["data"]
    assert mc["data"]["mixing"] == recipe["mixing"] and mc["data"]["conditions"] == recipe["conditions"]
    assert recipe["mixing"]["prob"] > 0 and recipe["conditions"]["reverb_prob"] > 0

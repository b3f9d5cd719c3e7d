"""Front-ends and objectives at equal CPU minutes on the demo corpus (issue #15's table).

    python tools/frontend_table.py --budget-minutes 2 --out runs/frontend_table [--arms hubert_wave,bestrq]

Each arm trains a tiny model from random init for the same CPU budget, then the quickstart's probes run on it
(keywords clean and noisy, speaker EER, CER) plus the events set (accuracy). Equal minutes: a 40-update
calibration run measures each arm's audio-seconds per second, and the real run gets
max_updates = budget · 60 · rate / batch seconds. HuBERT-objective arms learn round 1's MFCC k-means labels
(k = 50) through `hubert-iterate` with their recipe cut to one round. Run it with one torch thread pinned to a
core (SSL_AUDIO_TORCH_THREADS=1 taskset -c 0 ...) so that minutes mean the same for every arm. Re-running skips
what is done. Prints a markdown table; results.json holds updates, CPU minutes and every probe score.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
from pathlib import Path

import yaml

from ssl_audio.configs import with_overrides

DEMO = Path("data/demo")
# arm: (recipe, objective runs through hubert-iterate, the arm's own overrides before --set's)
CLEAN_INPUTS = ("data.mixing.prob=0.0", "data.conditions.reverb_prob=0.0", "data.conditions.channel_prob=0.0")
ARMS = {
    "hubert_wave": ("recipes/tiny_hubert.yaml", True, ()),
    # the front-ends compare on clean inputs, as measured; the recipe itself pretrains multi-condition
    "hubert_logmel": ("recipes/tiny_hubert_logmel.yaml", True, CLEAN_INPUTS),
    "hubert_logmel_mc": ("recipes/tiny_hubert_logmel.yaml", True, ()),  # noise, room and channel: the quickstart's
    "hubert_patch": ("recipes/tiny_hubert_patch.yaml", True, ()),
    "wav2vec2_wave": ("recipes/tiny_wav2vec2.yaml", False, ()),
    "wav2vec2_logmel": ("recipes/tiny_wav2vec2_logmel.yaml", False, ()),
    "wav2vec2_patch": ("recipes/tiny_wav2vec2_patch.yaml", False, ()),
    "whisper_tiny": ("recipes/tiny_hubert_whisper.yaml", True, ()),  # HuBERT's objective, Whisper tiny's shape
    "wavlm_logmel": ("recipes/tiny_wavlm_logmel.yaml", True, ()),  # mixes in its noise manifest (made when missing)
    "bestrq": ("recipes/tiny_bestrq.yaml", False, ()),
}
CALIBRATION_UPDATES = 40
RATE = re.compile(r"audio_seconds_per_second=([0-9.]+)")


def updates_for_budget(budget_minutes: float, audio_rate: float, batch_seconds: float) -> int:
    """Updates that fit the budget at `audio_rate` audio-seconds per CPU-second, `batch_seconds` per update."""
    if audio_rate <= 0 or batch_seconds <= 0:
        raise ValueError(f"calibration gave rate {audio_rate} and batch {batch_seconds} s: cannot size the run")
    return max(1, int(budget_minutes * 60 * audio_rate / batch_seconds))


def run(cmd: list[str], log: Path, *, check: bool = True) -> float:
    """Run `cmd` with its output in `log`; the CPU minutes (user + system) it and its children used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("w") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0 and check:
        sys.exit(f"frontend_table: {' '.join(cmd[:3])} failed (exit {code}); see {log}")
    return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / 60


def last_rate(log: Path) -> float:
    rates = RATE.findall(log.read_text(errors="replace"))
    if not rates:
        raise ValueError(f"{log}: no audio_seconds_per_second line to calibrate from")
    return float(rates[-1])


def arm_recipe(
    recipe: str, iterate: bool, run_dir: Path, updates: int, seed: int | None = None, overrides: tuple[str, ...] = ()
) -> Path:
    """The recipe, cut to one round (hubert-iterate) with `updates` updates, the pretraining `seed` (None: the
    recipe's) and dotted `overrides` of its pretraining section, written beside the run."""
    cfg = yaml.safe_load(Path(recipe).read_text())
    cfg["run_dir"] = str(run_dir)
    train = {"max_updates": updates, "valid_every": updates, "save_every": updates, "log_every": 20}
    if iterate:
        cfg["pretrain"] = with_overrides(cfg["pretrain"], overrides)
    else:
        cfg = with_overrides(cfg, overrides)
    pretrain = cfg["pretrain"] if iterate else cfg
    if seed is not None:  # the model's init, masks and batches; the k-means labels keep the recipe's seed
        pretrain["seed"] = seed
    pretrain.setdefault("train", {}).update(train)
    sched = pretrain.setdefault("schedule", {})
    sched["warmup_updates"] = min(sched.get("warmup_updates", 50), max(1, updates // 10))
    if iterate:
        first = dict(cfg["iterations"][0])
        first["overrides"] = [o for o in first.get("overrides", []) if not o.startswith("train.max_updates")]
        cfg["iterations"] = [first]
        cfg.pop("alignments", None)
    path = run_dir.with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def pretrain_data(recipe: str, iterate: bool) -> dict:
    cfg = yaml.safe_load(Path(recipe).read_text())
    return (cfg["pretrain"] if iterate else cfg)["data"]


def batch_seconds(recipe: str, iterate: bool) -> float:
    return float(pretrain_data(recipe, iterate)["max_batch_seconds"])


def make_noise_manifest(recipe: str, iterate: bool, log: Path) -> None:
    """The recipe's mixing noise manifest (WavLM), made by tools/make_noise_manifest.py when it is missing."""
    noise = (pretrain_data(recipe, iterate).get("mixing") or {}).get("noise_manifest")
    if noise and not (Path(noise) / "train.tsv").exists():
        run([sys.executable, "tools/make_noise_manifest.py", "--out", noise], log)


def train_arm(name: str, out: Path, budget: float, seed: int | None = None, overrides: tuple[str, ...] = ()) -> dict:
    recipe, iterate, arm_overrides = ARMS[name]
    overrides = (*arm_overrides, *overrides)
    verb = "hubert-iterate" if iterate else "pretrain"
    done = out / name / "arm.json"
    if done.exists():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    make_noise_manifest(recipe, iterate, out / "noise.log")
    calib = out / "calibration" / name
    calib_recipe = arm_recipe(recipe, iterate, calib, CALIBRATION_UPDATES, seed, overrides)
    run(["ssl-audio", verb, str(calib_recipe)], calib.with_suffix(".log"))
    rate = last_rate(calib.with_suffix(".log"))
    updates = updates_for_budget(budget, rate, batch_seconds(recipe, iterate))
    recipe_path = arm_recipe(recipe, iterate, out / name, updates, seed, overrides)
    minutes = run(["ssl-audio", verb, str(recipe_path)], out / f"{name}.log")
    step = newest(out / name / "iter1" / "model" if iterate else out / name)
    info = {"updates": updates, "cpu_minutes": round(minutes, 2), "calibrated_rate": rate, "checkpoint": str(step),
            "seed": seed, "overrides": list(overrides)}  # fmt: skip
    done.write_text(json.dumps(info))
    return info


def newest(folder: Path) -> Path:
    steps = sorted(folder.glob("step_*"))
    if not steps:
        raise FileNotFoundError(f"{folder}: no step folder")
    return steps[-1]


PROBES = {  # name: (verb, train table, test table, metric key in results.json)
    "keywords": ("classify", "keywords_train.tsv", "keywords_test.tsv", "accuracy"),
    "keywords_noisy": ("classify", "keywords_train.tsv", "keywords_test_noisy.tsv", "accuracy"),
    "speakers_eer": ("verify", "sentences_train.tsv", "sentences_test.tsv", "eer"),
    "cer": ("ctc", "sentences_train.tsv", "sentences_test.tsv", "cer"),
    "events": ("classify", "events_train.tsv", "events_test.tsv", "accuracy"),
}


def probe(column: str, source: list[str], out: Path) -> dict[str, float | None]:
    """Every probe's score; None where the probe refuses the model (e.g. too few frames for CTC)."""
    scores = {}
    for task, (verb, train, test, key) in PROBES.items():
        folder = out / "probes" / task / column
        if not (folder / "results.json").exists():
            cmd = ["ssl-audio", "probe", verb, *source, "--train", str(DEMO / train), "--test", str(DEMO / test)]
            folder.mkdir(parents=True, exist_ok=True)
            cmd += ["--out", str(folder), "--cache", str(out / "probes" / "cache")]
            run(cmd, folder / "probe.log", check=False)
        result = folder / "results.json"
        scores[task] = find_metric(json.loads(result.read_text()), key) if result.exists() else None
    return scores


def find_metric(results: dict, key: str) -> float:
    """The metric `key` in a probe's results.json (top level or under its first nested mapping)."""
    if key in results:
        return float(results[key])
    for value in results.values():
        if isinstance(value, dict) and key in value:
            return float(value[key])
    raise KeyError(f"results.json has no {key!r}: keys {sorted(results)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-minutes", type=float, default=2.0, help="CPU minutes of training per arm")
    parser.add_argument("--out", default="runs/frontend_table")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {list(ARMS)}")
    parser.add_argument("--no-baselines", action="store_true", help="skip random init and MFCC (another run has them)")
    parser.add_argument("--seed", type=int, help="pretraining seed of every arm (default: the recipe's); new --out")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="dotted override of every arm's pretraining section, e.g. data.mixing.prob=0.5 (repeatable; new --out)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    out = Path(args.out)
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"--arms: unknown {unknown}; choose from {list(ARMS)}")
    results = {}
    for name in arms:
        info = train_arm(name, out, args.budget_minutes, args.seed, tuple(args.set))
        info["scores"] = probe(name, ["--checkpoint", info["checkpoint"]], out)
        results[name] = info
        (out / "results.json").write_text(json.dumps(results, indent=1))
    if not args.no_baselines:
        first = results[arms[0]]["checkpoint"]
        results["random"] = {"scores": probe("random", ["--baseline", "random", "--checkpoint", first], out)}
        results["mfcc"] = {"scores": probe("mfcc", ["--baseline", "mfcc"], out)}
        (out / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results))


def table(results: dict) -> str:
    cols = list(results)
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for task in PROBES:
        lines.append(f"| {task} | " + " | ".join(cell(results[c]["scores"][task]) for c in cols) + " |")
    for key in ("updates", "cpu_minutes"):
        lines.append(f"| {key} | " + " | ".join(str(results[c].get(key, "—")) for c in cols) + " |")
    return "\n".join(lines)


def cell(score: float | None) -> str:
    return "—" if score is None else f"{score:.3f}"


if __name__ == "__main__":
    main()

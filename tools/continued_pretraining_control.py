"""Continued pretraining on noisy audio, and its control (issue #17): the same clean-pretrained model gets the same
N updates twice, once on a noisy twin of the pretraining audio and once on the clean audio itself, with the same
recipe, seed, clustering and schedule; then both, and the start, are probed. A gain of the noisy arm over the
clean arm is what the noisy data taught; a gain of both over the start is the extra updates.

    python tools/continued_pretraining_control.py --start checkpoints/tiny_hubert/iter2/model/step_00001000 \\
        --corpus data/demo --updates 300 --out runs/cpt_control            # add --dry-run to see the commands

Steps (each skipped when its output exists, so a re-run picks up where it stopped):
  1. the noisy twin of <corpus>/<audio-dir> (ssl_audio.demo.noisy, SNR ~ U(--snr-range) per file) under OUT/noisy
  2. a manifest of each: OUT/manifests/{clean,noisy} (same files and names, so the same train/valid split)
  3. each arm: HuBERT/WavLM `ssl-audio hubert-iterate RECIPE` with one round whose labels cluster the start's
     --layer on that arm's audio (k = --k), initialised from the start with fresh label heads
     (recipes/continue_pretraining.yaml; for WavLM pass --recipe recipes/tiny_wavlm.yaml to keep its mixing);
     wav2vec 2.0 `ssl-audio pretrain RECIPE init.checkpoint=START` (recipes/tiny_wav2vec2.yaml); N updates each.
     The recipe's model must match the start's architecture (--set KEY=VALUE for both arms otherwise)
  4. probe tables with SNR conditions (tools/make_snr_tables.py) under OUT/snr_tables, if not there
  5. probes of start, clean and noisy: keywords clean, keywords per SNR bucket (heads trained clean, and trained
     multi-condition), speakers (verify), the noisy-vs-clean probe; then one `ssl-audio probe-report` table
     (OUT/report.md)
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ssl_audio.demo.noisy import make_noisy_twin
from ssl_audio.models.loading import read_model_config

SSL_AUDIO = (sys.executable, "-m", "ssl_audio.cli")  # `ssl-audio` of this interpreter, on PATH or not
SNR_TABLES_TOOL = str(Path(__file__).resolve().parent / "make_snr_tables.py")
ARMS = ("clean", "noisy")
ITERATE_FAMILIES = ("hubert", "wavlm")  # continued with k-means labels of the start's own layer
DEFAULT_RECIPES = {"hubert": "recipes/continue_pretraining.yaml", "wavlm": "recipes/continue_pretraining.yaml",
                   "wav2vec2": "recipes/tiny_wav2vec2.yaml"}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Step:
    """One command of the plan; skipped when `done` exists."""

    name: str
    argv: tuple[str, ...]
    done: Path | None = None

    def shell(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True, kw_only=True)
class Control:
    """What both arms share, and where everything goes."""

    start: Path  # the clean-pretrained step folder
    family: str  # the start's family
    corpus: Path  # the demo corpus (or any folder with the probe tables)
    audio_dir: str  # pretraining audio, relative to corpus
    out: Path
    updates: int
    recipe: str
    layer: int  # HuBERT/WavLM: the start's layer clustered for the labels
    k: int
    snr_range: tuple[float, float]
    seed: int
    probe_seeds: int
    overrides: tuple[str, ...] = ()  # more KEY=VALUE for both arms (e.g. a model config matching the start's)

    def arm_dir(self, arm: str) -> Path:
        return self.out / arm

    def manifest_dir(self, arm: str) -> Path:
        return self.out / "manifests" / arm

    def audio(self, arm: str) -> Path:
        return self.corpus / self.audio_dir if arm == "clean" else self.out / "noisy" / self.audio_dir

    def model_dir(self, arm: str) -> Path:
        """Where the arm's step folders appear."""
        run = self.arm_dir(arm)
        return run / "iter1" / "model" if self.family in ITERATE_FAMILIES else run


def newest_step(folder: Path) -> Path:
    """The newest step folder under `folder`; a placeholder name when there is none yet (a dry run)."""
    steps = sorted(folder.glob("step_*"))
    return steps[-1] if steps else folder / "step_<newest>"


def training_steps(c: Control) -> list[Step]:
    """Manifests and the two arms: the arms' commands differ only in their audio and run folder."""
    steps = []
    for arm in ARMS:
        steps.append(Step(
            name=f"manifest {arm}", done=c.manifest_dir(arm) / "train.tsv",
            argv=(*SSL_AUDIO, "manifest", str(c.audio(arm)), "--out", str(c.manifest_dir(arm)),
                  "--valid-fraction", "0.05"),
        ))  # fmt: skip
    for arm in ARMS:
        common = (f"run_dir={c.arm_dir(arm)}", f"seed={c.seed}")
        if c.family in ITERATE_FAMILIES:
            round_ = (
                f"iterations=[{{source: {c.start}, layer: {c.layer}, k: {c.k}, max_points: 100000, "
                f"overrides: [init.checkpoint={c.start}, train.max_updates={c.updates}]}}]"
            )
            # fresh label heads (new k-means), the learning rate warmed up again: as recipes/continue_pretraining.yaml
            argv = (*SSL_AUDIO, "hubert-iterate", c.recipe, *common, f"pretrain.seed={c.seed}",
                    f"pretrain.model.family={c.family}", f"pretrain.data.manifest_dir={c.manifest_dir(arm)}",
                    "pretrain.init.reset_heads=true", "pretrain.init.rewarm=true",
                    "alignments=null",  # they describe the clean corpus's files only: both arms report alike
                    *c.overrides, round_)  # fmt: skip
        else:
            argv = (*SSL_AUDIO, "pretrain", c.recipe, *common, f"init.checkpoint={c.start}",
                    f"data.manifest_dir={c.manifest_dir(arm)}", f"train.max_updates={c.updates}", *c.overrides,
                    "--resume", "auto")  # fmt: skip
        steps.append(Step(name=f"continue {arm}", argv=argv))  # the loop resumes or skips a finished run itself
    return steps


def table_steps(c: Control) -> list[Step]:
    """Condition tables (clean + 0/5/10/20 dB) of the keyword and sentence sets; test and training seeds differ."""
    tables = c.out / "snr_tables"
    steps = []
    for split, seed in (("test", c.seed + 1), ("train", c.seed + 2)):
        sources = [str(c.corpus / f"{part}_{split}.tsv") for part in ("keywords", "sentences")]
        steps.append(Step(
            name=f"snr tables {split}", done=tables / f"sentences_{split}_snr.tsv",
            argv=(sys.executable, SNR_TABLES_TOOL, *sources, "--out", str(tables), "--seed", str(seed)),
        ))  # fmt: skip
    return steps


def probe_steps(c: Control) -> list[Step]:
    """The probes of the start and both arms (newest steps), then the side-by-side report."""
    tables, probes, corpus = c.out / "snr_tables", c.out / "probes", c.corpus
    models = {"start": c.start, **{arm: newest_step(c.model_dir(arm)) for arm in ARMS}}
    suites = {  # name: task, train table, test table, extra options
        "keywords": ("classify", corpus / "keywords_train.tsv", corpus / "keywords_test.tsv", ()),
        "keywords_snr_clean_heads": ("classify", corpus / "keywords_train.tsv", tables / "keywords_test_snr.tsv",
                                     ("--by-snr",)),
        "keywords_snr_multi_heads": ("classify", tables / "keywords_train_snr.tsv", tables / "keywords_test_snr.tsv",
                                     ("--by-snr",)),
        "speakers": ("verify", corpus / "sentences_train.tsv", corpus / "sentences_test.tsv", ("--all-layers",)),
        "speakers_stats": ("verify", corpus / "sentences_train.tsv", corpus / "sentences_test.tsv",
                           ("--head", "stats")),
        "noisy": ("noisy", tables / "sentences_train_snr.tsv", tables / "sentences_test_snr.tsv",
                  ("--all-layers", "--by-snr")),
    }  # fmt: skip
    steps, runs = [], []
    for name, step_dir in models.items():
        for suite, (task, train, test, extra) in suites.items():
            out = probes / suite / name
            runs.append(str(out))
            steps.append(Step(
                name=f"probe {suite} {name}", done=out / "results.json",
                argv=(*SSL_AUDIO, "probe", task, "--checkpoint", str(step_dir), "--train", str(train), "--test",
                      str(test), "--seeds", str(c.probe_seeds), *extra, "--out", str(out), "--cache",
                      str(probes / "cache")),
            ))  # fmt: skip
    steps.append(Step(name="report", argv=(*SSL_AUDIO, "probe-report", *runs)))
    return steps


def run_steps(steps: list[Step], *, dry_run: bool, report: Path | None = None) -> None:
    for step in steps:
        if step.done is not None and step.done.exists():
            print(f"# {step.name}: done ({step.done})")
            continue
        print(f"# {step.name}\n{step.shell()}", flush=True)
        if dry_run:
            continue
        if step.name == "report" and report is not None:
            text = subprocess.run(step.argv, check=True, capture_output=True, text=True).stdout
            report.write_text(text, encoding="utf-8")
            print(text, end="")
        else:
            subprocess.run(step.argv, check=True)


def build_control(args: argparse.Namespace) -> Control:
    start = Path(args.start)
    family = read_model_config(start).family
    if family not in DEFAULT_RECIPES:
        raise ValueError(f"{start}: family {family!r} has no continued-pretraining recipe here")
    low, high = (float(x) for x in args.snr_range.split(","))
    return Control(
        start=start, family=family, corpus=Path(args.corpus), audio_dir=args.audio_dir, out=Path(args.out),
        updates=args.updates, recipe=args.recipe or DEFAULT_RECIPES[family], layer=args.layer, k=args.k,
        snr_range=(low, high), seed=args.seed, probe_seeds=args.probe_seeds, overrides=tuple(args.set),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", required=True, metavar="STEP_DIR", help="the clean-pretrained checkpoint")
    parser.add_argument("--corpus", default="data/demo", help="folder with the audio and the probe tables")
    parser.add_argument("--audio-dir", default="audio/unlabeled", help="pretraining audio, relative to --corpus")
    parser.add_argument("--out", required=True, help="run folder of both arms, their data and the probes")
    parser.add_argument("--updates", type=int, required=True, help="N: updates of each arm")
    parser.add_argument("--recipe", default=None, help="default: continue_pretraining.yaml / tiny_wav2vec2.yaml")
    parser.add_argument("--layer", type=int, default=3, help="HuBERT/WavLM: the start's layer clustered for labels")
    parser.add_argument("--k", type=int, default=100, help="HuBERT/WavLM: clusters of the labels")
    parser.add_argument("--snr-range", default="0,20", help="dB range of the noisy twin (uniform per file)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of both arms (and of the noise)")
    parser.add_argument("--probe-seeds", type=int, default=3, help="head seeds of every probe (mean ± std)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="an override for both arms' recipe (repeatable), e.g. pretrain.model.config.encoder.num_layers=2",
    )  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    if args.updates < 1:
        parser.error(f"--updates must be >= 1, got {args.updates}")
    try:
        c = build_control(args)
    except ValueError as err:
        parser.error(str(err))
    noisy_audio = c.audio("noisy")
    if not noisy_audio.is_dir():
        print(f"# noisy twin of {c.audio('clean')} at {c.snr_range[0]:g}-{c.snr_range[1]:g} dB -> {noisy_audio}")
        if not args.dry_run:
            make_noisy_twin(
                c.corpus, c.out / "noisy", tables=(), audio_dirs=(c.audio_dir,), snr_range=c.snr_range, seed=c.seed
            )
    run_steps(training_steps(c) + table_steps(c), dry_run=args.dry_run)
    run_steps(probe_steps(c), dry_run=args.dry_run, report=c.out / "report.md")  # after training: the newest steps
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

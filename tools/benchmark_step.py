"""Training-step benchmark: our BASE wav2vec 2.0 and HuBERT against torchaudio's and transformers'.

    python tools/benchmark_step.py [--batch 2] [--seconds 4] [--steps 5] [--warmup 2] [--threads 2]
                                   [--only wav2vec2|hubert|trunk] [--skip-bf16] [--bf16-steps N]
                                   [--skip-trunk] [--no-lengths] [--profile] [--frontends]

One step = zero_grad + forward + loss + backward + AdamW step, fp32 on the CPU, in this process, on the same
random batch. Every implementation gets the BASE dropouts (0.1 residual, attention, input projection; 0.0
activation) and layerdrop 0.0, so every step runs all 12 layers. The implementations of a family are built
together and take turns, one step each (--warmup untimed rounds, then --steps timed ones), so that load from
other processes falls on all of them alike. Throughput = batch audio-seconds / median step-seconds, and the
ratios use it. On a shared machine such load takes a core away for some steps and not others, so the fastest
step and the median process CPU-seconds per step (all threads; with passive OpenMP waiting, the work done,
whoever else wants the cores) are printed beside it, and the ratios are also given by CPU-seconds: where the
two disagree, the run was noisy. The bf16 rows step our fp32 row's model afterwards, under autocast.

Rows (what each measures):
- wav2vec2 / ours: Wav2Vec2(wav2vec2_base()) full objective: span masking (0.65, 10) and K=100 negative
  sampling inside forward, quantiser on the masked frames, contrastive + diversity + feature penalty.
- wav2vec2 / transformers: Wav2Vec2ForPreTraining, same mask probability, span and K; its own objective
  (contrastive + diversity, logits for every frame, quantiser on every frame; no feature penalty and no
  feature_grad_mult, whose cost is negligible). Masks and negatives are drawn with its numpy helpers outside
  the timed step, as its data collator does; their cost is printed separately.
- wav2vec2 / torchaudio: none (torchaudio has no wav2vec 2.0 pretraining head); see the trunk rows.
- hubert / ours: Hubert(hubert_base()) with 500 classes at 50 Hz: masking (0.8, 10) inside forward, cosine
  logits against label embeddings for every frame, CE on masked frames, feature penalty, grad mult 0.1.
- hubert / torchaudio: hubert_pretrain_base(num_classes=500): masking inside forward, logits for masked
  and unmasked frames (501 columns, target first); loss = CE(logit_m, 0) summed + 10 * penalty * masked
  frames (torchaudio's example hubert_loss with unmasked weight 0, its term left out as fairseq does).
- hubert / transformers: HubertModel + a head built like ours (bench/transformers_ref.py: final projection,
  label embeddings, cosine / logit temperature as a matmul of unit vectors, CE on masked frames, feature penalty
  and grad mult through a hook on its conv extractor). transformers has no HuBERT pretraining head. Masks drawn
  outside the timed step.
- trunk / each: encoder only (conv extractor, projection, transformer; no masking, no head, no grad mult),
  loss = mean square of the last hidden state. The one like-for-like row for all three implementations.
- bf16 rows: ours under torch.autocast("cpu", dtype=torch.bfloat16); losses stay fp32 inside the models.
- --frontends: instead of the rows above, ours only (wav2vec2 and hubert BASE, fp32) with each front-end of
  FRONTENDS below in turns, and each one's throughput over the conv stack's: the step cost of a front-end.

Every implementation is built from the same ssl_audio preset (WAV2VEC2, HUBERT, TRUNK below) by its module in
tools/bench/ (ours.py, torchaudio_ref.py, transformers_ref.py); this file is the driver: timing and report.
"""

from __future__ import annotations

# ruff: noqa: E402
import os

# As `import ssl_audio` does, before torch loads its OpenMP runtime: threads that spin while they wait make every
# op several times slower when other processes want the cores, whichever implementation runs. Set it to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import functools
import gc
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
from bench import ours, torchaudio_ref, transformers_ref  # tools/bench: one module per implementation
from bench.common import Batch, Built, C, make_batch, no_layerdrop

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.models.encoder import EncoderConfig
from ssl_audio.models.hubert import hubert_base
from ssl_audio.models.wav2vec2 import wav2vec2_base
from ssl_audio.nn.conv_extractor import ConvFrontendConfig
from ssl_audio.nn.logmel_frontend import LogMelFrontendConfig
from ssl_audio.nn.patch_frontend import PatchFrontendConfig
from ssl_audio.train.config import OptimConfig
from ssl_audio.train.hardware import bf16_units
from ssl_audio.train.optimizer import make_adamw

# AdamW as in the BASE recipes (OptimConfig's betas, eps and weight decay, here on every parameter) at a warm-up-sized
# learning rate: the step time does not depend on it, and a model driven to divergence on random noise (the peak
# 5e-4 from step 0) is not the step we want to time.
LEARNING_RATE = 1e-5
# Throughput targets (printed, not enforced): ours over each reference, and bf16 over fp32.
TARGET_VS_TRANSFORMERS = 1.3
TARGET_VS_TORCHAUDIO = 1.2
TARGET_BF16 = 2.0
# The presets every implementation is built from, all 12 layers every step.
WAV2VEC2 = no_layerdrop(wav2vec2_base())
HUBERT = no_layerdrop(hubert_base())  # iteration 2: 500 classes at 50 Hz
TRUNK = no_layerdrop(EncoderConfig())
# --frontends: BASE-sized front-ends (Whisper base's stem width 512, SSAST / AudioMAE's 768-wide patches)
FRONTENDS = {
    "conv": ConvFrontendConfig(),
    "logmel+whisper-stem": LogMelFrontendConfig(width=512),
    "logmel+conv2d-stem": LogMelFrontendConfig(features="kaldi", stem="conv2d", width=512, normalize="utterance"),
    "patch 16x16": PatchFrontendConfig(),
    "patch 16x4": PatchFrontendConfig(patch_time=4),  # 16 bins x 4 frames: 25 Hz, as tiny_hubert_patch.yaml
}


def with_frontend(cfg: C, frontend: object) -> C:
    return replace(cfg, encoder=replace(cfg.encoder, frontend=frontend))  # type: ignore[type-var]


@dataclass(frozen=True)
class Case:
    family: str  # wav2vec2 | hubert | trunk
    impl: str  # ours | transformers | torchaudio
    build: Callable[[Batch], Built]
    bf16: bool = False

    @property
    def label(self) -> str:
        return f"{self.family} / {self.impl}" + (" (bf16 autocast)" if self.bf16 else "")


@dataclass(frozen=True)
class Result:
    case: Case
    times: list[float]  # wall seconds per timed step
    cpu_times: list[float]  # process CPU seconds per timed step (all threads)
    prepare_s: float  # median seconds per step spent outside the timer (transformers' masks), 0 if none
    audio_seconds: float
    finite: bool  # every loss was finite

    @property
    def step_s(self) -> float:
        return statistics.median(self.times)

    @property
    def cpu_s(self) -> float:
        return statistics.median(self.cpu_times)

    @property
    def throughput(self) -> float:
        return self.audio_seconds / self.step_s


def bound_case(family: str, impl: str, build: Callable[[object, Batch], Built], cfg: object) -> Case:
    return Case(family, impl, functools.partial(build, cfg))


# --- timing -----------------------------------------------------------------------------------------------


class Runner:
    """One implementation's model, optimizer and loss; the runners of a family take turns, one step each."""

    def __init__(self, case: Case, batch: Batch) -> None:
        torch.manual_seed(0)
        self.case = case
        self.model, self.loss_fn, self.prepare = case.build(batch)
        self.model.train()
        adam = OptimConfig()
        groups = [{"params": list(self.model.parameters()), "weight_decay": adam.weight_decay}]
        # every row gets the training loop's optimizer (fused AdamW): the rows differ only in their models
        self.optimizer = make_adamw(groups, LEARNING_RATE, adam.betas, adam.eps, device=torch.device("cpu"))
        self.steps_done = 0

    def step(self, *, bf16: bool = False) -> tuple[float, float, float, bool]:
        """One training step -> (wall s, process CPU s, untimed preparation s, whether the loss was finite)."""
        start = time.perf_counter()
        prepared = self.prepare(self.steps_done) if self.prepare is not None else None
        prepare_s = time.perf_counter() - start
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
        start, cpu_start = time.perf_counter(), time.process_time()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = self.loss_fn(self.steps_done, prepared)
        loss.backward()
        self.optimizer.step()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        self.steps_done += 1
        return elapsed, cpu, prepare_s, bool(torch.isfinite(loss))

    def profile(self, *, bf16: bool = False) -> None:
        """One more step under torch.profiler: the 10 ops with the most self CPU time."""
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            self.step(bf16=bf16)
        label = replace(self.case, bf16=bf16).label
        print(f"\n### profile: {label} (one step, top 10 ops by self CPU time)\n")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=48))


class Recorder:
    """Timings of one row."""

    def __init__(self, case: Case, audio_seconds: float) -> None:
        self.case, self.audio_seconds = case, audio_seconds
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.prepare_times: list[float] = []
        self.finite = True

    def run(self, runner: Runner, *, timed: bool) -> None:
        elapsed, cpu, prepare_s, finite = runner.step(bf16=self.case.bf16)
        if not finite:
            print(f"  WARNING {self.case.label}: non-finite loss at step {runner.steps_done - 1}", flush=True)
            self.finite = False
        if timed:
            self.times.append(elapsed)
            self.cpu_times.append(cpu)
            if runner.prepare is not None:
                self.prepare_times.append(prepare_s)
        kind = "timed" if timed else "warm-up"
        print(f"  {self.case.label}: {kind} step, {elapsed:.2f} s wall, {cpu:.2f} s CPU", flush=True)

    def result(self) -> Result:
        prepare_s = statistics.median(self.prepare_times) if self.prepare_times else 0.0
        return Result(
            case=self.case,
            times=self.times,
            cpu_times=self.cpu_times,
            prepare_s=prepare_s,
            audio_seconds=self.audio_seconds,
            finite=self.finite,
        )


def run_family(
    cases: list[Case], batch: Batch, steps: int, warmup: int, bf16_steps: int, bf16_warmup: int, *, profile: bool
) -> list[Result]:
    """Build every implementation of a family, then step them in turns (the first to go rotates each round), so
    that load from other processes falls on all of them alike; then ours under bf16 autocast, if asked."""
    runners = [Runner(case, batch) for case in cases if not case.bf16]
    recorders = [Recorder(runner.case, batch.audio_seconds) for runner in runners]
    for step in range(warmup + steps):
        shift = step % len(runners)
        for runner, recorder in zip(runners[shift:] + runners[:shift], recorders[shift:] + recorders[:shift]):
            recorder.run(runner, timed=step >= warmup)
    # a bf16 row steps its fp32 row's model
    bf16_rows = [(c, next(r for r in runners if r.case == replace(c, bf16=False))) for c in cases if c.bf16]
    for case, runner in bf16_rows:
        recorder = Recorder(case, batch.audio_seconds)
        for step in range(bf16_warmup + bf16_steps):
            recorder.run(runner, timed=step >= bf16_warmup)
        recorders.append(recorder)
    if profile:
        for runner in runners:
            runner.profile()
        for _, runner in bf16_rows:
            runner.profile(bf16=True)
    results = [recorder.result() for recorder in recorders]
    del runners, bf16_rows
    gc.collect()
    return results


# --- report -----------------------------------------------------------------------------------------------


def cpu_name() -> str:
    name = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name in ("unknown", "x86_64", ""):
                    return value.strip()
    except OSError:
        pass
    return name


def ratio_row(label: str, ours: Result | None, ref: Result | None, target: float, note: str = "") -> str | None:
    if ours is None or ref is None:
        return None
    ratio, cpu_ratio = ours.throughput / ref.throughput, ref.cpu_s / ours.cpu_s
    met = "yes" if ratio >= target else "no"
    return f"| {label} | {ratio:.2f}x | {cpu_ratio:.2f}x | >= {target:.1f}x{note} | {met} |"


def report(results: list[Result], batch: Batch, threads: int, units_found: list[str]) -> None:
    size = f"{batch.wave.shape[0]} x {batch.wave.shape[1] / SAMPLE_RATE:g} s"
    print(f"\n## One training step, BASE, batch {size}, {threads} threads\n")
    print("| family / implementation | median step (s) | fastest step (s) | CPU s per step | audio-s per s |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        label = r.case.label + ("" if r.finite else " (non-finite loss)")
        print(f"| {label} | {r.step_s:.2f} | {min(r.times):.2f} | {r.cpu_s:.2f} | {r.throughput:.2f} |")

    by = {(r.case.family, r.case.impl, r.case.bf16): r for r in results}
    bf16_note = f" (bf16 units: {', '.join(units_found) or 'none on this CPU'})"
    rows = [
        ratio_row("wav2vec2: ours / transformers", by.get(("wav2vec2", "ours", False)),
                  by.get(("wav2vec2", "transformers", False)), TARGET_VS_TRANSFORMERS),
        ratio_row("hubert: ours / torchaudio", by.get(("hubert", "ours", False)),
                  by.get(("hubert", "torchaudio", False)), TARGET_VS_TORCHAUDIO),
        ratio_row("hubert: ours / transformers (HubertModel + our head)", by.get(("hubert", "ours", False)),
                  by.get(("hubert", "transformers", False)), TARGET_VS_TRANSFORMERS),
        ratio_row("trunk: ours / torchaudio", by.get(("trunk", "ours", False)),
                  by.get(("trunk", "torchaudio", False)), TARGET_VS_TORCHAUDIO),
        ratio_row("trunk: ours / transformers", by.get(("trunk", "ours", False)),
                  by.get(("trunk", "transformers", False)), TARGET_VS_TRANSFORMERS),
        ratio_row("wav2vec2: ours bf16 / ours fp32", by.get(("wav2vec2", "ours", True)),
                  by.get(("wav2vec2", "ours", False)), TARGET_BF16, bf16_note),
        ratio_row("hubert: ours bf16 / ours fp32", by.get(("hubert", "ours", True)),
                  by.get(("hubert", "ours", False)), TARGET_BF16, bf16_note),
    ]  # fmt: skip
    print("\n| throughput ratio | by median step | by CPU s | target | met (median) |")
    print("|---|---:|---:|---|---|")
    for row in rows:
        if row is not None:
            print(row)
    if any(r.prepare_s for r in results):
        print("\nNot in the timed step (transformers draws masks and negatives in its data collator, with numpy):")
        for r in results:
            if r.prepare_s:
                print(f"- {r.case.label}: {r.prepare_s * 1000:.1f} ms per step")
    print(f"\nLoad average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("\nwav2vec2 / torchaudio: no row, torchaudio has no wav2vec 2.0 pretraining head; the trunk rows compare it.")


def frontend_report(results: list[Result]) -> None:
    """Each front-end's throughput over the conv stack's, per family (by median step and by CPU seconds)."""
    print("\n| family: front-end / conv | by median step | by CPU s |\n|---|---:|---:|")
    for r in results:
        conv = next(c for c in results if c.case.family == r.case.family and c.case.impl == "ours, conv")
        name = r.case.impl.removeprefix("ours, ")
        print(f"| {r.case.family}: {name} | {r.throughput / conv.throughput:.2f}x | {conv.cpu_s / r.cpu_s:.2f}x |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2, help="utterances per batch")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per utterance (all full length)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--only", choices=("wav2vec2", "hubert", "trunk"), help="one family (wav2vec2 includes the trunk rows)"
    )
    parser.add_argument("--skip-bf16", action="store_true", help="no bf16 autocast rows")
    parser.add_argument(
        "--bf16-steps",
        type=int,
        help="timed bf16 steps (default: --steps on a CPU with bf16 units; else 1 after 1 warm-up, being very slow)",
    )
    parser.add_argument("--skip-trunk", action="store_true", help="no encoder-only rows")
    parser.add_argument("--no-lengths", action="store_true", help="pass no lengths / attention masks to any model")
    parser.add_argument("--profile", action="store_true", help="profile one extra step per row (top 10 ops)")
    parser.add_argument("--frontends", action="store_true", help="ours only, with each front-end (FRONTENDS)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.seconds <= 0:
        raise ValueError("need --steps >= 1, --warmup >= 0, --batch >= 1, --seconds > 0")

    torch.set_num_threads(args.threads)
    import torchaudio
    import transformers

    name, units_found = cpu_name(), bf16_units()
    print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, transformers {transformers.__version__}")
    units = ", ".join(units_found) or "none (no amx_bf16 / avx512_bf16 flag)"
    isa = torch.backends.cpu.get_cpu_capability()
    print(f"CPU: {name}; ISA: {isa}; bf16 matrix units: {units}; threads: {torch.get_num_threads()}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average (1, 5, 15 min) at the start: {load} (other processes make wall times noisy)")
    print(f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")

    samples = round(args.seconds * SAMPLE_RATE)
    classes = HUBERT.num_classes[0]
    batch = make_batch(TRUNK, batch=args.batch, samples=samples, num_classes=classes, with_lengths=not args.no_lengths)
    lengths, frames = batch.lengths, batch.frames
    print(
        f"batch: {args.batch} x {samples} samples ({batch.audio_seconds:g} audio-s), {frames} frames; "
        f"lengths passed: {lengths is not None}; {args.warmup} warm-up + {args.steps} timed steps\n"
    )

    if args.bf16_steps is None:  # without bf16 units a bf16 step is an order of magnitude slower: time fewer
        bf16_steps, bf16_warmup = (args.steps, args.warmup) if units_found else (1, min(args.warmup, 1))
    else:
        bf16_steps, bf16_warmup = args.bf16_steps, args.warmup
    families: list[list[Case]] = []
    if args.frontends:
        for family, cfg, build in (("wav2vec2", WAV2VEC2, ours.build_wav2vec2), ("hubert", HUBERT, ours.build_hubert)):
            if args.only in (None, family):
                families.append(
                    [bound_case(family, f"ours, {n}", build, with_frontend(cfg, f)) for n, f in FRONTENDS.items()]
                )
        results = [r for cases in families for r in run_family(cases, batch, args.steps, args.warmup, 0, 0,
                                                                   profile=args.profile)]  # fmt: skip
        report(results, batch, torch.get_num_threads(), units_found)
        frontend_report(results)
        return
    if args.only in (None, "wav2vec2"):
        families.append(
            [
                bound_case("wav2vec2", "ours", ours.build_wav2vec2, WAV2VEC2),
                bound_case("wav2vec2", "transformers", transformers_ref.build_wav2vec2, WAV2VEC2),
            ]
        )
    if args.only in (None, "hubert"):
        families.append(
            [
                bound_case("hubert", "ours", ours.build_hubert, HUBERT),
                bound_case("hubert", "torchaudio", torchaudio_ref.build_hubert, HUBERT),
                bound_case("hubert", "transformers", transformers_ref.build_hubert, HUBERT),
            ]
        )
    if args.only in (None, "wav2vec2", "trunk") and not args.skip_trunk:
        families.append(
            [
                bound_case("trunk", "ours", ours.build_trunk, TRUNK),
                bound_case("trunk", "torchaudio", torchaudio_ref.build_trunk, TRUNK),
                bound_case("trunk", "transformers", transformers_ref.build_trunk, TRUNK),
            ]
        )
    results: list[Result] = []
    for cases in families:
        if not args.skip_bf16 and cases[0].family != "trunk":
            cases = cases + [replace(cases[0], bf16=True)]  # cases[0] is ours
        results += run_family(cases, batch, args.steps, args.warmup, bf16_steps, bf16_warmup, profile=args.profile)
    report(results, batch, torch.get_num_threads(), units_found)


if __name__ == "__main__":
    main()

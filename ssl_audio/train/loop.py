"""`train(cfg)`: one loop for every family, on one CPU or many GPUs (accelerate).

Read top to bottom: set-up, resume, then `while step < total: update; validate; save`. An update sums the
losses of `accum` micro-batches on every process and divides the gradient by the total number of
predicted frames (fairseq's normalisation), so the gradient does not depend on how the work is split.
After each optimizer step one max over the weights (one host sync) checks that they are still finite; if not,
the run stops with a TrainingError naming the update and the optim keys before anything is saved, so the newest
checkpoint always holds the last finite weights.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list

from ssl_audio.audio import MIN_SAMPLES, SAMPLE_RATE
from ssl_audio.configs import save_config, to_dict
from ssl_audio.data.collate import Batch
from ssl_audio.data.conditions import Conditioner
from ssl_audio.data.labels import load_labels
from ssl_audio.data.loader import ResumableLoader, set_epoch
from ssl_audio.data.manifest import Manifest, has_split, load_split
from ssl_audio.data.mixing import Mixer
from ssl_audio.data.pipeline import make_loader
from ssl_audio.finetune.targets import UtteranceTargets, check_uncropped, load_targets, target_vocab, too_long
from ssl_audio.models.flops import TRAINING_FACTOR, decoder_label_lengths, forward_flops
from ssl_audio.models.loading import load_weights
from ssl_audio.models.output import Output
from ssl_audio.models.registry import FAMILIES, Family, build_model, family_config, resolved_model
from ssl_audio.models.step_context import StepContext
from ssl_audio.train.checkpoint import (
    find_resume,
    load_checkpoint,
    os_error_reason,
    prune_checkpoints,
    save_checkpoint,
)
from ssl_audio.train.config import Config, resolve_config
from ssl_audio.train.hardware import bf16_units, check_fsdp, fsdp_requested
from ssl_audio.train.optimizer import make_adamw
from ssl_audio.train.param_groups import lr_scales
from ssl_audio.train.peak import device_peak, utilisation
from ssl_audio.train.resume_changes import check_resume_changes
from ssl_audio.train.rng import seed_everything
from ssl_audio.train.run_control import StopRequest, TrainingError
from ssl_audio.train.run_folder import RunFolderError, take_run_folder
from ssl_audio.train.scalars import per_frame
from ssl_audio.train.schedule import lr_multiplier
from ssl_audio.train.state_dicts import load_model_state, model_state, plain_model
from ssl_audio.train.telemetry import Telemetry
from ssl_audio.train.trackers import check_trackers, hyperparameters
from ssl_audio.train.train_state import TrainState, check_world_size

PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


@dataclass(kw_only=True)
class TrainResult:
    step: int
    epoch: int
    skipped: int
    losses: list[float] = field(default_factory=list)  # mean loss per frame of each update this call ran
    valid: dict[str, float] = field(default_factory=dict)  # the last validation
    checkpoint: Path | None = None
    interrupted: str | None = None  # the stop signal (SIGTERM, SIGUSR1) that ended this call, checkpointed
    audio_seconds_per_second: float = 0.0  # over the updates this call ran
    tflops_per_second: float = 0.0  # model FLOPs (models/flops.py) per second of update time, all processes
    mfu: float | None = None  # that over the peak of all processes' devices; None without a known peak


def update_flops(
    family_cfg: object, lengths: list[int], masked_frames: torch.Tensor, label_lengths: list[int] | None = None
) -> torch.Tensor:
    """Training FLOPs of one micro-batch; the masked-frame count stays on the device (no host sync).
    `label_lengths`: target tokens per utterance (a seq2seq head's decoder work depends on them)."""
    base = forward_flops(family_cfg, lengths, masked_frames=0, label_lengths=label_lengths)
    # wav2vec 2.0's heads are linear in the masked-frame count
    per_masked = forward_flops(family_cfg, lengths, masked_frames=1, label_lengths=label_lengths) - base
    return TRAINING_FACTOR * (base + per_masked * masked_frames.float())


def forward_batch(
    model: torch.nn.Module,
    family: Family,
    batch: Batch,
    *,
    step: int,
    layerdrop_seed: int | None = None,
    generator=None,
) -> Output:
    """Run a batch through any family (through the DDP wrapper, so its hooks fire)."""
    context = StepContext(step=step, generator=generator, layerdrop_seed=layerdrop_seed)
    return model(**family.inputs(batch), context=context)


def check_input_lengths(min_samples: int, max_samples: int, manifests: list[Manifest | None]) -> None:
    """Every crop and every utterance must give the front-end at least one frame (a longer window than the
    data pipeline's 25 ms floor, e.g. a patch front-end, needs longer audio)."""
    if max_samples < min_samples:
        raise ValueError(
            f"config key 'data.max_samples': {max_samples} is shorter than one frame of the model's front-end "
            f"({min_samples} samples)"
        )
    for manifest in manifests:
        if manifest is None or min_samples <= MIN_SAMPLES:
            continue  # the manifest's own floor already guarantees a frame
        short = next((i for i, n in enumerate(manifest.num_samples) if n < min_samples), None)
        if short is not None:
            raise ValueError(
                f"{manifest.audio_path(short)}: {manifest.num_samples[short]} samples, fewer than one frame of the "
                f"model's front-end ({min_samples}); remove such rows from the manifest"
            )


def param_groups(
    model: torch.nn.Module, weight_decay: float, *, lr: float | None = None, scales: dict[str, float] | None = None
) -> list[dict]:
    """Weight decay on matrices only: not on norms, biases, embeddings of one vector or weight-norm gains.

    `scales` (parameter name -> multiplier of `lr`, train/param_groups.py): parameters at another rate go into
    further groups after the first two, so with every multiplier 1 the groups are those of old (and optimizer
    states saved before still load)."""
    groups: dict[tuple[float, bool], list] = {(1.0, True): [], (1.0, False): []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = 1.0 if scales is None else scales.get(name, 1.0)
        decays = p.ndim >= 2 and not name.endswith("original0")
        groups.setdefault((scale, decays), []).append(p)
    out = []
    for scale, decays in [(1.0, True), (1.0, False), *sorted(k for k in groups if k[0] != 1.0)]:
        group = {"params": groups[(scale, decays)], "weight_decay": weight_decay if decays else 0.0}
        if scale != 1.0:
            if lr is None:
                raise ValueError("param_groups: rate multipliers need the peak lr")
            group["lr"] = lr * scale
        out.append(group)
    return out


def batch_stream(loader: ResumableLoader, epoch: int) -> Iterator[tuple[int, Batch]]:
    """Batches across epoch boundaries; a loader restored mid-epoch continues that epoch first."""
    while True:
        set_epoch(loader, epoch)
        for batch in loader:
            yield epoch, batch
        epoch += 1


def batch_generator(seed: int, step: int, batch: Batch, device: torch.device) -> torch.Generator:
    """Masks and Gumbel noise drawn from (seed, update, first utterance): the same whatever the number of
    processes or micro-batches, so 2 processes x 1 batch and 1 process x 2 batches train alike."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + step) * 1_000_033 + int(batch.indices[0]))
    return generator


def train(cfg: Config, *, resume: str | None = None) -> TrainResult:
    """Pretrain `cfg.model` on `cfg.data`. `resume`: None, "auto" (newest good checkpoint) or a step folder.

    The main process holds the run folder's lock from before it reads a checkpoint until the run ends."""
    with contextlib.ExitStack() as held:
        return _train(cfg, resume=resume, held=held)


def _take_run_folder(run_dir: Path, accelerator: Accelerator, held: contextlib.ExitStack) -> list[Path]:
    """Rank 0 locks the folder and clears stale temporary saves; every rank raises its error, if any.
    Returns the stale paths removed."""
    error, removed = None, []
    if accelerator.is_main_process:
        try:
            removed = held.enter_context(take_run_folder(run_dir)).removed
        except RunFolderError as err:
            error = err
    if accelerator.num_processes > 1:  # also a barrier: no rank reads checkpoints before the lock is held
        message = broadcast_object_list([None if error is None else str(error)])[0]
        if message is not None and error is None:
            error = RunFolderError(message)
    if error is not None:
        raise error
    return removed


def _train(cfg: Config, *, resume: str | None, held: contextlib.ExitStack) -> TrainResult:
    cfg = resolve_config(cfg)
    check_trackers(cfg.train.log_with)  # a tracker that is not installed fails here, before any work
    family = FAMILIES[cfg.model.family]
    family_cfg = family_config(cfg.model)
    # Layerdrop leaves layers without gradients in some updates; DDP must be told to expect that.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=family.unused_parameters(family_cfg))
    accelerator = Accelerator(mixed_precision=PRECISION[cfg.train.precision], cpu=cfg.train.cpu, kwargs_handlers=[ddp])
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    check_fsdp(fsdp_requested(), accelerator.distributed_type.value, device.type)
    if cfg.train.precision == "bf16" and device.type == "cpu" and not bf16_units():
        warnings.warn(
            "train.precision=bf16 on a CPU without bf16 matrix units (no amx_bf16 / avx512_bf16 flag): autocast "
            "is emulated there and ran 4-30x slower than fp32 in tools/benchmark_step.py; use train.precision=fp32",
            stacklevel=2,
        )
    run_dir = Path(cfg.run_dir)

    # Data: this process's share of the batches.
    data = cfg.data
    manifest_dir = Path(data.manifest_dir)
    grad_accum = cfg.train.grad_accum
    if cfg.train.target_seconds_per_update is not None:
        grad_accum = max(1, math.ceil(cfg.train.target_seconds_per_update / (data.max_batch_seconds * world)))
    if data.shard_dir is not None and cfg.finetune.train is not None:
        raise ValueError("finetune.train: utterance targets are looked up by manifest row; set data.shard_dir: null")
    train_targets = valid_targets = None
    train_manifest = valid_manifest = None
    if data.shard_dir is not None:  # packed tar shards: one open per shard, no stat() per file on every rank
        labels = list(data.train_labels) or None  # packed with the shards, by their files' names
        loader = make_loader(data.shard_dir, data, split="train", seed=cfg.seed, rank=rank, world=world)
    else:
        train_manifest = load_split(manifest_dir, "train")
        labels = [load_labels(p, train_manifest, rate=data.label_rate) for p in data.train_labels] or None
        if cfg.finetune.train is not None:  # fine-tuning: the utterance targets of every manifest row
            vocab = target_vocab(cfg.finetune)
            check_uncropped(data.collate, data.max_samples, train_manifest, "train")
            train_targets = load_targets(cfg.finetune, cfg.finetune.train, train_manifest, vocab)
        loader = make_loader(train_manifest, data, split="train", seed=cfg.seed, rank=rank, world=world, labels=labels)
    valid_loader = None
    if has_split(manifest_dir, "valid"):
        valid_manifest = load_split(manifest_dir, "valid")
        valid_labels = [load_labels(p, valid_manifest, rate=data.label_rate) for p in data.valid_labels] or None
        if labels and not valid_labels:
            raise ValueError("data.valid_labels must name label files for valid.tsv when training with labels")
        valid_loader = make_loader(
            valid_manifest, data, split="valid", seed=cfg.seed, rank=rank, world=world, labels=valid_labels
        )
        if train_targets is not None:
            if cfg.finetune.valid is None:
                raise ValueError(
                    "finetune.valid must name the targets of valid.tsv when fine-tuning with a valid split"
                )
            check_uncropped(data.collate, data.max_samples, valid_manifest, "valid")
            valid_targets = load_targets(cfg.finetune, cfg.finetune.valid, valid_manifest, vocab)

    # Model, optimizer, schedule. Every process builds the same initial weights from the same seed.
    seed_everything(cfg.seed)
    model = build_model(cfg.model)
    check_input_lengths(model.encoder.min_samples, data.max_samples, [train_manifest, valid_manifest])
    stale = _take_run_folder(run_dir, accelerator, held)
    resumed = load_checkpoint(resume) if resume not in (None, "auto") else find_resume(run_dir) if resume else None
    if resumed is None and cfg.init.checkpoint:
        skip = tuple(p for option, parts in family.fresh_parts.items() if getattr(cfg.init, option) for p in parts)
        init_state = load_checkpoint(cfg.init.checkpoint).model_state
        if family.init_keeps:  # e.g. fine-tuning: the trunk only; the rest of the model starts fresh
            init_state = {k: v for k, v in init_state.items() if k.startswith(family.init_keeps)}
            # what the checkpoint lacks starts fresh, except the trunk (`encoder.`, every family's), which must fit
            skip += tuple(k for k in model.state_dict() if k not in init_state and not k.startswith("encoder."))
        load_weights(model, init_state, source=cfg.init.checkpoint, skip=skip)
    encoder_cfg, o = family_cfg.encoder, cfg.optim
    scales = lr_scales(
        model, num_layers=encoder_cfg.num_layers, pre_ln=encoder_cfg.pre_ln, layer_decay=o.layer_decay,
        head_scale=(o.head_lr or o.lr) / o.lr,
    )  # fmt: skip
    groups = param_groups(model, o.weight_decay, lr=o.lr, scales=scales)  # by name: before compile renames
    if cfg.train.compile:
        model = torch.compile(model)
    optimizer = make_adamw(
        groups, o.lr, o.betas, o.eps, device=device, sharded=fsdp_requested(), loss_scaled=cfg.train.precision == "fp16"
    )
    updates_per_epoch = max(len(loader) // grad_accum, 1)
    total = cfg.train.max_updates
    if cfg.train.max_epochs is not None:
        total = min(total, cfg.train.max_epochs * updates_per_epoch)
    skip_warmup = 0 if cfg.init.rewarm or not cfg.init.checkpoint else cfg.schedule.warmup_updates
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s + skip_warmup, total + skip_warmup, cfg.schedule)
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    core = plain_model(model)  # under DDP and torch.compile; with FSDP its parameters are shards

    state = TrainState(
        model=model, optimizer=optimizer.optimizer, scheduler=scheduler, scaler=accelerator.scaler, loader=loader,
        rank=rank, world_size=world,
    )  # fmt: skip
    resume_lines: list[str] = []
    if resumed is not None:
        source, fixed_audio = str(resumed.path), cfg.train.target_seconds_per_update is not None
        check_world_size(resumed.train_state, world, source=source, fixed_audio=fixed_audio)  # before other changes
        load_model_state(model, resumed.model_state, source=source)
        resume_lines = check_resume_changes(resumed.config_text, cfg, source=source)
        if (saved_world := resumed.train_state["world_size"]) != world:
            saved_accum = max(
                1, math.ceil(cfg.train.target_seconds_per_update / (data.max_batch_seconds * saved_world))
            )
            resume_lines.append(
                f"resume: {saved_world} -> {world} process(es), {saved_accum} -> {grad_accum} micro-batch(es) per "
                "update; the rest of the epoch is re-split over the new processes"
            )
        state.load_state_dict(
            resumed.train_state, source=source, peak_lr=cfg.optim.lr, seed=cfg.seed, fixed_audio=fixed_audio
        )
    else:
        seed_everything(cfg.seed * 1000 + rank + 1)  # masking and dropout differ across processes
    step, epoch, skipped, bad_in_row = state.step, state.epoch, state.skipped, 0

    # Only now, with the weights accepted, does the run folder get (or keep) this config. Step folders record the
    # model section fully resolved, so they build the same model whatever later happens to the presets.
    resolved = to_dict(replace(cfg, model=resolved_model(cfg.model)))
    config_text = yaml.safe_dump(resolved, sort_keys=False)
    if accelerator.is_main_process:
        try:
            save_config(cfg, run_dir / "config.yaml")
        except OSError as err:
            raise RunFolderError(f"run_dir {run_dir}: cannot write ({os_error_reason(err, err.filename)})") from None
    telemetry = Telemetry(
        run_dir, enabled=accelerator.is_main_process, total_updates=total, start_update=step,
        log_every=cfg.train.log_every, chance=family.chance(family_cfg),
        chance_warn_after=cfg.train.chance_warn_after,
        perplexity_floor=family.perplexity_floor(family_cfg, cfg.train.perplexity_warn_below),
        log_with=cfg.train.log_with, hparams=hyperparameters(resolved),
    )  # fmt: skip
    held.callback(telemetry.close)
    for path in stale:
        telemetry.line(f"removed {path}: left by a save that did not finish")
    if accelerator.is_main_process:  # skipped bad files go to train.log; other ranks keep stderr
        for part in (loader, valid_loader):
            if part is not None:
                part.report = telemetry.line
    if resumed is not None:
        telemetry.line(f"resumed from {resumed.path} at update {step}")
    for line in resume_lines:
        telemetry.line(line)
    if train_targets is not None and cfg.finetune.kind == "characters":  # CTC leaves these out of the loss
        frontend = core.encoder.frontend

        def frames_of(samples: int) -> int:
            return int(frontend.output_lengths(torch.tensor([samples]))[0])

        for line in too_long(train_targets, train_manifest, frames_of):
            telemetry.line(line)
    peak = device_peak(device, cfg.train.precision, cfg.train.peak_tflops)
    telemetry.line(
        f"MFU against {peak.tflops:.3g} TFLOP/s per process ({peak.source})" if peak is not None
        else "MFU not reported: no peak known for this device (set train.peak_tflops)"
    )  # fmt: skip
    stop_request = StopRequest()
    stop_request.install(held)
    num_params = sum(p.numel() for p in core.parameters())
    telemetry.line(
        f"{cfg.model.family} ({cfg.model.preset}): {num_params:,} parameters, {world} process(es), "
        f"{grad_accum} micro-batch(es) per update, {len(loader)} batches per epoch per process, {total} updates"
    )

    def save(val_loss: float | None) -> Path | None:
        state.step, state.skipped = step, skipped
        train_state = state.state_dict()  # on every rank: it gathers their RNG and loader states (FSDP: optimizer)
        weights = model_state(model)  # on every rank: under FSDP it gathers the shards to rank 0
        path = None
        if accelerator.is_main_process:
            path = save_checkpoint(
                run_dir, step, model_state=weights, train_state=train_state, config_text=config_text,
                val_loss=val_loss,
            )  # fmt: skip
            prune_checkpoints(run_dir, cfg.train.keep_last)
            telemetry.line(f"saved {path}")
        accelerator.wait_for_everyone()
        return path

    mixer = Mixer(data.mixing, device) if data.mixing.prob > 0 else None
    conditioner = Conditioner(data.conditions) if data.conditions.enabled else None
    result = TrainResult(step=step, epoch=epoch, skipped=skipped)
    stream = batch_stream(loader, epoch)
    params = [p for p in model.parameters() if p.requires_grad]
    last_saved = step if resumed is not None else None
    stop = total if cfg.train.stop_at is None else min(total, cfg.train.stop_at)
    run_flops = run_audio = run_seconds = 0.0
    while step < stop:
        # One update: accumulate micro-batches, normalise by the frames predicted on every process.
        started = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        frames = torch.zeros((), device=device)
        audio = torch.zeros((), device=device)
        flops = torch.zeros((), device=device)
        metric_sums: dict[str, torch.Tensor] = {}
        term_sums: dict[str, torch.Tensor] = {}  # loss terms, summed like the loss (scalars.py)
        for micro in range(grad_accum):
            epoch, batch = next(stream)
            if train_targets is not None:
                batch = train_targets.attach(batch)
            lengths = batch.lengths.tolist()  # still on the host
            label_lengths = decoder_label_lengths(family_cfg, batch.labels)
            batch = batch.to(device)
            if mixer is not None:  # targets stay the primary's: only the waves change
                batch = mixer(batch, batch_generator(cfg.seed + 1, step, batch, torch.device("cpu")))
            if conditioner is not None:  # after mixing: the room and the microphone hear the whole mixture
                batch = conditioner(batch, batch_generator(cfg.seed + 2, step, batch, torch.device("cpu")))
            sync = contextlib.nullcontext() if micro == grad_accum - 1 else accelerator.no_sync(model)
            with sync:
                with accelerator.autocast():
                    out = forward_batch(
                        model, family, batch, step=step, layerdrop_seed=cfg.seed * 1_000_003 + step,
                        generator=batch_generator(cfg.seed, step, batch, device),
                    )  # fmt: skip
                accelerator.backward(out.loss)
            loss_sum += out.loss.detach().float()
            frames += out.sample_size
            audio += batch.lengths.sum()
            flops += update_flops(family_cfg, lengths, out.metrics["masked_frames"], label_lengths)
            for key, value in out.metrics.items():
                metric_sums[key] = metric_sums.get(key, 0) + value.detach().float()
            for key, value in out.losses.items():
                term_sums[key] = term_sums.get(key, 0) + value.detach().float()
        stopping = torch.tensor(float(stop_request.signal is not None), device=device)
        totals = accelerator.reduce(
            torch.stack([loss_sum, frames, audio, flops, stopping, *term_sums.values()]), reduction="sum"
        ).tolist()
        (loss_sum, frames, audio, flops, stopping), term_totals = totals[:5], dict(zip(term_sums, totals[5:]))
        # DDP averaged the gradients over processes; turn that into a sum divided by all predicted frames.
        scale = world / max(frames, 1.0)
        for p in params:
            if p.grad is not None:
                p.grad.mul_(scale)
        grad_norm = accelerator.clip_grad_norm_(params, cfg.optim.clip_norm if cfg.optim.clip_norm > 0 else math.inf)
        grad_norm = float(grad_norm)
        if cfg.train.precision == "fp16":  # the loss scaler decides, and lowers its scale on overflow
            optimizer.step()
            ok = not accelerator.optimizer_step_was_skipped
        else:
            ok = math.isfinite(grad_norm) and math.isfinite(loss_sum)
            if ok:
                optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lr = optimizer.param_groups[0]["lr"]  # the rate this update used
        if ok:  # a finite gradient can still step to Inf/NaN (lr or eps out of range): one max over the weights
            weights_max = float(torch.nn.utils.get_total_norm(params, norm_type=math.inf))
            if not math.isfinite(weights_max):
                o = cfg.optim
                text = (
                    f"stopping at update {step + 1}: the optimizer step made the weights non-finite (max |w| "
                    f"{weights_max}) with a finite gradient (norm {grad_norm:.4g}) at lr {lr:.4g}; check optim.lr="
                    f"{o.lr}, optim.eps={o.eps}, optim.betas={list(o.betas)}, optim.weight_decay={o.weight_decay}. "
                    f"Not saved: the newest checkpoint in {run_dir} holds the last finite weights"
                )
                telemetry.line(text)
                raise TrainingError(text)
        if not ok:
            skipped += 1
            bad_in_row += 1
            telemetry.line(f"update {step + 1}: non-finite loss or gradient, skipped ({bad_in_row} in a row)")
            if bad_in_row >= cfg.train.max_bad_updates:
                raise TrainingError(
                    f"stopping at update {step + 1}: {bad_in_row} non-finite updates in a row (last loss {loss_sum}); "
                    f"the newest checkpoint in {run_dir} holds the last finite weights"
                )
            continue
        bad_in_row = 0
        scheduler.step()
        step += 1
        mean_loss = loss_sum / max(frames, 1.0)
        result.losses.append(mean_loss)
        metrics = {k: float(accelerator.reduce(v, reduction="mean")) / grad_accum for k, v in metric_sums.items()}
        metrics.update(per_frame(term_totals, frames))
        if family.accuracy_key != "accuracy" and family.accuracy_key in metrics:  # the family's headline accuracy
            metrics["accuracy"] = metrics[family.accuracy_key]
        stuck = family.stuck(family_cfg, step, metrics, cfg.train.chance_warn_after)
        if stuck is not None:
            telemetry.warn("stuck", stuck)
        seconds = time.perf_counter() - started
        run_flops, run_audio, run_seconds = run_flops + flops, run_audio + audio, run_seconds + seconds
        mfu = utilisation(flops, seconds * world, peak)  # peak is per process
        telemetry.update(
            step,
            {
                "loss": mean_loss, **metrics, "lr": lr, "grad_norm": grad_norm,
                "loss_scale": accelerator.scaler.get_scale() if accelerator.scaler is not None else 1.0,
                "audio_seconds_per_update": audio / SAMPLE_RATE,
                "audio_seconds_per_second": audio / SAMPLE_RATE / seconds, "skipped_updates": skipped,
                "bad_files": loader.bad_files, "tflops_per_second": flops / seconds / 1e12,
                **({} if mfu is None else {"mfu": mfu}),
            },
        )  # fmt: skip
        epoch_done = cfg.train.max_epochs is not None and loader.state_dict()["epoch"] >= cfg.train.max_epochs
        if stopping and result.interrupted is None:
            result.interrupted = stop_request.signal or "a stop signal on another process"
            telemetry.line(f"update {step}: {result.interrupted} received: checkpointing and stopping")
        done = step >= stop or epoch_done or result.interrupted is not None
        val_loss = None
        if valid_loader is not None and (step % cfg.train.valid_every == 0 or done):
            result.valid = validate(model, family, valid_loader, accelerator, cfg, step, targets=valid_targets)
            key, higher_better = family.best_metric(family_cfg)
            val_loss = -result.valid[key] if higher_better else result.valid[key]  # the best checkpoint: the lowest
            telemetry.validation(step, result.valid)
        if step % cfg.train.save_every == 0 or done:
            result.checkpoint = save(val_loss)
            last_saved = step
        if done:
            break
    if last_saved != step:
        result.checkpoint = save(None)
    result.step, result.epoch, result.skipped = step, loader.state_dict()["epoch"], skipped
    if run_seconds > 0:
        result.audio_seconds_per_second = run_audio / SAMPLE_RATE / run_seconds
        result.tflops_per_second = run_flops / run_seconds / 1e12
        result.mfu = utilisation(run_flops, run_seconds * world, peak)
    return result


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    family: Family,
    loader: ResumableLoader,
    accelerator: Accelerator,
    cfg: Config,
    step: int,
    *,
    targets: UtteranceTargets | None = None,
) -> dict[str, float]:
    """Loss per predicted frame and mean metrics over the valid manifest, in eval mode, with fixed masks."""
    model.eval()
    generator = torch.Generator(device=accelerator.device).manual_seed(cfg.seed + 7919)
    set_epoch(loader, 0)
    loss = frames = count = 0.0
    sums: dict[str, float] = {}
    for i, batch in enumerate(loader):
        if cfg.train.valid_max_batches is not None and i >= cfg.train.valid_max_batches:
            break
        if targets is not None:
            batch = targets.attach(batch)
        with accelerator.autocast():
            out = forward_batch(model, family, batch.to(accelerator.device), step=step, generator=generator)
        loss += float(out.loss)
        frames += float(out.sample_size)
        count += 1
        for key, value in out.metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    keys = sorted(sums)
    totals = accelerator.reduce(
        torch.tensor([loss, frames, count, *(sums[k] for k in keys)], device=accelerator.device), reduction="sum"
    ).tolist()
    model.train()
    result = {"loss": totals[0] / max(totals[1], 1.0)}
    result.update({k: v / max(totals[2], 1.0) for k, v in zip(keys, totals[3:])})
    return family.summarise(family_config(cfg.model), result)

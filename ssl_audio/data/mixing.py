"""WavLM's denoising augmentation: mix a segment of another utterance, or of noise, into some rows of a batch.

Shapes: B batch, S samples (16 kHz), M mixed rows, W widest segment (samples), N noise segments.

Per row, with probability `prob` (WavLM paper, utterance mixing):
- the secondary is noise with probability `noise_prob`, else a partner utterance of the same batch;
- a segment of L ~ U{1 .. floor(max_overlap * T)} samples (T: the primary's valid length) is cut at a uniform
  position of the secondary (a partner shorter than L gives all of itself, L = its length; noise clips loop)
  and added at a uniform position inside the primary's valid region;
- the segment is scaled so that energy(primary) / energy(segment) is r dB, r ~ U(speech_ratio_db) for
  speech and U(noise_snr_db) for noise.

Choices the paper leaves open, fixed here:
- energy is mean power (mean square per sample): of the whole primary's valid samples, and of the secondary
  segment, the two energies the paper compares. Mean, not sum of squares: a sum would make the ratio
  depend on the overlap length (a short segment would be scaled up to carry the whole utterance's energy).
  This is the usual SNR definition.
- partner rule: a partner is drawn uniformly from the rows that drew no mixing, so a row is never its own
  partner and never a primary's partner while being mixed itself (no chained mixtures, and the secondary
  is always clean speech). Several primaries may share a partner. If every row drew mixing there is no
  partner: such speech rows fall back to noise when a NoiseBank is given, else stay clean.
- L >= 1: an empty overlap would be a mixed row with nothing mixed in.
- silence: the segment's power is floored at SILENT_POWER, so an all-zero segment adds nothing and a
  near-silent one is not amplified without bound; a primary below SILENT_POWER gets nothing added. Such
  rows report an achieved ratio that misses the target (inf or nan when nothing was added).
- no noise: `noise_prob > 0` without a NoiseBank is an error (not a silent switch to speech-only mixing):
  set `noise_prob: 0.0` for speech-only mixing, or give `noise_manifest`.

Targets are untouched (this module never sees labels); lengths and padding (zeros) are unchanged. All
random numbers come from the caller's generator: a seeded host generator gives the same mixture whatever the
waves' device (a CUDA generator is used as well, with its own stream).
The plan (who mixes with what, where) is made on the host from B-sized draws; the audio is gathered and
added on the waves' device without python loops over rows or samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from ssl_audio.audio import SAMPLE_RATE, load_audio
from ssl_audio.checks import fail, require_finite, require_positive, require_probability, require_range
from ssl_audio.data.collate import Batch
from ssl_audio.data.manifest import load_manifest
from ssl_audio.nn.conv_extractor import padding_mask

KIND_NONE, KIND_SPEECH, KIND_NOISE = 0, 1, 2  # MixInfo.kind values
SILENT_POWER = 1e-10  # mean square (-100 dBFS): energies are floored here, so silence never divides by zero
NOISE_MANIFEST_NAME = "train.tsv"  # the manifest read when `noise_manifest` is a folder
_NEEDS_NOISE = "mixing noise_prob {noise_prob} needs noise clips: set noise_manifest, or noise_prob 0.0 for speech only"
# Independent uniform draws per row, one stream each, always all drawn: the stream a seed gives does not
# depend on what earlier rows decided.
_MIX, _NOISE, _PARTNER, _LENGTH, _SOURCE_START, _START, _RATIO, _NUM_DRAWS = range(8)


@dataclass(frozen=True, kw_only=True)
class MixingConfig:
    """Utterance and noise mixing of the input waves (WavLM's denoising masked speech modelling)."""

    prob: float = 0.0  # per-utterance mixing probability; 0 disables. WavLM paper: 0.2 (Base), up to 0.5
    noise_prob: float = 0.5  # given mixing, noise instead of a second utterance; WavLM paper: 0.5
    speech_ratio_db: tuple[float, float] = (-5.0, 5.0)  # primary/secondary speech energy ratio, uniform; WavLM
    noise_snr_db: tuple[float, float] = (-5.0, 20.0)  # primary/noise energy ratio, uniform; WavLM paper
    max_overlap: float = 0.5  # overlap ~ U(0, max_overlap * T) of the primary's T samples; WavLM: T / 2
    noise_manifest: str | None = None  # folder holding train.tsv, or a manifest tsv of noise clips; None: no noise
    noise_max_seconds: float = 600.0  # s: noise audio kept in memory (manifest order); ours, 38 MB in float32

    def __post_init__(self) -> None:
        require_probability(self, "prob", "noise_prob")
        require_finite(self, "speech_ratio_db", "noise_snr_db")
        for name in ("speech_ratio_db", "noise_snr_db"):
            low, high = getattr(self, name)
            if low > high:
                fail(self, name, f"must be (low, high) with low <= high, got {(low, high)}")
        require_range(self, "max_overlap", low=0, high=1, low_open=True)
        require_positive(self, "noise_max_seconds")


@dataclass(kw_only=True)
class MixInfo:
    """What `mix_batch` did to each row (host tensors, for tests and logging)."""

    mixed: Tensor  # (B,) bool
    kind: Tensor  # (B,) long: KIND_NONE, KIND_SPEECH or KIND_NOISE
    partner: Tensor  # (B,) long: the secondary utterance's row; -1 for noise and unmixed rows
    source_start: Tensor  # (B,) long: first sample of the segment in the partner; -1 for noise and unmixed rows
    start: Tensor  # (B,) long: first sample of the segment in the primary; 0 when unmixed
    length: Tensor  # (B,) long: samples mixed in; 0 when unmixed
    target_db: Tensor  # (B,) float64: drawn energy ratio primary / segment, dB; nan when unmixed
    achieved_db: Tensor  # (B,) float64: the same ratio measured on the output (mixed - original); nan when unmixed

    def metrics(self, lengths: Tensor) -> dict[str, float]:
        """Fractions of rows mixed with speech and with noise, and the mean overlap as a fraction of T."""
        rows = max(len(self.kind), 1)
        overlap = self.length[self.mixed].double() / lengths.cpu()[self.mixed].double()
        return {
            "mix_speech_fraction": float((self.kind == KIND_SPEECH).sum()) / rows,
            "mix_noise_fraction": float((self.kind == KIND_NOISE).sum()) / rows,
            "mix_overlap_fraction": float(overlap.mean()) if len(overlap) else 0.0,
        }


class NoiseBank:
    """Noise clips held in one flat tensor, cut into random segments of requested lengths (looped when short)."""

    def __init__(self, clips: list[Tensor], *, device: torch.device | str = "cpu", name: str = "noise bank") -> None:
        if not clips:
            raise ValueError(f"{name}: no noise clips")
        for i, clip in enumerate(clips):
            if clip.dim() != 1 or clip.numel() == 0:
                raise ValueError(f"{name}: clip {i} must be a non-empty 1-D wave, got shape {tuple(clip.shape)}")
        self.name = name
        self.samples = torch.cat([c.float() for c in clips]).to(device)  # (sum of clip lengths,)
        self.clip_lengths = torch.tensor([c.numel() for c in clips], dtype=torch.long)  # host
        self.clip_starts = torch.cumsum(self.clip_lengths, 0) - self.clip_lengths  # host: offset of each clip

    @classmethod
    def from_manifest(
        cls, path: str | Path, *, max_seconds: float = 600.0, device: torch.device | str = "cpu"
    ) -> NoiseBank:
        """Load clips of a manifest (a folder holding train.tsv, or the tsv) in order, up to `max_seconds`.

        The clip that crosses the cap is cut there. Files are loaded and checked like training audio.
        """
        path = Path(path)
        if path.is_dir():
            path = path / NOISE_MANIFEST_NAME
        if not path.is_file():
            raise ValueError(f"noise manifest {path} does not exist")
        manifest = load_manifest(path)  # errors name the manifest and line (empty, no rows, missing file)
        budget = round(max_seconds * SAMPLE_RATE)
        clips = []
        for i in range(len(manifest)):
            if budget <= 0:
                break
            clip = load_audio(manifest.audio_path(i))[:budget]  # (S,)
            clips.append(clip)
            budget -= clip.numel()
        return cls(clips, device=device, name=f"noise manifest {path}")

    def __len__(self) -> int:
        return len(self.clip_lengths)

    @property
    def seconds(self) -> float:
        return self.samples.numel() / SAMPLE_RATE

    @property
    def device(self) -> torch.device:
        return self.samples.device

    def segments(self, lengths: Tensor, *, generator: torch.Generator) -> Tensor:
        """(N,) lengths -> (N, W) segments, W = max length, zero past each length, on the bank's device.

        Each segment comes from a uniformly chosen clip at a uniform start; a clip at least as long as the
        segment is not wrapped, a shorter one is looped (clip, clip, clip, ... from the start offset).
        """
        lengths = lengths.cpu().long()
        if lengths.dim() != 1 or (lengths < 0).any():
            raise ValueError(f"{self.name}: segment lengths must be (N,) and >= 0, got {lengths.tolist()}")
        draws = torch.rand((2, len(lengths)), generator=generator, device=generator.device, dtype=torch.float64)
        draws = draws.cpu()
        clip = (draws[0] * len(self)).long().clamp(max=len(self) - 1)  # (N,)
        clip_len = self.clip_lengths[clip]  # (N,)
        span = torch.where(clip_len >= lengths, clip_len - lengths + 1, clip_len)  # possible start offsets
        offset = (draws[1] * span).long().clamp(max=span - 1)  # (N,)
        width = int(lengths.max()) if len(lengths) else 0
        k = torch.arange(width)  # (W,)
        index = self.clip_starts[clip, None] + (offset[:, None] + k) % clip_len[:, None]  # (N, W)
        keep = k[None, :] < lengths[:, None]  # (N, W)
        return self.samples[index.to(self.device)] * keep.to(self.device)


def _uniform_int(u: Tensor, count: Tensor) -> Tensor:
    """floor(u * count) for u in [0, 1): a uniform integer in [0, count); 0 where count <= 0."""
    return (u * count.clamp(min=1)).long().clamp(max=(count - 1).clamp(min=0))


@torch.no_grad()
def mix_batch(
    waves: Tensor, lengths: Tensor, cfg: MixingConfig, *, generator: torch.Generator, noise: NoiseBank | None
) -> tuple[Tensor, MixInfo]:
    """(B, S) waves, (B,) lengths -> (B, S) mixed waves and what was done (see the module docstring).

    Rows left unmixed are bit-identical; when no row is mixed the input tensor itself is returned.
    """
    if waves.dim() != 2 or lengths.shape != (waves.shape[0],):
        raise ValueError(
            f"mixing needs waves (B, S) and lengths (B,), got {tuple(waves.shape)}, {tuple(lengths.shape)}"
        )
    if noise is None and cfg.prob > 0 and cfg.noise_prob > 0:
        raise ValueError(_NEEDS_NOISE.format(noise_prob=cfg.noise_prob))
    batch, num_samples = waves.shape
    host_lengths = lengths.cpu().long()  # (B,)
    if (host_lengths < 1).any() or (host_lengths > num_samples).any():
        raise ValueError(f"mixing: lengths must be in [1, {num_samples}], got {host_lengths.tolist()}")

    # The plan, on the host: B-sized decisions from one (draws, B) block of uniforms.
    u = torch.rand((_NUM_DRAWS, batch), generator=generator, device=generator.device, dtype=torch.float64).cpu()
    mixed = u[_MIX] < cfg.prob  # (B,)
    wants_noise = mixed & (u[_NOISE] < cfg.noise_prob)
    eligible = torch.nonzero(~mixed).squeeze(1)  # rows that may be partners: not mixed themselves
    speech = mixed & ~wants_noise
    if len(eligible) == 0 and speech.any():  # nobody left to mix with: noise if we have it, else stay clean
        if noise is not None:
            wants_noise = mixed.clone()
        else:
            mixed = mixed & ~speech
        speech = torch.zeros_like(mixed)
    kind = torch.where(speech, KIND_SPEECH, torch.where(wants_noise & mixed, KIND_NOISE, KIND_NONE))  # (B,)
    partner = torch.full((batch,), -1)  # (B,)
    if len(eligible):
        pick = eligible[_uniform_int(u[_PARTNER], torch.full((batch,), len(eligible)))]  # (B,)
        partner = torch.where(speech, pick, -1)
    max_length = (cfg.max_overlap * host_lengths.double()).floor().long().clamp(min=1)  # (B,)
    length = 1 + _uniform_int(u[_LENGTH], max_length)  # (B,) in [1, max_length]
    partner_length = host_lengths[partner.clamp(min=0)]  # (B,)
    length = torch.where(speech, torch.minimum(length, partner_length), length)
    length = torch.where(mixed, length, 0)
    source_start = torch.where(speech, _uniform_int(u[_SOURCE_START], partner_length - length + 1), -1)
    start = torch.where(mixed, _uniform_int(u[_START], host_lengths - length + 1), 0)
    ranges = torch.tensor([cfg.noise_snr_db, cfg.speech_ratio_db], dtype=torch.float64)  # (2, 2): noise, speech
    low, high = ranges[speech.long()].unbind(1)  # (B,) each
    target_db = torch.where(mixed, low + u[_RATIO] * (high - low), math.nan)  # (B,) float64
    info = MixInfo(
        mixed=mixed, kind=kind, partner=partner, source_start=source_start, start=start, length=length,
        target_db=target_db, achieved_db=torch.full((batch,), math.nan, dtype=torch.float64),
    )  # fmt: skip
    if not mixed.any():
        return waves, info

    # The audio, on the waves' device: M mixed rows, segments up to W samples.
    device = waves.device
    rows = torch.nonzero(mixed).squeeze(1)  # (M,) host
    row_length = length[rows]  # (M,)
    width = int(row_length.max())
    k = torch.arange(width)  # (W,)
    inside = (k[None, :] < row_length[:, None]).to(device)  # (M, W)
    secondary = torch.zeros((len(rows), width), dtype=waves.dtype, device=device)  # (M, W)
    is_speech = speech[rows]  # (M,) host
    if is_speech.any():
        source = (source_start[rows][is_speech, None] + k).clamp(max=num_samples - 1)  # (Ms, W)
        taken = waves[partner[rows][is_speech, None].to(device), source.to(device)]  # (Ms, W)
        secondary[is_speech.to(device)] = taken * inside[is_speech.to(device)]
    if not is_speech.all():
        assert noise is not None  # noise rows exist only with a bank
        cut = noise.segments(row_length[~is_speech], generator=generator)  # (Mn, Wn), zero past each length
        secondary[(~is_speech).to(device), : cut.shape[1]] = cut.to(device=device, dtype=waves.dtype)

    rows_d = rows.to(device)
    primary = waves[rows_d]  # (M, S)
    valid = ~padding_mask(host_lengths[rows].to(device), num_samples)  # (M, S)
    primary_power = (primary.double() * valid).pow(2).sum(1) / host_lengths[rows].to(device)  # (M,)
    segment_power = secondary.double().pow(2).sum(1) / row_length.to(device)  # (M,)
    ratio = 10.0 ** (target_db[rows].to(device) / 10.0)  # (M,) power ratio
    # A silent segment is not blown up to the primary's level (floor); a silent primary gets nothing added.
    scale = torch.sqrt(primary_power / (ratio * segment_power.clamp(min=SILENT_POWER)))  # (M,)
    scale = torch.where(primary_power < SILENT_POWER, 0.0, scale)
    added = secondary * scale[:, None].to(waves.dtype)  # (M, W), zero past each length
    position = (start[rows, None] + k).clamp(max=num_samples - 1).to(device)  # (M, W): inside [0, T) where added
    out_rows = primary.scatter_add(1, position, added)  # (M, S)
    out = waves.clone()
    out[rows_d] = out_rows

    achieved_power = (out_rows.double() - primary.double()).pow(2).sum(1) / row_length.to(device)  # (M,)
    info.achieved_db[rows] = (10.0 * torch.log10(primary_power / achieved_power)).cpu()
    return out, info


class Mixer:
    """Batch -> Batch with mixed waves (labels, lengths, indices, offsets kept), for the WavLM family.

    Holds the config and the noise clips (loaded once, on `device`); the caller passes a generator per step,
    e.g. seeded from (seed, step), so a resumed run mixes alike. `last_info` keeps the latest MixInfo.
    """

    def __init__(self, cfg: MixingConfig, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.noise: NoiseBank | None = None
        if cfg.prob > 0 and cfg.noise_manifest is not None:  # also with noise_prob 0: the no-partner fallback
            self.noise = NoiseBank.from_manifest(cfg.noise_manifest, max_seconds=cfg.noise_max_seconds, device=device)
        elif cfg.prob > 0 and cfg.noise_prob > 0:
            raise ValueError(_NEEDS_NOISE.format(noise_prob=cfg.noise_prob))
        self.last_info: MixInfo | None = None

    @property
    def enabled(self) -> bool:
        return self.cfg.prob > 0

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        waves, self.last_info = mix_batch(batch.waves, batch.lengths, self.cfg, generator=generator, noise=self.noise)
        return replace(batch, waves=waves)

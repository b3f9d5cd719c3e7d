"""An imported (micro) Whisper encoder in the workflows: probed through the CLI, and pretrained further with
HuBERT's objective on labels from its own layer (hubert-iterate), starting from the imported weights.

Micro: Whisper tiny's architecture shrunk (32 wide, 2 layers, 2 heads, 16 mel bins, 2 s windows = 100
positions) so that both run on 2 CPU cores in seconds. Oracle for the features: transformers' WhisperEncoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import transformers
from safetensors.torch import load_file

from ssl_audio.cli import main
from ssl_audio.cluster.iterate import IterateConfig, IterationConfig, run_iterations
from ssl_audio.data.labels import read_header
from ssl_audio.data.manifest import build_manifests
from ssl_audio.features import chunked_frames
from ssl_audio.interop.convert import convert
from ssl_audio.models.loading import load_model
from ssl_audio.models.registry import FAMILIES, ModelConfig, family_config
from ssl_audio.probe.featurizer import checkpoint_featurizer

SR = 16_000
MICRO = family_config(ModelConfig(family="whisper", preset="micro")).encoder
ATOL = 1e-5  # O(1) values through 2 fp32 layers of <= 128-term sums


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, transformers.WhisperModel]:
    """(step folder of the imported micro Whisper, audio folder of 8 tone clips, the transformers model)."""
    root = tmp_path_factory.mktemp("whisper_micro")
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        d_model=MICRO.dim, encoder_layers=MICRO.num_layers, encoder_attention_heads=MICRO.num_heads,
        encoder_ffn_dim=MICRO.ffn_dim, num_mel_bins=MICRO.frontend.num_mels, max_source_positions=MICRO.max_positions,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=16, vocab_size=16, max_target_positions=8,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )  # fmt: skip
    hf = transformers.WhisperModel(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "embed_positions" not in name:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(root / "hf")
    convert(root / "hf", root / "run")
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    rows = ["path\tpitch"]
    for i in range(8):
        n = int(rng.uniform(1.0, 1.6) * SR)
        pitch = ("low", "high")[i % 2]
        t = np.arange(n) / SR
        wave = 0.4 * np.sin(2 * np.pi * (300 if pitch == "low" else 2500) * t) + 0.05 * rng.standard_normal(n)
        sf.write(audio / f"c{i}.wav", wave.astype(np.float32), SR, subtype="PCM_16")
        rows.append(f"c{i}.wav\t{pitch}")
    (audio / "tones.tsv").write_text("\n".join(rows) + "\n")
    return root / "run" / "step_00000000", audio, hf


def test_probe_features_are_transformers_layers_and_the_cli_probes(imported, tmp_path: Path) -> None:  # noqa: ANN001
    step, audio, hf = imported
    wave, _ = sf.read(audio / "c0.wav", dtype="float32")
    ours = checkpoint_featurizer(step)(torch.from_numpy(wave), [1])[0]  # (T, D): the clip's own frames
    micro = FAMILIES["whisper"].model_class(family_config(ModelConfig(family="whisper", preset="micro")))
    mel, _ = micro.encoder.extractor.features(torch.from_numpy(wave)[None])  # the mel has no weights
    with torch.no_grad():
        theirs = hf.encoder(mel, output_hidden_states=True).hidden_states[1][0]  # (100, D): the 2 s window
    frames = (len(wave) // 160 + 1) // 2
    assert ours.shape == (frames, MICRO.dim)
    assert (ours - theirs[:frames]).abs().max() < ATOL

    tsv, out = str(audio / "tones.tsv"), tmp_path / "probe"
    assert main(["probe", "classify", "--checkpoint", str(step), "--train", tsv, "--test", tsv, "--layer", "2",
                 "--epochs", "3", "--out", str(out)]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["num_test"] == 8 and results["probe"] == "layer 2" and str(step) in results["featurizer"]
    assert 0.0 <= results["metrics"]["accuracy"] <= 1.0


def test_hubert_objective_continues_from_the_imported_encoder(imported, tmp_path: Path) -> None:  # noqa: ANN001
    step, audio, _ = imported
    build_manifests([audio], tmp_path / "manifest", valid_fraction=0.25)
    pretrain = {
        "seed": 0,
        "data": {"manifest_dir": str(tmp_path / "manifest"), "max_samples": 32_000, "max_batch_seconds": 3.0,
                 "num_workers": 0},
        "model": {"family": "whisper", "preset": "micro"},
        "init": {"reset_heads": True},
        "optim": {"lr": 1e-4},
        "schedule": {"warmup_updates": 1},
        "train": {"cpu": True, "max_updates": 2, "valid_every": 1000, "valid_max_batches": 1, "save_every": 1000,
                  "log_every": 1},
    }  # fmt: skip
    cfg = IterateConfig(
        run_dir=str(tmp_path / "run"),
        pretrain=pretrain,
        iterations=(
            IterationConfig(
                source=str(step),
                layer=1,
                k=4,
                max_points=2_000,
                kmeans_iterations=5,
                overrides=(f"init.checkpoint={step}",),
            ),
        ),  # fmt: skip
    )
    summary = run_iterations(cfg, progress=False)[0]
    header = read_header(tmp_path / "run" / "iter1" / "labels" / "train.labels")
    assert (header["rate"], header["window"], header["offset"]) == (50.0, 1040, -520)  # its own (centred) frames
    trained, _ = load_model(summary["checkpoint"])  # the recipe set no label_window: the header's, so t -> label t
    assert (trained.cfg.label_window, trained.cfg.label_offset) == (1040, -520)
    assert np.isfinite(summary["valid"]["loss"])
    start, end = load_file(step / "model.safetensors"), load_file(Path(summary["checkpoint"]) / "model.safetensors")
    # two updates at lr 1e-4 move the imported encoder a little; a fresh encoder would be ~1 away
    encoder_keys = [k for k in start if k.startswith("encoder.")]
    moved = max((end[k] - start[k]).abs().max().item() for k in encoder_keys)
    assert 0 < moved < 1e-2


def test_long_audio_is_chunked_to_fit_the_window() -> None:
    """Whisper takes at most 30 s: chunks with their context are cut to fit, and still stitch every frame once.
    Hand case: frame t of a segment reports the sample it starts on, so the stitched frames must be 0, 320, ..."""
    window, hop, longest = 1040, 320, 480_000
    seen = []

    def starts(segment: torch.Tensor) -> torch.Tensor:
        seen.append(segment.shape[0])
        count = (segment.shape[0] - window) // hop + 1
        return segment[torch.arange(count) * hop][:, None]

    wave = torch.arange(75 * SR, dtype=torch.float64)  # 75 s: three chunks or more
    frames = chunked_frames(starts, wave, window=window, hop=hop, max_samples=longest)[:, 0]
    assert max(seen) <= longest and len(seen) >= 3
    assert torch.equal(frames, torch.arange(frames.shape[0], dtype=torch.float64) * hop)
    assert frames.shape[0] == (75 * SR - window) // hop + 1
    with pytest.raises(ValueError, match="no room for 32000 of context"):
        chunked_frames(starts, wave, window=window, hop=hop, max_samples=2 * SR)

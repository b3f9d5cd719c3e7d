"""ssl_audio.features: encoder layers as frames, the default chunking, and the layer it sits on.

Oracles: the encoder's own hidden states from a full run; the chunk geometry worked out by hand from 30 s
chunks with 2 s of context at 16 kHz; a per-frame function computed on the whole wave; the import
statements of the source files.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import Tensor

import ssl_audio
from ssl_audio.features import chunked_frames, encoder_layer_frames
from ssl_audio.models.encoder import Encoder
from ssl_audio.models.wav2vec2 import tiny_encoder

NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, projection_dropout=0.0, activation_dropout=0.0)
PACKAGE = Path(ssl_audio.__file__).resolve().parent


def test_encoder_layer_frames_are_the_hidden_states_side_by_side_in_the_order_asked() -> None:
    torch.manual_seed(0)
    encoder = Encoder(tiny_encoder(**NO_DROPOUT)).eval()  # post-LN, 4 layers of width 96; weights need grad
    calls = [0] * len(encoder.transformer.layers)
    for k, layer in enumerate(encoder.transformer.layers):
        layer.register_forward_hook(lambda *_, k=k: calls.__setitem__(k, calls[k] + 1))
    wave = 0.1 * torch.randn(8000, generator=torch.Generator().manual_seed(1))

    frames = encoder_layer_frames(encoder, wave, (3, 1), torch.device("cpu"))

    assert calls == [1, 1, 1, 0]  # hidden state 3 is the output of layer index 2: the last layer never ran
    with torch.no_grad():
        full = encoder(wave[None]).hidden_states  # all 4 layers
    # the same operations on the same shapes (post-LN: stopping early changes no earlier state): exact
    assert torch.equal(frames, torch.cat([full[3][0], full[1][0]], dim=1))
    assert frames.shape == ((8000 - 400) // 320 + 1, 2 * 96)
    assert frames.dtype == torch.float32 and frames.device.type == "cpu" and not frames.requires_grad


def _recording_window_means(window: int, hop: int, segments: list[int]):  # noqa: ANN202
    """A per-frame function (mean of each window) that records the length of every segment it is given."""

    def fn(segment: Tensor) -> Tensor:
        segments.append(segment.shape[-1])
        return segment.unfold(0, window, hop).mean(-1, keepdim=True)  # (T', 1)

    return fn


def test_chunked_frames_defaults_to_30_s_chunks_with_2_s_of_context() -> None:
    window, hop, num_samples = 400, 160, 70 * 16000
    wave = torch.randn(num_samples, generator=torch.Generator().manual_seed(2))
    segments: list[int] = []
    frames = chunked_frames(_recording_window_means(window, hop, segments), wave, window=window, hop=hop)
    # 6998 frames; chunks of 30 s = 3000 frames from frames 0, 3000, 6000, each fed 2 s = 200 frames of context:
    # samples [0, (2999 + 200) * 160 + 400), [2800 * 160, (5999 + 200) * 160 + 400), [5800 * 160, end of wave)
    assert segments == [3199 * 160 + 400, (6199 - 2800) * 160 + 400, num_samples - 5800 * 160]
    whole = wave.unfold(0, window, hop).mean(-1, keepdim=True)
    assert frames.shape == whole.shape == ((num_samples - window) // hop + 1, 1)
    assert torch.equal(frames, whole)  # each frame is the mean of the same 400 samples, however chunked


def test_chunked_frames_follows_the_chunk_and_context_it_is_given() -> None:
    window, hop = 400, 160
    wave = torch.randn(3 * 16000, generator=torch.Generator().manual_seed(3))
    segments: list[int] = []
    fn = _recording_window_means(window, hop, segments)
    frames = chunked_frames(fn, wave, window=window, hop=hop, chunk_seconds=1.0, context_seconds=0.25)
    # 298 frames, 100 per 1 s chunk, 25 frames of context: samples [0, 124 * 160 + 400), [75 * 160, 224 * 160
    # + 400), [175 * 160, end of wave)
    assert segments == [124 * 160 + 400, (224 - 75) * 160 + 400, 3 * 16000 - 175 * 160]
    assert torch.equal(frames, wave.unfold(0, window, hop).mean(-1, keepdim=True))


def _packages_imported(path: Path) -> set[str]:
    """The ssl_audio packages (or root modules) `path` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
        found.update(name.split(".")[1] for name in names if name.startswith("ssl_audio."))
    return found


def test_features_imports_only_what_sits_below_cluster_and_probe() -> None:
    assert _packages_imported(PACKAGE / "features.py") <= {"audio", "nn", "models", "data"}


@pytest.mark.parametrize("package", ["cluster", "probe", "demo"])
def test_cluster_probe_and_demo_import_none_of_each_other(package: str) -> None:
    """They share features.py and data/ (alignments, probe tables) instead: no package cycle between them."""
    others = {"cluster", "probe", "demo"} - {package}
    bad = {
        f"{path.relative_to(PACKAGE)} -> {other}"
        for path in (PACKAGE / package).rglob("*.py")
        for other in _packages_imported(path) & others
    }
    assert not bad

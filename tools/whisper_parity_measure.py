"""How far our Whisper encoder is from transformers' (random weights, tiny width, 2 layers, a 7 s clip), and what
padding to 30 s costs: the figures in notes/whisper15.md. Uses the parity tests' set-up.

    python tools/whisper_parity_measure.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "interop"))
from test_hf_whisper import CLIP, LAYERS, our_model, wave, whisper_folder  # noqa: E402

REPEATS = 3


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        whisper_folder(folder)
        hf = transformers.WhisperModel.from_pretrained(folder).encoder.eval()
        ours = our_model(folder, "pad").encoder
        mel, _ = ours.extractor.features(wave())
        extractor = transformers.WhisperFeatureExtractor(feature_size=mel.shape[1])
        theirs_mel = extractor(wave()[0].numpy(), sampling_rate=16_000, return_tensors="np").input_features
        print(f"log-mel, max |ours - WhisperFeatureExtractor|: {np.abs(mel.numpy() - theirs_mel).max():.2e}")
        with torch.no_grad():
            expected = hf(mel, output_hidden_states=True).hidden_states
            front = ours.extract(wave(), torch.tensor([CLIP]))
            got = ours.transformer(front.projected, front.padding_mask)
            gaps = [(a - b).abs().max().item() for a, b in zip([*got.hidden_states[:LAYERS], got.last], expected)]
            print("pad, max |ours - transformers| per hidden state:", [f"{g:.2e}" for g in gaps])
            print("max |hidden state|:", [f"{h.abs().max().item():.2f}" for h in expected])
            whole = ours(wave(), torch.tensor([CLIP])).last - hf(torch.from_numpy(theirs_mel)).last_hidden_state
            print(f"waveform to output, ours vs extractor + transformers: {whole.abs().max().item():.2e}")
            for clip in ("pad", "trim"):
                encoder = our_model(folder, clip).encoder
                start = time.perf_counter()
                for _ in range(REPEATS):
                    encoder(wave(), torch.tensor([CLIP]))
                print(f"{clip}: forward of a 7 s clip: {(time.perf_counter() - start) / REPEATS * 1000:.0f} ms")


if __name__ == "__main__":
    main()

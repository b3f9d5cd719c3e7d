"""How far our Whisper encoder is from transformers' (random weights, tiny width, 2 layers, a 7 s clip), and what
padding to 30 s costs: the figures in notes/whisper15.md. Uses the parity tests' set-up.
    python tools/whisper_parity_measure.py
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "interop"))
from test_hf_whisper import whisper_folder, our_model, wave, CLIP, LAYERS
with tempfile.TemporaryDirectory() as d:
    d = Path(d); whisper_folder(d)
    hf = transformers.WhisperModel.from_pretrained(d).encoder.eval()
    ours = our_model(d, "pad").encoder
    mel, _ = ours.extractor.features(wave())
    ext = transformers.WhisperFeatureExtractor(feature_size=80)(wave()[0].numpy(), sampling_rate=16000, return_tensors="np").input_features
    print("log-mel max |ours - WhisperFeatureExtractor|:", float(np.abs(mel.numpy() - ext).max()))
    with torch.no_grad():
        exp = hf(mel, output_hidden_states=True).hidden_states
        front = ours.extract(wave(), torch.tensor([CLIP])); got = ours.transformer(front.projected, front.padding_mask)
        errs = [float((a-b).abs().max()) for a, b in zip(got.hidden_states[:LAYERS] + [got.last], exp)]
        print("pad: max |ours - transformers| per hidden state:", ["%.2e" % e for e in errs])
        print("scale: max |hidden|", ["%.2f" % float(e.abs().max()) for e in exp])
        full = ours(wave(), torch.tensor([CLIP])).last
        print("pad, from the waveform (our log-mel) vs transformers from WhisperFeatureExtractor: %.2e" % float((full - hf(torch.from_numpy(ext)).last_hidden_state).abs().max()))
        for clip in ("pad", "trim"):
            enc = our_model(d, clip).encoder
            t = time.perf_counter()
            for _ in range(3): enc(wave(), torch.tensor([CLIP]))
            print(f"{clip}: forward of a 7 s clip, 2-layer tiny-width encoder: {(time.perf_counter()-t)/3*1000:.0f} ms")

"""Load an exported transformers folder the way s3prl's and ESPnet's Hugging Face upstreams load it, and compare
what they get with ssl_audio's own forward of the step folder it was exported from.

    ssl-audio convert checkpoints/run/step_00400000 exported/ --to hf
    python tools/check_hf_upstream.py checkpoints/run/step_00400000 exported/

s3prl (upstream `hf_wav2vec2_custom` / `hf_hubert_custom`, `ckpt` = the folder): Wav2Vec2FeatureExtractor and
Wav2Vec2Model / HubertModel from_pretrained; a padded batch with return_attention_mask=True; every hidden state.
ESPnet (frontend `huggingface`, HuggingFaceFrontend, `model` = the folder): AutoModel and AutoFeatureExtractor
from_pretrained; the processor's padding (an attention mask only where the preprocessor asks for one: layer-norm
extractors); last_hidden_state. Group-norm models get no mask there, so padding changes the shorter rows (as for
facebook/wav2vec2-base): this check feeds ESPnet's way one utterance at a time.
Neither package is imported: the loading calls are re-enacted with transformers alone. Prints the largest
difference per way and exits 1 when one exceeds --atol.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import transformers

from ssl_audio.models.loading import load_encoder

S3PRL_CLASS = {"wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel", "wavlm": "WavLMModel"}  # s3prl: no hf_wavlm
SAMPLE_RATE = 16_000


def waves(seconds: list[float], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * SAMPLE_RATE))).astype(np.float32) for s in seconds]


@torch.no_grad()
def ours(step: Path, batch: list[np.ndarray]) -> list[list[torch.Tensor]]:
    """Per utterance, every hidden state of ours on its valid frames, then the output (after the final LayerNorm
    of pre-LN models), computed as one padded batch."""
    encoder = load_encoder(step)
    lengths = torch.tensor([len(w) for w in batch])
    x = torch.zeros(len(batch), int(lengths.max()))
    for row, wave in enumerate(batch):
        x[row, : len(wave)] = torch.from_numpy(wave)
    out = encoder(x, lengths)
    frames = out.lengths.tolist() if out.lengths is not None else [out.hidden_states[0].shape[1]] * len(batch)
    return [[h[row, :n] for h in [*out.hidden_states, out.last]] for row, n in enumerate(frames)]


@torch.no_grad()
def s3prl_way(folder: Path, batch: list[np.ndarray]) -> list[torch.Tensor]:
    model_type = transformers.AutoConfig.from_pretrained(folder).model_type
    extracter = transformers.Wav2Vec2FeatureExtractor.from_pretrained(folder)
    model = getattr(transformers, S3PRL_CLASS[model_type]).from_pretrained(folder).eval()
    inputs = extracter(batch, return_tensors="pt", padding=True, return_attention_mask=True, sampling_rate=SAMPLE_RATE)
    return list(model(**inputs, output_hidden_states=True).hidden_states)


@torch.no_grad()
def espnet_way(folder: Path, wave: np.ndarray) -> torch.Tensor:
    encoder = transformers.AutoModel.from_pretrained(folder).eval()
    processor = transformers.AutoFeatureExtractor.from_pretrained(folder)
    if processor.sampling_rate != SAMPLE_RATE:
        raise ValueError(f"{folder}: preprocessor sampling_rate {processor.sampling_rate}, not {SAMPLE_RATE}")
    encoded = processor([wave], return_tensors="pt", sampling_rate=processor.sampling_rate, padding=True)
    return encoder(**encoded).last_hidden_state[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", type=Path, help="the ssl_audio step folder that was exported")
    parser.add_argument("hf", type=Path, help="the transformers folder `ssl-audio convert ... --to hf` wrote")
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 0.7, 0.45], help="test utterances")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--atol", type=float, default=1e-4, help="fp32, 12-24 layers: ~1e-5 is typical")
    args = parser.parse_args(argv)
    batch = waves(args.seconds, args.seed)
    reference = ours(args.step, batch)
    s3prl = s3prl_way(args.hf, batch)
    if len(s3prl) != len(reference[0]) - 1:
        print(f"s3prl: {len(s3prl)} hidden states, ours {len(reference[0]) - 1}")
        return 1
    s3prl_diff = max(
        float((s3prl[layer][row, : len(mine)] - mine).abs().max())
        for row, states in enumerate(reference)
        for layer, mine in enumerate(states[:-1])
    )
    espnet_diff = 0.0
    for wave in batch:  # one utterance at a time on both sides: a group norm spans the padding of a batch
        mine = ours(args.step, [wave])[0][-1]
        espnet_diff = max(espnet_diff, float((espnet_way(args.hf, wave) - mine).abs().max()))
    print(f"s3prl hf upstream: {len(s3prl)} hidden states, max |difference| {s3prl_diff:.3g}")
    print(f"espnet huggingface frontend: last_hidden_state, max |difference| {espnet_diff:.3g}")
    return 0 if max(s3prl_diff, espnet_diff) <= args.atol else 1


if __name__ == "__main__":
    sys.exit(main())

"""bf16 inference (`--dtype bf16`): the same features as fp32 within what bf16's 8-bit mantissa allows.

Bound: bf16 keeps 8 significant bits, so rounding a matmul operand costs up to 2^-8 relative (unit roundoff
2^-9 for each of the two operands). The tiny trunk runs ~25 matmuls/convolutions in series (7 convolutions,
projection, positional convolution, 4 layers x 4), whose relative errors add at worst: 25 * 2^-8 ~= 0.1 of the
features' norm. LayerNorms and softmax stay fp32 under autocast and do not add to it.
"""

from __future__ import annotations

import pytest
import torch

from ssl_audio.cluster.features import FeatureSource
from ssl_audio.models.encoder import Encoder
from ssl_audio.models.wav2vec2 import tiny_encoder
from ssl_audio.probe.featurizer import encoder_featurizer, make_featurizer

SERIAL_MATMULS = 25
BF16_RELATIVE_BOUND = SERIAL_MATMULS * 2.0**-8


def test_bf16_features_match_fp32_within_the_mantissa_bound() -> None:
    torch.manual_seed(0)
    encoder = Encoder(tiny_encoder())
    wave = torch.randn(16_000) * 0.1
    fp32 = encoder_featurizer(encoder, name="tiny", ident="tiny")
    bf16 = encoder_featurizer(encoder, name="tiny", ident="tiny", dtype="bf16")
    a, b = fp32(wave), bf16(wave)
    assert b.dtype == torch.float32 and a.shape == b.shape == (5, 49, 96)
    assert bf16.cache_id != fp32.cache_id  # bf16 features never serve an fp32 run from the cache
    for k in range(a.shape[0]):  # every layer, norm-wise
        relative = float((a[k] - b[k]).norm() / a[k].norm())
        assert relative < BF16_RELATIVE_BOUND, (k, relative)
        assert relative > 0  # bf16 really ran: fp32 would give the same features to the bit


def test_bad_dtypes_are_refused() -> None:
    with pytest.raises(ValueError, match="dtype must be one of fp32, bf16"):
        encoder_featurizer(Encoder(tiny_encoder()), name="tiny", ident="tiny", dtype="fp16")
    with pytest.raises(ValueError, match="--baseline mfcc is computed in fp32"):
        make_featurizer(baseline="mfcc", dtype="bf16")
    with pytest.raises(ValueError, match="mfcc is computed in fp32"):
        FeatureSource(name="mfcc", dtype="bf16").load(torch.device("cpu"))

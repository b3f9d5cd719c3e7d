"""The front-end registry: a tagged config (`kind`) -> the module that implements it.

A new front-end is its module (a `Frontend` and its config dataclass with a `kind` literal) plus one entry here;
`FrontendConfig` is what `EncoderConfig.frontend` accepts, chosen in a recipe by `kind`.
"""

from __future__ import annotations

from collections.abc import Callable

from ssl_audio.nn.conv_extractor import ConvFeatureExtractor, ConvFrontendConfig
from ssl_audio.nn.frontend import Frontend
from ssl_audio.nn.logmel_frontend import LogMelFrontend, LogMelFrontendConfig
from ssl_audio.nn.patch_frontend import PatchFrontend, PatchFrontendConfig
from ssl_audio.nn.whisper_frontend import WhisperFrontend, WhisperFrontendConfig

# The first member is the default kind (a config section without `kind` is the waveform conv stack).
FrontendConfig = ConvFrontendConfig | LogMelFrontendConfig | PatchFrontendConfig | WhisperFrontendConfig

BUILDERS: dict[type, Callable[..., Frontend]] = {
    ConvFrontendConfig: ConvFeatureExtractor.from_config,
    LogMelFrontendConfig: LogMelFrontend,
    PatchFrontendConfig: PatchFrontend,
    WhisperFrontendConfig: WhisperFrontend,
}


def build_frontend(cfg: FrontendConfig) -> Frontend:
    builder = BUILDERS.get(type(cfg))
    if builder is None:
        raise ValueError(f"no front-end is registered for {type(cfg).__name__} (nn/frontends.py)")
    return builder(cfg)

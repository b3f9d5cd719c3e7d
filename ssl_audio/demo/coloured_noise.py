"""Synthetic white, pink and brown noise at 16 kHz, for demos and tests (real recordings train better).

A colour's power spectrum falls as 1/f^exponent: white 0, pink 1, brown 2. A clip is white Gaussian noise
shaped in the frequency domain (amplitude times f^(-exponent / 2), DC removed), then scaled to an RMS level.
Used by tools/make_noise_manifest.py (noise clips for WavLM's mixing) and ssl_audio.demo.noisy (noisy copies).
"""

from __future__ import annotations

import numpy as np

from ssl_audio.audio import SAMPLE_RATE

COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectral density ~ 1 / f^exponent
CLIP_RMS_DBFS = -25.0  # dBFS: default RMS; peaks of Gaussian noise stay ~14 dB above, far from clipping


def coloured_noise(
    num_samples: int, exponent: float, rng: np.random.Generator, *, rms_dbfs: float = CLIP_RMS_DBFS
) -> np.ndarray:
    """(S,) float32 noise whose power spectrum is proportional to 1 / f^exponent, RMS `rms_dbfs`, no DC."""
    white = rng.standard_normal(num_samples)
    spectrum = np.fft.rfft(white)  # (S // 2 + 1,)
    freqs = np.fft.rfftfreq(num_samples, d=1.0 / SAMPLE_RATE)  # Hz
    gain = np.zeros_like(freqs)
    gain[1:] = freqs[1:] ** (-exponent / 2)  # amplitude: half the power exponent; DC (f = 0) dropped
    shaped = np.fft.irfft(spectrum * gain, n=num_samples)
    rms = np.sqrt(np.mean(shaped**2))
    return (shaped * (10 ** (rms_dbfs / 20) / rms)).astype(np.float32)

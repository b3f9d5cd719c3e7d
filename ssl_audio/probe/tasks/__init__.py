"""The probing tasks on frozen features, one module each (registered in ssl_audio.probe.registry):

    classify  utterance labels: linear head on mean+std pooled frames (Adam, cross-entropy); accuracy, macro-F1
    verify    speakers, no training: mean-pooled embeddings centred by the training-set mean, cosine scores
              over trial pairs of the test set; EER, minDCF, Recall@K
    ctc       characters: linear CTC head over frames (blank 0), best-path decoding; CER, WER
    frames    frame labels from phone alignments: linear head per frame; frame accuracy, macro-F1

`labels` and `training` hold what they share. `ProbeConfig` and `run_probe` (ssl_audio.probe.driver) are
importable from here too.
"""

from __future__ import annotations

from ssl_audio.probe.config import ProbeConfig
from ssl_audio.probe.driver import run_probe

__all__ = ["ProbeConfig", "run_probe"]

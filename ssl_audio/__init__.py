"""ssl_audio: self-supervised audio pretraining (wav2vec 2.0, HuBERT, WavLM) on one shared trunk."""

import os

# OpenMP threads that spin while waiting turn a busy CPU (data workers, a second job) into a 4-10x slowdown of
# every op; sleeping instead costs little. Must be set before torch loads its OpenMP runtime; set the
# variable yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

"""ssl_audio: self-supervised audio pretraining (wav2vec 2.0, HuBERT, WavLM) on one shared trunk."""

__version__ = "0.1.0"

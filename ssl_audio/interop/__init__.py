"""Checkpoint conversion to and from torchaudio, fairseq and Hugging Face transformers."""

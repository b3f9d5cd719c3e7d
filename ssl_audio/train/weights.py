"""Parts a continued-pretraining run may start fresh instead of loading, by family option."""

from __future__ import annotations

QUANTIZER_PARTS = ("quantizer.", "project_targets.")  # wav2vec2's codebook and its projection
HEAD_PARTS = ("final_proj.", "label_embeddings")  # HuBERT / WavLM's label heads

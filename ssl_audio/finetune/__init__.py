"""Fine-tuning: vocabularies, heads, decoding, the fine-tuning loop."""

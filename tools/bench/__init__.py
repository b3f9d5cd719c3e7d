"""Builders behind tools/benchmark_step.py: one module per implementation it measures (ours, torchaudio's,
transformers'), each building the model, the loss of one training step and what is drawn outside the timer,
from one of ssl_audio's configs so that no model constant is restated here."""

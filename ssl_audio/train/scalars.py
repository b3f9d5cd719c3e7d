"""The unit of every training scalar: what `train/*` and `valid/*` in the trackers and train.log lines mean.

loss                   nats per predicted frame: the summed loss of an update (all micro-batches, all
                       processes) over the frames it predicted (Output.sample_size summed the same way)
loss_<term>            nats per predicted frame, the same denominator: the terms add up to `loss`
                       (wav2vec 2.0: contrastive, diversity, penalty; HuBERT/WavLM: masked_<i>, unmasked_<i>,
                       penalty)
accuracy*              fraction of predicted frames whose target scored highest, mean over micro-batches
code_perplexity,       codebook perplexities (codes; prob_perplexity from the soft assignment), mean over
prob_perplexity        micro-batches
temperature            Gumbel-softmax temperature of the update
masked_frames          masked frames per micro-batch (mean over micro-batches and processes)
lr                     the learning rate the update used
grad_norm              L2 norm of the gradient of the per-frame loss, before clipping
loss_scale             fp16 dynamic loss scale (1 otherwise)
audio_seconds_per_update, audio_seconds_per_second: seconds of audio (all processes; per update / per second)
skipped_updates, bad_files: counts since the start of the run
tflops_per_second, mfu: model FLOPs per second (all processes); that over the devices' peak
"""

from __future__ import annotations

from collections.abc import Mapping


def per_frame(term_sums: Mapping[str, float], frames: float) -> dict[str, float]:
    """`loss_<term>`: each summed loss term over the predicted frames (at least 1, as the loss itself)."""
    return {f"loss_{name}": total / max(frames, 1.0) for name, total in term_sums.items()}

"""Learning-rate multipliers per parameter: layer-wise decay over the encoder, a separate rate for the heads.

Layer l of L trains at decay^(L - l): the transformer layer i (0-based) is l = i + 1; the front-end, the feature
projection, the positional embedding and the mask embedding are layer 0; the final LayerNorm is layer L with
pre-LN (it follows the last layer) and layer 0 with post-LN (it normalises the transformer's input). Every
parameter outside `encoder.` and `masker.` is a head.
"""

from __future__ import annotations

import re

from torch import nn

_LAYER = re.compile(r"^encoder\.transformer\.layers\.(\d+)\.")


def layer_of(name: str, *, num_layers: int, pre_ln: bool) -> int | None:
    """The encoder layer (0..L) of a parameter, or None for a head."""
    match = _LAYER.match(name)
    if match:
        return int(match.group(1)) + 1
    if name.startswith("encoder.transformer.norm."):
        return num_layers if pre_ln else 0
    if name.startswith(("encoder.", "masker.")):
        return 0
    return None


def lr_scales(
    model: nn.Module, *, num_layers: int, pre_ln: bool, layer_decay: float, head_scale: float
) -> dict[str, float]:
    """Parameter name -> multiplier of the peak learning rate."""
    scales = {}
    for name, _ in model.named_parameters():
        layer = layer_of(name, num_layers=num_layers, pre_ln=pre_ln)
        scales[name] = head_scale if layer is None else layer_decay ** (num_layers - layer)
    return scales

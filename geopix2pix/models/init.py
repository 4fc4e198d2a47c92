"""Weight initialisation of the Pix2Pix paper (Isola et al. 2017, section 6.2).

Convolution and linear weights are drawn from N(0, gain), batch-norm scales from N(1, gain), and
all biases are set to 0, exactly as ``init_weights(..., init_type="normal")`` of the reference
implementation (junyanz/pytorch-CycleGAN-and-pix2pix).
"""

from __future__ import annotations

from torch import nn

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
_NORM_TYPES = (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)


def _init_one(layer: nn.Module, gain: float) -> None:
    """Initialise one layer in place when it is a conv/linear or an affine norm layer."""
    if isinstance(layer, _CONV_TYPES):
        nn.init.normal_(layer.weight, 0.0, gain)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    elif isinstance(layer, _NORM_TYPES) and getattr(layer, "weight", None) is not None:
        nn.init.normal_(layer.weight, 1.0, gain)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """Initialise ``module`` in place with the paper's scheme and return it.

    Do not call this on a segmentation-models-pytorch generator whose encoder was loaded from a
    weights file: it would overwrite the pretrained encoder.
    """
    for layer in module.modules():
        _init_one(layer, gain)
    return module

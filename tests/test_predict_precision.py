"""The output layer under autocast: on CUDA predict runs the generator in bf16 (fp16 on older
GPUs), whose 8 bits of mantissa would put the output in steps of 1/512 of the target's range near
its ends (terraces in a DEM's hillshade); its last convolution, and the activation after it, run
in float32. Checked with CPU autocast to bf16, the same arithmetic."""

from __future__ import annotations

import pytest
import torch

from geopix2pix.models import build_generator, init_weights
from geopix2pix.models.factory import GeneratorSpec
from geopix2pix.prediction.engine.forward import device_outputs, float32_output


def _wide() -> torch.nn.Module:
    """A body and an output layer whose values span nearly all of tanh's range."""
    torch.manual_seed(0)
    generator = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.Conv2d(16, 1, 1), torch.nn.Tanh()).eval()
    with torch.no_grad():
        generator[2].weight.mul_(3.0)
    return generator


def _outputs(generator: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(float32, bf16 autocast, bf16 autocast with the output layer in float32) outputs."""
    with torch.inference_mode():
        exact = generator(x).reshape(-1)
        rounded, _ = device_outputs(generator, x, (), None, torch.bfloat16)
        float32_output(generator)
        kept, _ = device_outputs(generator, x, (), None, torch.bfloat16)
        assert torch.equal(generator(x).reshape(-1), exact)  # without autocast: unchanged
    return exact, rounded, kept


def test_the_output_layer_runs_in_float32_under_bf16_autocast():
    generator = _wide()
    exact, rounded, kept = _outputs(generator, 2 * torch.randn(4, 3, 64, 64))
    assert exact.abs().max() > 0.99  # the range's ends, where bf16's steps are widest
    assert len(torch.unique(rounded)) < 0.2 * exact.numel()  # terraces
    assert len(torch.unique(kept)) > 0.95 * exact.numel()
    assert (kept - exact).abs().mean() < (rounded - exact).abs().mean()
    head = vars(generator[2])["forward"]
    float32_output(generator)  # once: a second call (another thread's predict) keeps it
    assert vars(generator[2])["forward"] is head and "forward" not in vars(generator[0])


@pytest.mark.parametrize("fields", [dict(name="unet"), dict(name="local", layers=2),
                                    dict(name="resnet_6blocks")])
def test_each_generator_s_output_layer_is_the_one_in_float32(fields):
    """The U-Net's outermost up-convolution, the local generator's last 1x1 convolution, the
    ResNet's last 7x7 convolution: the last convolution each registers is the last one run."""
    spec = GeneratorSpec(in_channels=3, out_channels=1, chip_size=64, output="tanh", ngf=8,
                         **fields)
    torch.manual_seed(0)
    generator = init_weights(build_generator(spec)).eval()
    exact, rounded, kept = _outputs(generator, torch.randn(2, 3, 64, 64))
    assert len(torch.unique(kept)) > 0.9 * exact.numel() > 1.5 * len(torch.unique(rounded))

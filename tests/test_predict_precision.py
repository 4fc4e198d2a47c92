"""The output layer under autocast: on CUDA predict runs the generator in bf16 (fp16 on older
GPUs), whose 8 bits of mantissa would put the output in steps of 1/512 of the target's range near
its ends (terraces in a DEM's hillshade); its last convolution, and the activation after it, run
in float32. Checked with CPU autocast to bf16, the same arithmetic."""

from __future__ import annotations

import torch

from geopix2pix.prediction.engine.forward import device_outputs, float32_output


def _generator() -> torch.nn.Module:
    """A body and an output layer whose values span nearly all of tanh's range."""
    torch.manual_seed(0)
    generator = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.Conv2d(16, 1, 1), torch.nn.Tanh()).eval()
    with torch.no_grad():
        generator[2].weight.mul_(3.0)
    return generator


def test_the_output_layer_runs_in_float32_under_bf16_autocast():
    generator = _generator()
    x = 2 * torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        exact = generator(x).reshape(-1)
        rounded, _ = device_outputs(generator, x, (), None, torch.bfloat16)
        with float32_output(generator):
            kept, _ = device_outputs(generator, x, (), None, torch.bfloat16)
    assert exact.abs().max() > 0.99  # the range's ends, where bf16's steps are widest
    assert len(torch.unique(rounded)) < 0.2 * exact.numel()  # terraces
    assert len(torch.unique(kept)) > 0.95 * exact.numel()
    assert (kept - exact).abs().mean() < (rounded - exact).abs().mean()
    assert "forward" not in vars(generator[2])  # the layer's own forward again after


def test_a_generator_without_convolutions_is_left_as_it_is():
    identity = torch.nn.Identity()
    with float32_output(identity):
        assert identity(torch.ones(1)).item() == 1.0

"""smp generators (`smp:<Architecture>:<encoder>`): their output, the sizes they need, the
choices listed for unknown names, and encoder weights loaded from a local file (adapted to more
bands, refused when they do not match)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from test_models import smp_spec

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import build_generator


def test_smp_generator_shape_and_range():
    generator = build_generator(smp_spec())
    out = generator(torch.randn(2, 4, 64, 64) * 10)
    assert out.shape == (2, 2, 64, 64)
    assert out.abs().max() <= 1.0
    with pytest.raises(ValueError, match="expects input"):
        generator(torch.randn(1, 3, 64, 64))


def test_smp_generator_that_needs_divisible_sizes_says_so():
    generator = build_generator(smp_spec(name="smp:FPN:resnet18"))
    assert generator(torch.randn(1, 4, 64, 64)).shape == (1, 2, 64, 64)
    with pytest.raises(ValueError, match="multiples of 32"):
        generator(torch.randn(1, 4, 48, 64))
    with pytest.raises(ValueError, match="multiple of 32"):
        build_generator(smp_spec(name="smp:FPN:resnet18", chip_size=48))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("smp:NoSuchNet:resnet18", "UnetPlusPlus"),
        ("smp:Unet:no_such_encoder", "resnet34"),
        ("smp:Unet", "smp:<Architecture>:<encoder>"),
    ],
)
def test_smp_unknown_names_list_the_choices(name, expected):
    with pytest.raises(ValueError, match=expected):
        build_generator(smp_spec(name=name))


def random_encoder_state(in_channels: int) -> dict[str, torch.Tensor]:
    encoder = build_generator(smp_spec(in_channels=in_channels)).encoder
    torch.manual_seed(7)
    return {k: torch.rand_like(v.float()).to(v.dtype) for k, v in encoder.state_dict().items()}


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_smp_encoder_weights_are_loaded_from_a_local_file(tmp_path, suffix):
    state = random_encoder_state(4)
    path = tmp_path / f"encoder{suffix}"
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    loaded = build_generator(smp_spec(), encoder_weights_path=path).encoder.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_smp_three_band_encoder_weights_are_adapted_to_more_bands(tmp_path):
    state = random_encoder_state(3)
    path = tmp_path / "rgb.pt"
    torch.save(state, path)
    loaded = build_generator(smp_spec(in_channels=4), encoder_weights_path=path).encoder
    first = loaded.state_dict()["conv1.weight"]
    assert first.shape[1] == 4
    torch.testing.assert_close(first[:, 3], state["conv1.weight"][:, 0] * 0.75)


def test_smp_mismatched_encoder_weights_are_refused(tmp_path):
    state = random_encoder_state(4)
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(GeoPix2PixError, match="1 missing.*layer1.0.conv1.weight"):
        build_generator(smp_spec(), encoder_weights_path=path)

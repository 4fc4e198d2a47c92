"""Tests of geopix2pix.models: architectures, init and the model file (smp generators:
test_smp_generators)."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import (
    GeneratorSpec,
    build_discriminator,
    build_generator,
    init_weights,
    load_model,
    save_model,
)
from geopix2pix.models.digest import canonical_header, weights_digest


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_unet(**kw) -> nn.Module:
    kw = {"in_channels": 3, "out_channels": 3, "chip_size": 64, "ngf": 8, **kw}
    return build_generator(GeneratorSpec(**kw))


def warm_up_batch_norm(generator: nn.Module, channels: int, size: int) -> None:
    """A few train-mode forwards so running statistics differ from their initial values."""
    generator.train()
    with torch.no_grad():
        for _ in range(3):
            generator(torch.randn(2, channels, size, size) * 2 + 0.5)
    generator.eval()


# --- parameter counts -----------------------------------------------------------------------


def test_unet_256_has_the_papers_parameter_count():
    assert n_params(build_generator(GeneratorSpec(chip_size=256))) == 54_413_955


def test_patchgan_has_the_papers_parameter_count():
    assert n_params(build_discriminator(6)) == 2_768_705


def test_patchgan_output_is_a_patch_map():
    disc = build_discriminator(4, ndf=8)
    assert disc(torch.randn(2, 4, 64, 64)).shape == (2, 1, 6, 6)


# --- U-Net ----------------------------------------------------------------------------------


@pytest.mark.parametrize("chip", [64, 128, 256, 512])
def test_unet_output_shape_and_range(chip):
    generator = small_unet(chip_size=chip, ngf=4)
    out = generator(torch.randn(2, 3, chip, chip) * 10)
    assert out.shape == (2, 3, chip, chip)
    assert out.abs().max() <= 1.0


@pytest.mark.parametrize(("bands_in", "bands_out"), [(1, 1), (1, 13), (4, 1), (13, 3)])
def test_unet_band_counts(bands_in, bands_out):
    generator = small_unet(in_channels=bands_in, out_channels=bands_out)
    out = generator(torch.randn(1, bands_in, 64, 64))
    assert out.shape == (1, bands_out, 64, 64)
    assert out.abs().max() <= 1.0


def test_unet_dropout_sits_in_the_blocks_next_to_the_bottleneck():
    dropouts = [m for m in small_unet(chip_size=256, ngf=2).modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 3 and all(d.p == 0.5 for d in dropouts)
    assert not any(isinstance(m, nn.Dropout) for m in small_unet(dropout=False).modules())


def test_unet_instance_norm_trains_with_a_1x1_bottleneck():
    generator = small_unet(norm="instance")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in generator.modules())
    out = generator.train()(torch.randn(1, 3, 64, 64))  # batch of one, 1x1 innermost map
    out.mean().backward()
    assert out.shape == (1, 3, 64, 64)


def test_unet_rejects_bad_input_sizes():
    generator = small_unet()
    with pytest.raises(ValueError, match="multiples of 64"):
        generator(torch.randn(1, 3, 96, 64))
    with pytest.raises(ValueError, match="expects input"):
        generator(torch.randn(1, 4, 64, 64))


@pytest.mark.parametrize("chip", [100, 16, 0])
def test_spec_rejects_bad_chip_sizes(chip):
    with pytest.raises(ValueError, match="chip size|chip_size"):
        GeneratorSpec(chip_size=chip)


def test_spec_dict_round_trip_and_validation():
    spec = GeneratorSpec(name="unet", in_channels=4, out_channels=1, chip_size=128, ngf=32,
                         norm="instance", dropout=False)
    assert GeneratorSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="unknown generator spec keys"):
        GeneratorSpec.from_dict({**spec.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="norm"):
        GeneratorSpec(norm="group")
    with pytest.raises(ValueError, match="unknown generator"):
        GeneratorSpec(name="resnet_7blocks")  # resnet_9blocks is CycleGAN's


def test_eval_prediction_does_not_depend_on_the_batch():
    generator = small_unet(norm="batch")
    warm_up_batch_norm(generator, 3, 64)
    window = torch.randn(1, 3, 64, 64)
    batch = torch.cat([torch.randn(2, 3, 64, 64), window, torch.randn(1, 3, 64, 64) * 5])
    with torch.no_grad():
        alone = generator(window)
        together = generator(batch)[2:3]
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=0)


# --- init -----------------------------------------------------------------------------------


def test_init_weights_follows_the_paper():
    layers = nn.Sequential(nn.Conv2d(64, 64, 4), nn.BatchNorm2d(64), nn.ConvTranspose2d(64, 8, 4))
    init_weights(layers)
    conv, norm, upconv = layers
    assert abs(conv.weight.std().item() - 0.02) < 0.001
    assert abs(conv.weight.mean().item()) < 0.001
    assert abs(upconv.weight.std().item() - 0.02) < 0.001
    assert torch.count_nonzero(conv.bias) == 0 and torch.count_nonzero(norm.bias) == 0
    assert abs(norm.weight.mean().item() - 1.0) < 0.01 and 0.01 < norm.weight.std().item() < 0.03


# --- smp generators (their tests: test_smp_generators) -------------------------------------


def smp_spec(**kw) -> GeneratorSpec:
    return GeneratorSpec(**{"name": "smp:Unet:resnet18", "in_channels": 4, "out_channels": 2,
                            "chip_size": 64, **kw})


# --- model file -----------------------------------------------------------------------------


def predict(generator: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return generator(x)


@pytest.mark.parametrize("spec", [GeneratorSpec(in_channels=4, out_channels=1, chip_size=64,
                                                ngf=8), smp_spec()], ids=["unet", "smp"])
def test_save_load_round_trip(tmp_path, spec):
    generator = build_generator(spec)
    warm_up_batch_norm(generator, spec.in_channels, 64)
    metadata = {"bands": [1, 2, 3, 4], "scale": {"min": 0.0, "max": 3000.5}, "note": "été"}
    path = tmp_path / "model.safetensors"
    save_model(path, generator, spec, metadata)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left
    plain = tmp_path / "plain.txt"
    plain.write_text("")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # as any file, not 0600

    loaded = load_model(path)
    assert loaded.spec == spec and loaded.metadata == metadata
    assert not loaded.generator.training
    x = torch.randn(3, spec.in_channels, 64, 64)
    assert torch.equal(predict(loaded.generator, x), predict(generator, x))


def test_model_metadata_round_trips_nan_and_infinity(tmp_path):
    """A NaN nodata and an infinite validation score survive the model file (JSON has neither:
    they are stored as "nan" and "inf", as dataset.json and evaluate's JSON store them)."""
    from geopix2pix.chips.scaling import Scaling
    from geopix2pix.models import ModelMetadata, SideMetadata
    from geopix2pix.raster.band_metadata import BandMetadata

    spec = GeneratorSpec(in_channels=2, out_channels=1, chip_size=64, ngf=4)
    units = BandMetadata(units=("m",), scales=(0.5,), offsets=(10.0,))
    meta = ModelMetadata(
        SideMetadata([1, 2], "float32", math.nan, ["VV", "VH"],
                     Scaling("centre", (-20.0, -25.0), (5.0, 0.0)), 2),
        SideMetadata([3], "float32", -9999.0, ["elevation"],
                     Scaling("minmax", (0.0,), (3000.0,)), 4, units),
        64, "EPSG:32719", (30.0, 30.0), {"lr": 2e-4, "epoch": 3, "step": 90},
        {"val_psnr": math.inf, "val_ssim": math.nan, "val_l1": 0.25}, "0.1.0")
    path = tmp_path / "model.safetensors"
    save_model(path, build_generator(spec), spec, meta.to_dict())
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["geopix2pix"])
    assert header["source"]["nodata"] == "nan" and header["validation"]["val_psnr"] == "inf"
    read = ModelMetadata.of(load_model(path))
    assert math.isnan(read.source.nodata) and math.isnan(read.validation["val_ssim"])
    assert read.validation["val_psnr"] == math.inf and read.validation["val_l1"] == 0.25
    assert read.target == meta.target and read.source.scaling == meta.source.scaling
    assert (read.crs, read.pixel_size, read.chip_size) == ("EPSG:32719", (30.0, 30.0), 64)
    assert read.training == meta.training and read.version == "0.1.0"


def test_model_metadata_lacking_what_prediction_needs_is_one_error(tmp_path):
    from geopix2pix.models import ModelMetadata

    spec = GeneratorSpec(in_channels=1, out_channels=1, chip_size=64, ngf=4)
    path = tmp_path / "model.safetensors"
    save_model(path, build_generator(spec), spec, {"source": {"bands": [1]}})
    with pytest.raises(GeoPix2PixError, match="model metadata lacks what prediction needs"):
        ModelMetadata.of(load_model(path), str(path))


def test_model_file_layout(tmp_path):

    spec = GeneratorSpec(chip_size=64, ngf=4)
    path = tmp_path / "m.safetensors"
    generator = build_generator(spec)
    save_model(path, generator, spec, {"epoch": 3})
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["geopix2pix"])
        assert any(k.endswith("running_mean") for k in handle.keys())  # noqa: SIM118
    content = {"format_version": 1, "generator": spec.to_dict(), "epoch": 3}
    assert header == {**content, "weights_sha256": weights_digest(
        generator.state_dict(), canonical_header(json.loads(json.dumps(content))))}
    for reserved in ("generator", "weights_sha256"):
        with pytest.raises(ValueError, match="reserved"):
            save_model(path, generator, spec, {reserved: "x"})


class _Marker:
    """Unpickling this creates the marker file: proof that pickle code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def assert_refused(path: Path) -> str:
    """load_model refuses ``path`` with a one-line message naming it; returns the message."""
    with pytest.raises(GeoPix2PixError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_pickled_files_are_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    torch_file = tmp_path / "torch.safetensors"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "evil": _Marker(marker)}, torch_file)
    raw_file = tmp_path / "raw.safetensors"
    raw_file.write_bytes(pickle.dumps(_Marker(marker)))
    assert not marker.exists()
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Marker(proof))).close()  # the payload is live when unpickled
    assert proof.exists()
    for path in (torch_file, raw_file):
        assert "only safetensors model files written by geopix2pix" in assert_refused(path)
    assert not marker.exists()


def test_foreign_or_unknown_safetensors_files_are_refused(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    assert_refused(plain)
    future = tmp_path / "future.safetensors"
    header = {"format_version": 99, "generator": GeneratorSpec().to_dict()}
    save_file({"w": torch.zeros(2)}, str(future), metadata={"geopix2pix": json.dumps(header)})
    assert "format_version 99" in assert_refused(future)
    assert_refused(tmp_path / "missing.safetensors")
    run = tmp_path / "run"
    run.mkdir()
    (run / "model-best.safetensors").write_bytes(future.read_bytes())
    assert f"{run} is a folder, not a model file; pass {run / 'model-best.safetensors'}" in \
        assert_refused(run)


def test_a_model_with_non_finite_weights_is_refused(tmp_path):
    """Bytes damaged inside a tensor (or a diverged training) load without complaint from
    safetensors and predict nonsense everywhere: refused, naming a damaged tensor."""

    spec = GeneratorSpec(chip_size=64, ngf=4)
    path = tmp_path / "m.safetensors"
    save_model(path, build_generator(spec), spec, {})
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    name = next(key for key in tensors if key.endswith("weight"))
    tensors[name].view(-1)[3] = float("nan")
    damaged = tmp_path / "damaged.safetensors"
    save_file(tensors, str(damaged), metadata=metadata)
    message = assert_refused(damaged)
    assert "NaN or infinite weights" in message and name in message
    load_model(path)  # the undamaged file still loads


@pytest.mark.parametrize("spec", [GeneratorSpec(in_channels=3, out_channels=5, chip_size=64,
                                                ngf=8, output="logits"),
                                  smp_spec(in_channels=3, out_channels=5, output="logits")],
                         ids=["unet", "smp"])
def test_a_logits_generator_gives_raw_class_scores_and_round_trips(tmp_path, spec):
    """output="logits" (a categorical target): the same network without the final tanh, so
    scores leave [-1, 1]; the spec and weights survive the model file."""
    generator = build_generator(spec)
    tanh_twin = build_generator(dataclasses.replace(spec, output="tanh"))
    assert sum(p.numel() for p in generator.parameters()) == \
        sum(p.numel() for p in tanh_twin.parameters())
    tanh_twin.load_state_dict(generator.state_dict())  # the same tensors, names and shapes
    generator.eval()
    tanh_twin.eval()
    x = torch.randn(2, 3, 64, 64) * 3
    scores = predict(generator, x)
    assert scores.shape == (2, 5, 64, 64)
    assert torch.allclose(torch.tanh(scores), predict(tanh_twin, x), atol=1e-6)
    path = tmp_path / "model.safetensors"
    save_model(path, generator, spec, {})
    loaded = load_model(path)
    assert loaded.spec == spec and loaded.spec.output == "logits"
    assert torch.equal(predict(loaded.generator, x), scores)


def test_a_spec_without_output_is_the_papers_tanh():
    """Model files written before the output field existed rebuild as tanh generators."""
    data = GeneratorSpec(in_channels=1, out_channels=1, chip_size=64).to_dict()
    del data["output"]
    assert GeneratorSpec.from_dict(data).output == "tanh"
    with pytest.raises(ValueError, match="unknown output 'softmax'"):
        GeneratorSpec(output="softmax")

"""Tests of CycleGAN's parts: the ResNet generator, the unconditional PatchGAN, the image pool,
the masked losses and the optimisation step (on small CPU tensors)."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import rasterio
import torch
from predict_helpers import metadata, write_scene
from torch import nn

from geopix2pix import predict
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import (
    GeneratorSpec,
    ModelMetadata,
    build_discriminator,
    build_generator,
    load_model,
    save_model,
)
from geopix2pix.models.resnet_generator import RESNET_DEFAULTS
from geopix2pix.models.schema import SchemaError
from geopix2pix.training.cyclegan_losses import CycleWeights, identity_applies
from geopix2pix.training.cyclegan_step import CycleGANStep, cyclegan_optimizers
from geopix2pix.training.device import DeviceSetup
from geopix2pix.training.image_pool import ImagePool, check_pool_state

CPU = DeviceSetup(torch.device("cpu"), None, False)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def resnet(bands_in: int, bands_out: int, name: str = "resnet_6blocks", chip: int = 32,
           ngf: int = 8) -> nn.Module:
    return build_generator(GeneratorSpec(name, bands_in, bands_out, chip, ngf=ngf,
                                         **RESNET_DEFAULTS))


def patchgan(bands: int, ndf: int = 8, n_layers: int = 2) -> nn.Module:
    return build_discriminator(bands, ndf, n_layers, "instance")


# --- networks ---------------------------------------------------------------------------------


def test_resnet_9blocks_has_the_reference_parameter_count():
    assert n_params(resnet(3, 3, "resnet_9blocks", chip=256, ngf=64)) == 11_378_179


def test_resnet_6blocks_has_three_blocks_fewer():
    block = 2 * (256 * 256 * 9 + 256)  # two 3x3 convolutions of ngf * 4 channels, with bias
    assert n_params(resnet(3, 3, "resnet_6blocks", chip=256, ngf=64)) == 11_378_179 - 3 * block


def test_resnet_layer_names_are_the_references():
    state = resnet(3, 3, "resnet_9blocks", ngf=64).state_dict()
    assert state["model.1.weight"].shape == (64, 3, 7, 7)
    assert state["model.10.conv_block.1.weight"].shape == (256, 256, 3, 3)
    assert state["model.19.weight"].shape == (256, 128, 3, 3)  # the first transposed conv
    assert state["model.26.weight"].shape == (3, 64, 7, 7)
    assert not any("running" in key for key in state)  # instance norm keeps no statistics


def test_cyclegan_patchgan_has_the_reference_parameter_count():
    assert n_params(build_discriminator(3, 64, 3, "instance")) == 2_764_737


@pytest.mark.parametrize("bands_a, bands_b", [(1, 13), (13, 1), (2, 4), (3, 3), (1, 1),
                                              (13, 13)])
def test_shapes_for_any_band_counts(bands_a, bands_b):
    g_a, g_b = resnet(bands_a, bands_b, ngf=4), resnet(bands_b, bands_a, ngf=4)
    d_a, d_b = patchgan(bands_b, 4), patchgan(bands_a, 4)
    real_a = torch.rand(2, bands_a, 32, 32) * 2 - 1
    with torch.no_grad():
        fake_b = g_a(real_a)
        rec_a = g_b(fake_b)
        assert fake_b.shape == (2, bands_b, 32, 32) and rec_a.shape == real_a.shape
        assert fake_b.abs().max() <= 1
        assert d_a(fake_b).shape == d_b(rec_a).shape == (2, 1, 6, 6)


def test_resnet_takes_multiples_of_4_and_refuses_others():
    generator = resnet(2, 3, ngf=4).eval()
    with torch.no_grad():
        assert generator(torch.zeros(1, 2, 12, 20)).shape == (1, 3, 12, 20)
        for height, width in ((30, 32), (32, 34), (4, 4)):
            with pytest.raises(ValueError, match="multiples of 4 and at least 8"):
                generator(torch.zeros(1, 2, height, width))
        with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
            generator(torch.zeros(1, 3, 32, 32))
    for chip in (34, 62):
        with pytest.raises(ValueError, match="multiple of 4"):
            GeneratorSpec("resnet_9blocks", chip_size=chip)
    assert GeneratorSpec("resnet_9blocks", chip_size=36).chip_size == 36  # not only 2**k


def test_resnet_honours_norm_and_dropout_as_the_reference():
    batch = resnet(3, 3).state_dict()
    spec = GeneratorSpec("resnet_6blocks", 3, 3, 32, ngf=8, norm="batch", dropout=True)
    generator = build_generator(spec)
    assert sum(isinstance(m, nn.Dropout) for m in generator.modules()) == 6
    assert "model.2.running_mean" in generator.state_dict()
    assert "model.1.bias" in batch and "model.1.bias" not in generator.state_dict()


def test_unknown_generator_names_the_resnets():
    with pytest.raises(ValueError, match="resnet_9blocks"):
        GeneratorSpec("resnet_7blocks")


# --- model file -------------------------------------------------------------------------------


def test_resnet_model_file_round_trip(tmp_path):
    spec = GeneratorSpec("resnet_9blocks", 2, 4, 32, ngf=4, **RESNET_DEFAULTS)
    generator = build_generator(spec).eval()
    save_model(tmp_path / "model.safetensors", generator, spec, {"note": "cyclegan"})
    loaded = load_model(tmp_path / "model.safetensors")
    assert loaded.spec == spec and loaded.metadata == {"note": "cyclegan"}
    x = torch.rand(1, 2, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.generator(x), generator(x))


def test_resnet_model_file_predicts_a_scene_on_its_exact_grid(tmp_path):
    """A trained-run-like file (full metadata) of a ResNet generator: load_model checks its
    metadata against the generator, and predict writes the scene's grid, nodata kept."""
    spec = GeneratorSpec("resnet_6blocks", 3, 2, 32, ngf=4, **RESNET_DEFAULTS)
    torch.manual_seed(0)
    path = tmp_path / "model.safetensors"
    save_model(path, build_generator(spec).eval(), spec, metadata(3, 2, chip_size=32))
    assert ModelMetadata.of(load_model(path)).chip_size == 32
    data = np.full((3, 45, 70), 90, dtype="uint8")
    data += np.arange(70, dtype="uint8")[None, None]
    data[:, :5, :7] = 0  # nodata corner
    scene = write_scene(tmp_path / "scene.tif", 70, 45, data=data)
    out = tmp_path / "out.tif"
    predict(scene, out, model=str(path), progress=False, overlap=0.25)
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.shape, dst.count) == (src.crs, src.transform,
                                                                  src.shape, 2)
        values = dst.read()
        assert (values[:, :5, :7] == dst.nodata).all()
        valid = values[:, 5:, 7:]
        assert ((valid >= 100) & (valid <= 3000)).all() and valid.std() > 0


def test_resnet_model_file_with_other_tensors_is_refused(tmp_path):
    nine = GeneratorSpec("resnet_9blocks", 3, 3, 32, ngf=4, **RESNET_DEFAULTS)
    six = GeneratorSpec("resnet_6blocks", 3, 3, 32, ngf=4, **RESNET_DEFAULTS)
    save_model(tmp_path / "model.safetensors", build_generator(nine), six, {})
    with pytest.raises(GeoPix2PixError, match=r"resnet_6blocks, ngf 4.*unexpected"):
        load_model(tmp_path / "model.safetensors")


# --- image pool -------------------------------------------------------------------------------


def batches(count: int, size: int = 2):
    """`count` batches of distinct images (each image's value is its index) with masks."""
    for index in range(count):
        values = torch.arange(index * size, (index + 1) * size, dtype=torch.float32)
        images = values.view(-1, 1, 1, 1).expand(size, 2, 4, 4).clone()
        yield images, images[:, :1] % 3 != 0


def test_pool_returns_new_images_until_full_then_mixes_half_old():
    pool = ImagePool(10, seed=3)
    for images, valid in batches(5):  # 10 images: the pool fills, each returned as it is
        out, out_valid = pool.query(images, valid)
        assert torch.equal(out, images) and torch.equal(out_valid, valid)
    swapped, seen = 0, set(range(10))
    for images, valid in batches(200):
        images = images + 999  # newer than anything stored (and the same masks: 999 % 3 == 0)
        out, out_valid = pool.query(images, valid)
        returned, given = out[:, 0, 0, 0].tolist(), images[:, 0, 0, 0].tolist()
        for r, g in zip(returned, given):
            assert r == g or r in seen  # itself, or an image given before it
            swapped += r != g
            seen.add(g)
        assert torch.equal(out_valid, out[:, :1] % 3 != 0)  # each mask travels with its image
    assert 160 < swapped < 240  # of 400: probability 0.5 each
    assert len(pool) == 10


def test_pool_of_size_0_returns_its_input():
    images, valid = next(batches(1))
    out, out_valid = ImagePool(0).query(images, valid)
    assert torch.equal(out, images) and out_valid is valid


def test_restored_pool_returns_the_same_sequence():
    pool = ImagePool(6, seed=7)
    for images, valid in batches(5):
        pool.query(images, valid)
    buffer = io.BytesIO()
    torch.save(pool.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # tensors and numbers only: no pickle
    restored = ImagePool(6, seed=999)
    restored.load_state_dict(state)
    for images, valid in batches(20):
        images = images + 100
        first, second = pool.query(images, valid), restored.query(images, valid)
        assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_empty_pool_state_round_trips():
    pool = ImagePool(4, seed=1)
    state = pool.state_dict()
    check_pool_state(state, 4, channels=3)
    restored = ImagePool(4, seed=2)
    restored.load_state_dict(state)
    images, valid = next(batches(1))
    assert torch.equal(restored.query(images, valid)[0], images) and len(restored) == 2


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(pool_size=5), "pool.pool_size"),
    (lambda s: s.update(images=s["images"][:, :1]), "pool.images"),
    (lambda s: s.update(images=s["images"][:, :0]), "pool.images"),
    (lambda s: s.update(images=torch.cat([s["images"]] * 2)), "pool.images"),
    (lambda s: s.update(images=s["images"].long()), "pool.images"),
    (lambda s: s.update(images=s["images"] * float("nan")), "pool.images"),
    (lambda s: s.update(valid=s["valid"].float()), "pool.valid"),
    (lambda s: s.update(valid=s["valid"][:1]), "pool.valid"),
    (lambda s: s.update(generator=[1, 2]), "pool.generator"),
    # the right shape, but no Mersenne Twister state: torch's traceback at the restore before
    (lambda s: s.update(generator=torch.zeros_like(s["generator"])), "pool.generator"),
    (lambda s: s.pop("images"), "pool.images"),
])
def test_damaged_pool_states_are_refused(change, message):
    pool = ImagePool(4, seed=1)
    for images, valid in batches(2):
        pool.query(images, valid)
    state = pool.state_dict()
    check_pool_state(state, 4, channels=2)
    change(state)
    with pytest.raises(SchemaError, match=message):
        check_pool_state(state, 4, channels=2)
    with pytest.raises(SchemaError):
        ImagePool(4, channels=2).load_state_dict(state)


def test_a_pool_of_images_of_another_size_than_the_chips_is_refused():
    """Images of another chip size fit the pool's own checks; the run's check knows its
    chips (a 16 px pool in a 32 px run was a 'stack expects each tensor to be equal size'
    traceback mid-training)."""
    pool = ImagePool(4, seed=1)
    for images, valid in batches(2):
        pool.query(images, valid)
    state = pool.state_dict()
    size = state["images"].shape[-1]
    check_pool_state(state, 4, channels=2, chip_size=size)
    with pytest.raises(SchemaError, match=f"pool.images are {size} x {size} pixels; this run's "
                                          f"chips are {2 * size} x {2 * size}"):
        check_pool_state(state, 4, channels=2, chip_size=2 * size)


# --- losses and step --------------------------------------------------------------------------


def smooth_images(count: int, bands: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Structured images: smooth random fields (upsampled 4x4 noise) on [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, bands, 4, 4, generator=generator) * 2 - 1
    return nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                     align_corners=False)


def make_step(bands_a: int, bands_b: int, seed: int = 0, setup: DeviceSetup = CPU,
              lr: float = 2e-4, pool_size: int = 4, **weights) -> CycleGANStep:
    torch.manual_seed(seed)
    g_a, g_b = resnet(bands_a, bands_b), resnet(bands_b, bands_a)
    d_a, d_b = patchgan(bands_b), patchgan(bands_a)
    opt_g, opt_d = cyclegan_optimizers(g_a, g_b, d_a, d_b, lr=lr)
    return CycleGANStep(g_a, g_b, d_a, d_b, opt_g, opt_d, setup,
                        ImagePool(pool_size, seed + 1, bands_b),
                        ImagePool(pool_size, seed + 2, bands_a), CycleWeights(**weights))


def all_valid(images: torch.Tensor) -> torch.Tensor:
    return torch.ones(images.shape[0], 1, *images.shape[2:], dtype=torch.bool)


def test_optimizers_are_the_references():
    step = make_step(2, 3)
    for optimizer, first, second in ((step.opt_g, step.g_a, step.g_b),
                                     (step.opt_d, step.d_a, step.d_b)):
        params = optimizer.param_groups[0]["params"]
        assert len(params) == len(list(first.parameters())) + len(list(second.parameters()))
        assert optimizer.defaults["lr"] == 2e-4 and optimizer.defaults["betas"] == (0.5, 0.999)


def test_identity_applies_only_to_equal_band_counts():
    assert identity_applies(0.5, 3, 3) and not identity_applies(0.5, 2, 3)
    assert not identity_applies(0.0, 3, 3)
    real_a, real_b = smooth_images(2, 3, seed=1), smooth_images(2, 3, seed=2)
    losses = make_step(3, 3)(real_a, all_valid(real_a), real_b, all_valid(real_b))
    assert losses.idt_A > 0 and losses.idt_B > 0
    without = make_step(3, 3, lambda_identity=0.0)(real_a, all_valid(real_a), real_b,
                                                   all_valid(real_b))
    assert without.idt_A == 0 and without.idt_B == 0
    assert torch.equal(without.cycle_A, losses.cycle_A)  # same start, same forward pass


def test_a_few_steps_lower_the_cycle_loss():
    step = make_step(2, 3, lr=1e-3)  # a few steps at the paper's 2e-4 move it little
    real_a = smooth_images(4, 2, seed=1)
    real_b = torch.cat([real_a, real_a[:, :1] * real_a[:, 1:]], 1).flip(0)  # unpaired
    valid_a, valid_b = all_valid(real_a), all_valid(real_b)
    cycles = []
    for index in range(12):
        losses = step(real_a[index % 2::2], valid_a[:2], real_b[index % 2::2], valid_b[:2])
        assert all(torch.isfinite(v) for v in vars(losses).values())
        cycles.append(float(losses.cycle_A + losses.cycle_B))
    assert sum(cycles[-3:]) / 3 < 0.85 * cycles[0]  # 0.74 -> 0.57 here


def test_masked_pixels_change_neither_losses_nor_gradients():
    real_a, real_b = smooth_images(2, 2, seed=3), smooth_images(2, 3, seed=4)
    valid_a, valid_b = all_valid(real_a), all_valid(real_b)
    valid_a[:, :, :10] = False  # a nodata band at the top of A
    valid_b[1, :, :, 20:] = False  # and at the right of one B
    junk_a = torch.where(valid_a, real_a, torch.randn_like(real_a) * 5)
    junk_b = torch.where(valid_b, real_b, torch.full_like(real_b, -9999.0))
    first, second = make_step(2, 3), make_step(2, 3)
    for _ in range(2):
        clean = first(real_a, valid_a, real_b, valid_b)
        dirty = second(junk_a, valid_a, junk_b, valid_b)
        for name, value in vars(clean).items():
            assert torch.equal(value, getattr(dirty, name)), name
    for a, b in zip(first.g_a.parameters(), second.g_a.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(first.d_b.parameters(), second.d_b.parameters()):
        assert torch.equal(a, b)
    # control: a change at a valid pixel does change the losses
    changed = real_a.clone()
    changed[:, :, 20, 20] += 0.5
    third = make_step(2, 3)
    assert not torch.equal(third(changed, valid_a, real_b, valid_b).cycle_A,
                           make_step(2, 3)(real_a, valid_a, real_b, valid_b).cycle_A)


class Recording(nn.Module):
    """A discriminator that keeps what it was shown."""

    def __init__(self, disc: nn.Module) -> None:
        super().__init__()
        self.disc, self.seen = disc, []

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        self.seen.append(image.detach().clone())
        return self.disc(image)


def test_the_discriminators_see_real_and_generated_images_under_the_same_holes():
    """A generated B carries A's holes (SAR's swath edge) and a real B its own: a reviewer
    found D_A shown both as they were, so a flat block told a fake at a glance, and the
    generator could never remove it. Both are now shown under the holes of both."""
    real_a, real_b = smooth_images(2, 2, seed=3), smooth_images(3, 3, seed=4)
    valid_a, valid_b = all_valid(real_a), all_valid(real_b)
    valid_a[:, :, :10] = False  # A: nodata at the top
    valid_b[:, :, :, 20:] = False  # B: at the right
    step = make_step(2, 3)
    step.d_a = step.adversary_a = Recording(step.d_a)
    step(real_a, valid_a, real_b, valid_b)
    generated, real, pooled = step.d_a.seen  # G's step, then D's: real B, pooled fake B
    holes = torch.zeros(32, 32, dtype=torch.bool)
    holes[:10], holes[:, 20:] = True, True
    for shown in (generated, real, pooled):
        assert (shown[:, :, holes] == 0).all()
        assert (shown[:, :, ~holes] != 0).float().mean() > 0.99  # the rest is the image's
    assert real.shape[0] == 3 and generated.shape[0] == pooled.shape[0] == 2


def test_all_invalid_chip_teaches_nothing():
    real_a, real_b = smooth_images(1, 2, seed=5), smooth_images(1, 3, seed=6)
    none_a = torch.zeros_like(all_valid(real_a))
    step = make_step(2, 3)
    before = copy.deepcopy(step.g_a.state_dict())
    losses = step(real_a, none_a, real_b, torch.zeros_like(all_valid(real_b)))
    assert losses.cycle_A == 0 and losses.cycle_B == 0 and losses.G_A == 0
    after = step.g_a.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_step_under_bf16_autocast():
    setup = DeviceSetup(torch.device("cpu"), torch.bfloat16, False)
    step = make_step(3, 3, setup=setup)
    real_a, real_b = smooth_images(2, 3, seed=7), smooth_images(2, 3, seed=8)
    for _ in range(2):
        losses = step(real_a, all_valid(real_a), real_b, all_valid(real_b))
        assert all(torch.isfinite(v) and v.dtype == torch.float32
                   for v in vars(losses).values())
    check_pool_state(step.fake_b_pool.state_dict(), 4, channels=3)


def step_state(step: CycleGANStep) -> dict:
    """What a checkpoint keeps of a step, through torch.save and a weights-only load."""
    state = {name: getattr(step, name).state_dict()
             for name in ("g_a", "g_b", "d_a", "d_b", "opt_g", "opt_d", "fake_b_pool",
                          "fake_a_pool", "scaler")}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_a_step_restored_from_its_state_continues_exactly():
    """Networks, optimizers and both pools (their images and draws) are all a resumed step
    needs: it gives the uninterrupted run's losses and weights."""
    data = [(smooth_images(2, 3, seed=10 + i), smooth_images(2, 3, seed=20 + i))
            for i in range(4)]
    through = make_step(3, 3, pool_size=2)
    whole = [through(a, all_valid(a), b, all_valid(b)) for a, b in data]
    first = make_step(3, 3, pool_size=2)
    for a, b in data[:2]:
        first(a, all_valid(a), b, all_valid(b))
    resumed = make_step(3, 3, seed=5, pool_size=2)
    for name, value in step_state(first).items():
        getattr(resumed, name).load_state_dict(value)
    for (a, b), expected in zip(data[2:], whole[2:]):
        losses = resumed(a, all_valid(a), b, all_valid(b))
        for name, value in vars(expected).items():
            assert torch.equal(getattr(losses, name), value), name
    assert len(resumed.fake_b_pool) == 2
    for mine, theirs in zip(resumed.g_b.parameters(), through.g_b.parameters()):
        assert torch.equal(mine, theirs)

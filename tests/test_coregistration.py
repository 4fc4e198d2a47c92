"""The co-registration check (issue 20): known shifts recovered on generated pairs and on the real
pairs of ../shared/data (shifted through the target's transform), no confident false alarm,
invalid pixels ignored."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import shared

from geopix2pix.chips.coregistration import NO_SHIFT, Shift, estimate_shift, scene_shift

SIZE = 128


def _load_bench():
    path = Path(__file__).resolve().parents[1] / "tools" / "bench_coregistration.py"
    spec = importlib.util.spec_from_file_location("bench_coregistration", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smooth_pair(dx: float, dy: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random smooth field and the same field with its content moved (dx, dy) px right/down,
    shifted exactly in the Fourier domain (a twice-larger periodic field, cropped)."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.fft2(rng.normal(size=(2 * SIZE, 2 * SIZE)))
    ky = np.fft.fftfreq(2 * SIZE)[:, None]
    kx = np.fft.fftfreq(2 * SIZE)[None, :]
    spectrum *= np.exp(-(kx ** 2 + ky ** 2) / (2 * 0.06 ** 2))  # features of ~3 px
    moved = spectrum * np.exp(-2j * np.pi * (kx * dx + ky * dy))
    field = np.fft.ifft2(spectrum).real[:SIZE, :SIZE]
    return field, np.fft.ifft2(moved).real[:SIZE, :SIZE]


@pytest.mark.parametrize("function", [lambda f: np.exp(f / f.std()),
                                      lambda f: np.tanh(2 * f / f.std())], ids=["exp", "tanh"])
def test_known_shift_of_a_nonlinear_function_is_recovered(function):
    """Over 8 random fields and shifts, a 128-px chip: median error 0.1 px, none above 0.3."""
    rng = np.random.default_rng(7)
    errors = []
    for seed in range(8):
        dx, dy = rng.uniform(-6, 6, 2).round(2)
        source, moved = smooth_pair(dx, dy, seed)
        target = np.stack([function(moved), 3 * function(moved) + 100])  # two bands, any scale
        shift = estimate_shift(source, target)
        assert shift.confident, (seed, shift)
        errors.append(max(abs(shift.dx - dx), abs(shift.dy - dy)))
    assert np.median(errors) <= 0.1 + 1e-9 and max(errors) <= 0.3, errors


@pytest.mark.parametrize("dx, dy", [(0.0, 0.0), (0.3, -0.2), (2.3, -0.7), (-5.5, 3.25), (4, -6)])
def test_known_shift_of_a_linear_function_is_exact(dx, dy):
    source, moved = smooth_pair(dx, dy)
    shift = estimate_shift(source, -2 * moved + 7)
    assert shift.confident
    assert abs(shift.dx - dx) <= 0.05 and abs(shift.dy - dy) <= 0.05


def test_a_slope_against_its_field_is_recovered():
    """Like DEM -> hillshade: the target is the source's slope along a direction."""
    source, moved = smooth_pair(1.5, -0.5)
    gy, gx = np.gradient(moved)
    shift = estimate_shift(source, 0.8 * gx - 0.6 * gy)
    assert shift.confident
    assert abs(shift.dx - 1.5) <= 0.1 and abs(shift.dy + 0.5) <= 0.1


def test_unrelated_rasters_are_not_a_confident_shift():
    for seed in range(5):
        source, _ = smooth_pair(0, 0, seed=seed)
        other, _ = smooth_pair(0, 0, seed=seed + 100)
        assert not estimate_shift(source, other).confident


def test_invalid_pixels_are_ignored():
    source, moved = smooth_pair(1.25, 0.5)
    target = -moved
    valid = np.ones(source.shape, bool)
    valid[:, :40] = False
    expected = estimate_shift(source, target, valid)
    source[:, :40] = np.random.default_rng(5).normal(0, 1e6, (SIZE, 40))  # garbage where invalid
    target[20:60, :30] = np.nan
    found = estimate_shift(source, target, valid)
    assert found.confident and found == expected
    assert abs(found.dx - 1.25) <= 0.1 and abs(found.dy - 0.5) <= 0.1


def test_too_few_valid_pixels_give_no_shift():
    source, target = smooth_pair(1, 1)
    valid = np.zeros(source.shape, bool)
    valid[:20, :20] = True
    assert estimate_shift(source, target, valid) is NO_SHIFT
    assert estimate_shift(source, np.full_like(target, np.nan)) is NO_SHIFT


def test_flat_rasters_give_no_shift():
    assert estimate_shift(np.ones((SIZE, SIZE)), np.ones((SIZE, SIZE))) is NO_SHIFT


def test_scene_shift_is_the_median_of_the_confident_chips():
    shifts = [Shift(2.0, -0.5, 30), Shift(2.2, -0.4, 20), Shift(1.9, -0.6, 16),
              Shift(-9.0, 7.0, 3), NO_SHIFT]
    scene = scene_shift(shifts)
    assert (scene.dx, scene.dy, scene.confident, scene.chips) == (2.0, -0.5, 3, 5)
    assert scene.spread == pytest.approx(np.hypot(0.1, 0.1))
    assert scene.describe() == ("target is shifted by (+2.0, -0.5) px against the source, "
                                "consistent within 0.1 px over 3 of 5 chips")
    none = scene_shift([NO_SHIFT, Shift(1, 1, 5)])
    assert none.confident == 0 and np.isnan(none.dx) and not none.measured
    assert none.describe() == ("shift not measurable: no chip of 2 chips matched its source "
                               "confidently (a shift needs 3)")
    # one or two confident chips can be chance peaks: no scene shift from them
    two = scene_shift([Shift(-1.7, -0.1, 17.6), Shift(2.0, 0.0, 16), NO_SHIFT])
    assert two.confident == 2 and np.isnan(two.dx) and not two.measured
    assert two.describe() == ("shift not measurable: only 2 of 3 chips matched its source "
                              "confidently (a shift needs 3)")
    # confident chips that disagree are chance peaks too
    apart = scene_shift([Shift(-1.5, 0.1, 16), Shift(2.0, 2.0, 17), Shift(-4.0, -1.0, 18)])
    assert apart.confident == 3 and apart.spread > 1 and not apart.measured
    assert apart.describe().startswith("shift not measurable: the 3 of 3 chips that matched")


def _scene(name: str, offsets):
    bench = _load_bench()
    data = shared(*bench.PAIRS[name][0].split("/")).parents[1]
    return bench.measure(name, data, 64, offsets)


def test_dem_hillshade_shift_recovered_within_a_fifth_of_a_pixel():
    rows = _scene("dem_hillshade", [(0.0, 0.0), (0.3, -0.2), (-1.25, 0.75), (-3.0, 2.0)])
    for row in rows:
        assert row["confident"] >= 0.9 * row["chips"], row
        assert row["scene_error"] <= 0.2, row
    assert rows[0]["chip_max"] <= 0.5, rows[0]  # no confident false alarm unshifted


def test_sar_rgb_has_no_confident_false_alarm():
    """SAR -> RGB at 64 px: speckle and layover leave no chip confident; a chip that is must be
    within 1 px of the applied shift (0.5 px unshifted)."""
    rows = _scene("sar_rgb", [(0.0, 0.0), (2.0, 0.0), (-1.25, 0.75)])
    assert rows[0]["confident"] == 0 or rows[0]["chip_max"] <= 0.5, rows[0]
    for row in rows[1:]:
        assert row["confident"] == 0 or row["chip_max"] <= 1.0, row

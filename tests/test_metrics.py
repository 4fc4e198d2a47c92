"""Metrics on known arrays: MAE/MSE/PSNR formulas, SSIM properties, masks, confusion matrices."""

from __future__ import annotations

import math

import pytest
import torch

from geopix2pix import metrics


def _image(seed: int = 0, shape=(1, 2, 40, 48)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(shape, generator=gen)
    # Smooth structure so SSIM has something to measure.
    return torch.nn.functional.avg_pool2d(base, 5, stride=1, padding=2) * 200.0


def test_mae_mse_of_constant_offset():
    ref = _image()
    pred = ref + 3.0
    valid = torch.ones(1, 1, 40, 48, dtype=torch.bool)
    assert torch.allclose(metrics.masked_mae(pred, ref, valid), torch.tensor([3.0, 3.0]).double())
    assert torch.allclose(metrics.masked_mse(pred, ref, valid), torch.tensor([9.0, 9.0]).double())


def test_psnr_identical_is_inf_and_offset_matches_formula():
    ref = _image()
    mse0 = metrics.masked_mse(ref, ref, None)
    assert torch.isinf(metrics.psnr(mse0, 255.0)).all()
    offset = 5.0
    mse = metrics.masked_mse(ref + offset, ref, None)
    expected = 10 * math.log10(255.0**2 / offset**2)
    assert metrics.psnr(mse, 255.0) == pytest.approx(torch.full((2,), expected).double())
    # Per-band data range.
    both = metrics.psnr(mse, torch.tensor([255.0, 2.0]))
    assert both[1].item() == pytest.approx(10 * math.log10(4.0 / 25.0))


def test_ssim_identical_is_one_and_drops_with_noise():
    ref = _image()
    assert metrics.masked_ssim(ref, ref, None, 200.0) == pytest.approx(torch.ones(2).double())
    smap = metrics.ssim_map(ref, ref, 200.0)
    assert smap.shape == ref.shape
    gen = torch.Generator().manual_seed(1)
    small = metrics.masked_ssim(ref + torch.randn(ref.shape, generator=gen) * 2, ref, None, 200.0)
    large = metrics.masked_ssim(ref + torch.randn(ref.shape, generator=gen) * 20, ref, None, 200.0)
    assert (small < 1).all() and (large < small).all()


def test_masked_pixels_are_ignored():
    ref = _image()
    pred = ref.clone()
    valid = torch.ones(1, 1, 40, 48, dtype=torch.bool)
    valid[..., 20:, :] = False
    pred[..., 20:, :] = 1e6  # garbage only where invalid
    pred[..., 25, 3] = math.nan
    assert (metrics.masked_mae(pred, ref, valid) == 0).all()
    assert (metrics.masked_mse(pred, ref, valid) == 0).all()
    assert metrics.masked_ssim(pred, ref, valid, 200.0) == pytest.approx(torch.ones(2).double())
    # Without the mask the garbage counts.
    assert (metrics.masked_mae(torch.nan_to_num(pred), ref, None) > 0).all()
    none_valid = torch.zeros_like(valid)
    assert torch.isnan(metrics.masked_mae(pred, ref, none_valid)).all()


def test_ssim_small_image_and_valid_interior_match():
    ref = _image(shape=(1, 1, 6, 7))
    assert metrics.masked_ssim(ref, ref, None, 200.0) == pytest.approx(torch.ones(1).double())


def test_confusion_matrix_iou_accuracy():
    ref = torch.tensor([[[[1, 1, 2, 2, 5, 9]]]])
    pred = torch.tensor([[[[1, 2, 2, 2, 5, 1]]]])
    valid = torch.tensor([[[[True, True, True, True, True, False]]]])
    cm = metrics.confusion_matrix(pred, ref, valid, classes=[1, 2, 5])
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    iou = metrics.per_class_iou(cm)
    assert iou.tolist() == pytest.approx([0.5, 2 / 3, 1.0])
    assert metrics.pixel_accuracy(cm) == pytest.approx(0.8)
    # Classes given in any order index rows/columns in that order.
    cm2 = metrics.confusion_matrix(pred, ref, valid, classes=[5, 2, 1])
    assert cm2.tolist() == [[1, 0, 0], [0, 2, 0], [0, 1, 1]]

"""Image-quality metrics on torch tensors, restricted to valid pixels.

Shared by training (validation) and `geopix2pix evaluate`. Tensors are (N, C, H, W); a valid mask
is bool (N, 1, H, W) (or (N, C, H, W)), True where a pixel counts. Per-band results: (C,) tensors.

- `masked_mae`, `masked_mse`: mean absolute / squared error over valid pixels (NaN for a band with
  no valid pixel).
- `psnr(mse, data_range)`: 10*log10(data_range**2 / mse), +inf where mse == 0. The data range is the
  caller's statement (e.g. 2.0 for the [-1, 1] training scale, 255 for uint8 data).
- `ssim_map` / `masked_ssim`: SSIM with a Gaussian window (11, sigma 1.5; Wang et al. 2004, K1 0.01,
  K2 0.03), same-size output via reflect padding. With a mask, the local means, variances and
  covariance are Gaussian-weighted over the valid pixels only, so invalid pixels never leak in.
- `confusion_matrix`, `per_class_iou`, `pixel_accuracy` for categorical maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "masked_mae",
    "masked_mse",
    "psnr",
    "gaussian_kernel",
    "ssim_map",
    "masked_ssim",
    "confusion_matrix",
    "per_class_iou",
    "pixel_accuracy",
]

K1 = 0.01
K2 = 0.03


def _expand_valid(valid: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The mask as float (N, C, H, W) matching `like` (all ones when None)."""
    if valid is None:
        return torch.ones_like(like)
    return valid.to(like.dtype).expand_as(like)


def _masked_mean(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Per-channel mean of (N, C, H, W) values over valid pixels; NaN where none is valid, or
    where a valid pixel's value is (invalid pixels may hold anything, NaN included)."""
    weight = _expand_valid(valid, values)
    values = torch.where(weight > 0, values, torch.zeros((), dtype=values.dtype))
    total = (values * weight).sum(dim=(0, 2, 3))
    count = weight.sum(dim=(0, 2, 3))
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


def masked_mae(pred: torch.Tensor, ref: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean absolute error per band over valid pixels -> (C,)."""
    return _masked_mean((pred.double() - ref.double()).abs(), valid)


def masked_mse(pred: torch.Tensor, ref: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error per band over valid pixels -> (C,)."""
    return _masked_mean((pred.double() - ref.double()) ** 2, valid)


def psnr(mse: torch.Tensor | float, data_range: torch.Tensor | float) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB from an MSE: 10*log10(range^2 / mse); +inf when mse == 0."""
    mse_t = torch.as_tensor(mse, dtype=torch.float64)
    range_t = torch.as_tensor(data_range, dtype=torch.float64)
    value = 10.0 * torch.log10(range_t**2 / mse_t.clamp_min(1e-300))
    return torch.where(mse_t == 0, torch.full_like(value, math.inf), value)


def gaussian_kernel(window: int = 11, sigma: float = 1.5, dtype=torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian of `window` taps."""
    x = torch.arange(window, dtype=dtype) - (window - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter per channel with reflect padding; output has x's size."""
    channels = x.shape[1]
    radius = kernel.numel() // 2
    h, w = x.shape[-2:]
    mode = "reflect" if min(h, w) > radius else "replicate"
    x = F.pad(x, (radius, radius, radius, radius), mode=mode)
    kx = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    ky = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    x = F.conv2d(x, kx, groups=channels)
    return F.conv2d(x, ky, groups=channels)


def _range_per_channel(data_range, channels: int) -> torch.Tensor:
    """data_range as a float64 (1, C, 1, 1) tensor."""
    r = torch.as_tensor(data_range, dtype=torch.float64).flatten()
    if r.numel() == 1:
        r = r.repeat(channels)
    return r.view(1, channels, 1, 1)


def ssim_map(
    pred: torch.Tensor,
    ref: torch.Tensor,
    data_range: torch.Tensor | float,
    window: int = 11,
    sigma: float = 1.5,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Local SSIM (N, C, H, W), float64. `data_range` is a number or one per band.

    With `valid`, local statistics are Gaussian-weighted averages over valid pixels only; the map is
    NaN where a window holds no valid pixel.
    """
    x = torch.nan_to_num(pred.double())
    y = torch.nan_to_num(ref.double())
    kernel = gaussian_kernel(window, sigma).to(x.device)
    m = _expand_valid(valid, x)
    x, y = x * m, y * m
    weight = _blur(m, kernel)
    safe = weight.clamp_min(1e-12)
    mu_x = _blur(x, kernel) / safe
    mu_y = _blur(y, kernel) / safe
    var_x = (_blur(x * x, kernel) / safe - mu_x**2).clamp_min(0)
    var_y = (_blur(y * y, kernel) / safe - mu_y**2).clamp_min(0)
    cov = _blur(x * y, kernel) / safe - mu_x * mu_y
    rng = _range_per_channel(data_range, x.shape[1]).to(x.device)
    c1 = (K1 * rng) ** 2
    c2 = (K2 * rng) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    out = num / den
    return torch.where(weight > 1e-6, out, torch.full_like(out, math.nan))


def masked_ssim(
    pred: torch.Tensor,
    ref: torch.Tensor,
    valid: torch.Tensor | None,
    data_range: torch.Tensor | float,
    window: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Mean SSIM per band over valid pixels -> (C,)."""
    smap = ssim_map(pred, ref, data_range, window, sigma, valid=valid)
    return _masked_mean(torch.nan_to_num(smap), valid)


def confusion_matrix(
    pred: torch.Tensor, ref: torch.Tensor, valid: torch.Tensor | None, classes: Sequence[int]
) -> torch.Tensor:
    """Counts (K, K) int64: row = reference class, column = predicted class, over valid pixels.

    Pixels whose reference or prediction is not one of `classes` are not counted.
    """
    values = torch.as_tensor(list(classes), dtype=torch.float64)
    k = values.numel()
    p = pred.double().flatten()
    r = ref.double().flatten()
    keep = torch.ones_like(p, dtype=torch.bool)
    if valid is not None:
        keep = valid.expand_as(pred).flatten().bool()
    sorted_vals, order = torch.sort(values)
    pi = torch.searchsorted(sorted_vals, p).clamp_max(k - 1)
    ri = torch.searchsorted(sorted_vals, r).clamp_max(k - 1)
    keep = keep & (sorted_vals[pi] == p) & (sorted_vals[ri] == r)  # (not in place: `valid`)
    pi, ri = order[pi[keep]], order[ri[keep]]
    flat = torch.bincount(ri * k + pi, minlength=k * k)
    return flat.view(k, k)


def per_class_iou(cm: torch.Tensor) -> torch.Tensor:
    """IoU per class from a confusion matrix: TP / (TP + FP + FN); NaN for an absent class."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))


def pixel_accuracy(cm: torch.Tensor) -> float:
    """Fraction of counted pixels whose predicted class equals the reference (NaN when empty)."""
    total = float(cm.sum())
    return float(cm.diag().sum()) / total if total > 0 else math.nan

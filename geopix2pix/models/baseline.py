"""The simple baselines a model file carries, as per-pixel affine maps on the scaled values.

Training fits two baselines (`geopix2pix.training.baselines`): for values, ``linear`` (the
per-band least-squares map of the source bands with an intercept) and ``constant`` (the train
mean of each band); for a class map, ``linear`` is the nearest class mean of the source bands
and ``constant`` the majority class, and a third, ``discriminant``, is Fisher's linear
discriminant (the class means, their pooled covariance and the train class shares as priors).
Each is an affine map of a pixel's source values on the [-1, 1] scale the generator sees,
``weight @ x + bias``: a nearest class mean's scores are ``2 mu_k . x - |mu_k|^2`` (the squared
distance but for |x|^2, the same for every class), the discriminant's ``(S^-1 mu_k) . x -
mu_k . S^-1 mu_k / 2 + log p_k`` (log-posteriors but for a term the same for every class), the
majority class's a one-hot bias. So `PixelAffine`, a 1x1 "generator", stands in for the model in
the unchanged prediction pipeline (``predict --baseline``), and `ResidualGenerator` adds the
map a generator trained on the residual starts from (``train --residual linear``: the linear map
of values, a class map's discriminant) back to it. A CycleGAN file carries ``constant`` alone,
the train mean of the domain it writes (`geopix2pix.training.cyclegan_baselines`): the others
are fitted on pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from geopix2pix.errors import ModelError
from geopix2pix.settings.train import RESIDUALS

from .schema import MAX_FLOAT, shown


@dataclass(frozen=True)
class PixelMap:
    """``out = weight @ x + bias`` per pixel: ``weight`` (out bands) x (in bands)."""

    weight: tuple[tuple[float, ...], ...]
    bias: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"weight": [list(row) for row in self.weight], "bias": list(self.bias)}

    @classmethod
    def from_dict(cls, data: Any) -> PixelMap:
        """ValueError unless a {weight: rows of numbers, bias: numbers}, all finite, one row
        per bias value and rows of one length."""
        if not isinstance(data, dict):
            raise ModelError(f"a baseline map must be an object, not {shown(data)}")
        weight, bias = data.get("weight"), data.get("bias")
        if not isinstance(weight, list) or not all(isinstance(r, list) for r in weight):
            raise ModelError("a baseline map's weight must be a list of rows")
        rows = tuple(_finite_numbers(row, "weight") for row in weight)
        bias = _finite_numbers(bias, "bias")
        if len(rows) != len(bias) or len({len(row) for row in rows}) > 1:
            raise ModelError(f"a baseline map's weight ({len(rows)} rows) must have one row of "
                             f"equal length per bias value ({len(bias)})")
        return cls(rows, bias)

    @property
    def shape(self) -> tuple[int, int]:
        """(out bands, in bands)."""
        return len(self.bias), len(self.weight[0]) if self.weight else 0


def _finite_numbers(values: Any, name: str) -> tuple[float, ...]:
    if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ModelError(f"a baseline map's {name} must be a list of numbers")
    if not all(abs(v) <= MAX_FLOAT for v in values):  # (NaN too; no overflow for a huge int)
        raise ModelError(f"a baseline map's {name} holds a NaN, infinite or huge number")
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class BaselineMaps:
    """The baselines of a model file (``ModelMetadata.baselines``), and whether its generator
    predicts the residual over ``linear`` (``residual == "linear"``). A Pix2Pix file carries
    ``linear`` and ``constant``; a CycleGAN file ``constant`` alone (the train mean of its
    output domain: the linear maps are fitted on pairs)."""

    linear: PixelMap | None
    constant: PixelMap
    residual: str = "none"
    discriminant: PixelMap | None = None  # a class map's (None for values)

    def to_dict(self) -> dict[str, Any]:
        return {**({"linear": self.linear.to_dict()} if self.linear else {}),
                "constant": self.constant.to_dict(), "residual": self.residual,
                **({"discriminant": self.discriminant.to_dict()} if self.discriminant else {})}

    @classmethod
    def from_dict(cls, data: Any) -> BaselineMaps:
        """ValueError when malformed (see `PixelMap.from_dict`): ``constant`` is required, the
        maps present agree in shape, and a residual needs the map it starts from."""
        if not isinstance(data, dict):
            raise ModelError(f"baselines must be an object, not {shown(data)}")
        residual = data.get("residual", "none")
        if residual not in RESIDUALS:
            raise ModelError(f"baselines: unknown residual {shown(residual)}")
        if data.get("constant") is None:
            raise ModelError("baselines: the constant map is missing")
        linear, discriminant = (None if data.get(name) is None else PixelMap.from_dict(data[name])
                                for name in ("linear", "discriminant"))
        maps = cls(linear, PixelMap.from_dict(data["constant"]), residual, discriminant)
        if len({m.shape for m in maps.present().values()}) > 1:
            raise ModelError(f"baselines: the {', '.join(maps.present())} maps differ in shape")
        if residual != "none" and linear is None and discriminant is None:
            raise ModelError(f"baselines: residual {shown(residual)} without the linear map it "
                             "starts from")
        return maps

    def present(self) -> dict[str, PixelMap]:
        """The maps these baselines hold, by name."""
        maps = {"linear": self.linear, "constant": self.constant,
                "discriminant": self.discriminant}
        return {name: m for name, m in maps.items() if m is not None}

    @property
    def start(self) -> PixelMap:
        """The map a generator trained on the residual starts from and adds to: a class map's
        discriminant (when fitted), else the linear map (ModelError without either)."""
        start = self.discriminant or self.linear
        if start is None:
            raise ModelError("baselines: no linear map for a residual generator to start from")
        return start

    def check_shape(self, in_channels: int, out_channels: int) -> None:
        """ValueError unless the maps take ``in_channels`` and give ``out_channels``."""
        for pixel_map in self.present().values():
            if pixel_map.shape != (out_channels, in_channels):
                raise ModelError(f"baselines map {pixel_map.shape[1]} bands to "
                                 f"{pixel_map.shape[0]}, the generator {in_channels} to "
                                 f"{out_channels}")

    def names(self) -> tuple[str, ...]:
        """The baselines these maps hold."""
        return tuple(self.present())

    def map(self, name: str) -> PixelMap:
        """The ``name`` baseline's map; ModelError when these maps have none of that name."""
        maps = self.present()
        if name in maps:
            return maps[name]
        if self.linear is None:
            raise ModelError(f"no {name} baseline: a CycleGAN model file carries only the "
                             "constant (train mean) baseline; the linear ones are fitted on "
                             "pairs")
        raise ModelError(f"no {name} baseline: a linear discriminant is fitted for a class "
                         "map (--categorical) only")


def check_for_family(maps: BaselineMaps, family: str | None) -> None:
    """ModelError unless `maps` are what a model file of `family` carries: a CycleGAN file the
    constant (train mean) alone, without a residual (linear maps are fitted on pairs); a
    Pix2Pix file (no family recorded) linear and constant at least."""
    if family == "cyclegan":
        if maps.names() != ("constant",) or maps.residual != "none":
            raise ModelError("a CycleGAN file carries the constant (train mean) baseline alone, "
                             "without a residual")
    elif maps.linear is None:
        raise ModelError("the linear map is missing: a Pix2Pix file carries linear and constant")


class PixelAffine(nn.Module):
    """A `PixelMap` as a generator: (N, in, H, W) -> (N, out, H, W); clamped to [-1, 1] like
    the U-Net's tanh for values (``clamp``), raw class scores otherwise. Channels past ``in``
    (a validity band) are not the map's and left out."""

    def __init__(self, pixel_map: PixelMap, clamp: bool = True) -> None:
        super().__init__()
        # fixed parameters (not learned), so that code asking a generator for its parameters'
        # device finds it
        weight = torch.tensor(pixel_map.weight, dtype=torch.float32).reshape(pixel_map.shape)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(torch.tensor(pixel_map.bias, dtype=torch.float32),
                                 requires_grad=False)
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # float32 under mixed precision too
            out = torch.einsum("oi,nihw->nohw", self.weight, x[:, :self.weight.shape[1]].float())
            out = out + self.bias[None, :, None, None]
        return out.clamp(-1.0, 1.0) if self.clamp else out


class ResidualGenerator(nn.Module):
    """``clamp(start(x) + generator(x), -1, 1)``: a generator trained on the residual over a
    baseline (`BaselineMaps.start`); a class map's scores are not clamped (``clamp`` False).
    Its state is the inner generator's alone (``inner``), so the model file holds that
    generator and says in its metadata to add the map back (`with_residual`)."""

    def __init__(self, inner: nn.Module, start: PixelMap, clamp: bool = True) -> None:
        super().__init__()
        self.inner = inner
        self.linear = PixelAffine(start, clamp=False)
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x) + self.inner(x)
        return out.clamp(-1.0, 1.0) if self.clamp else out


def zero_output_layer(generator: nn.Module) -> None:
    """Zero the weights and bias of the generator's last convolution (its output layer: the
    U-Net's outermost up-convolution, an smp model's head), so that an untrained residual
    generator adds nothing and starts exactly at the linear baseline."""
    convs = [m for m in generator.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    if convs:
        with torch.no_grad():
            convs[-1].weight.zero_()
            if convs[-1].bias is not None:
                convs[-1].bias.zero_()


def with_residual(generator: nn.Module, maps: BaselineMaps | None,
                  categorical: bool = False) -> nn.Module:
    """The generator as it predicts: wrapped in `ResidualGenerator` when ``maps`` says it was
    trained on the residual over a baseline (``categorical``: class scores, not clamped)."""
    if maps is None or maps.residual == "none":
        return generator
    device = next(generator.parameters()).device
    return ResidualGenerator(generator, maps.start, clamp=not categorical).to(device)


def baseline_generator(maps: BaselineMaps, name: str, categorical: bool,
                       device: torch.device | str = "cpu") -> nn.Module:
    """The ``name`` baseline (linear, constant, a class map's discriminant) as a generator in
    eval mode."""
    return PixelAffine(maps.map(name), clamp=not categorical).to(device).eval()

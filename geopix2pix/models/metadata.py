"""`ModelMetadata`: what a model file says besides its weights, written by training and read
by prediction through this one dataclass.

Prediction reads the model file alone, so it must say which bands go in and come out, their
dtypes and nodata, how values were scaled (and so how to scale back), the band metadata that
gives the values their meaning (units, scales, offsets, colour interpretation and table, which
predict writes to its output), the chip size, and the CRS and pixel size of the training data
(to warn when a scene differs), plus the training options and the validation scores of these
weights. It is stored as plain JSON (`to_dict`); numbers JSON cannot hold (a NaN nodata, an
infinite PSNR) are written as the strings "nan", "inf" and "-inf" (`geopix2pix.jsonvalues`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from geopix2pix.chips.manifest import DatasetInfo, SideInfo
from geopix2pix.chips.scaling import Scaling
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.jsonvalues import decode_number, encode_number, jsonable
from geopix2pix.raster.band_metadata import BandMetadata

from .baseline import BaselineMaps
from .io import LoadedModel


@dataclass(frozen=True)
class SideMetadata:
    """One side (source or target) of the training data, as the model file records it."""

    bands: list[int]
    dtype: str
    nodata: float | None
    descriptions: list[str | None]
    scaling: Scaling
    raster_bands: int | None = None  # bands of the rasters the chips were cut from (None: unknown)
    band_metadata: BandMetadata = field(default_factory=BandMetadata)  # none in older files
    # a categorical target's class codes, in the order of the generator's output channels
    # (None: values regressed on the scaling's [-1, 1] scale)
    classes: list[int] | None = None

    @classmethod
    def of(cls, side: SideInfo, classes: list[int] | None = None) -> SideMetadata:
        """What a chips folder's side (its dataset.json) tells prediction, with the class codes
        a categorical model was trained on."""
        return cls(list(side.bands), side.dtype, side.nodata, list(side.descriptions),
                   side.scaling, side.raster_bands, side.band_metadata,
                   None if classes is None else [int(c) for c in classes])

    def to_dict(self) -> dict[str, Any]:
        return {"bands": list(self.bands), "dtype": self.dtype,
                "nodata": encode_number(self.nodata), "descriptions": list(self.descriptions),
                **self.band_metadata.to_dict(), "scaling": self.scaling.to_dict(),
                "raster_bands": self.raster_bands, "classes": self.classes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SideMetadata:
        count, classes = data.get("raster_bands"), data.get("classes")
        return cls(list(data.get("bands") or []), str(data["dtype"]),
                   decode_number(data.get("nodata")), list(data.get("descriptions") or []),
                   Scaling.from_dict(data["scaling"]), int(count) if count else None,
                   BandMetadata.from_dict(data),
                   None if classes is None else [int(c) for c in classes])


@dataclass(frozen=True)
class ModelMetadata:
    """The metadata of a model file (`LoadedModel.metadata` as a dataclass: `ModelMetadata.of`).

    ``crs`` is the training CRS as dataset.json gives it (a string: EPSG code or WKT),
    ``pixel_size`` its (x, y) pixel size; ``training`` holds the training options with the epoch
    and step of these weights, ``validation`` their validation scores."""

    source: SideMetadata
    target: SideMetadata
    chip_size: int
    crs: str | None = None
    pixel_size: tuple[float, float] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, float | None] = field(default_factory=dict)
    version: str = ""
    # the simple baselines fitted on the train chips (`models.baseline`; None in older files)
    baselines: BaselineMaps | None = None

    @classmethod
    def of_training(cls, info: DatasetInfo, options: dict[str, Any], epoch: int, step: int,
                    validation: dict[str, float] | None = None,
                    classes: list[int] | None = None,
                    baselines: BaselineMaps | None = None) -> ModelMetadata:
        """The metadata of weights trained on the chips folder `info` describes (`classes`: the
        class codes of a categorical target, in the order of the generator's channels)."""
        from geopix2pix import __version__

        return cls(SideMetadata.of(info.source), SideMetadata.of(info.target, classes),
                   int(info.chip_size), info.crs, _pixel_size(info.pixel_size),
                   {**options, "epoch": int(epoch), "step": int(step)},
                   {k: float(v) for k, v in (validation or {}).items()}, __version__,
                   baselines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the model file's header, besides the generator's description)."""
        return {"source": self.source.to_dict(), "target": self.target.to_dict(),
                "chip_size": int(self.chip_size), "crs": self.crs,
                "pixel_size": list(self.pixel_size) if self.pixel_size else None,
                "training": jsonable(self.training),
                "validation": jsonable(self.validation), "version": self.version,
                **({"baselines": self.baselines.to_dict()} if self.baselines else {})}

    @classmethod
    def from_dict(cls, data: dict[str, Any], chip_size: int | None = None) -> ModelMetadata:
        """Read `to_dict`'s output; `chip_size` stands in for a file that does not record one.
        KeyError, TypeError or ValueError when what prediction needs is missing."""
        return cls(SideMetadata.from_dict(data["source"]), SideMetadata.from_dict(data["target"]),
                   int(data.get("chip_size") or chip_size),
                   str(data["crs"]) if data.get("crs") else None,
                   _pixel_size(data["pixel_size"]) if data.get("pixel_size") else None,
                   dict(data.get("training") or {}),
                   {k: decode_number(v) for k, v in (data.get("validation") or {}).items()},
                   str(data.get("version") or ""),
                   BaselineMaps.from_dict(data["baselines"]) if data.get("baselines") else None)

    @property
    def categorical(self) -> bool:
        """Whether the model gives one score per class of a categorical target (argmax: the
        class code) rather than the target's values."""
        return self.target.classes is not None

    @classmethod
    def of(cls, model: LoadedModel, path: str = "model") -> ModelMetadata:
        """A loaded model's metadata; GeoPix2PixError naming `path` when it lacks what
        prediction needs."""
        try:
            metadata = cls.from_dict(model.metadata, model.spec.chip_size)
        except (KeyError, TypeError, ValueError) as exc:
            raise GeoPix2PixError(
                f"{path}: model metadata lacks what prediction needs ({exc!r}); use a model file "
                "written by `geopix2pix train`"
            ) from None
        classes, spec = metadata.target.classes, model.spec
        if (spec.output == "logits") != (classes is not None) or (
                classes is not None and len(classes) != spec.out_channels):
            raise GeoPix2PixError(
                f"{path}: its generator gives {spec.out_channels} {spec.output} channel(s) but "
                f"its metadata lists {'no' if classes is None else len(classes)} target classes; "
                "use a model file written by `geopix2pix train`")
        return metadata


def _pixel_size(values) -> tuple[float, float]:
    x, y = (float(v) for v in values)
    return x, y

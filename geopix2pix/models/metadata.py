"""`ModelMetadata`: what a model file says besides its weights, written by training and read
by prediction through this one dataclass.

Prediction reads the model file alone, so it must say which bands go in and come out, their
dtypes and nodata, how values were scaled (and so how to scale back), the band metadata that
gives the values their meaning (units, scales, offsets, colour interpretation and table, which
predict writes to its output), the chip size, and the CRS and pixel size of the training data
(to warn when a scene differs), plus the training options and the validation scores of these
weights. It is stored as plain JSON (`to_dict`); numbers JSON cannot hold (a NaN nodata, an
infinite PSNR) are written as the strings "nan", "inf" and "-inf" (`geopix2pix.jsonvalues`).
Read back, every value is checked (`schema.py`: raster dtypes only, finite and ordered scaling,
nodata and class codes the dtype can hold, bounded sizes), and `check_against` checks that the
metadata describes the generator of the file (band counts, classes, chip size).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from geopix2pix.chips.manifest import DatasetInfo, SideInfo
from geopix2pix.chips.scaling import Scaling
from geopix2pix.chips.stats import MAX_CLASSES
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.jsonvalues import encode_number, jsonable
from geopix2pix.raster.band_metadata import BandMetadata
from geopix2pix.settings.export import SCALING_MODES, TARGET_SCALINGS  # (invertible)

from .baseline import BaselineMaps, check_for_family
from .run_files import RUN_MODELS
from .schema import (
    MAX_BAND_INDEX,
    MAX_CHIP_SIZE,
    MIN_CHIP_SIZE,
    SchemaError,
    ascending,
    fits_dtype,
    integer,
    mapping,
    number,
    optional,
    raster_dtype,
    required,
    sequence,
    shown,
    text,
)

if TYPE_CHECKING:
    from .factory import GeneratorSpec
    from .io import LoadedModel

BAND_LISTS = ("units", "scales", "offsets", "colorinterp")  # band metadata, one per band
MAX_COLOURS = 65536  # a colour table indexes uint8 or uint16 values
MAX_CLIP = 1000.0  # a scaling's clip: CENTRE_CLIP today; beyond this no value is an outlier
# the model family that wrote a file (none recorded: pix2pix) and, of a family of two
# generators, which one the file holds
DIRECTIONS = {"pix2pix": (None,), "cyclegan": tuple(RUN_MODELS)}


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
    def from_dict(cls, data: Any, where: str = "side") -> SideMetadata:
        """Read `to_dict`'s output, checking every value (`where`: "source" or "target");
        SchemaError naming the first that is missing or wrong."""
        data = mapping(data, where)
        dtype = raster_dtype(required(data, "dtype", where), f"{where}.dtype")
        scaling = _scaling(required(data, "scaling", where), f"{where}.scaling")
        count = len(scaling.low)
        bands = [integer(b, f"{where}.bands[{i}]", 1, MAX_BAND_INDEX)
                 for i, b in enumerate(sequence(data.get("bands") or [], f"{where}.bands"))]
        nodata = optional(data, "nodata", number_or_nan, where)
        if nodata is not None:
            fits_dtype(nodata, dtype, f"{where}.nodata")
        descriptions = [None if d is None else text(d, f"{where}.descriptions[{i}]")
                        for i, d in enumerate(sequence(data.get("descriptions") or [],
                                                       f"{where}.descriptions"))]
        raster_bands = optional(data, "raster_bands", _count, where)
        try:
            band_metadata = BandMetadata.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise SchemaError(where, f"band metadata: {exc}") from None
        classes = optional(data, "classes", _classes, where)
        side = cls(bands, dtype, nodata, descriptions, scaling,
                   raster_bands or None, band_metadata, classes)
        side._check_counts(count, where)
        return side

    def _check_counts(self, count: int, where: str) -> None:
        """Refuse lists of another length than the side's bands (`count`: its scaling's)."""
        listed = {"bands": self.bands, "descriptions": self.descriptions,
                  **{key: getattr(self.band_metadata, key) for key in BAND_LISTS}}
        for key, values in listed.items():
            if values and len(values) != count:
                raise SchemaError(f"{where}.{key}", f"lists {len(values)} band(s) but "
                                                    f"{where}.scaling {count}")
        colormap = self.band_metadata.colormap or ()
        if len(colormap) > MAX_COLOURS:
            raise SchemaError(f"{where}.colormap", f"has {len(colormap)} entries; a colour "
                                                   f"table has at most {MAX_COLOURS}")
        if self.bands and self.raster_bands is not None and max(self.bands) > self.raster_bands:
            raise SchemaError(f"{where}.bands", f"has band {max(self.bands)} of rasters of "
                                                f"{self.raster_bands} (raster_bands)")
        for code in self.classes or []:
            fits_dtype(code, self.dtype, f"{where}.classes")
        if self.classes and self.nodata in self.classes:
            raise SchemaError(f"{where}.classes", f"include {self.nodata:g}, its nodata")


def number_or_nan(value: Any, where: str) -> float:
    """A number, NaN and infinities included (a nodata may be NaN)."""
    return number(value, where, finite=False)


def _count(value: Any, where: str) -> int:
    return integer(value, where, 0, MAX_BAND_INDEX)


def _scaling(data: Any, where: str) -> Scaling:
    """A side's scaling: a known mode and, per band, finite bounds with low <= high."""
    data = mapping(data, where)
    mode = required(data, "mode", where)
    if mode not in SCALING_MODES:
        raise SchemaError(f"{where}.mode", f"is {shown(mode)}; expected one of "
                                           f"{', '.join(SCALING_MODES)}")
    low, high = (sequence(required(data, key, where), f"{where}.{key}")
                 for key in ("low", "high"))
    if not low or len(low) != len(high):
        raise SchemaError(where, f"has {len(low)} low and {len(high)} high value(s); expected "
                                 "as many, one per band")
    low = [number(v, f"{where}.low[{i}]") for i, v in enumerate(low)]
    high = [number(v, f"{where}.high[{i}]") for i, v in enumerate(high)]
    for index, (a, b) in enumerate(zip(low, high)):
        if a > b:
            raise SchemaError(f"{where}.low[{index}]", f"{a:g} is above high {b:g}")
    clip = number(data.get("clip", 1.0), f"{where}.clip")  # files from before it: 1
    if not 1.0 <= clip <= MAX_CLIP:
        raise SchemaError(f"{where}.clip", f"is {clip:g}; expected 1 to {MAX_CLIP:g}")
    return Scaling(str(mode), tuple(low), tuple(high), clip)


def _baselines(value: Any, where: str) -> BaselineMaps:
    """The baselines' per-pixel maps (`models.baseline`): finite numbers, agreeing shapes."""
    try:
        return BaselineMaps.from_dict(value)
    except ValueError as exc:
        raise SchemaError(where, str(exc)) from None


def _classes(value: Any, where: str) -> list[int]:
    """A categorical target's class codes: 2 to MAX_CLASSES integers, ascending."""
    codes = [integer(c, f"{where}[{i}]") for i, c in enumerate(sequence(value, where,
                                                                         MAX_CLASSES))]
    if len(codes) < 2:
        raise SchemaError(where, f"lists {len(codes)} class(es); a class map has at least 2")
    ascending(codes, where)
    return codes


@dataclass(frozen=True)
class ModelMetadata:
    """The metadata of a model file (`LoadedModel.metadata` as a dataclass: `ModelMetadata.of`).

    ``crs`` is the training CRS as dataset.json gives it (a string: EPSG code or WKT),
    ``pixel_size`` its (x, y) pixel size, ``ground_pixel_size`` that in metres on the ground
    (None in files from before it); ``training`` holds the training options with the epoch
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
    family: str | None = None  # the model family (None: pix2pix, which files do not record)
    direction: str | None = None  # cyclegan: "a_to_b" (source -> target) or "b_to_a"
    ground_pixel_size: tuple[float, float] | None = None

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
                   baselines, ground_pixel_size=_ground(info.ground_pixel_size))

    def of_family(self, family: str, direction: str | None) -> ModelMetadata:
        """This metadata for the generator of ``family`` translating in ``direction``: for
        "b_to_a", from the target side to the source side (the sides swapped)."""
        _check_family(family, direction)
        source, target = (self.target, self.source) if direction == "b_to_a" \
            else (self.source, self.target)
        return dataclasses.replace(self, source=source, target=target, family=family,
                                   direction=direction)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the model file's header, besides the generator's description)."""
        return {"source": self.source.to_dict(), "target": self.target.to_dict(),
                "chip_size": int(self.chip_size), "crs": self.crs,
                "pixel_size": list(self.pixel_size) if self.pixel_size else None,
                "training": jsonable(self.training),
                "validation": jsonable(self.validation), "version": self.version,
                **({"baselines": self.baselines.to_dict()} if self.baselines else {}),
                **({"family": self.family, "direction": self.direction} if self.family
                   else {}),
                **({"ground_pixel_size": list(self.ground_pixel_size)}
                   if self.ground_pixel_size else {})}

    @classmethod
    def from_dict(cls, data: dict[str, Any], chip_size: int | None = None) -> ModelMetadata:
        """Read `to_dict`'s output, checking every value; `chip_size` stands in for a file that
        does not record one. SchemaError (a ValueError) naming the first value that is missing
        or wrong.

        A field that files may lack (written before it existed) is read with `schema.optional`
        and a reader that checks it (absent or null: None): a new one is a dataclass field, a
        line here and a key in `to_dict`; one that must agree with the generator is checked in
        `check_against`."""
        data = mapping(data, "metadata")
        target = SideMetadata.from_dict(required(data, "target", ""), "target")
        if target.scaling.mode not in TARGET_SCALINGS:
            raise SchemaError("target.scaling.mode", f"is {shown(target.scaling.mode)}, which "
                                                     f"cannot be inverted; expected one of "
                                                     f"{', '.join(TARGET_SCALINGS)}")
        validation = optional(data, "validation", mapping) or {}
        family = optional(data, "family", text)
        direction = optional(data, "direction", text)
        if family is not None or direction is not None:
            _check_family(family, direction)
        return cls(
            source=SideMetadata.from_dict(required(data, "source", ""), "source"),
            target=target,
            chip_size=optional(data, "chip_size", _chip_size) or _chip_size(chip_size,
                                                                            "chip_size"),
            crs=optional(data, "crs", text),
            pixel_size=optional(data, "pixel_size", _pixel_size),
            training=optional(data, "training", mapping) or {},
            validation={k: optional(validation, k, number_or_nan, "validation")
                        for k in validation},
            version=optional(data, "version", text) or "",
            baselines=optional(data, "baselines", _baselines), family=family,
            direction=direction,
            ground_pixel_size=optional(data, "ground_pixel_size", _pixel_size))

    def check_against(self, spec: GeneratorSpec) -> None:
        """Refuse metadata that does not describe the generator `spec`: its band counts, its
        output and classes, its chip size (SchemaError)."""
        if self.chip_size != spec.chip_size:
            raise SchemaError("chip_size", f"is {self.chip_size} but the generator was built "
                                           f"for {spec.chip_size}-px chips")
        _check_channels(self.source, "source", spec.source_bands, "takes")
        classes = self.target.classes
        if (spec.output == "logits") != (classes is not None) or (
                classes is not None and len(classes) != spec.out_channels):
            listed = "no" if classes is None else len(classes)
            raise SchemaError("target.classes", f"lists {listed} class(es) but the generator "
                                                f"gives {spec.out_channels} {spec.output} "
                                                "channel(s)")
        _check_channels(self.target, "target", 1 if classes else spec.out_channels, "gives")
        if self.baselines is not None:
            try:
                self.baselines.check_shape(spec.source_bands, spec.out_channels)
                check_for_family(self.baselines, self.family)
            except ValueError as exc:
                raise SchemaError("baselines", str(exc)) from None
            _check_discriminant(self.baselines, classes is not None)
            trained = self.training.get("residual", self.baselines.residual)
            if trained != self.baselines.residual:  # what prediction adds back to G's output
                given = shown(trained).strip("'")
                raise SchemaError("baselines.residual", f"is {shown(self.baselines.residual)} but "
                                                        "the generator was trained with "
                                                        f"--residual {given}")

    @property
    def categorical(self) -> bool:
        """Whether the model gives one score per class of a categorical target (argmax: the
        class code) rather than the target's values."""
        return self.target.classes is not None

    @classmethod
    def of(cls, model: LoadedModel, path: str = "model") -> ModelMetadata:
        """A loaded model's metadata; GeoPix2PixError naming `path` when it lacks what
        prediction needs or does not fit the model's generator."""
        if not hasattr(model, "metadata") or not hasattr(model, "spec"):
            raise GeoPix2PixError(f"ModelMetadata.of takes a loaded model "
                                  f"(geopix2pix.load_model(path)), not {type(model).__name__}")
        try:
            metadata = cls.from_dict(model.metadata, model.spec.chip_size)
            metadata.check_against(model.spec)
        except SchemaError as exc:
            raise GeoPix2PixError(metadata_error(path, exc)) from None
        return metadata


def metadata_error(path: object, exc: SchemaError) -> str:
    """The one line of a model file whose metadata `exc` refused."""
    what = "lacks what prediction needs" if exc.missing else "is invalid"
    return (f"{path}: its model metadata {what} ({exc}); the file is damaged or was edited: "
            "use a model file written by `geopix2pix train`")


def _check_family(family: str | None, direction: str | None) -> None:
    """SchemaError unless ``family`` is a known one and ``direction`` one of its generators."""
    if family not in DIRECTIONS:
        raise SchemaError("family", f"is {shown(family)}; expected one of "
                                    f"{', '.join(DIRECTIONS)}")
    if direction not in DIRECTIONS[family]:
        expected = ", ".join(str(d) for d in DIRECTIONS[family])
        raise SchemaError("direction", f"is {shown(direction)}; a {family} model file holds "
                                       f"{expected}")


def _check_discriminant(baselines: BaselineMaps, categorical: bool) -> None:
    """A linear discriminant belongs to a class map, and a class map's residual generator starts
    from one (none written otherwise): refuse files that say otherwise (SchemaError)."""
    if baselines.discriminant is not None and not categorical:
        raise SchemaError("baselines.discriminant", "is for a class map; this model gives values")
    if categorical and baselines.residual != "none" and baselines.discriminant is None:
        raise SchemaError("baselines.discriminant", "is missing: a class map's residual "
                                                    "generator starts from it")


def _check_channels(side: SideMetadata, where: str, channels: int, verb: str) -> None:
    count = len(side.scaling.low)
    if count != channels:
        raise SchemaError(f"{where}.scaling", f"is for {count} band(s) but the generator "
                                              f"{verb} {channels}")


def _ground(values: Any) -> tuple[float, float] | None:
    """dataset.json's ground pixel size (None in folders from before it)."""
    return None if values is None else _pixel_size(values, "ground_pixel_size")


def _chip_size(value: Any, where: str) -> int:
    return integer(value, where, MIN_CHIP_SIZE, MAX_CHIP_SIZE)


def _pixel_size(values: Any, where: str = "pixel_size") -> tuple[float, float]:
    values = sequence(values, where)
    if len(values) != 2:
        raise SchemaError(where, f"has {len(values)} values; expected 2 (x, y)")
    x, y = (number(v, f"{where}[{i}]") for i, v in enumerate(values))
    if not (x > 0 and y > 0):
        raise SchemaError(where, f"is {x:g} x {y:g}; expected positive sizes")
    return x, y

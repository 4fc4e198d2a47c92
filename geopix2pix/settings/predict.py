"""`PredictOptions`: the options of `predict` (named like the CLI's: ``--batch-size`` ->
``batch_size``), their defaults and their checks; `PredictKeywords` names them with their types
for type checkers and IDEs (``**options: Unpack[PredictKeywords]``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TypedDict

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models.baseline import BASELINES
from geopix2pix.prediction.windows import DEFAULT_CHUNK_WIDTH, check_layout_options
from geopix2pix.raster.io import check_band_list
from geopix2pix.settings.checking import check_types


class PredictKeywords(TypedDict, total=False):
    """The keyword options of `predict`, as type checkers see them: `PredictOptions`'s fields
    (a test keeps the two the same)."""

    overlap: float
    batch_size: int
    device: str
    bands: Sequence[int] | None
    blend: str
    cog: bool
    compress: str
    creation_options: Mapping[str, str | int | float | bool]
    overwrite: bool
    resample_to_model: bool
    allow_no_crs: bool
    progress: bool
    chunk_width: int
    baseline: str


@dataclass(frozen=True)
class PredictOptions:
    """The options of `predict` (see the CLI's help for each)."""

    overlap: float = 0.5
    batch_size: int = 8
    device: str = "auto"
    bands: Sequence[int] | None = None
    blend: str = "hann"
    cog: bool = False
    compress: str = "deflate"
    creation_options: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    overwrite: bool = False
    resample_to_model: bool = False
    allow_no_crs: bool = False
    progress: bool = True
    chunk_width: int = DEFAULT_CHUNK_WIDTH
    baseline: str = "none"  # "linear"/"constant": that baseline of the model file instead

    @classmethod
    def from_options(cls, **options) -> PredictOptions:
        """Build from keyword options named like the CLI's; an unknown name or a value of the
        wrong type is a one-line error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise GeoPix2PixError(f"unknown predict option(s): {', '.join(unknown)}; "
                                  f"valid: {', '.join(sorted(known))}")
        return cls(**check_types(options, cls))

    def __post_init__(self) -> None:
        check_layout_options(self.overlap, self.blend)  # before any scene is opened
        check_band_list(self.bands, "--bands")
        if self.baseline not in ("none", *BASELINES):
            raise GeoPix2PixError(f"--baseline {self.baseline}: use none (the model), "
                                  f"{' or '.join(BASELINES)}")
        # GDAL's options are strings; Python callers write ZLEVEL=1 or SPARSE_OK=True
        object.__setattr__(self, "creation_options", {
            str(key): _gdal_value(value) for key, value in self.creation_options.items()})


def _gdal_value(value: str | int | float | bool) -> str:
    """A creation option's value as GDAL takes it: True/False as YES/NO, numbers as text."""
    if isinstance(value, bool):
        return "YES" if value else "NO"
    return str(value)

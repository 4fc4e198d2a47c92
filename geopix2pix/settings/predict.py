"""`geopix2pix predict`'s options (`PredictOptions`), declared once: names (the CLI's,
``--batch-size`` -> ``batch_size``), types, defaults, choices, help and checks; the command line
derives its options from these fields and ``predict(..., **options)`` takes the same names.
`PredictKeywords` names them with their types for type checkers and IDEs (a test keeps the two
the same)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.raster.bands import check_band_list
from geopix2pix.raster.blend_windows import BLEND_WINDOWS, BLENDS
from geopix2pix.raster.write import OUTPUT_BLOCK
from geopix2pix.settings import common
from geopix2pix.settings.checking import from_keywords
from geopix2pix.settings.declare import option

COMPRESSIONS = ("deflate", "zstd", "lzw", "none")
# the baselines a model file carries (models/baseline.py; discriminant: a class map's only;
# a CycleGAN file: constant only)
BASELINES = ("linear", "constant", "discriminant")
DEFAULT_CHUNK_WIDTH = 8192  # scene pixels blended at once (see prediction/engine/windows.py)


class PredictKeywords(TypedDict, total=False):
    """The keyword options of `predict`, as type checkers see them: `PredictOptions`'s fields
    (a test keeps the two the same)."""

    overlap: float
    batch_size: int
    device: str
    bands: Sequence[int] | None
    source_nodata: float | None
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

    overlap: float = option(0.5, help="Fraction of the window shared by neighbouring windows.")
    batch_size: int = option(8, minimum=1, help="Windows per generator call.")
    device: str = common.device("auto (CUDA when present: bf16, channels_last; else the CPU), "
                                "cpu, cuda or cuda:N; under torchrun each process uses its own "
                                "GPU.")
    bands: Sequence[int] | None = option(None, kind="bands", help=(
        "1-based scene bands to feed the model"), shown_default=(
        "the source bands chosen at export (e.g. 4,3,2) when the scene is like the training "
        "rasters, else all its bands but alpha; a scene giving another number of bands than "
        "the model takes needs --bands"))
    source_nodata: float | None = option(None, metavar="VALUE", help=(  # raster.nodata
        "Nodata value of the scenes, for scenes that declare none (or a wrong one): they are "
        "read as if their files carried it, so those pixels are nodata in the output, e.g. "
        "-9999; nan for floats"), shown_default="each scene's own")
    blend: str = option("hann", choices=BLENDS, help=(
        "Hann-weighted blending of overlapping windows, or none (each window's centre crop)."))
    cog: bool = option(False, help="Write a Cloud-Optimized GeoTIFF with overviews.")
    compress: str = option("deflate", choices=COMPRESSIONS, help=(
        "Compression of the output GeoTIFF (with a predictor suited to the dtype)."))
    creation_options: Mapping[str, str | int | float | bool] = option(
        factory=dict, flag="--co", kind="gdal", help=(
            "GDAL creation option of the output's driver (GTiff, or COG with --cog), over "
            "geopix2pix's own; repeatable. E.g. ZLEVEL=1 (GTiff) or LEVEL=1 (COG) for faster, "
            f"larger deflate files. Tiles must divide {OUTPUT_BLOCK} (with --cog, BLOCKSIZE a "
            "multiple of 16, at least 128)."))
    overwrite: bool = common.overwrite("Replace existing outputs.")
    resample_to_model: bool = option(False, help=(
        "Predict at the training pixel size (warping the scene) and write back on the scene's "
        "grid."))
    allow_no_crs: bool = option(False, help=(
        "Accept scenes without a CRS or without a geotransform (predicted on their pixels)."))
    progress: bool = common.progress()
    chunk_width: int = option(DEFAULT_CHUNK_WIDTH, cli=False)
    baseline: str = option("none", choices=("none", *BASELINES), help=(  # instead of the model
        "Write a simple baseline the model file carries instead of the model's prediction "
        "(same grid, dtype, nodata): linear (the least-squares map of the source bands; for a "
        "class map the nearest class mean), constant (the train mean; the majority class) or, "
        "for a class map, discriminant (Fisher's linear discriminant of the source bands), "
        "fitted on the train chips. A CycleGAN file carries the constant alone (the train mean "
        "of the domain it writes): the others are fitted on pairs."))

    @classmethod
    def from_options(cls, **options) -> PredictOptions:
        """Build from keyword options named like the CLI's; an unknown name or a value of the
        wrong type is a one-line error."""
        return from_keywords(cls, options, "predict")

    def __post_init__(self) -> None:
        check_layout_options(self.overlap, self.blend)  # before any scene is opened
        check_band_list(self.bands, "--bands")
        if self.baseline not in ("none", *BASELINES):
            raise GeoPix2PixError(f"--baseline {self.baseline}: use none (the model), "
                                  f"{', '.join(BASELINES[:-1])} or {BASELINES[-1]}")
        # GDAL's options are strings; Python callers write ZLEVEL=1 or SPARSE_OK=True
        object.__setattr__(self, "creation_options", {
            str(key): _gdal_value(value) for key, value in self.creation_options.items()})


def check_layout_options(overlap: float, blend: str) -> None:
    """Refuse an --overlap or --blend the window lattice cannot take."""
    if blend not in BLEND_WINDOWS:  # the registry itself: a window added there is a choice
        raise GeoPix2PixError(f"--blend {blend}: use one of {', '.join(BLEND_WINDOWS)}")
    if not 0 <= overlap < 1:
        raise GeoPix2PixError(f"--overlap {overlap}: use a fraction from 0 up to (not incl.) 1")


def _gdal_value(value: str | int | float | bool) -> str:
    """A creation option's value as GDAL takes it: True/False as YES/NO, numbers as text."""
    if isinstance(value, bool):
        return "YES" if value else "NO"
    return str(value)

"""`geopix2pix evaluate`'s options (`EvaluateOptions`), declared once for the command line;
`evaluate` takes the same names with the same defaults (a test keeps them so), by position too."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from geopix2pix.settings import common
from geopix2pix.settings.declare import option


@dataclass(frozen=True)
class EvaluateOptions:
    """The options of `geopix2pix evaluate` (`evaluate`'s keyword arguments but `block`)."""

    json_path: str | os.PathLike | None = option(
        None, flag="--json", kind="output", shown_default="none",
        help="Also write the results as JSON to this file; - writes them to standard output "
             "(and the table to standard error).")
    overwrite: bool = common.overwrite("Replace an existing --json file.")
    categorical: bool = option(False, help=(
        "Class maps: pixel accuracy and per-class IoU instead of MAE/RMSE/PSNR/SSIM (the "
        "reference is then warped with nearest)."))
    bands: Sequence[int] | None = option(None, kind="bands", shown_default="all but alpha",
                                         help="1-based PRED bands, e.g. 1,2,3 or 1-3")
    reference_bands: Sequence[int] | None = option(
        None, kind="bands", help="1-based REFERENCE bands compared with PRED's, in order, e.g. "
        "4,3,2", shown_default=(
            "all but alpha; when that is not as many as PRED's, the bands with PRED's band "
            "descriptions"))
    nodata: float | None = option(None, metavar="VALUE", shown_default="PRED's own", help=(
        "Nodata value of PRED, for a raster that declares none (or a wrong one): read as if "
        "its file carried it, e.g. -9999; nan for floats"))
    reference_nodata: float | None = option(
        None, metavar="VALUE", shown_default="REFERENCE's own", help=(
            "Nodata value of REFERENCE, as --nodata (an untagged DEM's -9999 voids)"))

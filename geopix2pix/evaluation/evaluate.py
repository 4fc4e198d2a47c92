"""`evaluate`: compare a prediction with a reference raster on the prediction's grid.

The reference is read on PRED's grid (warped with `raster.io.warped_view` when the grids differ:
bilinear, nearest for categorical maps) and compared on the pixels valid in both. The rasters are
streamed in blocks; each block is read with a halo of the SSIM window's radius so SSIM near block
borders equals SSIM of the whole raster.

Continuous: per band and overall MAE and RMSE in the values as stored, PSNR from the MSE with the
data range stated (an 8-bit reference's dtype range, 255; for wider integers and floats the
reference's max - min over the compared pixels, per band, and the widest band range overall),
and SSIM
(Gaussian window 11, sigma 1.5, same data range). Categorical: pixel accuracy and per-class IoU
(classes = the integer codes found in either raster), with a warning when the prediction holds
codes the reference never does (a regressed map compared as classes: each such code is a "class"
of IoU 0).

Bands: which are compared, and the warnings about what they hold, are `band_pairing`'s; the
report says which reference band each PRED band was compared with, and how they were paired.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from geopix2pix import metrics
from geopix2pix.chips.stats import MAX_CLASSES
from geopix2pix.errors import GeoPix2PixError, warn_user
from geopix2pix.evaluation.band_pairing import (
    MATCHING,
    pair_bands,
    unlike_descriptions,
    values_warnings,
)
from geopix2pix.jsonvalues import jsonable
from geopix2pix.raster.bands import band_list_text, repeated_band_warning
from geopix2pix.raster.grid import Grid
from geopix2pix.raster.io import (
    check_on_the_earth,
    open_raster,
    placement_problem,
    read_window,
    warped_view,
)
from geopix2pix.raster.nodata import Override, fill_value_lines
from geopix2pix.raster.write import (
    atomic_path,
    output_folder,
    refuse_special_file,
    replaced_inputs,
)
from geopix2pix.settings.checking import api_function, check_types

BLOCK = 1024
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5


@dataclass
class BandMetrics:
    band: int
    description: str | None
    reference_band: int
    reference_description: str | None
    mae: float
    rmse: float
    psnr: float
    ssim: float
    data_range: float


@dataclass
class EvaluationReport:
    """The result of `evaluate`; `to_dict()` is what --json writes, `table()` what is printed."""

    pred: str
    reference: str
    categorical: bool
    valid_pixels: int
    warped: bool
    pred_bands: list[int] = field(default_factory=list)
    reference_bands: list[int] = field(default_factory=list)
    band_matching: str = "in order"  # "in order", "given" or "by description"
    data_range_rule: str = ""
    bands: list[BandMetrics] = field(default_factory=list)
    overall: dict = field(default_factory=dict)
    pixel_accuracy: float | None = None
    classes: list[int] = field(default_factory=list)
    iou: list[float] = field(default_factory=list)
    mean_iou: float | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready: infinities and NaN become the strings 'inf' and 'nan'."""
        return jsonable(asdict(self))

    def table(self) -> str:
        head = [f"prediction {self.pred}", f"reference  {self.reference}"
                + (" (warped onto the prediction's grid)" if self.warped else ""),
                f"compared pixels (valid in both): {self.valid_pixels}",
                f"bands compared: prediction {band_list_text(self.pred_bands)} with reference "
                f"{band_list_text(self.reference_bands)} ({MATCHING[self.band_matching]})"]
        if self.categorical:
            rows = [f"{'class':>10} {'IoU':>8}"]
            rows += [f"{c:>10d} {v:>8.4f}" for c, v in zip(self.classes, self.iou)]
            rows += [f"pixel accuracy {self.pixel_accuracy:.4f}, mean IoU {self.mean_iou:.4f}"]
            return "\n".join(head + rows)
        labels = [(f"{b.band} {b.description or ''}".strip(),
                   f"{b.reference_band} {b.reference_description or ''}".strip())
                  for b in self.bands]
        wide = max([16, *(len(text) for pair in labels for text in pair)])  # whole descriptions
        rows = [f"PSNR data range: {self.data_range_rule}",
                f"{'band':<{wide}} {'reference band':<{wide}} {'MAE':>12} {'RMSE':>12} "
                f"{'PSNR dB':>9} {'SSIM':>7} {'range':>10}"]
        for b, (name, ref) in zip(self.bands, labels):
            rows.append(f"{name:<{wide}} {ref:<{wide}} {b.mae:>12.6g} {b.rmse:>12.6g} "
                        f"{b.psnr:>9.3f} {b.ssim:>7.4f} {b.data_range:>10.6g}")
        o = self.overall
        rows.append(f"{'overall':<{2 * wide + 1}} {o['mae']:>12.6g} {o['rmse']:>12.6g} "
                    f"{o['psnr']:>9.3f} {o['ssim']:>7.4f} {o['data_range']:>10.6g}")
        return "\n".join(head + rows)


def _blocks(height: int, width: int, halo: int, block: int) -> Iterator[tuple[Window, tuple]]:
    """(window with halo, (row slice, col slice) of the block inside it)."""
    for r in range(0, height, block):
        for c in range(0, width, block):
            r0, c0 = max(r - halo, 0), max(c - halo, 0)
            r1, c1 = min(r + block + halo, height), min(c + block + halo, width)
            core = (slice(r - r0, min(r + block, height) - r0),
                    slice(c - c0, min(c + block, width) - c0))
            yield Window(c0, r0, c1 - c0, r1 - r0), core


def _read_pair(pred, pred_bands, ref, ref_bands, window):
    p, pv = read_window(pred, pred_bands, window)
    r, rv = read_window(ref, ref_bands, window)
    return p.astype(np.float64), r.astype(np.float64), pv & rv


@api_function
def evaluate(pred: str | os.PathLike, reference: str | os.PathLike, categorical: bool = False,
             json_path: str | os.PathLike | None = None, block: int = BLOCK,
             overwrite: bool = False, bands: Sequence[int] | None = None,
             reference_bands: Sequence[int] | None = None, nodata: float | None = None,
             reference_nodata: float | None = None) -> EvaluationReport:
    """Compare PRED with REFERENCE (read on PRED's grid) on the pixels valid in both; with
    `json_path` also write the report there (an existing file only with `overwrite`).

    `bands` and `reference_bands` are 1-based band lists (default: all data bands; with as many
    reference bands as PRED has by band description when the counts differ). `nodata` and
    `reference_nodata` declare the nodata value of a raster that has none (or a wrong one):
    it is read as if its file carried it (`raster.nodata`)."""
    checked = check_types(locals(), evaluate)
    if block < 1:
        raise GeoPix2PixError(f"block={block}: expected a block size of at least 1 pixel")
    with contextlib.ExitStack() as folder:  # a failure leaves the --json file's folder as it was
        if json_path is not None:
            _check_json_path(Path(json_path), [Path(pred), Path(reference)])
            folder.enter_context(output_folder(json_path, overwrite))
        with open_raster(pred, False, Override.of(nodata, "--nodata")) as p, \
                open_raster(reference, False, Override.of(reference_nodata,
                                                          "--reference-nodata")) as r:
            report = _compare(str(pred), p, checked["bands"], str(reference), r,
                              checked["reference_bands"], categorical, block)
        if json_path is not None:
            with atomic_path(json_path, overwrite) as temp:
                temp.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    for warning in report.warnings:  # also in the report; the command line prints those
        warn_user(warning)
    return report


def _compare(pred: str, p, bands, reference: str, r, reference_bands, categorical: bool,
             block: int) -> EvaluationReport:
    """The report for the open rasters P and R (R read on P's grid)."""
    pb, rb, matching = pair_bands(pred, p, bands, reference, r, reference_bands)
    if categorical:
        _check_class_codes((pred, p, pb), (reference, r, rb))
    grid = Grid.of(p)
    warped = not grid.is_same(Grid.of(r))
    unplaced = placement_problem(p, pred) or placement_problem(r, reference)
    if warped and unplaced:  # no CRS or no geotransform: nothing to align it by
        raise GeoPix2PixError(f"{pred} and {reference} are on different grids, which cannot be "
                              f"aligned: {unplaced}")
    if warped and p.crs != r.crs:  # (one local CRS shared by both needs no place on the Earth)
        for path, dataset, other in ((pred, p, reference), (reference, r, pred)):
            check_on_the_earth(dataset, path, f"aligning it with {other}, in another CRS, needs "
                                              "its place on the Earth")
    report = EvaluationReport(pred, reference, categorical, 0, warped, pb, rb, matching)
    report.warnings += (fill_value_lines(p, pred, pb, "--nodata", classes=categorical)
                        + fill_value_lines(r, reference, rb, "--reference-nodata",
                                           classes=categorical))
    report.warnings += values_warnings(pred, p, pb, reference, r, rb)
    report.warnings += [w for w in (repeated_band_warning("--bands", bands),
                                    repeated_band_warning("--reference-bands", reference_bands))
                        if w]
    if not categorical and _class_maps(p, pb, r, rb):
        report.warnings.append(f"{pred} and {reference} look like class maps (integers, one "
                               "with a colour table): their codes are compared as numbers; pass "
                               "--categorical for pixel accuracy and per-class IoU")
    if matching == "in order":
        report.warnings += unlike_descriptions(p, pb, r, rb)
    view = warped_view(r, grid, "nearest" if categorical else "bilinear") if warped else r
    try:
        if categorical:
            _categorical(report, p, pb, view, rb, block)
        else:
            _continuous(report, p, pb, view, rb, np.dtype(r.dtypes[rb[0] - 1]), block)
        if report.valid_pixels == 0:
            raise _no_common_pixel(report, p, view, r, block)
    finally:
        if warped:
            view.close()
    for b in report.bands:
        b.description = p.descriptions[b.band - 1]
        b.reference_description = r.descriptions[b.reference_band - 1]
    return report


def _class_maps(p, pb: list[int], r, rb: list[int]) -> bool:
    """Whether the one band compared of each is a class map's: both integers, and one (a
    categorical model's prediction, or the land cover it learned) with a colour table."""
    if len(pb) != 1 or len(rb) != 1:
        return False
    integers = all(np.dtype(d.dtypes[b[0] - 1]).kind in "iu" for d, b in ((p, pb), (r, rb)))
    return integers and ColorInterp.palette in (p.colorinterp[pb[0] - 1],
                                                r.colorinterp[rb[0] - 1])


def _check_json_path(path: Path, inputs: list[Path]) -> None:
    """Refuse, before any work, a --json file that is one of the rasters compared (one that
    exists without --overwrite: `output_folder`), a folder, or a device (/dev/stdout: the
    command line's `--json -` prints it)."""
    refuse_special_file(path, "pass --json - to print the JSON instead")
    if path.is_dir():
        raise GeoPix2PixError(f"--json {path} is a folder, not a file; pass a file to write "
                              f"the JSON report to (e.g. {path / 'report.json'})")
    for raster, file in replaced_inputs([path], inputs).values():
        what = f"the raster {raster}" if file == str(raster) else \
            f"{file}, which the raster {raster} reads,"
        raise GeoPix2PixError(f"--json {path} is {what} being compared; choose another file "
                              "for the JSON")


def _data_ranges(p, pb, ref, rb, dtype: np.dtype, block: int) -> tuple[np.ndarray, str]:
    """PSNR's and SSIM's data range per band, and the rule that gave it: an 8-bit reference's
    dtype range (0..255, as images are scored); a wider one's values over the compared pixels,
    as a float's (a uint16 reflectance of 0..10,000 scored against 65,535 gained 16 dB of
    PSNR, and an int16 DEM an SSIM of 0.99 where the same heights in float32 scored 0.39)."""
    if np.issubdtype(dtype, np.integer) and dtype.itemsize == 1:
        info = np.iinfo(dtype)
        return (np.full(len(pb), float(info.max) - float(info.min)),
                f"the reference dtype's range ({dtype}: {info.min}..{info.max})")
    low, high = np.full(len(pb), np.inf), np.full(len(pb), -np.inf)
    for window, _ in _blocks(p.height, p.width, 0, block):
        _, r, valid = _read_pair(p, pb, ref, rb, window)
        if valid.any():
            low = np.minimum(low, r[:, valid].min(1))
            high = np.maximum(high, r[:, valid].max(1))
    ranges = np.where(high > low, high - low, 1.0)
    kind = "floats" if np.issubdtype(dtype, np.floating) else f"{dtype}"
    rule = f"the reference's max - min over the compared pixels ({kind}), per band"
    if (high <= low).any():  # a constant (or empty) band has no range: PSNR and SSIM take 1
        rule += "; 1 where a band is constant"
    return ranges, rule


def _continuous(report, p, pb, ref, rb, dtype: np.dtype, block: int) -> None:
    ranges, report.data_range_rule = _data_ranges(p, pb, ref, rb, dtype, block)
    n = len(pb)
    abs_sum, sq_sum, ssim_sum, count = np.zeros(n), np.zeros(n), np.zeros(n), 0
    halo = SSIM_WINDOW // 2
    for window, core in _blocks(p.height, p.width, halo, block):
        pv, rv, valid = _read_pair(p, pb, ref, rb, window)
        vc = valid[core]
        if not vc.any():
            continue
        diff = (pv - rv)[(slice(None), *core)][:, vc]
        abs_sum += np.abs(diff).sum(1)
        sq_sum += (diff**2).sum(1)
        smap = metrics.ssim_map(torch.from_numpy(pv)[None], torch.from_numpy(rv)[None],
                                torch.from_numpy(ranges), SSIM_WINDOW, SSIM_SIGMA,
                                valid=torch.from_numpy(valid)[None, None])[0].numpy()
        ssim_sum += smap[(slice(None), *core)][:, vc].sum(1)
        count += int(vc.sum())
    report.valid_pixels = count
    if count == 0:  # the caller says why
        return
    mse = sq_sum / count
    psnr = metrics.psnr(torch.from_numpy(mse), torch.from_numpy(ranges)).numpy()
    report.bands = [BandMetrics(b, None, rb[i], None, float(abs_sum[i] / count),
                                float(math.sqrt(mse[i])), float(psnr[i]),
                                float(ssim_sum[i] / count), float(ranges[i]))
                    for i, b in enumerate(pb)]
    overall_range = float(ranges.max())
    report.overall = {"mae": float(abs_sum.sum() / (count * n)),
                      "rmse": float(math.sqrt(mse.mean())),
                      "psnr": float(metrics.psnr(float(mse.mean()), overall_range)),
                      "ssim": float(ssim_sum.sum() / (count * n)), "data_range": overall_range}


def _check_class_codes(*rasters) -> None:
    """--categorical compares class codes: integer rasters (a float map would make each of its
    values a class)."""
    for path, dataset, bands in rasters:
        floats = [b for b in bands if np.dtype(dataset.dtypes[b - 1]).kind == "f"]
        if floats:
            raise GeoPix2PixError(f"--categorical: {path} holds {dataset.dtypes[floats[0] - 1]} "
                                  "values, not class codes; compare class maps of an integer "
                                  "type, or drop --categorical to compare values")


def _categorical(report, p, pb, ref, rb, block: int) -> None:
    values: set = set()
    for window, _ in _blocks(p.height, p.width, 0, block):
        pv, rv, valid = _read_pair(p, pb, ref, rb, window)
        values |= set(np.unique(pv[:, valid]).tolist()) | set(np.unique(rv[:, valid]).tolist())
        if len(values) > MAX_CLASSES:  # (a K x K count: values, not codes)
            raise GeoPix2PixError(
                f"--categorical: {report.pred} and {report.reference} hold more than "
                f"{MAX_CLASSES} distinct values on the compared pixels, which are values (or "
                "object ids), not class codes; drop --categorical to compare them as values")
    classes = sorted(values)
    if not classes:  # no pixel valid in both: the caller says why
        return
    cm = torch.zeros(len(classes), len(classes), dtype=torch.int64)
    for window, _ in _blocks(p.height, p.width, 0, block):
        pv, rv, valid = _read_pair(p, pb, ref, rb, window)
        cm += metrics.confusion_matrix(torch.from_numpy(pv), torch.from_numpy(rv),
                                       torch.from_numpy(valid)[None], classes)
    report.valid_pixels = int(cm.sum()) // max(len(pb), 1)
    iou = metrics.per_class_iou(cm)
    report.classes = [int(c) for c in classes]  # integer rasters only (_check_class_codes)
    report.iou = [float(v) for v in iou]
    report.pixel_accuracy = metrics.pixel_accuracy(cm)
    report.mean_iou = float(np.nanmean(iou.numpy()))
    report.warnings += _absent_classes(report, cm)


def _absent_classes(report: EvaluationReport, cm: torch.Tensor) -> list[str]:
    """A warning when PRED holds class codes the reference never does on the compared pixels
    (a regressed map compared as classes): each is a 'class' of IoU 0."""
    absent = cm.sum(1) == 0  # rows: the reference's classes
    if not absent.any():
        return []
    codes = [c for c, gone in zip(report.classes, absent.tolist()) if gone]
    share = float(cm[:, absent].sum()) / float(cm.sum())
    return [f"{report.pred} holds {len(codes)} class code(s) that {report.reference} does not "
            f"({_code_text(codes)}), on {100 * share:.3g}% of the compared pixels, all counted "
            "as errors; check that both rasters use the same class codes"]


def _code_text(codes: list[int], most: int = 6) -> str:
    """Sorted codes as runs: [0, 107, 108, 109, 255] -> '0, 107-109, 255' (the first `most`
    runs, then '...')."""
    runs: list[list[int]] = []
    for code in codes:
        if runs and code == runs[-1][1] + 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs]
    return ", ".join(text[:most] + (["..."] if len(text) > most else []))


def _no_common_pixel(report: EvaluationReport, p, view, r, block: int) -> GeoPix2PixError:
    """Why no pixel is valid in both rasters: one has no valid pixel at all, the reference has
    none on PRED's extent, or their valid pixels do not meet."""
    pb, rb = report.pred_bands, report.reference_bands
    for path, dataset, bands in ((report.pred, p, pb), (report.reference, r, rb)):
        if not _any_valid(dataset, bands, block):
            return GeoPix2PixError(
                f"{path} has no valid pixel in band(s) {band_list_text(bands)} (all are nodata, "
                "NaN or masked), so there is nothing to compare; check that it is the right file, "
                "and its nodata value")
    if view is not r and not _any_valid(view, rb, block):
        return GeoPix2PixError(f"{report.reference} has no valid pixel within the extent of "
                               f"{report.pred}; check that they overlap")
    return GeoPix2PixError(f"{report.pred} and {report.reference} have no valid pixel in "
                           "common: each has valid pixels, but never where the other does; "
                           "check their nodata values and masks")


def _any_valid(dataset, bands: list[int], block: int) -> bool:
    """Whether any pixel of `dataset` is valid in `bands` (stops at the first block with one)."""
    return any(read_window(dataset, bands, window)[1].any()
               for window, _ in _blocks(dataset.height, dataset.width, 0, block))

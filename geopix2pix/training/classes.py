"""``--categorical``: training on a class map (land cover codes, a road mask) instead of values.

The generator gives one score per class (`GeneratorSpec.output` "logits"), trained with
cross-entropy against each pixel's class (`losses.Categorical`), so prediction can write the most
probable class code, never a blend of two codes that is no class at all. The classes are the codes
the train chips' target holds, counted exactly at export (dataset.json's class table); the
generator's channels follow them in ascending order, and the model file records them.
``--class-weights balanced`` weighs each class's pixels by the inverse of its share of the train
pixels (scikit-learn's "balanced": pixels / (classes x the class's pixels), at most
`MAX_WEIGHT`), so a road mask with 3% roads is not learned as all background.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from geopix2pix.chips.manifest import DatasetInfo
from geopix2pix.chips.stats import MAX_CLASSES
from geopix2pix.errors import GeoPix2PixError

from .losses import Categorical, Regression

MAX_WEIGHT = 100.0  # a class of a few pixels must not swamp the loss


def trained_classes(info: DatasetInfo, chips_dir: Path) -> list[int]:
    """The class codes of the chips' target (ascending); GeoPix2PixError when the target is not
    a class map: several bands, not integers, too many values, one class only, a class code
    that is also the target's nodata, or a chips folder exported before class tables were
    counted."""
    target = info.target
    if len(target.bands) != 1:
        raise GeoPix2PixError(
            f"--categorical: the target of {chips_dir} has {len(target.bands)} bands; a class "
            "map has one (export it with --target-bands N)")
    if not target.stats or "classes" not in target.stats[0]:
        raise GeoPix2PixError(
            f"--categorical: {chips_dir} has no class table (exported by an older geopix2pix); "
            "re-export the chips (geopix2pix export-chips --overwrite)")
    table = target.stats[0]["classes"]
    if table is None and target.dtype.startswith("float"):
        raise GeoPix2PixError(
            f"--categorical: the target of {chips_dir} is {target.dtype}; class codes are "
            "integers: store the class map as integers (e.g. gdal_translate -ot Byte, or "
            "UInt16 for codes above 255) and re-export, or train without --categorical to "
            "regress its values")
    if table is None:
        raise GeoPix2PixError(
            f"--categorical: the target of {chips_dir} holds more than {MAX_CLASSES} values, "
            "too many for a class map; train without --categorical to regress its values")
    codes = sorted(int(code) for code, _ in table)
    if target.nodata is not None and target.nodata in codes:  # pairs that disagree on nodata
        raise GeoPix2PixError(
            f"--categorical: class code {target.nodata:g} of {chips_dir} is also its target's "
            "nodata (a pair whose target declares another nodata, or none, has valid pixels of "
            "that code); give every target the same nodata (gdal_edit.py -a_nodata) and "
            "re-export")
    if len(codes) < 2:
        raise GeoPix2PixError(
            f"--categorical: the train chips of {chips_dir} hold one class only "
            f"({codes[0] if codes else 'none'}); export chips that cover several classes")
    return codes


def resampling_warning(info: DatasetInfo, chips_dir: Path) -> str | None:
    """A warning when the chips' targets were resampled with a method that averages codes (a
    pair on another grid is resampled; one on the same grid never is; dataset.json records
    which, and a folder from before it did may have been)."""
    method = info.options.get("target_resampling", "nearest")
    if method == "nearest" or not any(p.get("target_resampled", True) for p in info.pairs):
        return None
    return (f"warning: {chips_dir} was exported with --target-resampling {method} and a target "
            "resampled onto its source's grid: neighbouring class codes were averaged into "
            "codes of other classes or none; re-export with --target-resampling nearest")


def balanced_weights(info: DatasetInfo, classes: list[int]) -> np.ndarray:
    """Per class (in the order of `classes`): the train pixels / (classes x its pixels), at
    most `MAX_WEIGHT`; 1 for every class of an evenly shared map."""
    counts = dict((int(code), int(n)) for code, n in info.target.stats[0]["classes"])
    pixels = np.array([counts[code] for code in classes], dtype=np.float64)
    return np.minimum(pixels.sum() / (len(classes) * pixels), MAX_WEIGHT)


def objective_for(info: DatasetInfo, classes: list[int] | None, class_weights: str = "none",
                  pixel_loss: str = "l1") -> Regression | Categorical:
    """The pixel loss and what D sees: values (``pixel_loss``: L1 or MSE), or classes
    (cross-entropy, weighted by the classes' shares with ``class_weights="balanced"``)."""
    if classes is None:
        return Regression(pixel_loss)
    weights = None
    if class_weights == "balanced":
        weights = torch.from_numpy(balanced_weights(info, classes)).float()
    return Categorical(len(classes), weights)


def describe_classes(classes: list[int], objective: Categorical, info: DatasetInfo,
                     chips_dir: Path) -> list[str]:
    """What the run log says of a class map: its classes and weights, and a warning when its
    codes may have been averaged."""
    codes = ", ".join(map(str, classes[:12])) + (", ..." if len(classes) > 12 else "")
    weights = "" if objective.weights is None else ", weights " + ", ".join(
        f"{w:.3g}" for w in objective.weights.tolist()[:12]) + (
        ", ..." if len(classes) > 12 else "")
    lines = [f"class map: {len(classes)} classes (codes {codes}); cross-entropy{weights}"]
    warnings = [many_codes_warning(classes, chips_dir), resampling_warning(info, chips_dir),
                val_only_warning(info, classes, chips_dir),
                missing_from_val_warning(info, classes, chips_dir)]
    return lines + [warning for warning in warnings if warning]


MANY_CLASSES = 64  # more codes than a land cover legend holds (CORINE's: 44): values, likely


def many_codes_warning(classes: list[int], chips_dir: Path) -> str | None:
    """A warning when the target holds more codes than a class map's legend does: a hillshade
    or heights in integers trained as 255 classes, each pixel value one of them."""
    if len(classes) <= MANY_CLASSES:
        return None
    return (f"warning: the target of {chips_dir} holds {len(classes)} codes, more than a class "
            f"map's legend has (up to {MANY_CLASSES} here): if its values are quantities (a "
            "hillshade, heights, reflectance), train without --categorical to regress them")


def val_only_warning(info: DatasetInfo, classes: list[int], chips_dir: Path) -> str | None:
    """A warning when the val chips hold codes no train chip has: the model can never predict
    them, and validation leaves their pixels out (dataset.json's val class counts; a folder
    exported before they were counted says nothing)."""
    table, known = (info.target.val_classes or [None])[0] or [], set(classes)
    missing = [(code, pixels) for code, pixels in table if code not in known]
    if not missing:
        return None
    shown = ", ".join(f"{code} ({pixels} pixels)" for code, pixels in missing[:8]) + (
        ", ..." if len(missing) > 8 else "")
    return (f"warning: the val chips of {chips_dir} hold class code(s) {shown} that no train chip "
            "has: the model cannot learn them and validation leaves them out; export so that "
            "train chips cover every class (e.g. another --seed or a smaller --split-block)")


def classes_missing_from_val(info: DatasetInfo, classes: list[int]) -> list[int]:
    """The train classes of which the val chips hold no pixel (none without val chips or
    their class counts)."""
    table = (info.target.val_classes or [None])[0] or []
    present = {code for code, pixels in table if pixels > 0}
    return [code for code in classes if code not in present] if table else []


def missing_from_val_warning(info: DatasetInfo, classes: list[int], chips_dir: Path) -> str | None:
    """A warning when the val chips hold no pixel of a train class: validation cannot judge
    it, and their accuracy and mean IoU (which pick model-best and are set beside the
    baselines') reward never predicting it: a road mask whose val chips hold no road scores the
    all-background map perfectly. Silent without val chips or their class counts."""
    missing = classes_missing_from_val(info, classes)
    if not missing:
        return None
    shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
    return (f"warning: the val chips of {chips_dir} hold no pixel of class code(s) {shown} of "
            "the train chips: validation cannot judge them, and its scores (model-best, the "
            "comparison with the baselines) favour never predicting them; export so that val "
            "chips cover every class (another --seed, a smaller --split-block or a larger "
            "--val-fraction)")

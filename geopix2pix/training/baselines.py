"""The simple baselines of a run, fitted on the train chips and scored like the model.

What a user gets without training: for values, the train mean of each band (``constant``) and the
per-band least-squares linear map of the source bands with an intercept (``linear``); for a class
map, the majority class (``constant``), the nearest class mean of the source bands (``linear``)
and Fisher's linear discriminant (``discriminant``: the class means, their pooled covariance and
the train class shares as priors; what ``--residual linear`` starts a class map from). All are
fitted on exactly what the generator sees and learns: the valid pixels of the train chips, scaled
to [-1, 1] (so with ``--source-scaling centre`` each chip centred), and scored on the val chips
by the model's own validation (`validate.evaluate`), so their val MAE, RMSE, PSNR, SSIM
(accuracy, mean IoU) are in the units of metrics.csv.

The fit streams over the chips, one batch at a time, adding float64 sums: the normal equations
X^T X and X^T y of the valid pixels (the linear map and, from its intercept row, the means), or
per-class pixel counts and source sums and X^T X (the pooled scatter). Under DDP each rank reads
its shard and the sums are added across ranks, so every rank holds the one-process fit. The run
writes them to baselines.json; a resumed run reads them back from there.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geopix2pix.models.baseline import BaselineMaps, PixelMap, baseline_generator
from geopix2pix.raster.write import write_text_atomic
from geopix2pix.runtime import distributed

from .classes import classes_missing_from_val
from .data import EpochBatchSampler, make_loader
from .outputs import writing
from .validate import evaluate, evaluate_classes

BASELINES = "baselines.json"
ABSENT = -1e6  # a class without train pixels: its nearest-class-mean score (never the nearest)


@dataclass
class RunBaselines:
    """The fitted maps, their validation scores ({"linear": {...}, "constant": {...}} and a
    class map's "discriminant"; empty without val chips) and the train pixels they were fitted
    on."""

    maps: BaselineMaps
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    pixels: int = 0

    def to_json(self, dataset: str, categorical: bool) -> str:
        return json.dumps({"dataset": dataset, "categorical": categorical,
                           "pixels": self.pixels, "maps": self.maps.to_dict(),
                           "scores": self.scores}, indent=2)


def accumulate(loader, in_bands: int, out_bands: int, classes: int | None) -> torch.Tensor:
    """The fit's float64 sums over the valid pixels of every chip of ``loader``: X^T X
    ((in + 1) x (in + 1), X the source values and a 1), X^T y ((in + 1) x out), then each
    target band's sum of squares (out; for `explained_variance`), or for
    ``classes`` classes each one's pixel count then its source sums (classes x (1 + in)), then
    X^T X of the source values (in x in)."""
    size = (in_bands + 1) * (in_bands + 1 + out_bands) + out_bands if classes is None \
        else classes * (1 + in_bands) + in_bands * in_bands
    sums = torch.zeros(size, dtype=torch.float64)
    for batch in loader:
        valid = batch["valid"][:, 0]
        # (a validity band after the source bands is no input of the maps)
        x = batch["source"][:, :in_bands].permute(0, 2, 3, 1)[valid].double()
        ones = torch.ones(len(x), 1, dtype=torch.float64)
        if classes is None:
            xs = torch.cat([x, ones], dim=1)
            y = batch["target"].permute(0, 2, 3, 1)[valid].double()
            sums += torch.cat([(xs.T @ xs).flatten(), (xs.T @ y).flatten(), (y * y).sum(0)])
        else:
            index = batch["target"][:, 0][valid].long()
            per_class = torch.zeros(classes, 1 + in_bands, dtype=torch.float64)
            per_class.index_add_(0, index, torch.cat([ones, x], dim=1))
            sums += torch.cat([per_class.flatten(), (x.T @ x).flatten()])
    return sums


def solve_linear(sums: torch.Tensor, in_bands: int, out_bands: int
                 ) -> tuple[PixelMap, PixelMap, int]:
    """The least-squares linear map and the means from `accumulate`'s normal equations (the
    minimum-norm solution when they are singular, e.g. a constant source band), and the pixel
    count."""
    xtx, xty, _ = _normal_equations(sums, in_bands, out_bands)
    count = float(xtx[-1, -1])
    if count == 0:
        zero = PixelMap(tuple((0.0,) * in_bands for _ in range(out_bands)), (0.0,) * out_bands)
        return zero, zero, 0
    beta = np.linalg.lstsq(xtx, xty, rcond=None)[0]  # (in + 1, out)
    linear = PixelMap(tuple(tuple(map(float, row)) for row in beta[:-1].T),
                      tuple(map(float, beta[-1])))
    means = xty[-1] / count
    constant = PixelMap(tuple((0.0,) * in_bands for _ in range(out_bands)),
                        tuple(map(float, means)))
    return linear, constant, int(count)


def _normal_equations(sums: torch.Tensor, in_bands: int, out_bands: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`accumulate`'s sums for values as X^T X, X^T y and the target's sums of squares."""
    k = in_bands + 1
    xtx = sums[:k * k].reshape(k, k).numpy()
    xty = sums[k * k:k * k + k * out_bands].reshape(k, out_bands).numpy()
    return xtx, xty, sums[k * k + k * out_bands:].numpy()


def explained_variance(sums: torch.Tensor, in_bands: int, out_bands: int) -> float:
    """The linear map's R^2 on the pixels `accumulate` summed: 1 - its squared error over the
    constant's (the mean's), both summed over the target bands; 0 without variance."""
    xtx, xty, squares = _normal_equations(sums, in_bands, out_bands)
    count = float(xtx[-1, -1])
    if count == 0:
        return 0.0
    beta = np.linalg.lstsq(xtx, xty, rcond=None)[0]
    about_mean = float((squares - xty[-1] ** 2 / count).sum())  # the constant's squared error
    if about_mean <= 1e-12 * float(squares.sum()):  # a constant target (rounding noise)
        return 0.0
    linear_error = float((squares - (beta * xty).sum(0)).sum())  # y'y - b'X'y per band
    return max(0.0, 1.0 - linear_error / about_mean)


def solve_classes(sums: torch.Tensor, in_bands: int, classes: int
                  ) -> tuple[PixelMap, PixelMap, PixelMap, int]:
    """The nearest-class-mean scores (2 mu_k . x - |mu_k|^2), the majority class (a one-hot
    bias) and the linear discriminant from `accumulate`'s sums, and the pixel count."""
    table = _class_table(sums, in_bands, classes)
    scatter = sums[classes * (1 + in_bands):].reshape(in_bands, in_bands).numpy()
    counts, totals = table[:, 0], table[:, 1:]
    present = counts > 0
    means = np.where(present[:, None], totals / np.maximum(counts, 1)[:, None], 0.0)
    bias = np.where(present, -(means ** 2).sum(axis=1), ABSENT)
    nearest = PixelMap(_rows(2 * means), tuple(map(float, bias)))
    onehot = np.zeros(classes)
    onehot[int(np.argmax(counts))] = 1.0
    majority = PixelMap(tuple((0.0,) * in_bands for _ in range(classes)),
                        tuple(map(float, onehot)))
    return nearest, majority, discriminant(counts, means, scatter), int(counts.sum())


def _class_table(sums: torch.Tensor, in_bands: int, classes: int) -> np.ndarray:
    """`accumulate`'s per-class rows of a class map: each class's pixel count, then its source
    sums."""
    return sums[:classes * (1 + in_bands)].reshape(classes, 1 + in_bands).numpy()


def majority_miou(sums: torch.Tensor, in_bands: int, classes: int) -> float:
    """The majority class's mean IoU on the pixels `accumulate` summed, from the counts alone:
    it is right on its own pixels only, so its IoU is its share and every other class's 0, over
    the classes present (as `validate.evaluate_classes` would score it)."""
    counts = _class_table(sums, in_bands, classes)[:, 0]
    present = int((counts > 0).sum())
    return float(counts.max() / counts.sum() / present) if present else 0.0


RIDGE = 1e-3  # of the pooled covariance's mean variance, added to its diagonal
FLOOR = 1e-6  # the least ridge (the scaled values span [-1, 1]), for chips of constant bands


def discriminant(counts: np.ndarray, means: np.ndarray, scatter: np.ndarray) -> PixelMap:
    """Fisher's linear discriminant: scores (S^-1 mu_k) . x - mu_k . S^-1 mu_k / 2 + log p_k,
    with S the pooled within-class covariance (from the scatter X^T X less each class's n_k
    mu_k mu_k^T; a ridge keeps a constant or collinear band from making it singular) and p_k
    the class's share of the train pixels, less a term the same for every class: the means are
    taken from the pooled mean m, w_k = S^-1 (mu_k - m) and b_k = -w_k . (mu_k + m) / 2 + log p_k,
    so a band constant in the train chips weighs nothing (uncentred, its ridge-sized variance
    made every score huge). A class without train pixels is never chosen."""
    total = counts.sum()
    if total == 0:
        return PixelMap(_rows(np.zeros_like(means)), (0.0,) * len(counts))
    within = (scatter - np.einsum("k,ki,kj->ij", counts, means, means)) / total
    ridge = RIDGE * max(np.trace(within) / len(within), FLOOR / RIDGE)
    within = (within + within.T) / 2 + ridge * np.eye(len(within))
    pooled = counts @ means / total
    weights = np.linalg.solve(within, (means - pooled).T).T  # (classes, in): S^-1 (mu_k - m)
    present = counts > 0
    prior = np.log(np.where(present, counts, 1) / total)
    bias = np.where(present, -0.5 * (weights * (means + pooled)).sum(axis=1) + prior, ABSENT)
    return PixelMap(_rows(np.where(present[:, None], weights, 0.0)), tuple(map(float, bias)))


def _rows(matrix: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(map(float, row)) for row in matrix)


def fit(trainer) -> RunBaselines:
    """Fit the baselines on ``trainer``'s train chips (each rank its shard, the sums added)."""
    in_bands = len(trainer.info.source.bands)
    classes = None if trainer.classes is None else len(trainer.classes)
    out_bands = len(trainer.info.target.bands) if classes is None else classes
    sums = trainer.run.train_sums  # (read by --recipe auto: these chips, these classes)
    if sums is None:
        sums = accumulate(_loader(trainer, trainer.train_set), in_bands, out_bands, classes)
        if trainer.world > 1:
            sums = distributed.all_reduce_sum(sums.to(trainer.setup.device)).cpu()
    if classes is None:
        linear, constant, pixels = solve_linear(sums, in_bands, out_bands)
        maps = BaselineMaps(linear, constant, trainer.config.residual)
    else:
        nearest, majority, fisher, pixels = solve_classes(sums, in_bands, classes)
        maps = BaselineMaps(nearest, majority, trainer.config.residual, fisher)
    return RunBaselines(maps, pixels=pixels)


def score(trainer, baselines: RunBaselines) -> None:
    """Score the baselines on the val chips as the model is scored (in place)."""
    if not trainer.val_set:
        return
    loader = _loader(trainer, trainer.val_set)
    reduce = distributed.all_reduce_sum if trainer.world > 1 else None
    categorical = trainer.classes is not None
    for name in baselines.maps.names():
        module = baseline_generator(baselines.maps, name, categorical, trainer.setup.device)
        baselines.scores[name] = evaluate_classes(
            module, loader, trainer.setup, len(trainer.classes), reduce) if categorical else \
            evaluate(module, loader, trainer.setup, trainer.val_set.target_scaling, reduce,
                     trainer.spec.out_channels)


def _loader(trainer, dataset):
    """The chips of ``dataset`` in order, this rank's shard of them."""
    return shard_loader(dataset, trainer.config.batch_size, trainer.rank, trainer.world,
                        trainer.setup)


def shard_loader(dataset, batch_size: int, rank: int, world: int, setup):
    """The items of ``dataset`` in order, in batches, rank ``rank``'s shard of them (the ranks'
    shards together hold each item once); its own seeded generator draws nothing from the
    run's random state."""
    sampler = EpochBatchSampler(len(dataset), batch_size, 0, shuffle=False, rank=rank,
                                world_size=world)
    return make_loader(dataset, sampler, 0, setup, 0)


def for_run(trainer, dataset: str) -> RunBaselines:
    """The run's baselines: read back from RUN_DIR/baselines.json on --resume when it holds
    this dataset's, else fitted and scored (and written by rank 0)."""
    path = trainer.run_dir / BASELINES
    categorical = trainer.classes is not None
    if trainer.config.resume:
        saved = read(path, dataset, categorical, trainer.config.residual)
        if not distributed.any_rank(saved is None):  # all ranks read it back, or all fit
            return saved
    baselines = fit(trainer)
    score(trainer, baselines)
    distributed.writer_first(lambda: write(path, baselines.to_json(dataset, categorical)))
    return baselines


def write(path: Path, text: str) -> None:
    """Write ``text`` to the run's ``path`` atomically, the run owning it."""
    with writing(path):
        write_text_atomic(path, text)


def read(path: Path, dataset: str, categorical: bool, residual: str) -> RunBaselines | None:
    """baselines.json's baselines when it was written for this dataset and kind of target;
    None otherwise (fit again)."""
    try:
        data = json.loads(path.read_text())
        if data["dataset"] != dataset or bool(data["categorical"]) != categorical:
            return None
        maps = BaselineMaps.from_dict({**data["maps"], "residual": residual})
        if maps.linear is None or (categorical and maps.discriminant is None):
            return None  # another family's, or written before the discriminant was fitted
        scores = {name: {k: float(v) for k, v in values.items()}
                  for name, values in data["scores"].items()}
        return RunBaselines(maps, scores, int(data["pixels"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def comparison(best: dict[str, Any], baselines: RunBaselines, categorical: bool) -> str | None:
    """"model-best: val MAE 3.1 · linear 5.2 · constant 18.9" (a class map: accuracy and mean
    IoU against linear discriminant, nearest class mean and majority class); None without val
    scores."""
    linear, constant = (baselines.scores.get(k) for k in ("linear", "constant"))
    if not linear or not constant:
        return None
    if not categorical:
        if "val_mae" not in best:
            return None
        return (f"model-best: val MAE {best['val_mae']:.4g} · linear {linear['val_mae']:.4g} · "
                f"constant {constant['val_mae']:.4g}")
    if "val_miou" not in best:
        return None
    fisher = baselines.scores.get("discriminant")
    return (f"model-best: val accuracy {_pair(best)} · "
            + (f"linear discriminant {_pair(fisher)} · " if fisher else "")
            + f"nearest class mean {_pair(linear)} · majority class {_pair(constant)} "
            "(accuracy, mean IoU)")


def report(trainer, best: dict[str, Any]) -> str | None:
    """The end of a run: the warning (logged) when model-best loses to the baselines, and the
    comparison line for the summary."""
    categorical = trainer.classes is not None
    unjudged = classes_missing_from_val(trainer.info, trainer.classes) if categorical else []
    losing = shortfall(best, trainer.baselines, categorical, trainer.config, unjudged)
    if losing:
        trainer.log("warning: " + losing)
    return comparison(best, trainer.baselines, categorical)


def _pair(scores: dict[str, float]) -> str:
    return f"{scores['val_accuracy']:.3f}, {scores['val_miou']:.3f}" if \
        "val_accuracy" in scores else f"{scores['val_miou']:.3f}"


CLASS_BASELINES = {"linear": "nearest class mean", "constant": "majority class",
                   "discriminant": "linear discriminant"}


def shortfall(best: dict[str, Any], baselines: RunBaselines, categorical: bool,
              config=None, unjudged: list[int] | None = None) -> str | None:
    """The warning when model-best does not beat the linear baseline (a class map: the best of
    its baselines, in accuracy and in mean IoU, each named); None otherwise. Its advice leaves
    out the options ``config`` (the run's) already uses. ``unjudged``: train classes the val
    chips lack, whose scores then favour a map without them (the majority class's): the
    warning says so instead of recommending that map."""
    if comparison(best, baselines, categorical) is None:
        return None
    steps = getattr(config, "max_steps", None)
    advice = ["train longer" + (f" (than --max-steps {steps})" if steps else "")]
    if getattr(config, "residual", "none") == "none" and (categorical or _linear_helps(baselines)):
        advice.append("with --residual linear" + (" (from the discriminant)" if categorical
                                                  else ""))
    if not categorical:
        linear = baselines.scores["linear"]["val_mae"]
        if not _is_start(best) and (best["val_mae"] < linear
                                    or not math.isfinite(best["val_mae"])):
            return None
        return (f"{_start_note(best, 'the linear baseline')}model-best (val MAE "
                f"{best['val_mae']:.4g}) does not beat the linear baseline "
                f"fitted on the train chips (val MAE {linear:.4g}, see {BASELINES}): "
                f"{' or '.join(advice)}; `geopix2pix predict --baseline linear` writes that "
                "baseline's prediction")
    if getattr(config, "class_weights", "none") == "none" and \
            getattr(config, "residual", "none") == "none":  # (over the discriminant, weights
        advice.append("with --class-weights balanced")  # move the priors it starts from)
    leaders = {metric: max(baselines.scores, key=lambda name: baselines.scores[name].get(
        f"val_{metric}", 0.0)) for metric in ("accuracy", "miou")}
    accuracy, miou = (baselines.scores[leaders[m]].get(f"val_{m}", 0.0)
                      for m in ("accuracy", "miou"))
    if not _is_start(best) and best.get("val_accuracy", 0.0) > accuracy and \
            best["val_miou"] > miou:
        return None
    return (f"{_start_note(best, 'the linear discriminant')}"
            f"model-best (val accuracy {best.get('val_accuracy', math.nan):.3f}, mean IoU "
            f"{best['val_miou']:.3f}) does not beat the best simple baselines fitted on the "
            f"train chips (accuracy {accuracy:.3f}: {CLASS_BASELINES[leaders['accuracy']]}; "
            f"mean IoU {miou:.3f}: {CLASS_BASELINES[leaders['miou']]}; see {BASELINES}): "
            f"{', '.join(advice[:-1]) + ' or ' if len(advice) > 1 else ''}{advice[-1]}; "
            + (_unjudged_note(unjudged) if unjudged else
               f"`geopix2pix predict --baseline {leaders['miou']}` writes the "
               f"{CLASS_BASELINES[leaders['miou']]}'s map"))


def _linear_helps(baselines: RunBaselines, margin: float = 0.05) -> bool:
    """Whether the linear map beats the train mean on the val chips by `margin` of its MAE:
    only then is refining it (--residual linear) worth advising. Where the bands explain
    nothing of the target (a hillshade from a DEM's heights), a generator over it must first
    undo it (docs/train.md)."""
    linear, constant = (baselines.scores.get(k, {}).get("val_mae", math.nan)
                        for k in ("linear", "constant"))
    return bool(linear < (1 - margin) * constant)


def _unjudged_note(unjudged: list[int]) -> str:
    """Why a class map's comparison cannot be trusted when the val chips lack train classes."""
    shown = ", ".join(map(str, unjudged[:8])) + (", ..." if len(unjudged) > 8 else "")
    return (f"but the val chips hold no pixel of class code(s) {shown}, so these scores favour "
            "never predicting them: export val chips that cover every class before trusting "
            "this comparison")


def _is_start(best: dict[str, Any]) -> bool:
    """Whether model-best is the residual generator's start (epoch 0): the baseline itself,
    whatever the last bits of the two evaluations of it."""
    return best.get("epoch") == 0


def _start_note(best: dict[str, Any], start: str) -> str:
    """What the warning says first when model-best is the residual generator's start."""
    if not _is_start(best):
        return ""
    return (f"no trained epoch beat the generator's start ({start} itself) on the val chips, "
            "so model-best is that start; ")

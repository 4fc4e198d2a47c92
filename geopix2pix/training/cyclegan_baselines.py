"""The baseline a CycleGAN run's model files carry: the train mean of each direction's output.

The linear baselines are fitted on pairs (`baselines`), but the mean needs none: the A -> B file
carries domain B's train mean, the B -> A file domain A's, each on the [-1, 1] scale its
generator writes and over the valid pixels of the train chips alone, as the ``constant``
`PixelMap` (weight rows of zeros over the input bands, bias the mean), so that
``predict --baseline constant`` writes it like a Pix2Pix file's. The sums stream over the
chips with `baselines.accumulate` (each rank its shard, added across ranks), and the run writes
them to baselines.json, read back on --resume, so a resumed run writes the same files whatever
its number of ranks. Where the chips are paired, the end of the run scores B's mean on the val
pairs as validation scores A -> B (``val_l1``) and says when model-best does not beat it: with
pairs, Pix2Pix learns from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from geopix2pix.chips.dataset import ChipDataset
from geopix2pix.models.baseline import BaselineMaps, PixelMap
from geopix2pix.runtime import distributed

from .baselines import BASELINES, accumulate, shard_loader, solve_linear, write
from .losses import masked_l1

# direction -> (its input domain, its output domain)
DIRECTIONS = {"a_to_b": ("source", "target"), "b_to_a": ("target", "source")}


class DomainChips(Dataset):
    """One domain's train chips as the items `baselines.accumulate` reads: the chip (scaled)
    as the target, no source band, its validity."""

    def __init__(self, chips: ChipDataset, domain: str) -> None:
        self.chips, self.domain = chips, domain

    def __len__(self) -> int:
        return len(self.chips.domain_ids[self.domain])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        tensor, valid = self.chips.domain_chip(self.domain, index)
        return {"source": tensor[:0], "target": tensor, "valid": valid}


def for_run(family) -> dict[str, BaselineMaps]:
    """Each direction's baselines (the constant alone): read back from RUN_DIR/baselines.json
    on --resume when it holds this dataset's, else computed (and written by rank 0)."""
    run = family.run
    bands = family.bands["a"], family.bands["b"]
    path = run.run_dir / BASELINES
    if run.config.resume:
        saved = read(path, run.dataset, *bands)
        if not distributed.any_rank(saved is None):  # all ranks read it back, or all compute
            return saved
    run.log("computing each domain's train mean (a pass over the train chips)")
    maps, pixels = means(family)
    text = json.dumps({"dataset": run.dataset, "family": "cyclegan", "pixels": pixels,
                       "maps": {k: m.to_dict() for k, m in maps.items()}}, indent=2)
    distributed.writer_first(lambda: write(path, text))
    return maps


def means(family) -> tuple[dict[str, BaselineMaps], dict[str, int]]:
    """Each direction's output-domain train mean over the valid pixels, as baselines, and the
    pixels each was taken over."""
    run = family.run
    chips = ChipDataset(run.chips_dir, "train", unpaired=True)  # unaugmented: the same pixels
    count = {"source": family.bands["a"], "target": family.bands["b"]}
    sums = [accumulate(shard_loader(DomainChips(chips, domain), run.config.batch_size,
                                    run.rank, run.world, run.setup), 0, count[domain], None)
            for domain in ("source", "target")]
    packed = torch.cat(sums)
    if run.world > 1:  # every rank the one-process sums
        packed = distributed.all_reduce_sum(packed)
    sums = dict(zip(("source", "target"), packed.split([len(s) for s in sums])))
    maps, pixels = {}, {}
    for direction, (given, written) in DIRECTIONS.items():
        _, mean, pixels[direction] = solve_linear(sums[written], 0, count[written])
        maps[direction] = BaselineMaps(None, constant(mean.bias, count[given]))
    return maps, pixels


def constant(mean: tuple[float, ...], in_bands: int) -> PixelMap:
    """The map that writes ``mean`` whatever its ``in_bands`` input bands."""
    return PixelMap(tuple((0.0,) * in_bands for _ in mean), tuple(mean))


def read(path: Path, dataset: str, a_bands: int, b_bands: int
         ) -> dict[str, BaselineMaps] | None:
    """baselines.json's maps when written by a CycleGAN run of this dataset and of these
    shapes; None otherwise (compute again)."""
    count = {"source": a_bands, "target": b_bands}
    try:
        data: Any = json.loads(path.read_text())
        if data["dataset"] != dataset or data["family"] != "cyclegan":
            return None
        maps = {}
        for direction, (given, written) in DIRECTIONS.items():
            maps[direction] = BaselineMaps.from_dict(data["maps"][direction])
            maps[direction].check_shape(count[given], count[written])
            if maps[direction].names() != ("constant",):
                return None
        return maps
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def score_on_pairs(family) -> dict[str, dict[str, float]]:
    """{"constant": {"val_l1": ...}}: the A -> B file's constant (B's train mean) scored as
    validation scores A -> B, its masked L1 to each val pair's own B on the [-1, 1] scale (each
    rank its shard, the sums added); empty for unpaired chips or without val chips."""
    run = family.run
    if not run.info.paired or not family.val_set:
        return {}
    mean = torch.tensor(family.baselines["a_to_b"].constant.bias).view(1, -1, 1, 1)
    totals = torch.zeros(2, dtype=torch.float64)  # the L1 summed over the valid pixels, they
    for batch in shard_loader(family.val_set, run.config.batch_size, run.rank, run.world,
                              run.setup):
        target, valid = batch["target"], batch["valid"]
        count = float(valid.sum())
        if count:
            totals += torch.tensor([float(masked_l1(mean.expand_as(target), target, valid))
                                    * count, count], dtype=torch.float64)
    if run.world > 1:
        totals = distributed.all_reduce_sum(totals.to(run.setup.device)).cpu()
    return {"constant": {"val_l1": float(totals[0] / totals[1])}} if totals[1] > 0 else {}


def report(family, best: dict[str, Any], scores: dict[str, dict[str, float]]) -> str | None:
    """"model-best: val L1 A -> B 0.21 · constant 0.19 (...)" on paired val chips, and the
    warning (logged) when model-best does not beat the mean; None otherwise."""
    if "constant" not in scores or "val_l1" not in best:
        return None
    model, mean = best["val_l1"], scores["constant"]["val_l1"]
    if not model < mean:  # (NaN included)
        family.run.log(f"warning: model-best's A -> B (val L1 {model:.4g} on the paired val "
                       f"chips) does not beat domain B's train mean ({mean:.4g}, which the "
                       "model file carries): these chips are paired, and Pix2Pix (--model "
                       "pix2pix) learns the translation from the pairs; `geopix2pix predict "
                       "--baseline constant` writes the mean")
    return (f"model-best: val L1 A -> B {model:.4g} · constant {mean:.4g} (B's train mean; on "
            "the paired val chips, on the [-1, 1] scale)")

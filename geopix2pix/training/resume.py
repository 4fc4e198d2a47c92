"""--resume: a run's options are saved in its folder (train.json); resuming reads them back, so
that only the options typed again override them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.runtime import distributed
from geopix2pix.runtime.device import available_cpus
from geopix2pix.settings.recipes import unrecorded_defaults
from geopix2pix.settings.train import TrainConfig

OPTIONS = "train.json"  # a run's options, in its folder


def saved_options(run_dir: Path, given: dict[str, Any]) -> dict[str, Any]:
    """--resume: the options the run in `run_dir` was started with (its train.json), those
    `given` over them (one given as None, the API's "default", keeps the run's value), so
    resuming needs no option repeated (one that shapes the result, given
    differently from the checkpoint's, is then refused; a runtime one such as --workers or
    --device may change). Options this version does not know are dropped; the batch size per
    rank is the run's chips per step over this run's ranks, and its --workers at most this
    machine's CPUs."""
    known = {f.name for f in dataclasses.fields(TrainConfig)} - {"resume", "overwrite", "quiet"}
    try:
        saved = json.loads((run_dir / OPTIONS).read_text())
        options = {k: v for k, v in dict(saved["options"]).items() if k in known}
        effective = int(saved["effective_batch_size"])
    except (OSError, ValueError, KeyError, TypeError):  # missing or damaged: the checkpoint's
        recorded = _checkpoint_options(run_dir, known)  # (the run writes train.json again)
        if recorded is None:  # none either: the checkpoint's check says so
            return given
        options, effective = recorded
    options = {**unrecorded_defaults(options), **options}
    family = options.get("model", "pix2pix")
    if given.get("model", family) != family:
        raise GeoPix2PixError(f"--resume: {run_dir} trains a {family} model, not "
                              f"{given['model']}; resume it with --model {family} or start a "
                              "new run")
    world = distributed.env().world_size
    if effective % world == 0:
        options["batch_size"] = effective // world
    if isinstance(options.get("workers"), int):  # (a bigger machine's, not typed here)
        options["workers"] = min(options["workers"], max(2, available_cpus()))
    return {**options, **{k: v for k, v in given.items() if v is not None}}  # None: not given


def _checkpoint_options(run_dir: Path, known: set[str]) -> tuple[dict[str, Any], int] | None:
    """The options checkpoint.pt records (its batch size: the chips per step), for a run whose
    train.json is missing or damaged; None without a checkpoint or options in it."""
    from .checkpoint import CHECKPOINT, load_checkpoint

    if not (run_dir / CHECKPOINT).is_file():
        return None
    options = load_checkpoint(run_dir).get("options")
    if not isinstance(options, dict) or not isinstance(options.get("batch_size"), int):
        return None
    return {k: v for k, v in options.items() if k in known and k != "batch_size"}, \
        options["batch_size"]

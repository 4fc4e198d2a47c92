"""The run's checkpoint.pt: what it holds (the family's state, the run's progress, the schedule,
the options, every rank's RNG state), writing it, and restoring a run from it on --resume.

The run's progress is `fresh_state`'s dict (epoch, step, batches done in the epoch, model-best's
score and scores, the losses of a validation not yet reached). A checkpoint resumes on any
number of ranks with the same chips per step; on another number each rank draws afresh (batch
order and schedule stay exact). See `checkpoint` for the file and `checkpoint_check` for what is
checked before anything is loaded.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models.schema import SchemaError
from geopix2pix.runtime import distributed
from geopix2pix.settings.recipes import unrecorded_defaults
from geopix2pix.settings.train import TrainConfig

from .checkpoint import (
    CHECKPOINT,
    check_same_options,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .checkpoint_check import Expected
from .families.base import ModelFamily, RunContext
from .loop import seed_everything
from .run_folder import RunFolder

FAMILY_RANKS = "family_ranks"  # each rank's `ModelFamily.rank_state`


def fresh_state() -> dict[str, Any]:
    """A new run's progress."""
    return {"epoch": 0, "step": 0, "batch_in_epoch": 0, "best": math.inf, "best_scores": {},
            "partial": {}}


class RunCheckpoint:
    """Writes and restores checkpoint.pt for the run ``run`` training ``family``."""

    def __init__(self, run: RunContext, family: ModelFamily, folder: RunFolder) -> None:
        self.run, self.family, self.folder = run, family, folder
        self.saved = run.config.resume  # one to continue from: resumed from, or written
        self.schedule = None  # the run's LinearDecaySchedule, once built

    def options(self) -> dict[str, Any]:
        """Options that define the run (stored in checkpoints and model files)."""
        return {**self.run.config.result_options(), "batch_size": self.run.effective_batch,
                "dataset": self.run.dataset}

    def restore(self, state: dict[str, Any]) -> None:
        """Load checkpoint.pt into the family and ``state`` (in place), and the RNG states."""
        run = self.run
        saved = load_checkpoint(run.run_dir, Expected(
            self.family.networks(), self.family.optimizers(), state,
            same_run=self._check_same_run, losses=len(self.family.loss_names)))
        self.family.load_state_dict(saved)
        family_ranks = saved.get(FAMILY_RANKS) or []
        if run.rank < len(family_ranks):  # (on more ranks than saved, the others start afresh)
            self.family.load_rank_state(family_ranks[run.rank])
        state.update({k: saved[k] for k in state})
        ranks = saved.get("rng_ranks") or [saved["rng"]]
        if len(ranks) == run.world:
            set_rng_state(ranks[run.rank])  # exactly where this rank left off
        else:  # another number of ranks: fresh per-rank draws (batches and schedule still exact)
            seed_everything(run.config.seed + run.rank + 1_000_003 * int(saved["step"]))

    def _check_same_run(self, saved: dict[str, Any]) -> None:
        """Refuse a checkpoint of other options, or of another number of chips per step, or
        (SchemaError) with ranks' family state that does not fit."""
        self._check_effective_batch(saved)
        check_same_options(saved["options"], self.options(), self.run.run_dir / CHECKPOINT,
                           defaults=_defaults_of(saved["options"]))
        if self.family.rank_state() is not None:
            family_ranks = saved.get(FAMILY_RANKS)
            if not isinstance(family_ranks, list) or not family_ranks:
                raise SchemaError(FAMILY_RANKS, "is missing or not a list")
            for index, value in enumerate(family_ranks):
                self.family.check_rank_state(value, f"{FAMILY_RANKS}[{index}]")

    def _check_effective_batch(self, saved: dict[str, Any]) -> None:
        """A run resumes on any number of ranks with the same chips per step (its schedule and
        batch order are counted in those steps)."""
        run = self.run
        before = int(saved["options"].get("batch_size", 0))
        if before == run.effective_batch:
            return
        ranks = int(saved.get("world_size", 1))
        hint = f"resume with --batch-size {before // run.world}" if before % run.world == 0 \
            else f"use a number of ranks that divides {before}"
        raise GeoPix2PixError(
            f"--resume: {run.run_dir / CHECKPOINT} trained with {before} chips per step "
            f"({ranks} rank(s) x --batch-size {before // ranks}); on {run.world} rank(s) {hint}")

    def save(self, state: dict[str, Any]) -> None:
        """checkpoint.pt for ``state``; at an epoch end the staged folder then replaces an
        earlier run (see `run_folder`)."""
        run = self.run
        rngs = distributed.all_gather_object(rng_state())  # every rank's, to resume exactly
        own = self.family.rank_state()
        family_ranks = {} if own is None else {FAMILY_RANKS: distributed.all_gather_object(own)}
        partial = state["partial"]
        if partial and run.world > 1:  # mid-epoch: the ranks' mean losses so far, not rank 0's
            sums = distributed.all_reduce_sum(torch.tensor(partial["sums"])) / run.world
            partial = {**partial, "sums": sums.tolist()}
        # no rank goes on (or exits) before the checkpoint is written
        distributed.writer_first(lambda: save_checkpoint(run.run_dir, {
            **self.family.state_dict(), "schedule": self.schedule.state_dict(),
            "options": self.options(), **state, "partial": partial,
            "world_size": run.world, "rng_ranks": rngs, **family_ranks}))
        self.saved = True
        if not state["partial"]:  # an epoch end: model files and checkpoint written
            self.folder.replace_earlier()


def _defaults_of(saved: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint's run used for the options it does not record: its family's defaults
    (a CycleGAN run from before --pixel-loss...); a Pix2Pix run records its recipe's options
    since --recipe, and before it used the paper's (`unrecorded_defaults`)."""
    family = saved.get("model", "pix2pix")
    paper = {"recipe": "paper"} if family == "pix2pix" else {}
    return {**TrainConfig(model=family, **paper).result_options(),
            **unrecorded_defaults(saved)}

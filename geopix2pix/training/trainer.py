"""`train(chips_dir, out_dir, **options)`: the training run behind `geopix2pix train`.

chips folder -> the model family's networks (`families`), datasets and loaders -> the run folder
(`run_folder`) -> the family's state fresh or from checkpoint.pt (`run_checkpoint`) -> the epochs
(`loop`). Ctrl-C / SIGTERM finish the current step, write the checkpoint and stop. With
--overwrite the earlier run stays until the new one's first epoch end (see `outputs`).

Under torchrun (see `distributed`) every rank runs this same code: each trains on its slice of
every global batch (``--batch-size`` per rank) and validates its shard of the val chips, and all
writes go through ``distributed.writer_first`` (rank 0 writes, the others wait, and a failed
write stops all). Checkpoints hold the plain modules' state, so a run can resume on any number
of ranks with the same effective batch.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from geopix2pix.chips.manifest import MANIFEST, DatasetInfo
from geopix2pix.errors import GeoPix2PixError, refuse_spawned_reimport, warn_user
from geopix2pix.runtime import distributed
from geopix2pix.runtime.device import default_workers
from geopix2pix.runtime.staging import remove_stale_folders, wait_for_put_back
from geopix2pix.runtime.stopping import StopRequest, attaches_stop_report
from geopix2pix.settings.checking import api_function
from geopix2pix.settings.declare import flag
from geopix2pix.settings.families import FAMILY_DEFAULTS
from geopix2pix.settings.recipes import RECIPES
from geopix2pix.settings.train import TrainConfig, TrainKeywords

from .checkpoint import CHECKPOINT
from .data import EpochBatchSampler, make_loader
from .device import DeviceSetup, device_setup
from .families import RunContext, family_for
from .history import typed_row
from .loop import (
    EpochRunner,
    TrainingDiverged,
    build_schedule,
    callers_random_state,
    seed_everything,
)
from .outputs import SaysHowToContinue, stop_reporter
from .recipe_choice import choose_recipe
from .resume import saved_options
from .run_checkpoint import RunCheckpoint, fresh_state
from .run_folder import BEST_MODEL, MODEL, RUN_OUTPUTS, RunFolder, check_run_folder

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["BEST_MODEL", "MODEL", "RUN_OUTPUTS", "TrainResult", "Trainer", "TrainingStopped",
           "train"]
WARNING = "warning: "  # how a log line that is a warning starts


class TrainingStopped(KeyboardInterrupt):
    """A run stopped by a signal or the callback. ``checkpoint``: the checkpoint.pt to continue
    from with --resume, None when nothing was saved; ``signum``: the signal (None: callback)."""

    def __init__(self, checkpoint: Path | None = None, signum: int | None = None) -> None:
        super().__init__(f"stopped; continue from {checkpoint} with --resume" if checkpoint
                         else "stopped before a checkpoint was written")
        self.checkpoint = checkpoint
        self.signum = signum


@dataclass
class TrainResult:
    """What a run produced."""

    run_dir: Path
    model_path: Path
    best_model_path: Path
    checkpoint_path: Path
    epochs: int
    steps: int
    metrics: list[dict[str, int | float | None]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)  # the baselines' scores
    comparison: str | None = None  # "model-best: val MAE 3.1 · linear 5.2 · constant 18.9"
    # the other direction's latest and best model files (CycleGAN: B -> A), else none
    reverse_model_path: Path | None = None
    reverse_best_model_path: Path | None = None


def _stderr(message: str) -> None:
    """The API's default log: lines to stderr, warnings as GeoPix2PixWarnings (catchable)."""
    if message.startswith(WARNING):
        warn_user(message[len(WARNING):])
    else:
        print(message, file=sys.stderr)


def _quiet(_message: str) -> None:
    """The log of ranks other than 0: they say nothing."""


def _dataset_fingerprint(chips_dir: Path) -> str:
    return hashlib.sha256((chips_dir / MANIFEST).read_bytes()).hexdigest()[:16]


def _under_the_floor(config: TrainConfig, recipe: str | None, total_steps: int) -> str | None:
    """A warning where the epochs given without a floor (a length given is trained as given)
    make fewer steps than the recipe's floor, the least its benchmarks trained: a small chips
    folder's epochs are a step or two each."""
    floor = RECIPES[recipe]["min_steps"] if recipe in RECIPES else 0
    if not config.epochs_under_no_floor or config.max_steps is not None or \
            total_steps >= floor:
        return None
    return (f"warning: {config.epochs} + {config.decay_epochs} epochs are {total_steps} steps "
            f"on these chips, under the {recipe} recipe's floor of {floor}: trained as given; "
            f"drop --epochs and --decay-epochs for the recipe's length, or pass --min-steps "
            f"{floor}")


class Trainer:
    """One training run: set up from options (and checkpoint), then ``fit``. The set-up's order
    (seed, networks, per-rank seed, datasets, run folder, family state) is part of what a seed
    reproduces."""

    def __init__(self, chips_dir, out_dir, config: TrainConfig,
                 log: Callable[[str], None] = _stderr, setup: DeviceSetup | None = None) -> None:
        chips_dir = Path(chips_dir)
        info = DatasetInfo.load(chips_dir)
        info.check_trainable(chips_dir)
        setup = setup or device_setup(config.device, config.amp)
        log = log if distributed.is_writer() else _quiet
        check_run_folder(Path(out_dir), config, chips_dir)  # before auto reads the chips
        choice = choose_recipe(config, chips_dir, info, setup)
        config, self.recipe_note = choice.config, choice.note
        self.run = RunContext(chips_dir, info, config, setup, distributed.rank(),
                              distributed.world_size(), log, _dataset_fingerprint(chips_dir),
                              Path(out_dir), choice.sums, choice.recipe)
        self.config, self.log = config, self.run.log
        self.family = family_for(config.model)(self.run)
        if self.family.needs_pairs:
            info.check_paired(chips_dir)
        seed_everything(config.seed)  # the same initial weights on every rank
        self.family.build_networks()
        if self.run.world > 1:
            seed_everything(config.seed + self.run.rank)  # but each rank its own dropout draws
        self.train_set, self.val_set = self.family.datasets()
        self._check_sizes()
        if config.sync_bn:
            self.family.sync_batch_norm()
        self.folder = RunFolder(self.run)
        self.checkpoint = RunCheckpoint(self.run, self.family, self.folder)
        self.runner: EpochRunner | None = None
        self.folder.open()
        try:  # a failure from here on removes what the run wrote (`outputs.leave_failed`)
            self._set_up()
        except BaseException as exc:
            self.folder.failed(exc, config.resume)
            raise

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    def _set_up(self) -> None:
        """The family's state on the device, the batch order and the run's progress (restored
        on --resume), once the run folder is open."""
        config, run = self.config, self.run
        self.family.set_up()
        self.workers = default_workers(leave=1) if config.workers is None else config.workers
        self.sampler = EpochBatchSampler(len(self.train_set), config.batch_size, config.seed,
                                         with_epoch=getattr(self.train_set, "unpaired", False),
                                         rank=run.rank, world_size=run.world)
        self.state = fresh_state()
        if config.resume:
            self.checkpoint.restore(self.state)

    def failed(self, exc: BaseException) -> None:
        """Remove what this run wrote, when `exc` ended it before it had something to keep
        (see `outputs`)."""
        self.folder.failed(exc, self.checkpoint.saved)

    def _check_sizes(self) -> None:
        run = self.run
        if len(self.train_set) == 0:
            raise GeoPix2PixError(f"{run.chips_dir} has no train chips; re-export with a "
                                  "smaller --val-fraction or more data")
        if run.world > 1 and len(self.train_set) < run.effective_batch:
            raise GeoPix2PixError(
                f"{len(self.train_set)} train chips cannot fill one step of {run.world} ranks x "
                f"--batch-size {self.config.batch_size}; lower --batch-size or use fewer ranks")

    def release(self) -> None:
        """Let go of the DDP wrappers and the loaders (their worker processes), also while an
        exception's traceback keeps this trainer alive: leaving the process group then frees
        them while Python still runs (see ``distributed.cleanup``)."""
        self.family.release()
        self.runner = None

    def _loaders(self) -> tuple[Any, Any]:
        """This rank's train batches and its shard of the val chips (None without any)."""
        config, run = self.config, self.run
        train_loader = make_loader(self.train_set, self.sampler, self.workers, run.setup,
                                   config.seed)
        val_sampler = EpochBatchSampler(len(self.val_set), config.batch_size, 0, shuffle=False,
                                        rank=run.rank, world_size=run.world)
        val_loader = make_loader(self.val_set, val_sampler, self.workers, run.setup, 0) \
            if len(self.val_set) else None
        return train_loader, val_loader

    def _run(self, stop: StopRequest, callback: Callable[[dict], bool | None] | None) -> None:
        """The epochs; a stop (signal or callback) raises ``TrainingStopped`` saying which
        checkpoint to continue from (None when nothing was saved)."""
        try:
            self.runner.run(stop, callback)
        except KeyboardInterrupt:
            checkpoint = self.run_dir / CHECKPOINT if self.checkpoint.saved else None
            raise TrainingStopped(checkpoint, stop.signum) from None

    def _diverged(self, step: int) -> None:
        """Training diverged by `step`: a warning when a validation before it picked a
        model-best (the run ends there, with it), else an error (nothing worth keeping), as it is
        for a --overwrite run that has not replaced the earlier one yet (that one stays)."""
        best = self.state["best_scores"]
        lower = f"train again with a lower --lr (this run's: {self.config.lr:g})"
        raised = [f"{flag(self.config, name)} {getattr(self.config, name):g}"
                  for name, default in FAMILY_DEFAULTS[self.config.model].items()
                  if name.startswith("lambda_") and (getattr(self.config, name) or 0) > default]
        if raised:  # (weights of 1e308 made the losses infinite: not the learning rate's fault)
            lower += f" or the loss weights raised above their defaults ({', '.join(raised)})"
        said = (f"training diverged by step {step}: the networks' weights are no longer finite "
                "numbers (NaN or infinite), so it stopped there")
        if not best:
            raise GeoPix2PixError(f"{said}, before any validation scored them: nothing worth "
                                  f"keeping was trained; {lower}")
        if distributed.any_rank(self.folder.replaces_earlier()):  # (rank 0 knows) --overwrite
            # replaces the earlier run only with one that went on past a validation
            earlier = self.folder.output.final if self.folder.output else self.run_dir
            raise GeoPix2PixError(f"{said}, before it replaced the earlier run in {earlier}, "
                                  f"which is as it was; {lower}")
        self.folder.latest_from_best(self.family)
        self.log(f"warning: {said}; {BEST_MODEL} and {MODEL} hold the last validated weights "
                 f"(model-best: epoch {best.get('epoch')}); {lower}")

    def _check_progress(self, total_steps: int, steps_per_epoch: int) -> None:
        """Refuse a resumed checkpoint whose step or epoch this run's schedule never reaches
        (a crafted one's 10**18 steps were reported as a complete run, with model files that
        were never written)."""
        step, epoch = self.state["step"], self.state["epoch"]
        epochs = max(1, math.ceil(total_steps / max(steps_per_epoch, 1)))
        if step > total_steps or epoch > epochs:
            raise GeoPix2PixError(
                f"--resume: {self.run_dir / CHECKPOINT} is at step {step} of epoch {epoch}, "
                f"past this run's {total_steps} steps in {epochs} epochs; it is damaged or "
                "edited: start a new run with --overwrite")

    def _announce(self, total_steps: int, steps_per_epoch: int) -> None:
        config, run = self.config, self.run
        ranks = f", {run.world} ranks ({torch.distributed.get_backend()})" \
            if run.world > 1 else ""
        epochs = config.epochs + config.decay_epochs
        stretched = f" (the {steps_per_epoch * epochs} of {config.epochs} + " \
            f"{config.decay_epochs} epochs stretched to --min-steps {config.min_steps})" \
            if config.max_steps is None and total_steps > steps_per_epoch * epochs else ""
        self.log(f"training on {run.setup.describe()}{ranks}: {_chips(self.train_set)} train / "
                 f"{_chips(self.val_set)} val chips, batch {config.batch_size} per rank x "
                 f"{run.world} = {run.effective_batch} per step, {total_steps} steps{stretched}")
        if self.recipe_note:
            self.log(self.recipe_note)
        if short := _under_the_floor(config, run.recipe, total_steps):
            self.log(short)
        for line in self.family.describe():
            self.log(line)
        if self.state["step"] >= total_steps:
            self.log(f"{self.run_dir} is complete ({self.state['step']} steps): nothing left to "
                     "train; start a new run (-o) to train longer")

    def fit(self, callback: Callable[[dict], bool | None] | None = None) -> TrainResult:
        """Train to the end of the schedule (or until stopped: ``TrainingStopped``, a
        KeyboardInterrupt)."""
        self.folder.write_options()
        if not self.val_set:
            self.log("warning: the chips folder has no val chips; validation metrics stay "
                     "empty and model-best.safetensors is picked by "
                     f"{self.family.criterion_without_val()}")
        loaders = self._loaders()
        history = self.folder.open_history(self.state["epoch"], self.family.metrics_columns)
        schedule = build_schedule(self.config, self.sampler.batches_per_epoch())
        self.checkpoint.schedule = schedule
        self._check_progress(schedule.total_steps, self.sampler.batches_per_epoch())
        self.runner = EpochRunner(self.family, self.state, self.config, self.sampler, schedule,
                                  loaders, self.folder, self.checkpoint)
        self._announce(schedule.total_steps, self.sampler.batches_per_epoch())
        try:
            with StopRequest() as stop:
                self._run(stop, callback)
        except TrainingDiverged as diverged:
            self._diverged(diverged.step)
        finally:
            history.close()
        self.folder.check_replicas(self.family)
        best = self.state["best_scores"]
        scores, comparison = self.family.summary(best)
        reverse = [e for e in self.family.exports() if e.direction == "b_to_a"]
        return TrainResult(self.run_dir, self.run_dir / MODEL, self.run_dir / BEST_MODEL,
                           self.run_dir / CHECKPOINT, self.state["epoch"], self.state["step"],
                           [typed_row(r) for r in history.rows], best, scores, comparison,
                           *((self.run_dir / reverse[0].latest, self.run_dir / reverse[0].best)
                             if reverse else ()))


@api_function
@attaches_stop_report(lambda call: stop_reporter(call["out_dir"]))
def train(chips_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
          callback: Callable[[dict], bool | None] | None = None,
          log: Callable[[str], None] = _stderr,
          **options: Unpack[TrainKeywords]) -> TrainResult:
    """Train a model (``model``: pix2pix or cyclegan) on a chips folder into ``out_dir`` (options
    as `geopix2pix train`'s).

    ``callback(info)`` is called after each step with {"epoch", "step", "lr", losses}; returning
    True stops the run as Ctrl-C does (checkpoint written, ``TrainingStopped``, a
    KeyboardInterrupt, raised).
    Under torchrun, this joins the process group (NCCL on CUDA, gloo on the CPU) and trains with
    DDP; the process stays in the group (a later run reuses it) until it exits.
    """
    refuse_spawned_reimport("train")
    given: dict[str, Any] = dict(options)
    typed = [name for name, value in given.items() if value is not None]
    if given.get("resume"):
        final = Path(out_dir).resolve()  # a killed swap's folder is put back first
        if distributed.env().rank == 0:
            remove_stale_folders(final)
        else:  # (torchrun: the other ranks wait for rank 0 to put it back)
            wait_for_put_back(final)
        given = saved_options(Path(out_dir), given)
    config = TrainConfig.from_options(**given)
    config.refuse_unused(typed)
    setup = device_setup(config.device, config.amp, distributed.env().local_rank)
    distributed.init_from_env(setup.device)  # left when the process exits
    trainer = None
    with callers_random_state():  # (the run seeds the global generators)
        try:
            try:
                trainer = Trainer(chips_dir, out_dir, config, log, setup)
                return trainer.fit(callback)
            except RuntimeError as exc:  # (in the set-up too: DDP's, the baselines' sums)
                if not distributed.peer_lost(exc):
                    raise
                run_dir, saved = (trainer.run_dir, trainer.checkpoint.saved) if trainer \
                    else (Path(out_dir), config.resume)
                raise SaysHowToContinue(_lost_peer(exc, run_dir, saved)) from None
        except BaseException as exc:
            if trainer is not None:
                trainer.failed(exc)
            raise
        finally:
            if trainer is not None:
                trainer.release()


def _lost_peer(exc: RuntimeError, run_dir: Path, saved: bool) -> str:
    """The one line of a run that lost contact with another torchrun process (it ended:
    killed, out of memory, or stopped by its own error, said above; or it stopped answering):
    what is left to continue from (`saved`: a checkpoint, written or resumed from)."""
    reason = _first_sentence(str(exc)) or type(exc).__name__
    left = (f"continue from {run_dir / CHECKPOINT} with --resume" if saved
            else "nothing was saved yet: run it again")
    return f"lost contact with another torchrun process of this run ({reason}): {left}"


def _first_sentence(text: str, most: int = 160) -> str:
    """A backend's message in short: its first line's first sentence, without the source
    location gloo puts first ("[.../pair.cc:534] Connection closed by peer [...]:29095. This
    is typically ...")."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = re.sub(r"^\[[^\]]*\]\s*", "", line)
    return line.split(". ")[0][:most]


def _chips(dataset) -> str:
    """How many chips a split holds: of each domain for unpaired chips (an item is one of
    each, drawn as many times as the larger domain has chips)."""
    if getattr(dataset, "unpaired", False):
        return " + ".join(f"{len(ids)} {domain}" for domain, ids in dataset.domain_ids.items())
    return str(len(dataset))

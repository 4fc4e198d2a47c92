"""`train(chips_dir, out_dir, **options)`: the Pix2Pix training run behind `geopix2pix train`.

chips folder -> datasets and loaders -> G, D, optimizers (fresh or from checkpoint.pt) -> epochs of
steps -> at each epoch end: validation, samples, metrics.csv, model.safetensors (+ model-best),
checkpoint.pt. Ctrl-C / SIGTERM finish the current step, write the checkpoint and stop. With
--overwrite the earlier run stays until the new one's first epoch end (see `outputs`).

Under torchrun (see `distributed`) every rank runs this same code: G and D are wrapped in
DistributedDataParallel, each rank trains on its slice of every global batch (``--batch-size``
per rank), validates its shard of the val chips, and all writes go through
``distributed.writer_first`` (rank 0 writes, the others wait, and a failed write stops all).
At each epoch end the ranks' batch-norm running statistics are averaged
(``distributed.average_running_stats``), so every rank validates and saves the same network.
Checkpoints hold the plain modules' state, so a run can resume on any number of ranks with the
same effective batch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from geopix2pix.chips.dataset import ChipDataset
from geopix2pix.chips.manifest import MANIFEST, DatasetInfo
from geopix2pix.errors import GeoPix2PixError, refuse_spawned_reimport, warn_user
from geopix2pix.models import save_model
from geopix2pix.models.baseline import ResidualGenerator, zero_output_layer
from geopix2pix.models.metadata import ModelMetadata
from geopix2pix.raster.write import write_text_atomic
from geopix2pix.runtime import distributed
from geopix2pix.runtime.device import default_workers
from geopix2pix.runtime.folders import Owned
from geopix2pix.runtime.stopping import StopRequest, TrainingStopped, attaches_stop_report
from geopix2pix.settings.checking import api_function
from geopix2pix.settings.train import TrainConfig, TrainKeywords

from . import baselines
from .checkpoint import CHECKPOINT, check_same_options, load_checkpoint, rng_state, set_rng_state
from .checkpoint_check import Expected
from .classes import describe_classes, objective_for, trained_classes
from .data import EpochBatchSampler, make_loader
from .device import DeviceSetup, device_setup, maybe_compile
from .ema import WeightAverage
from .history import METRICS, MetricsLog, typed_row
from .loop import EpochRunner, seed_everything
from .networks import build_networks
from .outputs import leave_failed, open_run_dir, stop_reporter, writing
from .resume import OPTIONS, saved_options
from .step import Pix2PixStep

if TYPE_CHECKING:
    from typing_extensions import Unpack

MODEL = "model.safetensors"
BEST_MODEL = "model-best.safetensors"
WARNING = "warning: "  # how a log line that is a warning starts
# all a run writes in RUN_DIR: --overwrite removes these and refuses anything else
RUN_OUTPUTS = Owned((MODEL, BEST_MODEL, CHECKPOINT, METRICS, OPTIONS, baselines.BASELINES),
                    {"samples": Owned(("epoch_*.png",)),
                     "tensorboard": Owned(("events.out.tfevents.*",))})


def is_writer() -> bool:
    """Whether this process writes outputs: rank 0 under DDP, the only process otherwise."""
    return distributed.is_writer()


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
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)  # baselines.json's scores
    comparison: str | None = None  # "model-best: val MAE 3.1 · linear 5.2 · constant 18.9"


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


class Trainer:
    """One training run: set up from options (and checkpoint), then ``fit``."""

    def __init__(self, chips_dir, out_dir, config: TrainConfig,
                 log: Callable[[str], None] = _stderr, setup: DeviceSetup | None = None) -> None:
        self.chips_dir, self.run_dir = Path(chips_dir), Path(out_dir)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.config, self.log = config, log if is_writer() else _quiet
        self.info = DatasetInfo.load(self.chips_dir)
        self.info.check_trainable(self.chips_dir)
        self.info.check_paired(self.chips_dir)  # Pix2Pix learns from pairs
        self.setup = setup or device_setup(config.device, config.amp)
        self.classes = trained_classes(self.info, self.chips_dir) if config.categorical else None
        self.objective = objective_for(self.info, self.classes, config.class_weights)
        seed_everything(config.seed)  # the same initial weights on every rank
        self.spec, generator, discriminator = build_networks(self.info, config, self.classes)
        if self.world > 1:
            seed_everything(config.seed + self.rank)  # but each rank its own dropout draws
        self.train_set = ChipDataset(self.chips_dir, "train", classes=self.classes)
        self.val_set = ChipDataset(self.chips_dir, "val", classes=self.classes)
        self._check_sizes()
        if config.sync_bn:
            generator = distributed.sync_batch_norm(generator, self.setup.device)
            discriminator = distributed.sync_batch_norm(discriminator, self.setup.device)
        self.output = None  # where rank 0 writes (`outputs.open_run_dir`)
        distributed.writer_first(self._open_run_dir)
        try:  # a failure from here on removes what the run wrote (`outputs.leave_failed`)
            self._set_up(generator, discriminator)
        except BaseException as exc:
            leave_failed(self.output, config.resume, exc)
            raise

    def _set_up(self, generator: torch.nn.Module, discriminator: torch.nn.Module) -> None:
        """Baselines, networks on the device, optimizers, the step and the state (restored on
        --resume), once the run folder is open."""
        config = self.config
        self.baselines = baselines.for_run(self, _dataset_fingerprint(self.chips_dir))
        if config.residual == "linear":  # G learns target - linear, from exactly linear
            zero_output_layer(generator)
            generator = ResidualGenerator(generator, self.baselines.maps.linear)
        self.generator = self.setup.prepare(generator)
        self.discriminator = self.setup.prepare(discriminator)
        betas = (config.beta1, 0.999)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)
        self.step_fn = Pix2PixStep(
            maybe_compile(distributed.wrap(self.generator, self.setup.device), config.compile),
            maybe_compile(distributed.wrap(self.discriminator, self.setup.device),
                          config.compile),
            opt_g, opt_d, self.setup, config.gan_mode, config.lambda_l1,
            adversary=maybe_compile(self.discriminator, config.compile)
            if self.world > 1 else None, objective=self.objective)
        self.ema = WeightAverage(self.generator, config.ema) if config.ema else None
        self.workers = default_workers(leave=1) if config.workers is None else config.workers
        self.sampler = EpochBatchSampler(len(self.train_set), config.batch_size, config.seed,
                                         rank=self.rank, world_size=self.world)
        self.state = {"epoch": 0, "step": 0, "batch_in_epoch": 0, "best": math.inf,
                      "best_scores": {}, "partial": {}}
        self.has_checkpoint = config.resume  # one to continue from: resumed from, or written
        if config.resume:
            self._restore()

    def _open_run_dir(self) -> None:
        weights = [self.config.encoder_weights] if self.config.encoder_weights else []
        self.output = open_run_dir(self.run_dir, self.config.resume, self.config.overwrite,
                                   self.chips_dir, weights, RUN_OUTPUTS, CHECKPOINT)
        self.run_dir = self.output.path

    def _replace_earlier(self) -> None:
        """At the first epoch end with the run's own files (its model files are written at
        validations, `--val-every`): the new run, built beside an earlier one, replaces it."""
        if self.output is not None and self.output.staged and (self.run_dir / MODEL).exists():
            self.output.commit()
            self.run_dir = self.output.final
            self.runner.history.moved(self.run_dir)

    def failed(self, exc: BaseException) -> None:
        """Remove what this run wrote, when `exc` ended it before it had something to keep
        (see `outputs`)."""
        leave_failed(self.output, self.has_checkpoint, exc)

    @property
    def effective_batch(self) -> int:
        """Chips per optimisation step over all ranks."""
        return self.config.batch_size * self.world

    def _check_sizes(self) -> None:
        if len(self.train_set) == 0:
            raise GeoPix2PixError(f"{self.chips_dir} has no train chips; re-export with a "
                                  "smaller --val-fraction or more data")
        if self.world > 1 and len(self.train_set) < self.effective_batch:
            raise GeoPix2PixError(
                f"{len(self.train_set)} train chips cannot fill one step of {self.world} ranks x "
                f"--batch-size {self.config.batch_size}; lower --batch-size or use fewer ranks")

    def options(self) -> dict[str, Any]:
        """Options that define the run (stored in checkpoints and model files)."""
        return {**self.config.result_options(), "batch_size": self.effective_batch,
                "dataset": _dataset_fingerprint(self.chips_dir)}

    def _restore(self) -> None:
        saved = load_checkpoint(self.run_dir, Expected(
            {"generator": self.generator, "discriminator": self.discriminator},
            {"opt_g": self.step_fn.opt_g, "opt_d": self.step_fn.opt_d}, self.state,
            same_run=self._check_same_run))
        self.generator.load_state_dict(saved["generator"])
        self.discriminator.load_state_dict(saved["discriminator"])
        self.step_fn.opt_g.load_state_dict(saved["opt_g"])
        self.step_fn.opt_d.load_state_dict(saved["opt_d"])
        self.step_fn.scaler.load_state_dict(saved["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(saved)
        self.state = {k: saved[k] for k in self.state}
        ranks = saved.get("rng_ranks") or [saved["rng"]]
        if len(ranks) == self.world:
            set_rng_state(ranks[self.rank])  # exactly where this rank left off
        else:  # another number of ranks: fresh per-rank draws (batches and schedule still exact)
            seed_everything(self.config.seed + self.rank + 1_000_003 * int(saved["step"]))

    def _check_same_run(self, saved: dict[str, Any]) -> None:
        """Refuse a checkpoint of other options, or of another number of chips per step."""
        self._check_effective_batch(saved)
        check_same_options(saved["options"], self.options(), self.run_dir / CHECKPOINT,
                           defaults=TrainConfig().result_options())

    def _check_effective_batch(self, saved: dict[str, Any]) -> None:
        """A run resumes on any number of ranks with the same chips per step (its schedule and
        batch order are counted in those steps)."""
        before = int(saved["options"].get("batch_size", 0))
        if before == self.effective_batch:
            return
        ranks = int(saved.get("world_size", 1))
        hint = f"resume with --batch-size {before // self.world}" if before % self.world == 0 \
            else f"use a number of ranks that divides {before}"
        raise GeoPix2PixError(
            f"--resume: {self.run_dir / CHECKPOINT} trained with {before} chips per step "
            f"({ranks} rank(s) x --batch-size {before // ranks}); on {self.world} rank(s) {hint}")

    def save_checkpoint(self) -> None:
        """checkpoint.pt for the current state (see checkpoint.py)."""
        from .checkpoint import save_checkpoint

        rngs = distributed.all_gather_object(rng_state())  # every rank's, to resume exactly
        partial = self.state["partial"]
        if partial and self.world > 1:  # mid-epoch: the ranks' mean losses so far, not rank 0's
            sums = distributed.all_reduce_sum(torch.tensor(partial["sums"])) / self.world
            partial = {**partial, "sums": sums.tolist()}
        step_fn = self.step_fn
        # no rank goes on (or exits) before the checkpoint is written
        distributed.writer_first(lambda: save_checkpoint(self.run_dir, {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": step_fn.opt_g.state_dict(), "opt_d": step_fn.opt_d.state_dict(),
            "scaler": step_fn.scaler.state_dict(), "schedule": self.schedule.state_dict(),
            "options": self.options(), **self.state, "partial": partial,
            "world_size": self.world, "rng_ranks": rngs,
            **(self.ema.state_dict() if self.ema is not None else {}),
        }))
        self.has_checkpoint = True
        if not self.state["partial"]:  # an epoch end: model files and checkpoint written
            distributed.writer_first(self._replace_earlier)

    def eval_generator(self) -> torch.nn.Module:
        """What validation, samples and model files use: G, or its weight average (--ema)."""
        return self.generator if self.ema is None else self.ema.copy_buffers()

    def save_model(self, path: Path, validation: dict[str, float]) -> None:
        """The generator and its metadata at ``path`` (written by rank 0; every rank calls)."""
        distributed.writer_first(lambda: self._write_model(path, validation))

    def _write_model(self, path: Path, validation: dict[str, float]) -> None:
        options = {**self.config.to_dict(), "world_size": self.world,
                   "effective_batch_size": self.effective_batch}
        metadata = ModelMetadata.of_training(self.info, options, self.state["epoch"],
                                             self.state["step"], validation, self.classes,
                                             self.baselines.maps)
        with writing(path):
            save_model(path, self.eval_generator(), self.spec, metadata.to_dict())

    def write_options(self, replicas: dict[str, Any] | None = None) -> None:
        """RUN_DIR/train.json: options, device, ranks and batch sizes (and, at the end of a
        multi-rank run, each rank's parameter fingerprints; written by rank 0)."""
        distributed.writer_first(lambda: self._write_options(replicas))

    def _write_options(self, replicas: dict[str, Any] | None) -> None:
        options = self.config.to_dict()
        if options["encoder_weights"]:  # in full, so that a resume from elsewhere finds it
            options["encoder_weights"] = os.path.abspath(options["encoder_weights"])
        content = {"chips_dir": str(self.chips_dir.resolve()),
                   "options": options, "device": self.setup.describe(),
                   "dataset": _dataset_fingerprint(self.chips_dir),
                   "world_size": self.world, "batch_size_per_rank": self.config.batch_size,
                   "effective_batch_size": self.effective_batch}
        if replicas:
            content["replicas"] = replicas
        with writing(self.run_dir / OPTIONS):
            write_text_atomic(self.run_dir / OPTIONS, json.dumps(content, indent=2))

    def check_replicas(self) -> None:
        """Compare every rank's G and D (they must be identical under DDP); record the
        fingerprints in train.json and warn when they differ."""
        if self.world < 2:
            return
        mine = [distributed.fingerprint(self.generator),
                distributed.fingerprint(self.discriminator)]
        every = distributed.all_gather_object(mine)
        replicas = {"generator": [f[0] for f in every], "discriminator": [f[1] for f in every]}
        replicas["identical"] = all(f == every[0] for f in every)
        if not replicas["identical"]:
            self.log("warning: the ranks' networks differ at the end of the run (see "
                     f"{OPTIONS}); the model file holds rank 0's")
        self.write_options(replicas)

    def release(self) -> None:
        """Let go of the DDP wrappers and the loaders (their worker processes), also while an
        exception's traceback keeps this trainer alive: leaving the process group then frees
        them while Python still runs (see ``distributed.cleanup``)."""
        step_fn = self.step_fn
        step_fn.generator = step_fn.discriminator = step_fn.adversary = None
        self.runner = None

    @property
    def schedule(self):
        return self.runner.schedule

    def _run(self, stop: StopRequest, callback: Callable[[dict], bool | None] | None) -> None:
        """The epochs; a stop (signal or callback) raises ``TrainingStopped`` saying which
        checkpoint to continue from (None when nothing was saved)."""
        try:
            self.runner.run(stop, callback)
        except KeyboardInterrupt:
            checkpoint = self.run_dir / CHECKPOINT if self.has_checkpoint else None
            raise TrainingStopped(checkpoint, stop.signum) from None

    def fit(self, callback: Callable[[dict], bool | None] | None = None) -> TrainResult:
        """Train to the end of the schedule (or until stopped: ``TrainingStopped``, a
        KeyboardInterrupt)."""
        config = self.config
        self.write_options()
        if not self.val_set:
            self.log("warning: the chips folder has no val chips; validation metrics stay "
                     "empty and model-best.safetensors is picked by the train "
                     f"{self.objective.label} loss")
        train_loader = make_loader(self.train_set, self.sampler, self.workers, self.setup,
                                   config.seed)
        val_sampler = EpochBatchSampler(len(self.val_set), config.batch_size, 0, shuffle=False,
                                        rank=self.rank, world_size=self.world)
        val_loader = make_loader(self.val_set, val_sampler, self.workers, self.setup, 0) \
            if len(self.val_set) else None
        history = MetricsLog(self.run_dir, keep_before_epoch=self.state["epoch"] + 1,
                             enabled=is_writer())
        self.runner = EpochRunner(self, train_loader, val_loader, history)
        ranks = f", {self.world} ranks ({torch.distributed.get_backend()})" \
            if self.world > 1 else ""
        self.log(f"training on {self.setup.describe()}{ranks}: {len(self.train_set)} train / "
                 f"{len(self.val_set)} val chips, batch {config.batch_size} per rank x "
                 f"{self.world} = {self.effective_batch} per step, "
                 f"{self.runner.schedule.total_steps} steps")
        if self.classes is not None:
            for line in describe_classes(self.classes, self.objective, self.info,
                                         self.chips_dir):
                self.log(line)
        if self.state["step"] >= self.runner.schedule.total_steps:
            self.log(f"{self.run_dir} is complete ({self.state['step']} steps): nothing left to "
                     "train; start a new run (-o) to train longer")
        try:
            with StopRequest() as stop:
                self._run(stop, callback)
        finally:
            history.close()
        self.check_replicas()
        best = self.state["best_scores"]
        return TrainResult(self.run_dir, self.run_dir / MODEL, self.run_dir / BEST_MODEL,
                           self.run_dir / CHECKPOINT, self.state["epoch"], self.state["step"],
                           [typed_row(r) for r in history.rows], best, self.baselines.scores,
                           baselines.report(self, best))


@api_function
@attaches_stop_report(lambda call: stop_reporter(call["out_dir"]))
def train(chips_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
          callback: Callable[[dict], bool | None] | None = None,
          log: Callable[[str], None] = _stderr,
          **options: Unpack[TrainKeywords]) -> TrainResult:
    """Train Pix2Pix on a chips folder into ``out_dir`` (options as `geopix2pix train`'s).

    ``callback(info)`` is called after each step with {"epoch", "step", "lr", losses}; returning
    True stops the run as Ctrl-C does (checkpoint written, ``TrainingStopped``, a
    KeyboardInterrupt, raised).
    Under torchrun, this joins the process group (NCCL on CUDA, gloo on the CPU) and trains with
    DDP; the process stays in the group (a later run reuses it) until it exits.
    """
    refuse_spawned_reimport("train")
    given: dict[str, Any] = dict(options)
    if given.get("resume"):
        given = saved_options(Path(out_dir), given)
    config = TrainConfig.from_options(**given)
    setup = device_setup(config.device, config.amp, distributed.env().local_rank)
    distributed.init_from_env(setup.device)  # left when the process exits
    trainer = None
    try:
        trainer = Trainer(chips_dir, out_dir, config, log, setup)
        return trainer.fit(callback)
    except BaseException as exc:
        if trainer is not None:
            trainer.failed(exc)
        raise
    finally:
        if trainer is not None:
            trainer.release()

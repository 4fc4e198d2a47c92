"""`train(chips_dir, out_dir, **options)`: the Pix2Pix training run behind `geopix2pix train`.

chips folder -> datasets and loaders -> G, D, optimizers (fresh or from checkpoint.pt) -> epochs of
steps -> at each epoch end: validation, samples, metrics.csv, model.safetensors (+ model-best),
checkpoint.pt. Ctrl-C / SIGTERM finish the current step, write the checkpoint and stop.
All writes go through ``is_writer()``, the single rank-0 predicate a DDP version would change.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from geopix2pix.chips.dataset import ChipDataset
from geopix2pix.chips.manifest import MANIFEST, DatasetInfo
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import GeneratorSpec, build_discriminator, build_generator, save_model
from geopix2pix.raster.write import prepare_output_dir, write_text_atomic

from .checkpoint import CHECKPOINT, check_same_options, load_checkpoint, set_rng_state
from .config import TrainConfig
from .data import EpochBatchSampler, make_loader
from .device import default_workers, maybe_compile, resolve_device
from .history import MetricsLog
from .loop import EpochRunner, StopRequest, seed_everything
from .metadata import model_metadata
from .step import Pix2PixStep

MODEL = "model.safetensors"
BEST_MODEL = "model-best.safetensors"
OPTIONS = "train.json"


def is_writer() -> bool:
    """Whether this process writes outputs (rank 0 under DDP; always, for now)."""
    return True


@dataclass
class TrainResult:
    """What a run produced."""

    run_dir: Path
    model_path: Path
    best_model_path: Path
    checkpoint_path: Path
    epochs: int
    steps: int
    metrics: list[dict[str, str]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _dataset_fingerprint(chips_dir: Path) -> str:
    return hashlib.sha256((chips_dir / MANIFEST).read_bytes()).hexdigest()[:16]


def _build_networks(info: DatasetInfo, config: TrainConfig):
    """G (from its spec) and D; unknown generators or unfit chip sizes are one-line errors."""
    bands_in, bands_out = len(info.source.bands), len(info.target.bands)
    try:
        spec = GeneratorSpec(config.generator, bands_in, bands_out, info.chip_size,
                             ngf=config.ngf, norm=config.norm)
        generator = build_generator(spec, config.encoder_weights)
        discriminator = build_discriminator(bands_in + bands_out, config.ndf, config.n_layers,
                                            config.norm)
    except ValueError as exc:
        raise GeoPix2PixError(f"--generator {config.generator} with chips of "
                              f"{info.chip_size} px: {exc}") from None
    return spec, generator, discriminator


def _prepare_run_dir(out_dir: Path, config: TrainConfig) -> None:
    if config.resume:
        if not (out_dir / CHECKPOINT).is_file():
            raise GeoPix2PixError(f"--resume: {out_dir / CHECKPOINT} does not exist; start the "
                                  "run without --resume")
        return
    prepare_output_dir(out_dir, config.overwrite, marker=CHECKPOINT)


class Trainer:
    """One training run: set up from options (and checkpoint), then ``fit``."""

    def __init__(self, chips_dir, out_dir, config: TrainConfig,
                 log: Callable[[str], None] = _stderr) -> None:
        self.chips_dir, self.run_dir = Path(chips_dir), Path(out_dir)
        self.config, self.log = config, log
        self.info = DatasetInfo.load(self.chips_dir)
        self.setup = resolve_device(config.device, config.amp)
        seed_everything(config.seed)
        self.spec, generator, discriminator = _build_networks(self.info, config)
        self.train_set = ChipDataset(self.chips_dir, "train")
        self.val_set = ChipDataset(self.chips_dir, "val")
        if len(self.train_set) == 0:
            raise GeoPix2PixError(f"{self.chips_dir} has no train chips; re-export with a "
                                  "smaller --val-fraction or more data")
        _prepare_run_dir(self.run_dir, config)
        self.generator = self.setup.prepare(generator)
        self.discriminator = self.setup.prepare(discriminator)
        betas = (config.beta1, 0.999)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)
        self.step_fn = Pix2PixStep(
            maybe_compile(self.generator, config.compile),
            maybe_compile(self.discriminator, config.compile),
            opt_g, opt_d, self.setup, config.gan_mode, config.lambda_l1)
        self.workers = default_workers() if config.workers is None else config.workers
        self.sampler = EpochBatchSampler(len(self.train_set), config.batch_size, config.seed)
        self.state = {"epoch": 0, "step": 0, "batch_in_epoch": 0, "best": math.inf,
                      "best_scores": {}, "partial": {}}
        if config.resume:
            self._restore()

    def options(self) -> dict[str, Any]:
        """Options that define the run (stored in checkpoints and model files)."""
        return {**self.config.result_options(), "dataset": _dataset_fingerprint(self.chips_dir)}

    def _restore(self) -> None:
        saved = load_checkpoint(self.run_dir)
        check_same_options(saved["options"], self.options(), self.run_dir / CHECKPOINT)
        self.generator.load_state_dict(saved["generator"])
        self.discriminator.load_state_dict(saved["discriminator"])
        self.step_fn.opt_g.load_state_dict(saved["opt_g"])
        self.step_fn.opt_d.load_state_dict(saved["opt_d"])
        self.step_fn.scaler.load_state_dict(saved["scaler"])
        self.state = {k: saved[k] for k in self.state}
        set_rng_state(saved["rng"])

    def save_checkpoint(self) -> None:
        """checkpoint.pt for the current state (see checkpoint.py)."""
        if not is_writer():
            return
        from .checkpoint import save_checkpoint

        step_fn = self.step_fn
        save_checkpoint(self.run_dir, {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": step_fn.opt_g.state_dict(), "opt_d": step_fn.opt_d.state_dict(),
            "scaler": step_fn.scaler.state_dict(), "schedule": self.schedule.state_dict(),
            "options": self.options(), **self.state,
        })

    def save_model(self, path: Path, validation: dict[str, float]) -> None:
        if not is_writer():
            return
        metadata = model_metadata(self.info, self.config.to_dict(),
                                  self.state["epoch"], self.state["step"], validation)
        save_model(path, self.generator, self.spec, metadata)

    def write_options(self) -> None:
        if is_writer():
            content = {"chips_dir": str(self.chips_dir.resolve()),
                       "options": self.config.to_dict(), "device": self.setup.describe(),
                       "dataset": _dataset_fingerprint(self.chips_dir)}
            write_text_atomic(self.run_dir / OPTIONS, json.dumps(content, indent=2))

    @property
    def schedule(self):
        return self.runner.schedule

    def fit(self, callback: Callable[[dict], bool | None] | None = None) -> TrainResult:
        """Train to the end of the schedule (or until interrupted: KeyboardInterrupt)."""
        config = self.config
        self.write_options()
        if not self.val_set:
            self.log("warning: the chips folder has no val chips; validation metrics stay "
                     "empty and model-best.safetensors is picked by the train L1 loss")
        train_loader = make_loader(self.train_set, self.sampler, self.workers, self.setup,
                                   config.seed)
        val_sampler = EpochBatchSampler(len(self.val_set), config.batch_size, 0, shuffle=False)
        val_loader = make_loader(self.val_set, val_sampler, self.workers, self.setup, 0) \
            if self.val_set else []
        history = MetricsLog(self.run_dir, keep_before_epoch=self.state["epoch"] + 1)
        self.runner = EpochRunner(self, train_loader, val_loader, history)
        self.log(f"training on {self.setup.describe()}: {len(self.train_set)} train / "
                 f"{len(self.val_set)} val chips, {self.runner.schedule.total_steps} steps")
        try:
            with StopRequest() as stop:
                self.runner.run(stop, callback)
        finally:
            history.close()
        return TrainResult(self.run_dir, self.run_dir / MODEL, self.run_dir / BEST_MODEL,
                           self.run_dir / CHECKPOINT, self.state["epoch"], self.state["step"],
                           history.rows, self.state["best_scores"])


def train(chips_dir, out_dir, *, callback: Callable[[dict], bool | None] | None = None,
          log: Callable[[str], None] = _stderr, **options: Any) -> TrainResult:
    """Train Pix2Pix on a chips folder into ``out_dir`` (options as `geopix2pix train`'s).

    ``callback(info)`` is called after each step with {"epoch", "step", "lr", losses}; returning
    True stops the run as Ctrl-C does (checkpoint written, KeyboardInterrupt raised).
    """
    config = TrainConfig.from_options(**options)
    return Trainer(chips_dir, out_dir, config, log).fit(callback)

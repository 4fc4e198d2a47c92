"""What a run writes in its folder, through `RunFolder`: train.json, metrics.csv, samples/, the
family's model files, and the staged folder's swap over an earlier run (see `outputs`).

Every write goes through ``distributed.writer_first``: rank 0 writes while the others wait, and a
failed write stops all ranks.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from geopix2pix.models.run_files import RUN_MODELS
from geopix2pix.raster.write import atomic_path, write_text_atomic
from geopix2pix.runtime import distributed
from geopix2pix.runtime.folders import Owned
from geopix2pix.settings.train import TrainConfig

from .checkpoint import CHECKPOINT
from .families import FAMILY_FILES
from .families.base import ModelExport, ModelFamily, RunContext
from .history import METRICS, MetricsLog
from .outputs import check_run_dir, leave_failed, open_run_dir, writing
from .resume import OPTIONS

MODEL, BEST_MODEL = RUN_MODELS["a_to_b"]
# all a run writes in RUN_DIR: --overwrite removes these and refuses anything else
RUN_OUTPUTS = Owned((*FAMILY_FILES, CHECKPOINT, METRICS, OPTIONS),
                    {"samples": Owned(("epoch_*.png",)),
                     "tensorboard": Owned(("events.out.tfevents.*",))})


def check_run_folder(run_dir: Path, config: TrainConfig, chips_dir: Path) -> None:
    """Refuse a run folder this run may not write in before any work
    (`outputs.check_run_dir`): ``auto`` reads the train chips before the folder is opened.
    Rank 0 checks and says it."""
    distributed.writer_first(lambda: check_run_dir(*_run_dir_terms(run_dir, config, chips_dir)))


def _run_dir_terms(run_dir: Path, config: TrainConfig, chips_dir: Path) -> tuple:
    """`outputs.open_run_dir`'s and `check_run_dir`'s arguments for a run of `config`."""
    weights = [Path(config.encoder_weights)] if config.encoder_weights else []
    return (run_dir, config.resume, config.overwrite, chips_dir, weights, RUN_OUTPUTS,
            CHECKPOINT)


class RunFolder:
    """The run folder of ``run`` (whose ``run_dir`` it keeps up to date)."""

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.output = None  # where rank 0 writes (`outputs.open_run_dir`)
        self.history: MetricsLog | None = None

    @property
    def path(self) -> Path:
        return self.run.run_dir

    def open(self) -> None:
        """Open (or check, on --resume) the folder; rank 0 first."""
        distributed.writer_first(self._open)

    def _open(self) -> None:
        self.output = open_run_dir(*_run_dir_terms(self.path, self.run.config,
                                                   self.run.chips_dir))
        self.run.run_dir = self.output.path

    def open_history(self, epoch: int, columns: tuple[str, ...]) -> MetricsLog:
        """metrics.csv of ``columns`` (rows of epochs up to ``epoch`` kept on a resume; none of
        an earlier run's, which ranks >= 1 of a --overwrite run still see in the folder)."""
        keep = epoch + 1 if self.run.config.resume else 0
        self.history = MetricsLog(self.path, keep_before_epoch=keep,
                                  enabled=distributed.is_writer(), columns=columns)
        return self.history

    def replace_earlier(self) -> None:
        """At the first epoch end with the run's own files (its model files are written at
        validations, `--val-every`): the new run, built beside an earlier one, replaces it."""
        distributed.writer_first(self._replace_earlier)

    def _replace_earlier(self) -> None:
        if self.output is not None and self.output.staged and (self.path / MODEL).exists():
            self.output.commit()
            self.run.run_dir = self.output.final
            if self.history is not None:
                self.history.moved(self.path)

    def failed(self, exc: BaseException, has_checkpoint: bool) -> None:
        """Remove what this run wrote, when `exc` ended it before it had something to keep
        (see `outputs`)."""
        leave_failed(self.output, has_checkpoint, exc)

    def save_models(self, family: ModelFamily, validation: dict[str, float],
                    progress: dict[str, int], best: bool) -> None:
        """Each of the family's model files (latest, or ``best``); every rank calls."""
        for export in family.exports():
            path = self.path / (export.best if best else export.latest)
            distributed.writer_first(
                lambda e=export, p=path: self._write_model(family, e, p, validation, progress))

    @staticmethod
    def _write_model(family: ModelFamily, export: ModelExport, path: Path,
                     validation: dict[str, float], progress: dict[str, int]) -> None:
        with writing(path):
            family.write_model(export, path, validation, progress)

    def latest_from_best(self, family: ModelFamily) -> None:
        """Where no validation after the start wrote the latest model files (a run that
        diverged before its first), the best ones, the start's, are the latest validated
        weights: copied there, so that every model file the run names exists."""
        for export in family.exports():  # (every rank calls; rank 0 looks and copies)
            latest, best = self.path / export.latest, self.path / export.best
            distributed.writer_first(lambda b=best, t=latest: _copy(b, t)
                                     if b.exists() and not t.exists() else None)

    def replaces_earlier(self) -> bool:
        """Whether this run is built beside an earlier one (--overwrite) that it has not
        replaced yet."""
        return self.output is not None and self.output.staged and not self.output.committed

    def write_samples(self, family: ModelFamily, batch, epoch: int, last_epoch: int) -> None:
        """samples/epoch_NNN.png: the family's fixed chips (rank 0, the only one with
        ``batch``; every rank calls), numbered with as many digits as the run's last epoch
        needs (at least 3), so that the names sort in the run's order."""
        path = self.path / "samples" / sample_name(epoch, last_epoch)
        distributed.writer_first(lambda: batch is None or family.draw_samples(path, batch))

    def write_options(self, replicas: dict[str, Any] | None = None) -> None:
        """RUN_DIR/train.json: options, device, ranks and batch sizes (and, at the end of a
        multi-rank run, each rank's parameter fingerprints; written by rank 0)."""
        distributed.writer_first(lambda: self._write_options(replicas))

    def _write_options(self, replicas: dict[str, Any] | None) -> None:
        run = self.run
        options = run.config.to_dict()
        if options["encoder_weights"]:  # in full, so that a resume from elsewhere finds it
            options["encoder_weights"] = os.path.abspath(options["encoder_weights"])
        content = {"chips_dir": str(run.chips_dir.resolve()),
                   "options": options, "device": run.setup.describe(),
                   "dataset": run.dataset,
                   "world_size": run.world, "batch_size_per_rank": run.config.batch_size,
                   "effective_batch_size": run.effective_batch}
        used = run.recipe or (_recorded_recipe(self.path / OPTIONS) if run.config.resume else None)
        if used:
            content["recipe_used"] = used
        if replicas:
            content["replicas"] = replicas
        with writing(self.path / OPTIONS):
            write_text_atomic(self.path / OPTIONS, json.dumps(content, indent=2))

    def check_replicas(self, family: ModelFamily) -> None:
        """Compare every rank's networks (they must be identical under DDP); record the
        fingerprints in train.json and warn when they differ."""
        if self.run.world < 2:
            return
        names = list(family.networks())
        mine = [distributed.fingerprint(m) for m in family.networks().values()]
        every = distributed.all_gather_object(mine)
        replicas: dict[str, Any] = {name: [f[i] for f in every] for i, name in enumerate(names)}
        replicas["identical"] = all(f == every[0] for f in every)
        if not replicas["identical"]:
            self.run.log("warning: the ranks' networks differ at the end of the run (see "
                         f"{OPTIONS}); the model file holds rank 0's")
        self.write_options(replicas)


def _copy(source: Path, target: Path) -> None:
    with writing(target), atomic_path(target, overwrite=True, own=True) as temp:
        shutil.copyfile(source, temp)


def _recorded_recipe(path: Path) -> str | None:
    """The recipe an earlier write of train.json recorded as used (None where it has none)."""
    try:
        used = json.loads(path.read_text()).get("recipe_used")
    except (OSError, ValueError, AttributeError):
        return None
    return used if isinstance(used, str) else None


def sample_name(epoch: int, last_epoch: int) -> str:
    """``epoch_007.png``; ``epoch_0007.png`` in a run of 1,000 epochs or more (a floor of steps
    on a tiny chips folder), whose names would otherwise stop sorting in order."""
    return f"epoch_{epoch:0{max(3, len(str(last_epoch)))}d}.png"

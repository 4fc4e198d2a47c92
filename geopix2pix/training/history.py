"""RUN_DIR/metrics.csv (one row per epoch) and, when tensorboard is installed, its event files.

The CSV is rewritten whole and atomically at each epoch end; a resumed run keeps the rows of the
epochs the checkpoint had completed. Under DDP only rank 0's log is ``enabled``: the others keep
their rows in memory and write nothing.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from geopix2pix.raster.write import write_text_atomic
from geopix2pix.runtime import distributed

from .outputs import writing

METRICS = "metrics.csv"
# A class map's run (--categorical) fills loss_g_ce and val_ce/accuracy/miou instead of the L1
# and value scores, a --pixel-loss mse run loss_g_mse instead of loss_g_l1; the columns are the
# same for every run.
COLUMNS = ("epoch", "step", "lr", "loss_g_gan", "loss_g_l1", "loss_g_mse", "loss_g_ce", "loss_d",
           "val_l1", "val_mae", "val_rmse", "val_psnr", "val_ssim", "val_ce", "val_accuracy",
           "val_miou", "images_per_second", "epoch_seconds")


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def typed_row(row: dict[str, str]) -> dict[str, int | float | None]:
    """A metrics.csv row as numbers: epoch and step int, the rest float, an empty cell None."""
    return {key: None if value == "" else int(value) if key in ("epoch", "step") else float(value)
            for key, value in row.items()}


class MetricsLog:
    """The per-epoch metrics of a run, mirrored to metrics.csv (and TensorBoard if present)."""

    def __init__(self, run_dir: Path, keep_before_epoch: int = 0, enabled: bool = True,
                 columns: tuple[str, ...] = COLUMNS) -> None:
        self.path = Path(run_dir) / METRICS
        self.columns = columns  # a model family's own (`ModelFamily.metrics_columns`)
        self.enabled = enabled
        self.rows: list[dict[str, str]] = []
        if keep_before_epoch and self.path.exists():
            with self.path.open(newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < keep_before_epoch]
        self.writer = _tensorboard(Path(run_dir) / "tensorboard") if enabled else None

    def moved(self, run_dir: Path) -> None:
        """The run's folder was moved (swapped in over an earlier run): write there now (the
        TensorBoard file, open, moved with it)."""
        self.path = Path(run_dir) / METRICS

    def append(self, row: dict[str, Any]) -> None:
        """Add an epoch's row (on every rank; rank 0 writes the files)."""
        self.rows.append({c: _format(row.get(c)) for c in self.columns})
        distributed.writer_first(lambda: self._write(row))

    def _write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        with writing(self.path):
            write_text_atomic(self.path, out.getvalue())
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _tensorboard(log_dir: Path):
    """A SummaryWriter when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(log_dir))

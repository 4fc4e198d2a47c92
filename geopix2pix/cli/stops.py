"""What a command stopped by Ctrl-C or SIGTERM says of its outputs, in train's one line
(`Stopped`: no "Error:", exit status 128 + the signal), rather than a bare "Aborted.".

It must be true of what the stop left. export-chips builds its folder beside the earlier one and
swaps it in once complete, removing what it built when stopped: its dataset.json is complete
exactly when it is new (its file identity, device, inode and modification time, differs from
the one before the run). predict writes each output under a temporary name, renamed into place
once complete, and removes the temporary when stopped; its stop says which outputs it put in
place, since another process may write at the same paths.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import click

CHECKPOINT = "checkpoint.pt"  # geopix2pix.training.checkpoint.CHECKPOINT, without torch
Describe = Callable[[dict], Callable[[KeyboardInterrupt], str]]


class Stopped(click.ClickException):
    """A run stopped by Ctrl-C or SIGTERM: its one line (no "Error:"), exit 128 + the signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)

    def show(self, file=None) -> None:
        if self.message:
            click.echo(self.message, err=True)


class Outputs:
    """Files a command puts in place whole, with their identities before it ran."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.before = [_identity(path) for path in self.paths]

    def finished(self) -> list[Path]:
        """The outputs put in place since: there now, and not the files that were there."""
        return [path for path, before in zip(self.paths, self.before)
                if _identity(path) not in (None, before)]

    def kept(self) -> list[Path]:
        """The outputs that were there before the run and are still there, untouched."""
        return [path for path, before in zip(self.paths, self.before)
                if before is not None and _identity(path) == before]


def _identity(path: Path) -> tuple[int, int, int] | None:
    """(device, inode, modification time) of `path`, or None when nothing is there."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns


def reports_stop(describe: Describe) -> Callable[[Callable], Callable]:
    """Decorator of a command's callback: a Ctrl-C or SIGTERM (KeyboardInterrupt, or the
    program's `Terminated`) ends it with `Stopped`, whose line `describe(params)` (called
    before the run, with the command's parameters) returns, given the interrupt, once the stop
    has happened. Under torchrun only rank 0 speaks."""

    def decorate(callback: Callable) -> Callable:
        @functools.wraps(callback)
        def run(**params):
            say = describe(params)
            try:
                return callback(**params)
            except KeyboardInterrupt as exc:
                message = say(exc) if os.environ.get("RANK", "0") == "0" else ""
                raise Stopped(message, getattr(exc, "signum", None) or signal.SIGINT) from None

        return run

    return decorate


def export_stopped(params: dict) -> Callable[[KeyboardInterrupt], str]:
    """export-chips: complete (dataset.json, written last, is new), or not: then the earlier
    export (--overwrite) is as it was, since the new one is built beside it and swapped in
    once complete, and nothing of the new one is left."""
    from geopix2pix.chips.manifest import MANIFEST

    out = Path(params["out_dir"])
    manifest = Outputs([out / MANIFEST])

    def say(_stop: KeyboardInterrupt) -> str:
        if manifest.finished():
            return f"Stopped after the export finished: {out} is complete"
        if manifest.kept():
            return (f"Stopped before the new export was complete: the earlier export in {out} "
                    "is as it was (nothing of the new one is left)")
        return f"Stopped: no chips were exported to {out} (none cut before the stop is left)"

    return say


def _predict_outputs(paths: Sequence[str], out_dir: str | None) -> list[Path]:
    """The outputs of `predict PATHS [--out-dir DIR]`, named as the prediction names them
    (`geopix2pix.prediction.predictor.output_paths`, which loads torch): OUT of `SCENE OUT`,
    or DIR/<scene name>.tif for each scene; none for arguments predict refuses."""
    if out_dir is None:
        return [Path(paths[1])] if len(paths) == 2 else []
    from geopix2pix.raster.io import scene_name

    return [Path(out_dir) / f"{scene_name(path)}.tif" for path in paths]


def predict_stopped(params: dict) -> Callable[[KeyboardInterrupt], str]:
    """predict: how many outputs this run completed before the stop (those are kept, whole),
    as the prediction reports them (the interrupt's `written`, not what is on disk: another
    process may have written there meanwhile); those being written were removed (their
    temporaries), and an output that was there before (--overwrite) and not yet replaced is
    as it was."""
    outputs = Outputs(_predict_outputs(params.get("paths", ()), params.get("out_dir")))

    def say(stop: KeyboardInterrupt) -> str:
        done = len(getattr(stop, "written", ()))
        if len(outputs.paths) == 1:
            out = outputs.paths[0]
            if done:
                return f"Stopped after {out} was written: it is complete"
            what = "not replaced" if outputs.before[0] is not None else "not written"
            return f"Stopped: {out} was {what} (no partial output is left)"
        if not done:
            return "Stopped: nothing was written (no partial outputs are left)"
        return (f"Stopped after {done} of {len(outputs.paths)} scenes: their outputs are "
                "complete; those being written were removed")

    return say


def train_stopped(params: dict) -> Callable[[KeyboardInterrupt], str]:
    """train: that an earlier run (--overwrite) is as it was (the stop carries `kept`), where
    to continue from (the checkpoint the stop wrote, which the interrupt
    carries), or that nothing was saved (stopped before the first checkpoint). A stop outside
    the steps (setting up, finishing) carries none: the run folder may still hold one (the
    run's own, or the one a --resume run began from)."""
    run_dir = Path(params["out_dir"])

    def say(stop: KeyboardInterrupt) -> str:
        if getattr(stop, "kept", None) is not None:  # --overwrite, before the first epoch end
            return (f"Stopped before the new run's first epoch ended: the earlier run in "
                    f"{run_dir} is as it was (nothing of the new one is left)")
        checkpoint = getattr(stop, "checkpoint", None)
        if checkpoint is None and (run_dir / CHECKPOINT).is_file():  # e.g. after the loop
            checkpoint = run_dir / CHECKPOINT
        if checkpoint is not None:
            return f"Stopped: continue from {checkpoint} with --resume"
        again = " with --overwrite" if run_dir.is_dir() and any(run_dir.iterdir()) else ""
        return (f"Stopped before the first checkpoint: nothing was saved to continue from; run "
                f"the command again{again}")

    return say

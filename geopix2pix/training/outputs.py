"""A run's folder and files: where a run writes, what a failed run leaves, and a failure to
write a file (a full disk, a read-only folder, a permission) as a one-line GeoPix2PixError that
names the file and gives the operating system's reason.

Nothing of an earlier run is lost before the new run has something as good: `train -o RUN
--overwrite` over an earlier run writes into a hidden folder beside RUN
(`runtime.folders.open_output_dir`), swapped in whole at its first epoch end, once it has written
its own model.safetensors, model-best.safetensors, checkpoint.pt, metrics.csv and samples; from
then on the run goes on in RUN. Until then RUN holds the earlier run complete, train.json
included, so a --resume of it stays consistent, and a failure or a stop (whose checkpoint would
be of a run that never replaced the earlier one) removes the new run's folder: the earlier run
is as it was. A new run in a new or empty folder writes there from the start (a stop writes a
checkpoint to --resume from); one that fails before its first checkpoint removes what it wrote,
and the folders it made.

The writers fail in their own ways: Python's files raise OSError; ``torch.save`` into a Python
file raises a RuntimeError whose context is the OSError; other data writes a rasterio error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from geopix2pix.errors import GeoPix2PixError, causes, data_errors, describe, was_reported
from geopix2pix.raster.write import cannot_write
from geopix2pix.runtime.folders import OutputDir, Owned, check_output_dir, open_output_dir
from geopix2pix.runtime.staging import remove_stale_folders
from geopix2pix.runtime.stopping import StopReport, stop_signal


def check_run_dir(out_dir: Path, resume: bool, overwrite: bool, chips_dir: Path,
                  inputs: Sequence[Path], owned: Owned, checkpoint: str) -> None:
    """Refuse a run folder the run may not write in, before any work (`open_run_dir` checks
    again as it opens it): --resume without a checkpoint, a folder inside the chips, a
    non-empty one without --overwrite, one holding anything else. A resume's folder is first
    put back where a killed --overwrite run's swap left it aside."""
    if resume:
        remove_stale_folders(out_dir.resolve())  # what a killed --overwrite run was building
        if not (out_dir / checkpoint).is_file():
            raise GeoPix2PixError(f"--resume: {out_dir / checkpoint} does not exist; start the "
                                  "run without --resume")
        return
    run, chips = out_dir.resolve(), chips_dir.resolve()
    if run != chips and run.is_relative_to(chips):  # (the chips folder itself: an input)
        raise GeoPix2PixError(f"the run folder {out_dir} lies inside the chips folder "
                              f"{chips_dir}; choose a run folder apart from the chips")
    check_output_dir(out_dir, overwrite, checkpoint, owned, [chips_dir, *inputs], "train",
                     _resume_hint(checkpoint))


def _resume_hint(checkpoint: str) -> str:
    return f"--resume to continue it from {checkpoint}"


def open_run_dir(out_dir: Path, resume: bool, overwrite: bool, chips_dir: Path,
                 inputs: Sequence[Path], owned: Owned, checkpoint: str) -> OutputDir:
    """The run folder to write in (see the module's docstring): checked for --resume (then
    written in as it is), or made, or an earlier run's kept while the new one is built beside
    it. --overwrite never touches anything but what a run writes (`owned`), nor the chips
    folder or the encoder weights (`inputs`). `checkpoint`: the checkpoint file's name."""
    check_run_dir(out_dir, resume, overwrite, chips_dir, inputs, owned, checkpoint)
    if resume:
        return OutputDir(out_dir, out_dir, owned, committed=True)
    return open_output_dir(out_dir, overwrite, marker=checkpoint, owned=owned,
                           inputs=[chips_dir, *inputs], command="train",
                           resume=_resume_hint(checkpoint), stage_new=False)


class SaysHowToContinue(GeoPix2PixError):
    """An error of a run whose line says how to continue it already (a lost torchrun process's:
    the checkpoint to --resume from), to which `leave_failed` adds nothing."""


def leave_failed(output: OutputDir | None, saved: bool, exc: BaseException) -> None:
    """Remove what a run that failed or was stopped (`exc`) wrote, unless it replaced the
    earlier run already or (in its own folder) `saved` a checkpoint to continue from. A stop
    of a run built beside an earlier one then carries `kept`: the folder holding that run. An
    error after this run replaced an earlier one (at its first validation) says so, and how to
    continue this one."""
    if output is not None and output.replaced and isinstance(exc, GeoPix2PixError) and \
            exc.args and not was_reported(exc) and not isinstance(exc, SaysHowToContinue):
        exc.args = (f"{exc.args[0]} ({output.final} holds this run, which replaced the earlier "
                    "one at its first validation; continue it with --resume once that is "
                    "fixed)", *exc.args[1:])
    if output is None or output.committed or (saved and not output.staged):
        return
    output.abandon(exc)
    if output.staged and isinstance(exc, KeyboardInterrupt):
        exc.kept, exc.checkpoint = output.final, None
        exc.args = (f"stopped before the new run replaced the earlier one in {output.final}, "
                    "which is as it was",)


def write_failure(exc: BaseException) -> tuple[str, int | None] | None:
    """Why a write failed with ``exc``: the reason in words and the OS error number (None when
    not the OS's); None when ``exc`` is not a failure to write (a bug, not the user's to fix)."""
    for error in causes(exc, context=True):
        if isinstance(error, OSError):
            return error.strerror or describe(error), error.errno
        if isinstance(error, data_errors()):
            return describe(error), None
    return None


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Run the block that writes ``path``; a failure to write becomes one line
    (``raster.write.cannot_write``: the file, the reason, what to do)."""
    try:
        yield
    except GeoPix2PixError:
        raise
    except Exception as exc:
        failure = write_failure(exc)
        if failure is None:
            raise
        raise cannot_write(path, *failure) from exc


def stop_reporter(out_dir: str | os.PathLike) -> Callable[[BaseException], StopReport]:
    """What a stop of a run into `out_dir` left: an earlier run (--overwrite) as it was (the stop
    carries `kept`), the checkpoint to continue from (the one the stop wrote, which it carries),
    or nothing saved (stopped before the first checkpoint). A stop outside the steps (setting
    up, finishing) carries none: the run folder may still hold one (the run's own, or the one
    a --resume run began from)."""
    from geopix2pix.training.checkpoint import CHECKPOINT

    run_dir = Path(out_dir)

    def report(stop: BaseException) -> StopReport:
        signum = stop_signal(stop)
        if getattr(stop, "kept", None) is not None:  # --overwrite, before the first epoch end
            return StopReport("train", signum, "Stopped before the new run's first "
                              f"validation: the earlier run in {run_dir} is as it was (nothing "
                              "of the new one is left)", kept=run_dir)
        saved = getattr(stop, "checkpoint", None)
        if saved is None and (run_dir / CHECKPOINT).is_file():  # e.g. after the loop
            saved = run_dir / CHECKPOINT
        if saved is not None:
            return StopReport("train", signum, f"Stopped: continue from {saved} with --resume",
                              resume=Path(saved))
        again = " with --overwrite" if run_dir.is_dir() and any(run_dir.iterdir()) else ""
        return StopReport("train", signum, "Stopped before the first checkpoint: nothing was "
                          f"saved to continue from; run the command again{again}")

    return report

"""The options several commands share (--quiet, --overwrite, --device, --seed, --workers), declared
once: each command's settings take these fields with their own help, and so the same name, type,
default and short flag everywhere."""

from __future__ import annotations

from typing import Any

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.settings.declare import option


def quiet(help: str = "No progress bar.") -> Any:
    """``--quiet``/``-q``: a `quiet` option (False: progress bars shown)."""
    return option(False, short="-q", runtime=True, help=help)


def progress(help: str = "No progress bar.") -> Any:
    """``--quiet``/``-q`` on the command line, a `progress` option (True) in Python."""
    return option(True, flag="--quiet", short="-q", inverted=True, runtime=True, help=help)


def overwrite(help: str) -> Any:
    """``--overwrite``: replace the outputs of an earlier run."""
    return option(False, help=help, runtime=True)


def device(help: str) -> Any:
    """``--device``: auto, cpu, cuda or cuda:N."""
    return option("auto", help=help, runtime=True)


def seed(help: str) -> Any:
    """``--seed``: the seed of whatever the command draws at random."""
    return option(0, help=help)


MAX_SEED = 2**32 - 1  # numpy's legacy seed, which training sets, takes 0 to this


def check_seed(value: int) -> None:
    """Refuse a --seed no generator of the commands takes (numpy's: 0 to `MAX_SEED`)."""
    if not 0 <= value <= MAX_SEED:
        raise GeoPix2PixError(f"--seed {value}: use 0 to {MAX_SEED}")


def check_workers(value: int | None, zero: str) -> None:
    """Refuse a --workers below 0 (`zero` says what 0 does) or above the CPUs this process may
    use (2 on one): each worker is a process with memory of its own (--workers 1000 filled a
    machine's)."""
    from geopix2pix.runtime.device import available_cpus

    if value is None:
        return
    if value < 0:
        raise GeoPix2PixError(f"--workers {value}: use 0 or more ({zero})")
    cpus = available_cpus()
    if value > max(2, cpus):  # (2 on one CPU: what a command written elsewhere may ask)
        raise GeoPix2PixError(f"--workers {value}: this process may use {cpus} CPU(s); use at "
                              f"most {max(2, cpus)} (each worker is a process with memory of its "
                              "own)")


def workers(help: str, shown_default: str) -> Any:
    """``--workers``: worker processes, None for the command's own default."""
    return option(None, help=help, shown_default=shown_default, runtime=True)

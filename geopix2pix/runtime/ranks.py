"""Which torchrun process speaks for all: what every rank would say alike (a stop, a command's
summary) is said by rank 0 alone. Torch-free, for the program's first moments (`__main__`), before
the process group exists (`runtime.distributed` is the process group itself)."""

from __future__ import annotations

import os
import signal
import sys


def speaks() -> bool:
    """Whether this process says what every rank would say alike: rank 0 under torchrun, or the
    only process (and one whose RANK is not a number, so that its error is seen)."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def stop_status(terminated: bool) -> int:
    """Say how the program was stopped ("Terminated." for SIGTERM, else "Aborted.", on stderr,
    rank 0 alone) and return its exit status: 128 + the signal, as a shell reports it."""
    if speaks():
        print("Terminated." if terminated else "Aborted.", file=sys.stderr, flush=True)
    return 128 + (signal.SIGTERM if terminated else signal.SIGINT)

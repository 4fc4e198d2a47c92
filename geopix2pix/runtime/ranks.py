"""Which torchrun process speaks for all: what every rank would say alike (a stop, a command's
summary) is said by rank 0 alone. Torch-free, for the program's first moments (`__main__`), before
the process group exists (`runtime.distributed` is the process group itself)."""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import tempfile


def speaks() -> bool:
    """Whether this process says what every rank would say alike: rank 0 under torchrun, or the
    only process (and one whose RANK is not a number, so that its error is seen)."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def first_to_say(line: str) -> bool:
    """Whether this process is the first of its torchrun launch on this machine to say `line`
    (without torchrun: always). Every rank meets the same bad option or missing folder and
    said the same error, once per rank; a rank's own error (its GPU, a damaged chip of its
    shard) is still said. The ranks of one launch share their launcher (the parent process);
    the first to say a line leaves an empty marker file named by both in the temporary folder
    (one per error and launch), which the others find."""
    launch = os.environ.get("TORCHELASTIC_RUN_ID")
    if launch is None:
        return True
    key = f"{os.getppid()}\0{launch}\0{os.environ.get('TORCHELASTIC_RESTART_COUNT')}\0{line}"
    marker = os.path.join(tempfile.gettempdir(),
                          f".geopix2pix-said-{hashlib.sha256(key.encode()).hexdigest()[:24]}")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    except OSError:  # (no temporary folder to write: say it)
        return True
    return True


def stop_status(terminated: bool) -> int:
    """Say how the program was stopped ("Terminated." for SIGTERM, else "Aborted.", on stderr,
    rank 0 alone) and return its exit status: 128 + the signal, as a shell reports it."""
    if speaks():
        print("Terminated." if terminated else "Aborted.", file=sys.stderr, flush=True)
    return 128 + (signal.SIGTERM if terminated else signal.SIGINT)

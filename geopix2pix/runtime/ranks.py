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


MARKER = ".geopix2pix-said-"  # an error said by one rank of a launch (`first_to_say`)
MARKER_DAYS = 1  # older markers are removed


def first_to_say(line: str) -> bool:
    """Whether this process is the first of its torchrun launch on this machine to say `line`
    (always, but in a rank of torchrun's with other local ranks). Every rank meets the same
    bad option or missing folder, and each said the same error; a rank's own error (its GPU, a
    damaged chip of its shard) is still said. The ranks share their launcher (the parent
    process, a torchrun): the first to say a line leaves an empty marker file in the temporary
    folder named by the line and that launcher (its pid and start time: one launch alone), which
    the others find."""
    launcher = _torchrun_parent()
    if launcher is None:
        return True
    key = f"{launcher}\0{os.environ.get('TORCHELASTIC_RESTART_COUNT')}\0{line}"
    folder = tempfile.gettempdir()
    marker = os.path.join(folder, MARKER + hashlib.sha256(key.encode()).hexdigest()[:24])
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    except OSError:  # (no temporary folder to write: say it)
        return True
    _remove_old_markers(folder)
    return True


def _torchrun_parent() -> str | None:
    """"pid start-time" of this process's parent when it is the torchrun that started it with
    other local ranks (Linux); None otherwise (a process with torchrun's variables that a
    rank or a script started: it says its own errors)."""
    if os.environ.get("LOCAL_WORLD_SIZE", "1") in ("", "0", "1") or \
            "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ")
        with open(f"/proc/{parent}/stat", "rb") as f:
            started = f.read().rsplit(b")", 1)[1].split()[19]  # (field 22: its start time)
    except (OSError, IndexError):
        return None
    if b"torch.distributed.run" not in command and b"torchrun" not in command:
        return None
    return f"{parent} {started.decode()}"


def _remove_old_markers(folder: str) -> None:
    """Remove the markers of launches over `MARKER_DAYS` old."""
    import glob
    import time

    for old in glob.glob(os.path.join(folder, MARKER + "*")):
        try:
            if time.time() - os.path.getmtime(old) > MARKER_DAYS * 86400:
                os.remove(old)
        except OSError:
            pass


def stop_status(terminated: bool) -> int:
    """Say how the program was stopped ("Terminated." for SIGTERM, else "Aborted.", on stderr,
    rank 0 alone) and return its exit status: 128 + the signal, as a shell reports it."""
    if speaks():
        print("Terminated." if terminated else "Aborted.", file=sys.stderr, flush=True)
    return 128 + (signal.SIGTERM if terminated else signal.SIGINT)

"""Temporary names for outputs being written, and removing the ones a killed run left.

An output is written as `.NAME.WHERE-PID-RANDOM.partial.EXT` beside it and renamed when it is
complete, so nothing under the final name is ever half written. A run killed outright (SIGKILL,
the out-of-memory killer, a power cut) cannot remove its temporary, which for a large scene
holds gigabytes; the next write of the same output removes it once its process is gone.

WHERE says in which set of process ids PID is one: a hash of the host name, the boot and (on
Linux) the process-id namespace, since containers sharing a host name (host networking) each
number their processes anew. A temporary is stale when WHERE is this process's and no process
has PID now. One written elsewhere (another host sharing the folder, another container, before
a reboot) is never judged, so never removed; nor is a running process's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import uuid
from pathlib import Path

_TOKEN = re.compile(r"\.(?P<where>[0-9a-f]{10})-(?P<pid>\d{1,10})-[0-9a-f]{6}\.partial")


def _read(path: str) -> str:
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return ""


def _where() -> str:
    """This process's process-id space: host name, boot, pid namespace (10 hex digits)."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    key = "\n".join((socket.gethostname(), _read("/proc/sys/kernel/random/boot_id"), namespace))
    return hashlib.sha1(key.encode()).hexdigest()[:10]


WHERE = _where()


def partial_name(path: Path) -> Path:
    """A unique temporary name beside `path`, naming this process; it never looks like a
    finished output."""
    token = f"{WHERE}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    return path.with_name(f".{path.stem}.{token}.partial{path.suffix}")


def discard(temp: Path) -> None:
    """Remove a temporary output and the .aux.xml GDAL may have written beside it, if there."""
    for leftover in (temp, temp.with_name(temp.name + ".aux.xml")):
        leftover.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (EPERM), or no valid pid
        return True
    return True


def is_stale(name: str, final: Path) -> bool:
    """Whether the file `name` is a temporary of `final` (or of a temporary of it, or a sidecar
    GDAL wrote beside one) left by a process of this process-id space that is gone."""
    if f".partial{final.suffix}" not in name:
        return False
    for dots in (1, 2):  # its temporary, or a temporary of that (COG's tiled first pass)
        start = dots + len(final.stem)
        if name[:dots] == "." * dots and name[dots:start] == final.stem \
                and _TOKEN.match(name, start):
            writers = [(m["where"], int(m["pid"])) for m in _TOKEN.finditer(name, start)]
            return all(where == WHERE and not _running(pid) for where, pid in writers)
    return False


def remove_stale(final: Path) -> list[Path]:
    """Remove the temporaries of `final` that killed runs left beside it; returns them."""
    removed = []
    with contextlib.suppress(OSError), os.scandir(final.parent) as entries:
        for entry in entries:
            if is_stale(entry.name, final) and not entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed

"""Temporary names for outputs being written, and removing the ones a killed run left.

An output is written as `.NAME.HOST-PID-RANDOM.partial.EXT` beside it and renamed when it is
complete, so nothing under the final name is ever half written. A run killed outright (SIGKILL,
the out-of-memory killer, a power cut) cannot remove its temporary, which for a large scene
holds gigabytes; the next write of the same output removes it once its process is gone: written
on this host (a hash of the host name) by a process id no process has now. A temporary of a
running process, or of another host sharing the folder, is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import uuid
from pathlib import Path

HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_TOKEN = re.compile(r"\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{6}\.partial")


def partial_name(path: Path) -> Path:
    """A unique temporary name beside `path`, naming this host and process; it never looks
    like a finished output."""
    token = f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
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
    except OSError:  # another user's process (EPERM): running
        return True
    return True


def is_stale(name: str, final: Path) -> bool:
    """Whether the file `name` is a temporary (or a sidecar GDAL wrote beside one) of `final`
    left by a process of this host that is gone."""
    rest = name.lstrip(".")
    if not (name.startswith(".") and rest.startswith(final.stem)
            and _TOKEN.match(rest, len(final.stem))):
        return False
    writers = [(m["host"], int(m["pid"])) for m in _TOKEN.finditer(rest)]
    return all(host == HOST and not _running(pid) for host, pid in writers)


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

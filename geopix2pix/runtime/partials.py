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


def _token() -> str:
    return f"{WHERE}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def partial_name(path: Path) -> Path:
    """A unique temporary name beside `path`, naming this process; it never looks like a
    finished output."""
    return path.with_name(f".{path.stem}.{_token()}.partial{path.suffix}")


def partial_folder_name(path: Path, earlier: bool = False) -> Path:
    """A unique hidden name beside the folder `path` for the folder being built in its stead
    (`.NAME.WHERE-PID-RANDOM.partial`), or with `earlier` for the folder it replaces while the
    two are swapped (`...partial.earlier`)."""
    return path.with_name(f".{path.name}.{_token()}.partial" + (".earlier" * earlier))


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
            return all(_gone(m) for m in _TOKEN.finditer(name, start))
    return False


def _gone(token: re.Match) -> bool:
    """Whether the writer a token names is a process of this process-id space that is gone."""
    return token["where"] == WHERE and not _running(int(token["pid"]))


def stale_folder(name: str, final: Path) -> str | None:
    """What the folder `name` beside `final` is, when a killed run of this process-id space
    left it (`partial_folder_name`): "partial" (a folder being built) or "earlier" (the one
    it was replacing); None otherwise."""
    prefix = f".{final.name}"
    token = _TOKEN.match(name, len(prefix)) if name.startswith(prefix) else None
    if token is None or not _gone(token):
        return None
    return {"": "partial", ".earlier": "earlier"}.get(name[token.end():])


def folder_state(name: str, final: Path) -> tuple[str, str, int] | None:
    """(suffix, writer, pid) of the folder `name` beside `final` that `partial_folder_name(final)`
    named, with anything after it (its `suffix`): whether the process `pid` that named it is
    "gone" (one of this process-id space that no longer runs), "running", or "unknown" (another
    host, container or boot); None for any other name."""
    prefix = f".{final.name}"
    token = _TOKEN.match(name, len(prefix)) if name.startswith(prefix) else None
    if token is None:
        return None
    writer = "unknown" if token["where"] != WHERE else \
        "running" if _running(int(token["pid"])) else "gone"
    return name[token.end():], writer, int(token["pid"])


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

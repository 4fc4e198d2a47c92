"""Reading tensors that torch.save wrote (encoder weights, checkpoint.pt) without running code:
``torch.load(weights_only=True)`` only, without torch's warnings, and why a file could not be
read said in words (a text file, a pickle of Python objects, a truncated archive); and the
strings of an archive's pickle, parsed and never run, to tell what it is (a checkpoint)."""

from __future__ import annotations

import os
import pickletools
import warnings
import zipfile
from pathlib import Path

import torch

TORCH_SAVE_STARTS = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive, its legacy pickle
KNOWN_STARTS = {b"II*\x00": "a TIFF image", b"MM\x00*": "a TIFF image",
                b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image"}


def _first_sentence(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.split(". ")[0].rstrip(".")


def _what_it_is(head: bytes) -> str:
    """What a file that torch.save did not write looks like, from its first bytes."""
    for start, kind in KNOWN_STARTS.items():
        if head.startswith(start):
            return kind
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "a text file"
    return f"a file that begins with {head[:8]!r}"


def _torch_load_failure(head: bytes, exc: BaseException, hint: str) -> str:
    """Why torch.load (weights only) refused a file, in words."""
    if not head.startswith(TORCH_SAVE_STARTS):
        return f"it is not a file written by torch.save but {_what_it_is(head)}"
    if "Weights only load failed" in str(exc):
        return f"it holds pickled Python objects, not only tensors ({hint})"
    return f"it is damaged or incomplete ({_first_sentence(exc)})"


def load_failure(path: Path, exc: BaseException, hint: str) -> str:
    """Why a file of tensors could not be read, in words (`hint`: what to do about a pickle of
    Python objects)."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder"
    if isinstance(exc, OSError):
        return exc.strerror or _first_sentence(exc)
    if path.suffix == ".safetensors":
        return f"it is not a safetensors file ({_first_sentence(exc)})"
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError:
        head = b""
    return _torch_load_failure(head, exc, hint)


def pickled_strings(path: Path, until: set[str] | None = None,
                    limit: int = 4 << 20) -> set[str]:
    """The strings in the pickle of a torch.save zip archive (its ``data.pkl``: the keys and
    other strings, not the tensors), parsed by pickletools, which runs nothing, up to where
    they include all of `until`; an empty set for any other file, or a pickle over `limit`
    bytes (a crafted one of nested opcodes takes seconds to parse per 16 MiB)."""
    try:
        with path.open("rb") as handle:
            if handle.read(4) != TORCH_SAVE_STARTS[0]:
                return set()
        with zipfile.ZipFile(path) as archive:
            info = next(i for i in archive.infolist() if i.filename.endswith("/data.pkl"))
            if info.file_size > limit:
                return set()
            with archive.open(info) as member:
                pickled = member.read(limit + 1)
        found: set[str] = set()
        for _op, arg, _pos in pickletools.genops(pickled):
            if isinstance(arg, str):
                found.add(arg)
                if until is not None and until <= found:
                    break
        return found
    except Exception:  # unreadable, not a zip, no data.pkl, a malformed pickle
        return set()


def load_weights_only(path: Path):
    """``torch.load(path, weights_only=True)`` on the CPU, without torch's warnings (a legacy
    pickle's protocol warning would precede our own one-line error). A zip archive (torch.save's
    format) must hold its entries stored, as torch.save writes them: a compressed entry can
    inflate a few MB into gigabytes before any check (a 5.8 MB file took 6.5 GB)."""
    check_stored(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def check_stored(path: Path) -> None:
    """ValueError where `path` is a zip archive with a compressed entry, or entries larger in
    all than the file (torch.save stores each one as it is)."""
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        entries = archive.infolist()
    if any(entry.compress_type != zipfile.ZIP_STORED for entry in entries) or \
            sum(entry.file_size for entry in entries) > os.path.getsize(path):
        raise ValueError("its zip entries are compressed or larger than the file, which "
                         "torch.save never writes")

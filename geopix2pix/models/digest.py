"""The SHA-256 digest of a model file's header and tensors (and of a checkpoint's whole contents),
recorded by its writer and compared by its reader, so that weights changed after writing (bit
flips on a disk or in a copy, a tensor scaled by hand) are refused instead of predicting a
different map, or resuming from damaged weights, without a word.

The digest covers each tensor's name, dtype, shape and raw bytes, in the order of the sorted
names; it is computed on the tensors as they are (no copy beyond a reinterpreting view).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import torch


def weights_digest(tensors: Mapping[str, torch.Tensor], header: str = "") -> str:
    """The hex SHA-256 of `header` (a model file's canonical header: `canonical_header`) and
    `tensors` (contiguous, on the CPU): names, dtypes, shapes, bytes."""
    digest = hashlib.sha256()
    if header:
        digest.update(header.encode() + b"\n")
    for name in sorted(tensors):
        tensor = tensors[name]
        described = json.dumps([name, str(tensor.dtype), list(tensor.shape)])
        digest.update(described.encode() + b"\n")
        if tensor.numel():  # reshape(-1) of a contiguous tensor is a view, as is view(uint8)
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def canonical_header(content: Mapping) -> str:
    """A model file's header (its JSON content without the digest) in one fixed form (sorted
    keys): the same before writing and after reading back, so a changed number in it (a
    scaling statistic, nodata, a class code) changes the digest."""
    return json.dumps(content, sort_keys=True)


def state_digest(state: object) -> str:
    """The hex SHA-256 of a nested checkpoint state (dicts, lists, tuples, tensors, numbers,
    strings, None): its structure, each tensor as `weights_digest` covers it, each other value's
    repr; dict keys in a fixed order whatever their types."""
    digest = hashlib.sha256()
    _add(digest, state)
    return digest.hexdigest()


def _add(digest, value: object) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {list(tensor.shape)}\n".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)}\n".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            digest.update(f"{type(key).__name__} {key!r}\n".encode())
            _add(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__} {len(value)}\n".encode())
        for item in value:
            _add(digest, item)
    else:
        digest.update(f"{type(value).__name__} {value!r}\n".encode())

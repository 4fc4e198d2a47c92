"""The SHA-256 digest of a model file's tensors, recorded by its writer and compared by its
reader, so that weights changed after writing (bit flips on a disk or in a copy, a tensor
scaled by hand) are refused instead of predicting a different map without a word.

The digest covers each tensor's name, dtype, shape and raw bytes, in the order of the sorted
names; it is computed on the tensors as they are (no copy beyond a reinterpreting view).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import torch


def weights_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """The hex SHA-256 of `tensors` (contiguous, on the CPU): names, dtypes, shapes, bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        described = json.dumps([name, str(tensor.dtype), list(tensor.shape)])
        digest.update(described.encode() + b"\n")
        if tensor.numel():  # reshape(-1) of a contiguous tensor is a view, as is view(uint8)
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()

"""Tensor layouts: the names, shapes and kinds of a state dict, compared before any tensor is
loaded into a network.

A model file's layout comes from its safetensors header (`of_safetensors`: no tensor data is
read), a network's from its ``state_dict()`` (`of_state`; built on the ``meta`` device it
allocates nothing), so a file whose tensors are not exactly those of the network its metadata
describes is refused before that network is built for real. `mismatch` says how two layouts
differ, on one line; the model file, checkpoint.pt and --encoder-weights all use it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .schema import shown

Layout = dict[str, tuple[tuple[int, ...], str]]  # name -> (shape, kind)

_SAFETENSORS_KINDS = {"F": "float", "B": "float", "I": "integer", "U": "integer",
                      "C": "complex"}  # by the first letter of F32, BF16, I64, U8, C64...


def kind_of(dtype: torch.dtype) -> str:
    """"float", "integer", "bool" or "complex": what a tensor can be loaded as (load_state_dict
    converts between widths of a kind, not sensibly between kinds)."""
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "float"
    return "bool" if dtype == torch.bool else "integer"


def of_state(state: Mapping[str, torch.Tensor]) -> Layout:
    """The layout of a state dict (of tensors)."""
    return {key: (tuple(value.shape), kind_of(value.dtype)) for key, value in state.items()}


def of_safetensors(handle) -> Layout:
    """The layout of an open safetensors file (``safe_open``), from its header alone."""
    layout: Layout = {}
    for key in handle.keys():  # noqa: SIM118 (a safe_open handle is no dict)
        part = handle.get_slice(key)
        dtype = part.get_dtype()
        kind = "bool" if dtype == "BOOL" else _SAFETENSORS_KINDS.get(dtype[:1], dtype)
        layout[key] = (tuple(part.get_shape()), kind)
    return layout


def _examples(keys: list[str]) -> str:
    return ", ".join(shown(key, 50).strip("'") for key in keys[:2])


def mismatch(expected: Layout, found: Layout) -> str:
    """How `found` differs from `expected`: tensors missing, unexpected, of another shape or of
    another kind (one line, with examples); "" when they match."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    common = sorted(set(expected) & set(found))
    shapes = [k for k in common if expected[k][0] != found[k][0]]
    kinds = [k for k in common if expected[k][0] == found[k][0] and expected[k][1] != found[k][1]]
    parts = [f"{len(keys)} {label} (e.g. {_examples(keys)})"
             for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    if shapes:
        key = shapes[0]
        parts.append(f"{len(shapes)} wrong shape (e.g. {shown(key, 50).strip(chr(39))} is "
                     f"{list(found[key][0])}, expected {list(expected[key][0])})")
    if kinds:
        key = kinds[0]
        parts.append(f"{len(kinds)} wrong kind (e.g. {shown(key, 50).strip(chr(39))} holds "
                     f"{found[key][1]} values, expected {expected[key][1]})")
    return "; ".join(parts)

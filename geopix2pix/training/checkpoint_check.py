"""checkpoint.pt checked against the run that resumes from it, before anything is loaded.

A checkpoint loads without running code (weights only), but what it holds could still be
anything torch.load can give: tensors of other shapes, an optimizer state of another network,
an RNG state torch refuses, strings where numbers belong. Each would fail halfway through
restoring the run, or later inside a training step, as a traceback. `check_checkpoint` compares
every part with what the run has (`Expected`) and raises a `SchemaError` naming the first part
that does not fit.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from geopix2pix.models import layout
from geopix2pix.models.schema import (
    SchemaError,
    integer,
    mapping,
    number,
    optional,
    required,
    sequence,
    shown,
)

from .image_pool import check_generator_state

MAX_DEPTH = 8  # nesting of plain values (options, losses so far, optimizer settings)
MAX_ITEMS = 100_000
MAX_RANKS = 4096


@dataclass(frozen=True)
class Expected:
    """What a resumed run has: its networks and optimizers by their checkpoint keys, its state
    (epoch, step...) whose values' kinds the checkpoint's must have, and its own check of the
    saved options (`same_run(saved)`: the same options, as many chips per step), run once they
    are known to be plain values and before the networks are compared (options that differ
    are the likelier cause of networks that differ, and say it better)."""

    networks: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    state: dict[str, Any]
    same_run: Callable[[dict[str, Any]], None] | None = None
    losses: int = 3  # the family's loss columns, summed in an epoch stopped halfway


def check_checkpoint(saved: dict[str, Any], expected: Expected) -> None:
    """SchemaError naming the first part of `saved` that does not fit `expected`."""
    options = mapping(required(saved, "options", ""), "options")
    _plain(options, "options", finite=False)
    optional(options, "batch_size", _positive, "options")
    optional(saved, "world_size", _positive)
    if expected.same_run is not None:
        expected.same_run(saved)
    for name, module in expected.networks.items():
        found = mapping(required(saved, name, ""), name)
        _only_tensors(found, name)
        differ = layout.mismatch(layout.of_state(module.state_dict()), layout.of_state(found))
        if differ:
            raise SchemaError(name, f"is not this run's network: {differ}")
        _finite_weights(found, {key for key, _ in module.named_parameters()}, name)
    for name, optimizer in expected.optimizers.items():
        _check_optimizer(required(saved, name, ""), name, optimizer)
    for key, template in expected.state.items():
        _check_like(required(saved, key, ""), template, key)
    if "best" in expected.state and not saved["best"] >= 0:  # (NaN too: no score beat it)
        raise SchemaError("best", f"is {shown(saved['best'])}: model-best's score is 0 or more "
                                  "(infinite before any)")
    _check_partial(mapping(saved.get("partial") or {}, "partial"), expected.losses)
    _plain(mapping(required(saved, "scaler", ""), "scaler"), "scaler")
    _check_rng(required(saved, "rng", ""), "rng")
    for index, rng in enumerate(optional(saved, "rng_ranks", _ranks) or []):
        _check_rng(rng, f"rng_ranks[{index}]")


def _positive(value: Any, where: str) -> int:
    return integer(value, where, 1)


def _ranks(value: Any, where: str) -> list[Any]:
    return sequence(value, where, MAX_RANKS)


def _only_tensors(values: dict[str, Any], where: str) -> None:
    for key, value in values.items():
        if not isinstance(value, torch.Tensor):
            raise SchemaError(f"{where}[{shown(key)}]", f"is {type(value).__name__}, not a tensor")


class DivergedState(SchemaError):
    """A checkpoint whose networks hold NaN or infinite values: a diverged run's (this version
    saves none: a run stops as diverged instead) or a crafted one."""


def _finite_weights(values: dict[str, torch.Tensor], weights: set[str], where: str) -> None:
    """Refuse NaN or infinite `weights` (a run saves none; buffers are left to the run's own
    check: a discriminator's unused statistics may be NaN)."""
    for key, value in values.items():
        if key in weights and not bool(torch.isfinite(value).all()):
            raise DivergedState(f"{where}[{shown(key)}]", "holds NaN or infinite values")


def _plain(value: Any, where: str, finite: bool = True, depth: int = 0) -> None:
    """Refuse anything but numbers (finite ones if `finite`), strings, booleans, None, and lists
    and dicts of them."""
    if depth > MAX_DEPTH:
        raise SchemaError(where, f"is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, (dict, list, tuple)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        if len(value) > MAX_ITEMS:
            raise SchemaError(where, f"has {len(value)} items (at most {MAX_ITEMS})")
        for key, item in items:
            if isinstance(value, dict) and not isinstance(key, str):  # (JSON's keys: train.json)
                raise SchemaError(where, f"has the key {shown(key)}, not a string")
            _plain(item, f"{where}[{shown(key)}]", finite, depth + 1)
    elif isinstance(value, float):
        number(value, where, finite)
    elif not (value is None or isinstance(value, (bool, int, str))):
        raise SchemaError(where, f"is a {type(value).__name__}, not a plain value")


def _check_like(value: Any, template: Any, where: str) -> None:
    """A value of the same kind as the run's own (`template`): a count, a number, a dict."""
    if isinstance(template, dict):
        _plain(mapping(value, where), where, finite=False)
    elif isinstance(template, int):
        integer(value, where, 0)
    else:
        number(value, where, finite=False)


def _check_partial(partial: dict[str, Any], losses: int) -> None:
    """The losses summed so far in an epoch stopped halfway: {} or sums, batches, images and
    seconds (training/loop.py)."""
    if not partial:
        return
    sums = sequence(required(partial, "sums", "partial"), "partial.sums")
    if len(sums) != losses:
        raise SchemaError("partial.sums", f"has {len(sums)} values; expected {losses}")
    for index, value in enumerate(sums):
        number(value, f"partial.sums[{index}]")
    for key in ("batches", "images"):
        integer(required(partial, key, "partial"), f"partial.{key}", 0)
    if number(required(partial, "seconds", "partial"), "partial.seconds") < 0:
        raise SchemaError("partial.seconds", "is negative")


def _check_optimizer(value: Any, where: str, optimizer: torch.optim.Optimizer) -> None:
    """An optimizer state of this optimizer's parameters: as many groups of as many
    parameters, finite settings, and per parameter tensors of its shape (or scalars)."""
    data = mapping(value, where)
    own_groups = optimizer.param_groups
    groups = sequence(required(data, "param_groups", where), f"{where}.param_groups",
                      len(own_groups))
    if len(groups) != len(own_groups):
        raise SchemaError(f"{where}.param_groups", f"has {len(groups)} groups; expected "
                                                   f"{len(own_groups)}")
    params: dict[Any, torch.Tensor] = {}
    for index, (group, own) in enumerate(zip(groups, own_groups)):
        place = f"{where}.param_groups[{index}]"
        group = mapping(group, place)
        ids = sequence(required(group, "params", place), f"{place}.params", len(own["params"]))
        if len(ids) != len(own["params"]):
            raise SchemaError(f"{place}.params", f"lists {len(ids)} parameters; this run's "
                                                 f"network has {len(own['params'])}")
        params.update(zip((integer(i, f"{place}.params") for i in ids), own["params"]))
        _plain({k: v for k, v in group.items() if k != "params"}, place)
    for key, entry in mapping(required(data, "state", where), f"{where}.state").items():
        if key not in params:
            raise SchemaError(f"{where}.state", f"has a state for parameter {shown(key)}, "
                                                "which no group lists")
        for name, item in mapping(entry, f"{where}.state[{key}]").items():
            _check_param_state(item, f"{where}.state[{key}].{name}", params[key], name)


def _check_param_state(value: Any, where: str, param: torch.Tensor, name: str) -> None:
    """An optimizer's state of one parameter: a number, or a float tensor of its shape (a
    scalar only for Adam's ``step``: a scalar ``exp_avg`` broke the first step after)."""
    if not isinstance(value, torch.Tensor):
        number(value, where)
        return
    if layout.kind_of(value.dtype) != "float":
        raise SchemaError(where, f"holds {layout.kind_of(value.dtype)} values, not floats")
    if (value.dim() or name != "step") and value.shape != param.shape:
        raise SchemaError(where, f"is {list(value.shape)}, its parameter "
                                 f"{list(param.shape)}")


def _tensor(value: Any, where: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape \
            or value.dtype != dtype:
        found = f"a {list(value.shape)} {value.dtype} tensor" \
            if isinstance(value, torch.Tensor) else shown(value)
        raise SchemaError(where, f"is {found}; expected a {list(shape)} {dtype} tensor")
    return value


def _check_rng(value: Any, where: str) -> None:
    """The RNG states `checkpoint.rng_state` saves, as their restorers take them."""
    data = mapping(value, where)
    py = mapping(required(data, "python", where), f"{where}.python")
    integer(required(py, "version", f"{where}.python"), f"{where}.python.version")
    size = len(random.getstate()[1])
    words = _tensor(required(py, "state", f"{where}.python"), f"{where}.python.state", (size,),
                    torch.int64)
    if bool((words < 0).any()) or bool((words >= 2**32).any()) or int(words[-1]) > size - 1:
        raise SchemaError(f"{where}.python.state", "is not a Mersenne Twister state")
    optional(py, "gauss", number, f"{where}.python")
    npy = mapping(required(data, "numpy", where), f"{where}.numpy")
    if npy.get("name") != "MT19937":
        raise SchemaError(f"{where}.numpy.name", f"is {shown(npy.get('name'))}, not 'MT19937'")
    _tensor(required(npy, "keys", f"{where}.numpy"), f"{where}.numpy.keys", (size - 1,),
            torch.int64)
    integer(required(npy, "pos", f"{where}.numpy"), f"{where}.numpy.pos", 0, size - 1)
    integer(required(npy, "has_gauss", f"{where}.numpy"), f"{where}.numpy.has_gauss", 0, 1)
    number(required(npy, "gauss", f"{where}.numpy"), f"{where}.numpy.gauss")
    check_generator_state(required(data, "torch", where), f"{where}.torch")
    for index, state in enumerate(sequence(data.get("cuda") or [], f"{where}.cuda")):
        if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8:
            raise SchemaError(f"{where}.cuda[{index}]", f"is {shown(state)}, not a byte tensor")

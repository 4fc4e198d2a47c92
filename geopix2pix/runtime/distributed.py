"""Running on several processes with PyTorch's own distributed engine (torchrun, DDP).

`torchrun` (``python -m torch.distributed.run``) starts one process per GPU and sets RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous variables; ``init_from_env`` joins that process group
(NCCL on CUDA, gloo on the CPU). Without those variables everything here is a no-op and the
program runs as one process. Besides the main group, a gloo group on the CPU carries the small
control messages (stop flags, validation sums, gathered Python objects, the batch norms'
running statistics at an epoch end), so exchanging them never waits on the GPU stream.
``is_writer()`` is the one rank-0 predicate: only the writer writes files.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from geopix2pix.errors import (
    GeoPix2PixError,
    ReportedElsewhere,
    error_line,
    mark_reported,
    was_reported,
)
from geopix2pix.runtime.stopping import stop_with_launcher

T = TypeVar("T")
_control_group = None


@dataclass(frozen=True)
class DistEnv:
    """This process's place among the torchrun processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def launched(self) -> bool:
        """Whether torchrun started this process (then it joins the process group)."""
        return self.world_size > 1 or "TORCHELASTIC_RUN_ID" in os.environ


def env() -> DistEnv:
    """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them (0, 1, 0 without torchrun)."""
    try:
        return DistEnv(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                       int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as exc:
        raise GeoPix2PixError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({exc}); launch "
                              "with torchrun") from None


def active() -> bool:
    """Whether this process is part of an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


# What gloo and NCCL say when a collective cannot reach another rank (it ended: killed, out of
# memory, or failed with its own error; or it stopped answering)
PEER_SIGNS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe",
              "Connection refused", "ncclRemoteError", "communicator was aborted",
              "Timed out waiting", "Socket Timeout", "Watchdog caught collective operation "
              "timeout")


def peer_lost(exc: BaseException) -> bool:
    """Whether `exc` is a collective's failure to reach another rank of this process group
    (torch's DistNetworkError, or gloo's and NCCL's RuntimeError saying so: `PEER_SIGNS`); not
    this rank's own failure (a CUDA error that NCCL reports) nor any error of one process."""
    if not active() or world_size() < 2 or not isinstance(exc, RuntimeError):
        return False
    network = getattr(dist, "DistNetworkError", ())
    return isinstance(exc, network) or any(sign in str(exc) for sign in PEER_SIGNS)


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_writer() -> bool:
    """Whether this process writes outputs: rank 0, or the only process."""
    return rank() == 0


def init_from_env(device: torch.device, control_only: bool = False,
                  timeout: timedelta | None = None) -> bool:
    """Join torchrun's process group (NCCL for a CUDA ``device``, else gloo) when launched by
    torchrun and not already joined; returns whether this call initialised it.

    Once joined, the process stays in the group until it exits (`_leave_at_exit`): torch does
    not reliably join a group again after leaving one (the second rendezvous may wait forever),
    so a script that trains or predicts several times under torchrun reuses the first group.
    ``control_only``: the ranks only exchange small Python objects (no tensors on the GPU),
    so a gloo group serves whatever the device. ``timeout``: how long a collective may wait for
    a slow rank (PyTorch's default otherwise).
    """
    global _control_group
    if active() or not env().launched:
        return False
    atexit.unregister(_leave_at_exit)  # once, however many runs this process makes
    atexit.register(_leave_at_exit)
    stop_with_launcher()  # (torchrun killed: its ranks stop too)
    _import_dynamo_first()
    extra = {} if timeout is None else {"timeout": timeout}
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if device.type == "cuda" and not control_only:
        dist.init_process_group("nccl", device_id=device, **extra)
        _control_group = dist.new_group(backend="gloo", **extra)
    else:
        dist.init_process_group("gloo", **extra)
        _control_group = None  # the world group is gloo already
    return True


def _import_dynamo_first() -> None:
    """Import ``torch._dynamo`` before the group exists. DDP imports it on construction, and
    imported once a group exists it keeps a reference to that group (torch 2.14), so leaving
    the group no longer frees it: its gloo threads then ran on into the interpreter's shutdown,
    which now and then aborted a finished run (SIGABRT, "terminate called without an active
    exception"). Imported first, it holds nothing, and `cleanup` stops those threads. Also for
    a run that builds no DDP (predict): a later run of the same process may, in this group.
    Where it cannot be imported, DDP cannot be built either; a run without DDP goes on."""
    with contextlib.suppress(ImportError):
        import torch._dynamo  # noqa: F401


def _leave_at_exit() -> None:
    """Leave the group while Python still runs (see `cleanup`)."""
    cleanup()


def cleanup() -> None:
    """Leave the process group, first freeing what still refers to it.

    DDP wrappers hold the process group, and a run's objects refer to each other, so only the
    garbage collector frees them; they are collected first. Once nothing holds the group,
    leaving it stops its gloo threads (see `_import_dynamo_first`) while Python still runs:
    left to the interpreter's shutdown, they now and then aborted the process ("terminate
    called without an active exception", SIGABRT, after a finished or stopped run)."""
    global _control_group
    gc.collect()
    if active():
        dist.destroy_process_group()
    _control_group = None


def barrier() -> None:
    if active():
        dist.barrier(group=_control_group)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over the ranks of a CPU tensor (returned as float64; unchanged alone)."""
    values = values.detach().to("cpu", torch.float64).clone()
    if active():
        dist.all_reduce(values, op=dist.ReduceOp.SUM, group=_control_group)
    return values


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (e.g. a stop request)."""
    if not active():
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)]))[0] > 0)


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not active():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj, group=_control_group)
    return gathered


def writer_first(action: Callable[[], T]) -> T | None:
    """Run ``action`` (writing files) on rank 0 only, the other ranks waiting until it is done;
    None on the other ranks. When it fails, every rank stops: rank 0 with its own error, the
    others with ``ReportedElsewhere`` (or KeyboardInterrupt when rank 0 was interrupted), so
    the user reads rank 0's error, not a peer's lost-connection traceback after it.

    Rank 0 prints a one-line error at once, before the others stop: torchrun ends the
    remaining processes as soon as one exits, which could be before rank 0 got to say it."""
    if not active():
        return action()
    result, failure = None, None
    if is_writer():
        try:
            result = action()
        except BaseException as exc:  # any: the others must not wait for a rank that is gone
            failure = exc
            _report_now(exc)
    box = [None if failure is None else
           _INTERRUPTED if isinstance(failure, KeyboardInterrupt) else f"rank 0 failed: {failure}"]
    dist.broadcast_object_list(box, src=0, group=_control_group)
    if failure is not None:
        raise failure
    if box[0] == _INTERRUPTED:
        raise KeyboardInterrupt
    if box[0] is not None:
        raise ReportedElsewhere(box[0])
    return result


_INTERRUPTED = "interrupted"


def _report_now(exc: BaseException) -> None:
    """Print rank 0's one-line error now (marked, so the CLI does not print it again)."""
    line = error_line(exc)
    if line is not None and not was_reported(exc):
        print(line, file=sys.stderr, flush=True)
        mark_reported(exc)


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` in DistributedDataParallel when in a process group (itself otherwise).

    DDP broadcasts rank 0's parameters and buffers on construction, so every rank starts from
    the same weights, and averages the gradients over the ranks in each backward.
    """
    if not active():
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, output_device=device.index if ids
                                   else None, find_unused_parameters=False)


def running_stats(module: torch.nn.Module) -> list[torch.Tensor]:
    """The floating-point running statistics (running_mean, running_var) of ``module``'s norm
    layers that track them (batch norm, SyncBatchNorm, instance norm with
    ``track_running_stats``), in module order; not num_batches_tracked, an integer count that
    is the same on every rank."""
    stats = []
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._NormBase):
            stats += [t for t in (layer.running_mean, layer.running_var)
                      if t is not None and t.is_floating_point()]
    return stats


def average_running_stats(*modules: torch.nn.Module) -> None:
    """Replace the norm layers' running statistics of ``modules``, in place, by their mean over
    the ranks (the sum over the ranks / the number of ranks, as timm's
    ``distribute_bn(reduce=True)``); nothing, and no collective call, in one process.

    DDP averages the gradients, so every rank holds the same weights, but each rank updates
    its batch norms' running statistics from its own batches: without this the ranks would
    validate (and rank 0 save) different networks in eval mode. The statistics travel as one
    float64 tensor over the gloo control group (two numbers per channel; every rank receives
    the same sum, so every rank ends with the same statistics)."""
    if world_size() < 2:
        return
    stats = [t for module in modules for t in running_stats(module)]
    if not stats:  # instance norm without running statistics: the same networks on every rank
        return
    flat = torch.cat([t.detach().reshape(-1).to("cpu", torch.float64) for t in stats])
    mean = all_reduce_sum(flat) / world_size()
    with torch.no_grad():
        for tensor, part in zip(stats, mean.split([t.numel() for t in stats])):
            tensor.copy_(part.view_as(tensor))


def sync_batch_norm(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` with its batch norms synchronised across the ranks (SyncBatchNorm), so the
    statistics are those of the effective batch; CUDA only: PyTorch's SyncBatchNorm refuses
    CPU tensors in its forward whatever the backend, gloo included."""
    if world_size() < 2:
        return module
    if device.type != "cuda":
        raise GeoPix2PixError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only); "
                              "on the CPU train without --sync-bn or with --norm instance")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)


def fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names and exact bytes)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8)
                      .numpy().tobytes())
    return digest.hexdigest()

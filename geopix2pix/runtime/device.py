"""Where a command runs: the torch device (``auto``: CUDA when present, else the CPU; ``cpu``,
``cuda`` or ``cuda:N``), checked before anything is loaded, so a typo or a missing GPU is one
GeoPix2PixError rather than torch's RuntimeError ("Found no NVIDIA driver"); the precision a
model runs in under CUDA autocast; the CPUs a process may use and how many worker processes to
start by default. torch is
imported only when a device is resolved (export-chips never loads it)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from geopix2pix.errors import GeoPix2PixError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device, option: str = "--device ") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu', 'cuda' or 'cuda:N' as given.
    `option` starts the error line: ``--device `` for the commands, ``device=`` for an API
    argument of that name."""
    import torch

    shown = _show(option, device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        chosen = None
    if chosen is None or chosen.type not in ("cpu", "cuda"):
        raise GeoPix2PixError(f"{shown}: use auto, cpu, cuda or cuda:N")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise GeoPix2PixError(f"{shown}: no CUDA device is available; use "
                              f"{_show(option, 'cpu')}")
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise GeoPix2PixError(f"{shown}: only {torch.cuda.device_count()} CUDA device(s) are "
                              f"visible; use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return chosen


def _show(option: str, value: object) -> str:
    """``--device cuda`` for a command's option, ``device='cuda'`` for an API argument."""
    return f"{option}{value!r}" if option.endswith("=") else f"{option}{value}"


def cuda_autocast_dtype() -> torch.dtype:
    """bf16 where the GPU computes it natively (Ampere and later), else fp16 (V100, T4, where
    torch would otherwise emulate bf16 slowly)."""
    import torch

    try:
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch without the argument
        native = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if native else torch.float16


def default_workers(leave: int = 0) -> int:
    """Worker processes: one per available core but `leave` (cores kept for the main process),
    at most 8. export-chips leaves none (it is I/O and compression bound); train leaves one
    to its training loop."""
    return max(0, min(8, available_cpus() - leave))


def _cpu_quota() -> int | None:
    """The CPUs a container's cgroup quota allows (v2 cpu.max, else v1 cfs), or None."""
    for quota_file, period_file in (("/sys/fs/cgroup/cpu.max", None),
                                    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                                     "/sys/fs/cgroup/cpu/cpu.cfs_period_us")):
        try:
            with open(quota_file) as limit:
                fields = limit.read().split()
            if period_file is not None:
                with open(period_file) as period:
                    fields = fields[:1] + period.read().split()[:1]
            quota, period_us = fields[:2]
        except (OSError, ValueError):
            continue
        if quota in ("max", "-1"):
            return None
        try:
            return max(1, int(quota) // int(period_us))
        except ValueError:
            return None
    return None


def available_cpus() -> int:
    """The CPUs this process may use: its affinity (where the OS has one: not macOS or
    Windows, which count the machine's), within a container's CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cpu_quota()
    return max(1, min(cpus or 1, quota or cpus or 1))

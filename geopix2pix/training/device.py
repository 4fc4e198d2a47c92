"""Where and how training runs: device choice, mixed precision, memory layout, compilation.

On CUDA: bf16 autocast (fp16 with a GradScaler on GPUs without bf16), channels_last tensors,
cudnn benchmark, pinned host memory. On the CPU everything runs in fp32: CPU autocast to bf16 is
slower than fp32 on most CPUs without AMX, so ``--amp`` only acts on CUDA.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.runtime.device import cuda_autocast_dtype, resolve_device


@dataclass(frozen=True)
class DeviceSetup:
    """How tensors and models are placed and computed on the chosen device."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def use_grad_scaler(self) -> bool:
        return self.amp_dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context of the forward passes (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Move an (N, C, H, W) batch tensor to the device in the model's memory layout."""
        tensor = tensor.to(self.device, non_blocking=self.is_cuda)
        return tensor.contiguous(memory_format=self.memory_format())

    def prepare(self, module: nn.Module) -> nn.Module:
        return module.to(self.device, memory_format=self.memory_format())

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.is_cuda else "CPU"
        precision = {None: "fp32", torch.bfloat16: "bf16 autocast",
                     torch.float16: "fp16 autocast + grad scaler"}[self.amp_dtype]
        return f"{self.device} ({name}), {precision}" + (", channels_last" * self.channels_last)


def device_setup(name: str = "auto", amp: bool = True, local_rank: int = 0) -> DeviceSetup:
    """How training runs on the device `name`: ``auto`` picks CUDA when present, else the CPU;
    ``cuda`` without CUDA is an error; ``cuda:N`` takes GPU N. Under torchrun each process of
    a node takes the GPU of its ``local_rank`` (with ``cuda`` or ``auto``). The name is
    checked as predict checks it (`runtime.device.resolve_device`)."""
    chosen = resolve_device(name)
    if chosen.type == "cpu":
        return DeviceSetup(torch.device("cpu"), None, False)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    amp_dtype = cuda_autocast_dtype() if amp else None
    if chosen.index is not None:
        return DeviceSetup(chosen, amp_dtype, True)
    if local_rank >= torch.cuda.device_count():
        raise GeoPix2PixError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} "
                              "GPU(s) visible; start at most that many processes per node")
    return DeviceSetup(torch.device("cuda", local_rank), amp_dtype, True)


def maybe_compile(module: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(module)`` when asked; the plain module otherwise."""
    if not enabled:
        return module
    try:
        return torch.compile(module)
    except Exception as exc:  # compile support depends on the platform and toolchain
        raise GeoPix2PixError(f"--compile: torch.compile failed ({exc}); run without "
                              "--compile") from exc

"""CycleGAN's history of generated images (Shrivastava et al. 2017; the reference's ImagePool).

Each discriminator is trained on a mix of the newest generated images and older ones, which damps
the oscillation between generator and discriminator. As the reference implementation
(junyanz/pytorch-CycleGAN-and-pix2pix, util/image_pool.py): until ``pool_size`` images are held,
every image is stored and returned as it is; after that, each image is, with probability 0.5,
swapped for a random stored one (returned instead, the new one stored in its place) or else
returned as it is. A pool of size 0 returns every image as it is.

Unlike the reference, each image's validity mask travels with it (the PatchGAN's logits of an
older image are weighted by that image's own valid share), and the draws come from the pool's own
seeded ``torch.Generator``, not from Python's global RNG: `state_dict` holds the stored images,
their masks and the generator's state as tensors and plain numbers (a checkpoint loads without
pickle), so a resumed run draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

from typing import Any

import torch

from geopix2pix.errors import ModelError
from geopix2pix.models.schema import SchemaError, integer, mapping, required
from geopix2pix.settings.families import CYCLEGAN_DEFAULTS

POOL_SIZE = CYCLEGAN_DEFAULTS["pool_size"]  # the reference's --pool_size
SWAP_PROBABILITY = 0.5


class ImagePool:
    """A history of up to ``pool_size`` (image, valid) pairs; `query` mixes old and new.
    ``channels`` (optional) is the images' band count, which a loaded state must have."""

    def __init__(self, pool_size: int = POOL_SIZE, seed: int = 0,
                 channels: int | None = None) -> None:
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 0:
            raise ModelError(f"pool_size must be an integer >= 0, got {pool_size!r}")
        self.pool_size = pool_size
        self.channels = channels
        self.generator = torch.Generator().manual_seed(seed)
        self.images: list[torch.Tensor] = []  # each (C, H, W), detached
        self.valid: list[torch.Tensor] = []  # each (1, H, W) bool

    def __len__(self) -> int:
        return len(self.images)

    def _draw(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def query(self, images: torch.Tensor, valid: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The images (N, C, H, W) and masks (N, 1, H, W) to show the discriminator: the new
        ones, some swapped for older ones once the pool is full. Returned images are detached."""
        images = images.detach()
        if self.pool_size == 0:
            return images, valid
        out_images, out_valid = [], []
        for image, mask in zip(images, valid):
            if len(self.images) < self.pool_size:
                self.images.append(image)
                self.valid.append(mask)
            elif self._draw() > SWAP_PROBABILITY:
                index = int(torch.randint(self.pool_size, (), generator=self.generator))
                old_image, old_mask = self.images[index], self.valid[index]
                self.images[index], self.valid[index] = image, mask
                image = old_image.to(images.device, images.dtype)
                mask = old_mask.to(valid.device)
            out_images.append(image)
            out_valid.append(mask)
        return torch.stack(out_images), torch.stack(out_valid)

    def state_dict(self) -> dict[str, Any]:
        """The pool as tensors (on the CPU) and numbers: ``images`` (K, C, H, W) float32,
        ``valid`` (K, 1, H, W) bool, ``generator`` the draws' state; K = 0 before any query."""
        if self.images:
            images = torch.stack([i.float().cpu() for i in self.images])
            valid = torch.stack([v.bool().cpu() for v in self.valid])
        else:
            images = torch.zeros((0, 0, 0, 0))
            valid = torch.zeros((0, 1, 0, 0), dtype=torch.bool)
        return {"pool_size": self.pool_size, "images": images, "valid": valid,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`'s output (check it first with `check_pool_state`). The images
        stay on the CPU until a query moves each to the device of the images it is swapped for."""
        check_pool_state(state, self.pool_size, channels=self.channels)
        self.generator.set_state(state["generator"])
        self.images = list(state["images"].float().unbind(0))
        self.valid = list(state["valid"].bool().unbind(0))


def check_pool_state(value: Any, pool_size: int, where: str = "pool",
                     channels: int | None = None, chip_size: int | None = None) -> None:
    """SchemaError naming the first part of a saved pool that does not fit a pool of
    ``pool_size`` (and, when given, of images of ``channels`` bands, ``chip_size`` pixels a
    side: the chips the run's generators make)."""
    data = mapping(value, where)
    saved_size = integer(required(data, "pool_size", where), f"{where}.pool_size", 0)
    if saved_size != pool_size:
        raise SchemaError(f"{where}.pool_size", f"is {saved_size}; this run's pool holds "
                                                f"{pool_size}")
    images, valid = (required(data, key, where) for key in ("images", "valid"))
    if not isinstance(images, torch.Tensor) or images.dim() != 4 \
            or not images.is_floating_point():
        raise SchemaError(f"{where}.images", "is not a (K, C, H, W) float tensor")
    count = images.shape[0]
    if count > pool_size or (count and min(images.shape[1:]) < 1) \
            or (channels is not None and count and images.shape[1] != channels):
        raise SchemaError(f"{where}.images", f"is {list(images.shape)}; expected at most "
                                             f"{pool_size} images of {channels or 'C'} bands")
    if count and chip_size is not None and tuple(images.shape[2:]) != (chip_size, chip_size):
        raise SchemaError(f"{where}.images", f"are {images.shape[2]} x {images.shape[3]} "
                                             f"pixels; this run's chips are {chip_size} x "
                                             f"{chip_size}")
    if count and not bool(torch.isfinite(images.float()).all()):  # (as it is loaded)
        raise SchemaError(f"{where}.images", "holds NaN or infinite values")
    expected = (count, 1, *images.shape[2:])
    if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool \
            or (count and tuple(valid.shape) != expected) or (not count and valid.shape[0]):
        raise SchemaError(f"{where}.valid", f"is not a {list(expected)} bool tensor")
    check_generator_state(required(data, "generator", where), f"{where}.generator")


def check_generator_state(state: Any, where: str) -> None:
    """SchemaError where `state` is not one a CPU torch generator takes back (a byte tensor of
    its shape that is a valid Mersenne Twister state: a zeroed one is refused by torch, in a
    traceback at the restore)."""
    own = torch.Generator().get_state()
    if not isinstance(state, torch.Tensor) or state.dtype != own.dtype \
            or state.shape != own.shape:
        raise SchemaError(where, f"is not a {list(own.shape)} generator state")
    try:
        torch.Generator().set_state(state)
    except RuntimeError:
        raise SchemaError(where, "is not a valid generator state") from None

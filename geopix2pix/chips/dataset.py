"""`ChipDataset`: a torch Dataset over one split of a chips folder: the chip contract the trainer
relies on.

Each item is a dict: ``source`` (bands, H, W) and ``target`` (bands, H, W) float32 tensors scaled to
[-1, 1] by `geopix2pix.chips.scaling` with the statistics in dataset.json, ``valid`` (1, H, W) bool
(pixels valid in both rasters: the loss's), each side's own ``source_valid`` and ``target_valid``
(what samples/ shows) and the chip ``id``. ``source`` holds every pixel valid
in the source, also where the target is not (as predict sees the scene); the others hold 0 (under
``centre`` scaling values filled in), as do the target's invalid pixels. With
``classes`` (a class map's codes), ``target`` (1, H, W) holds each pixel's class index instead,
and a pixel whose code is none of them is invalid (left out of the loss; its input is kept).
The chip list comes from chips.gpkg read with sqlite3, so training never imports geopandas.
A chip that cannot be read is a one-line ``ChipReadError`` naming its file, also when a DataLoader
worker read it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from geopix2pix.chips.domains import DOMAINS
from geopix2pix.chips.manifest import INDEX, MANIFEST, DatasetInfo
from geopix2pix.chips.scaling import Scaling, with_validity
from geopix2pix.errors import GeoPix2PixError, data_errors, describe
from geopix2pix.raster.io import open_dataset, placement_problem, read_window
from geopix2pix.settings.checking import api_function
from geopix2pix.settings.train import AUGMENTS as AUGMENTATIONS

SPLITS = ("train", "val", None)
# The tensors of a paired item, in the order `augment_chips` gets them.
PAIRED_TENSORS = ("source", "target", "valid", "source_valid", "target_valid")


def _worker_message(message: str, name: str) -> str:
    """The one-line message of a ``name`` error that a DataLoader worker raised. torch re-raises
    it in the main process as ``type(text)``, with text "Caught NAME in DataLoader worker process
    N.\nOriginal Traceback ...", whose last line is "module.NAME: message"."""
    if "\n" not in message:
        return message
    marker = f"{name}: "
    for line in reversed(message.splitlines()):
        if marker in line:
            return line.split(marker, 1)[1]
    return message


class ChipReadError(GeoPix2PixError):
    """A chip file that cannot be read. GDAL's message names the file without its folder, and a
    worker's error reaches the main process without its cause chain, so the error is made one
    line naming the file where it happens; that line survives a DataLoader worker."""

    def __init__(self, message: str) -> None:
        super().__init__(_worker_message(message, type(self).__name__))


RERUN = "rerun the export that made it (geopix2pix export-chips with --overwrite)"


def _damaged(path: Path, reason: str) -> str:
    return f"chip {path} is damaged ({reason}); {RERUN}"


def _open_chip(path: Path):
    """Open a chip file, which the export wrote whole and georeferenced: one that is missing,
    does not open, or opens without CRS or geotransform (a truncated file: GDAL finds no
    georeferencing tags) is a `ChipReadError` saying it is damaged."""
    if not path.is_file():
        raise ChipReadError(f"chip {path} is missing; {RERUN}")
    try:
        dataset = open_dataset(path)
    except data_errors() as exc:
        raise ChipReadError(_damaged(path, describe(exc, hint=False))) from exc
    if placement_problem(dataset, path):
        dataset.close()
        what = "CRS" if dataset.crs is None else "geotransform"
        raise ChipReadError(_damaged(path, f"it opens without its {what}"))
    return dataset


def chip_ids(chips_dir: str | Path, split: str | None, domain: str | None = None) -> list[str]:
    """Ids of the chips of a split (None: all), in index order; with `domain`, only that
    domain's (an unpaired chips folder)."""
    path = Path(chips_dir) / INDEX
    if not path.exists():
        raise GeoPix2PixError(f"{chips_dir} has no {INDEX}; rerun geopix2pix export-chips")
    where = [(column, value) for column, value in (("split", split), ("domain", domain))
             if value is not None]
    query = "SELECT id FROM chips" + (" WHERE " if where else "") + \
        " AND ".join(f"{column} = ?" for column, _ in where) + " ORDER BY fid"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(query, [value for _, value in where]).fetchall()
    return [r[0] for r in rows]


def augment_chips(tensors: Sequence[torch.Tensor], mode: str,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """Apply one random flip (``flip``) or dihedral transform (``d4``) identically to every
    (C, H, W) tensor of one chip (its bands and validity masks)."""
    if mode == "none":
        return tuple(tensors)
    if mode not in ("flip", "d4"):  # (None: a recipe not applied yet)
        raise ValueError(f"augment mode {mode!r}: none, flip or d4")
    choices = 4 if mode == "flip" else 8
    k = int(torch.randint(choices, (1,), generator=generator))
    tensors = tuple(tensors)
    if k & 1:
        tensors = tuple(t.flip(-1) for t in tensors)
    if k & 2:
        tensors = tuple(t.flip(-2) for t in tensors)
    if k & 4:
        tensors = tuple(t.transpose(-1, -2) for t in tensors)
    return tuple(t.contiguous() for t in tensors)


class ChipDataset(Dataset):
    """Chips of one split (`train`, `val`, or None for all) scaled for the generator.

    With `unpaired` (for a model that learns without pairs), each item is one chip of each
    domain drawn independently, as the reference CycleGAN's unaligned dataset does: ``source``
    is chip ``index % len(sources)``, ``target`` one drawn at random with a generator seeded by
    (`seed`, the epoch set by `set_epoch`, `index`), so a resumed run draws the same; each with
    its own validity (``source_valid``, ``target_valid``) and id (``source_id``,
    ``target_id``). The dataset is as long as the larger domain. Without `draw_targets`
    (validation: each domain's chips in turn), each chip counts once: past the smaller
    domain's chips, its items repeat one with no valid pixel; a domain without chips in the
    split is left out of the items (the other is scored alone). A paired chips folder is read
    so too (its pairing ignored); an unpaired one is refused without `unpaired`."""

    @api_function
    def __init__(self, chips_dir: str | Path, split: str | None = "train",
                 augment: str = "none", source_scaling: Scaling | None = None,
                 target_scaling: Scaling | None = None, classes: Sequence[int] | None = None,
                 unpaired: bool = False, seed: int = 0, draw_targets: bool = True,
                 validity_band: bool = False):
        if augment not in AUGMENTATIONS:
            raise GeoPix2PixError(f"--augment {augment}: use one of {', '.join(AUGMENTATIONS)}")
        if split not in SPLITS:
            raise GeoPix2PixError(f"split {split!r}: use 'train', 'val' or None (all chips)")
        self.chips_dir = Path(chips_dir)
        self.info = DatasetInfo.load(chips_dir)
        self.unpaired, self.seed, self.epoch = unpaired, seed, 0
        self.draw_targets = draw_targets
        if unpaired and validity_band:
            raise GeoPix2PixError("a validity band is for paired chips (Pix2Pix); drop it "
                                  "with unpaired")
        self.validity_band = validity_band
        if unpaired:
            self.domain_ids = self._domain_ids(split, classes)
        else:
            self.info.check_paired(chips_dir)
        self.ids = self.domain_ids["source"] if unpaired else chip_ids(chips_dir, split)
        self.split = split
        self.augment = augment
        self.source_scaling = source_scaling or self.info.source.scaling
        self.target_scaling = target_scaling or self.info.target.scaling
        self.classes = None if classes is None else np.sort(np.asarray(classes, np.int64))

    def _domain_ids(self, split: str | None, classes) -> dict[str, list[str]]:
        """Each domain's chip ids (a paired folder's: the same ids in both)."""
        if classes is not None:
            raise GeoPix2PixError("classes are for paired chips (a class map learnt pixel for "
                                  "pixel); drop them with unpaired")
        found = {d: chip_ids(self.chips_dir, split, None if self.info.paired else d)
                 for d in DOMAINS}
        for domain, ids in found.items():  # validation may score one domain alone
            if not ids and (self.draw_targets or not any(found.values())):
                raise GeoPix2PixError(f"{self.chips_dir} holds no {split or ''} chip of the "
                                      f"{domain} domain; re-export it with a smaller "
                                      "--val-fraction or more rasters")
        return found

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose random target chips (`unpaired`) the items draw."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.unpaired:
            return max(len(ids) for ids in self.domain_ids.values())
        return len(self.ids)

    def _read(self, side: str, chip_id: str) -> tuple[np.ndarray, np.ndarray]:
        path = self.chips_dir / side / f"{chip_id}.tif"
        with _open_chip(path) as ds:
            bands, size = len(getattr(self.info, side).bands), self.info.chip_size
            if (ds.count, ds.height, ds.width) != (bands, size, size):
                raise ChipReadError(_damaged(path, (
                    f"{ds.count} band(s) of {ds.width} x {ds.height} px; "
                    f"{self.chips_dir / MANIFEST} says {bands} band(s) of {size} x {size} px")))
            try:
                return read_window(ds, list(range(1, ds.count + 1)), None)
            except data_errors() as exc:
                raise ChipReadError(_damaged(path, describe(exc, hint=False))) from exc

    def __getitem__(self, index: int) -> dict:
        if self.unpaired:
            return self._unpaired_item(index)
        chip_id = self.ids[index]
        source, source_valid = self._read("source", chip_id)
        target, target_valid = self._read("target", chip_id)
        # the input as predict sees it: every valid source pixel, also where the target is not
        source_t = self.source_scaling.forward(source, source_valid)
        if self.validity_band:
            source_t = with_validity(source_t, source_valid)
        if self.classes is not None:  # the input stays whole where a code is no class
            target, target_valid = self._class_index(target, target_valid)
        valid = source_valid & target_valid
        if self.classes is None:  # every valid target pixel, also where the source is not
            target = self.target_scaling.forward(target, target_valid)
        tensors = augment_chips([torch.from_numpy(source_t), torch.from_numpy(target),
                                 *(torch.from_numpy(v)[None]
                                   for v in (valid, source_valid, target_valid))], self.augment)
        return {**dict(zip(PAIRED_TENSORS, tensors)), "id": chip_id}

    def target_index(self, index: int, epoch: int | None = None) -> int:
        """The target chip item `index` draws (`unpaired`): random, but the same for the same
        seed, epoch and index whichever process asks; without `draw_targets`, the target chips
        in turn (validation: each chip once)."""
        if not self.draw_targets:
            return index % len(self.domain_ids["target"])
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])
        return int(rng.integers(len(self.domain_ids["target"])))

    def _unpaired_item(self, index: int | tuple[int, int]) -> dict:
        """Item `index`, or (epoch, index): that epoch's draw whatever `set_epoch` said (loader
        workers hold their own copy of the dataset)."""
        epoch, index = index if isinstance(index, tuple) else (None, index)
        if not 0 <= index < len(self):
            raise IndexError(index)
        item = {}
        for domain, ids in self.domain_ids.items():
            if not ids:  # validation of the other domain alone
                continue
            chip = index % len(ids) if domain == "source" else self.target_index(index, epoch)
            tensor, valid = self.domain_chip(domain, chip)
            if not self.draw_targets and index >= len(ids):  # (a repeat: validation's scores
                valid = torch.zeros_like(valid)  # are over valid pixels, each chip's once)
            item.update({domain: tensor, f"{domain}_valid": valid,
                         f"{domain}_id": self.domain_ids[domain][chip]})
        return item

    def domain_chip(self, domain: str, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The `domain`'s chip `index` (`unpaired`), scaled and augmented, and its validity
        (1, H, W)."""
        data, valid = self._read(domain, self.domain_ids[domain][index])
        scaling = self.source_scaling if domain == "source" else self.target_scaling
        tensor, valid_t = augment_chips([torch.from_numpy(scaling.forward(data, valid)),
                                         torch.from_numpy(valid)[None]], self.augment)
        return tensor, valid_t

    def _class_index(self, target: np.ndarray, valid: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(1, H, W) float32 class indices of a class map's codes (0 where invalid), and the
        validity without the pixels of codes that are no class."""
        codes = target[:1].astype(np.int64)
        index = np.searchsorted(self.classes, codes).clip(0, len(self.classes) - 1)
        valid = valid & (self.classes[index[0]] == codes[0])
        return np.where(valid, index, 0).astype(np.float32), valid

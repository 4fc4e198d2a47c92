"""dataset.json: what a chips folder holds (bands, dtypes, nodata, band metadata, statistics,
scaling, pairs, options). It is written last and atomically, so a folder without it is incomplete
and refused. Each side's band metadata (units, scales, offsets, colour interpretation and table;
`BandMetadata`) is stored as keys of the side beside its descriptions; a dataset.json written
before those keys existed reads as having none. Each pair may hold `shift`, its scene shift from
the co-registration check (`chips.shiftcheck.recorded`; null when the check was off, absent in
files written before it)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from geopix2pix.chips.scaling import Scaling
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.jsonvalues import decode_number, encode_number
from geopix2pix.raster.band_metadata import KEYS as BAND_METADATA_KEYS
from geopix2pix.raster.band_metadata import BandMetadata
from geopix2pix.raster.write import write_text_atomic
from geopix2pix.runtime.stopping import Outputs, StopReport, stop_signal
from geopix2pix.settings.export import SCALING_MODES, is_chip_size

MANIFEST = "dataset.json"
INDEX = "chips.gpkg"
FORMAT_VERSION = 1


@dataclass
class SideInfo:
    """One side of the pairs (source or target): what its chips contain."""

    bands: list[int]
    dtype: str
    nodata: float | None
    descriptions: list[str | None]
    scaling_mode: str
    stats: list[dict] = field(default_factory=list)
    raster_bands: int | None = None  # bands of the rasters cut (None: they differ, or unknown)
    band_metadata: BandMetadata = field(default_factory=BandMetadata)  # units, scales, colours
    # per band, the val chips' [[code, pixels], ...] (None: no class map; [] : not recorded)
    val_classes: list = field(default_factory=list)

    @property
    def scaling(self) -> Scaling:
        """The map between this side's values and [-1, 1], from the train statistics."""
        return Scaling.from_stats(self.stats, self.scaling_mode)

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["band_metadata"]
        data["nodata"] = encode_number(self.nodata)
        return {**data, **self.band_metadata.to_dict()}

    def check(self, where: str) -> None:
        """ValueError naming the first of this side's values that no export writes."""
        if not isinstance(self.bands, list) or not self.bands or not all(
                _whole(b) and b >= 1 for b in self.bands):
            raise ValueError(f"{where}.bands is {self.bands!r}")
        try:
            kind = np.dtype(self.dtype).kind
        except TypeError:
            kind = None
        if kind not in ("u", "i", "f"):
            raise ValueError(f"{where}.dtype is {self.dtype!r}")
        if self.nodata is not None and not _number(self.nodata):
            raise ValueError(f"{where}.nodata is {self.nodata!r}")
        if self.scaling_mode not in SCALING_MODES:
            raise ValueError(f"{where}.scaling_mode is {self.scaling_mode!r}")
        if not isinstance(self.stats, list) or len(self.stats) not in (0, len(self.bands)):
            raise ValueError(f"{where}.stats is not one per band ({len(self.bands)})")
        if self.stats and all(isinstance(s, dict) and s.get("min") is not None
                              for s in self.stats):
            scaling = self.scaling
            if not all(_number(v) and math.isfinite(v) for v in scaling.low + scaling.high) \
                    or any(lo > hi for lo, hi in zip(scaling.low, scaling.high)):
                raise ValueError(f"{where}.stats give the scaling {scaling.low} .. "
                                 f"{scaling.high}")

    @classmethod
    def from_dict(cls, data: dict) -> SideInfo:
        fields = {k: v for k, v in data.items() if k not in BAND_METADATA_KEYS}
        return cls(**{**fields, "nodata": decode_number(data["nodata"]),
                      "band_metadata": BandMetadata.from_dict(data)})


@dataclass
class DatasetInfo:
    """The contents of dataset.json."""

    chip_size: int
    stride: int
    source: SideInfo
    target: SideInfo
    crs: str
    pixel_size: list[float]
    pairs: list[dict]
    counts: dict
    options: dict
    version: str
    format_version: int = FORMAT_VERSION
    # False: two unpaired collections (`chips.unpaired`): `pairs` is empty, `rasters` lists
    # every raster with its domain, `counts` holds each domain's, and `source`/`target` describe
    # the domains; absent (a file written before) reads as paired
    paired: bool = True
    rasters: list[dict] = field(default_factory=list)
    # `pixel_size` in metres on the ground at the first grid's centre (`raster.ground`; None in
    # files from before it, or a grid without CRS): what predict compares scenes' pixels with
    ground_pixel_size: list[float] | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["source"], data["target"] = self.source.to_dict(), self.target.to_dict()
        return data

    def check(self) -> None:
        """ValueError naming the first value of dataset.json that no export writes (an edited
        one was a traceback when training began, or a model file predict then refused)."""
        if not _whole(self.chip_size) or not is_chip_size(self.chip_size):
            raise ValueError(f"chip_size is {self.chip_size!r}")
        if not _whole(self.stride) or self.stride < 1:
            raise ValueError(f"stride is {self.stride!r}")
        for name in ("pixel_size", "ground_pixel_size"):
            value = getattr(self, name)
            if value is None and name == "ground_pixel_size":
                continue
            if not isinstance(value, list) or len(value) != 2 or not all(
                    _number(v) and 0 < v < math.inf for v in value):
                raise ValueError(f"{name} is {value!r}")
        self.source.check("source")
        self.target.check("target")

    def save(self, chips_dir: str | Path) -> None:
        write_text_atomic(Path(chips_dir) / MANIFEST, json.dumps(self.to_dict(), indent=2))

    def check_trainable(self, chips_dir: str | Path) -> None:
        """Refuse a chips folder with nothing to train on: no train chips (an export that gave
        every chip to val, as exports before this check did), or no statistics of them (their
        pixels all invalid), from which the values would be scaled."""
        train, val = self.counts.get("train", 0), self.counts.get("val", 0)
        again = ("re-export it with a smaller --split-block or a smaller --val-fraction "
                 "(geopix2pix export-chips --overwrite)")
        if not train:
            raise GeoPix2PixError(f"{chips_dir} has no train chips ({val} val chips): nothing "
                                  f"to train on; {again}")
        sides = (self.source, self.target)
        if any(not side.stats or any(s.get("min") is None for s in side.stats)
               for side in sides):
            raise GeoPix2PixError(f"{Path(chips_dir) / MANIFEST} has no statistics of the train "
                                  f"chips (none has a valid pixel); {again}")

    def check_paired(self, chips_dir: str | Path) -> None:
        """Refuse an unpaired chips folder where pairs are needed (Pix2Pix learns from aligned
        pairs)."""
        if not self.paired:
            raise GeoPix2PixError(f"{chips_dir} holds unpaired chips (export-chips --unpaired): "
                                  "Pix2Pix learns from aligned pairs; export pairs (SOURCE TARGET "
                                  "or --pairs) or train CycleGAN on them (--model cyclegan)")

    @classmethod
    def load(cls, chips_dir: str | Path) -> DatasetInfo:
        """Read a chips folder's dataset.json, refusing missing or incomplete folders."""
        chips_dir = Path(chips_dir)
        path = chips_dir / MANIFEST
        if not chips_dir.is_dir():
            raise GeoPix2PixError(f"{chips_dir}: no such chips folder; run geopix2pix "
                                  "export-chips first")
        if not path.exists() and not (chips_dir / INDEX).exists():  # (export's own files:
            # a user's data folder may well hold source/ and target/ subfolders)
            raise GeoPix2PixError(f"{chips_dir} is not a chips folder (no {MANIFEST}); run "
                                  "geopix2pix export-chips SOURCE TARGET -o CHIPS_DIR first, "
                                  "and pass CHIPS_DIR")
        if not path.exists():
            raise GeoPix2PixError(f"{chips_dir} is an incomplete chips folder (no {MANIFEST}); "
                                  "rerun geopix2pix export-chips with --overwrite")
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {data.get('format_version')}")
            data["source"] = SideInfo.from_dict(data["source"])
            data["target"] = SideInfo.from_dict(data["target"])
            info = cls(**data)
            info.check()
            return info
        except (ValueError, KeyError, TypeError) as exc:
            raise GeoPix2PixError(f"{path} is not a geopix2pix {MANIFEST} ({exc}); rerun "
                                  "geopix2pix export-chips") from None


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def stop_reporter(out_dir: str | Path) -> Callable[[BaseException], StopReport]:
    """What a stop of an export into `out_dir` left, asked of the folder before the run:
    complete (dataset.json, written last, is new), or not: then an earlier export (--overwrite)
    is as it was, since the new one is built beside it and swapped in once complete, and
    nothing of the new one is left."""
    out = Path(out_dir)
    manifest = Outputs([out / MANIFEST])

    def report(stop: BaseException) -> StopReport:
        signum = stop_signal(stop)
        if manifest.finished():
            return StopReport("export-chips", signum, f"Stopped after the export finished: {out} "
                              "is complete", completed=(out,))
        if manifest.kept():
            return StopReport("export-chips", signum, "Stopped before the new export was "
                              f"complete: the earlier export in {out} is as it was (nothing of "
                              "the new one is left)", kept=out)
        return StopReport("export-chips", signum, f"Stopped: no chips were exported to {out} "
                          "(none cut before the stop is left)")

    return report

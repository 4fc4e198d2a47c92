"""`make_demo_scenes`: paired, georeferenced demo scenes written as GeoTIFFs that open in QGIS.

The scenes lie in UTM zone 33N (EPSG:32633) at 10 m pixels, in the foothills north-west of
Ljubljana: training scenes side by side in a row, and a held-out scene 20 km further south made
from its own seed, so the model is judged on ground it has never seen.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from tqdm.auto import tqdm

from geopix2pix.demo.recipes import DemoRecipe, demo_recipe
from geopix2pix.demo.render import RENDERERS, RenderedPair
from geopix2pix.demo.terrain import make_landscape
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.raster.gdal_log import checked_write
from geopix2pix.raster.write import atomic_path, check_can_write, gtiff_profile
from geopix2pix.settings.checking import api_function
from geopix2pix.settings.demo import TASKS, DemoSettings

# What the two sides of each task are called in file names.
SIDE_NAMES = {"dsm2image": ("dem", "hillshade"), "sat2map": ("image", "map"),
              "sar2optical": ("sar", "optical")}
CRS_CODE = "EPSG:32633"
PIXEL_SIZE = 10.0
ORIGIN = (440_000.0, 5_120_000.0)  # upper-left corner (easting, northing), metres
SCENE_SPACING = 10_000.0  # metres between the origins of neighbouring training scenes
HELDOUT_OFFSET = (0.0, -20_000.0)
HELDOUT_INDEX = 1000  # the held-out scene's place in the seed sequence, far from any train scene


@dataclass
class DemoScenes:
    """Paths of the demo scenes of one task."""

    task: str
    out_dir: Path
    train: list[tuple[Path, Path]]  # (source, target) per training scene
    heldout_source: Path
    heldout_target: Path
    pairs_csv: Path  # the training pairs, for `geopix2pix export-chips --pairs`
    crs: str = CRS_CODE
    pixel_size: float = PIXEL_SIZE
    names: tuple[str, str] = field(default=("source", "target"))

    def to_dict(self) -> dict:
        """JSON-ready (paths as strings)."""
        return {"task": self.task, "out_dir": str(self.out_dir),
                "train": [[str(s), str(t)] for s, t in self.train],
                "heldout_source": str(self.heldout_source),
                "heldout_target": str(self.heldout_target), "pairs_csv": str(self.pairs_csv),
                "crs": self.crs, "pixel_size": self.pixel_size, "names": list(self.names)}

    def recipe(self, unpaired: bool = False) -> DemoRecipe:
        """The keywords the demo gives `export_chips` and `train` for these scenes
        (`geopix2pix.demo.recipes`): ``export_chips(..., **recipe.export)``,
        ``train(..., **recipe.train)``; with `unpaired`, the demo's small CycleGAN."""
        pixels = 0
        for source, _ in self.train:
            with rasterio.open(source) as ds:
                pixels += ds.width * ds.height
        return demo_recipe(self.task, unpaired=unpaired, train_pixels=pixels)

    def lines(self) -> list[str]:
        """A short human-readable listing."""
        source, target = self.names
        lines = [f"{len(self.train)} training scene pair(s) ({source} -> {target}) in "
                 f"{self.out_dir}, {self.crs} at {self.pixel_size:g} m"]
        lines += [f"  held-out {source}: {self.heldout_source}",
                  f"  held-out {target} (truth): {self.heldout_target}"]
        return lines


def scene_seed(seed: int, index: int) -> np.random.SeedSequence:
    """Independent, reproducible streams per (seed, scene)."""
    return np.random.SeedSequence([seed, index])


def scene_transform(index: int, train_size: int) -> Affine:
    """The transform of training scene `index` (0, 1, ...) or of the held-out scene."""
    x, y = ORIGIN
    if index == HELDOUT_INDEX:
        x, y = x + HELDOUT_OFFSET[0], y + HELDOUT_OFFSET[1]
    else:
        x += index * max(SCENE_SPACING, (train_size + 100) * PIXEL_SIZE)
    return Affine(PIXEL_SIZE, 0.0, x, 0.0, -PIXEL_SIZE, y)


def render_scene(task: str, seed: int, index: int, size: int) -> RenderedPair:
    """Generate one scene's landscape and render it for `task` (deterministic)."""
    if task not in RENDERERS:
        raise GeoPix2PixError(f"--task {task}: use one of {', '.join(TASKS)}")
    land_seq, render_seq = scene_seed(seed, index).spawn(2)
    land = make_landscape((size, size), int(land_seq.generate_state(1)[0]), PIXEL_SIZE)
    return RENDERERS[task](land, np.random.default_rng(render_seq))


def write_raster(path: Path, data: np.ndarray, transform: Affine, nodata: float | None,
                 descriptions: list[str], units: list[str], overwrite: bool) -> None:
    """Write (bands, rows, cols) as a tiled, compressed GeoTIFF, atomically."""
    bands, height, width = data.shape
    profile = gtiff_profile(str(data.dtype), bands, CRS.from_string(CRS_CODE), transform, width,
                            height, nodata, blocksize=256)
    with atomic_path(path, overwrite) as temp, checked_write(temp, path), \
            rasterio.open(temp, "w", **profile) as dst:
        dst.write(data)
        for band, text in enumerate(descriptions, 1):
            dst.set_band_description(band, text)
        for band, unit in enumerate(units, 1):
            if unit:
                dst.set_band_unit(band, unit)
        if bands == 3 and data.dtype == np.uint8:
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]


def _write_pair(pair: RenderedPair, source: Path, target: Path, transform: Affine,
                overwrite: bool) -> None:
    write_raster(source, pair.source, transform, pair.source_nodata, pair.source_descriptions,
                 pair.source_units, overwrite)
    write_raster(target, pair.target, transform, pair.target_nodata, pair.target_descriptions,
                 pair.target_units, overwrite)


@api_function
def make_demo_scenes(out_dir: str | os.PathLike, task: str = "dsm2image", seed: int = 0, *,
                     n_train: int = DemoSettings.n_train,
                     train_size: int = DemoSettings.train_size,
                     heldout_size: int = DemoSettings.heldout_size,
                     overwrite: bool = False, progress: bool = True) -> DemoScenes:
    """Generate `n_train` training scene pairs and one held-out pair for `task` in `out_dir`.

    Deterministic for a `seed`: the same arguments write the same pixels. Existing files are not
    replaced unless `overwrite`.
    """
    if task not in TASKS:
        raise GeoPix2PixError(f"--task {task}: use one of {', '.join(TASKS)}")
    if n_train < 1 or min(train_size, heldout_size) < 32:
        raise GeoPix2PixError("the demo needs at least one training scene and scenes of at least "
                              "32 x 32 pixels")
    out = Path(out_dir)
    source_name, target_name = SIDE_NAMES[task]
    jobs = [(i, train_size, out / f"train_{i + 1}_{source_name}.tif",
             out / f"train_{i + 1}_{target_name}.tif") for i in range(n_train)]
    jobs.append((HELDOUT_INDEX, heldout_size, out / f"heldout_{source_name}.tif",
                 out / f"heldout_{target_name}.tif"))
    pairs_csv = out / "pairs.csv"
    for path in [p for job in jobs for p in job[2:]] + [pairs_csv]:
        check_can_write(path, overwrite)
    for index, size, source, target in tqdm(jobs, desc=f"demo scenes ({task})", unit="scene",
                                            disable=not progress):
        _write_pair(render_scene(task, seed, index, size), source, target,
                    scene_transform(index, train_size), overwrite)
    _write_pairs_csv(pairs_csv, [(s, t) for _, _, s, t in jobs[:-1]], overwrite)
    return DemoScenes(task=task, out_dir=out, train=[(s, t) for _, _, s, t in jobs[:-1]],
                      heldout_source=jobs[-1][2], heldout_target=jobs[-1][3],
                      pairs_csv=pairs_csv, names=(source_name, target_name))


def _write_pairs_csv(path: Path, pairs: list[tuple[Path, Path]], overwrite: bool) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["source", "target"])
    writer.writerows([(s.name, t.name) for s, t in pairs])
    with atomic_path(path, overwrite) as temp:
        temp.write_text(buffer.getvalue())

"""`ExportOptions`: export_chips's options, declared (with their defaults) once in
geopix2pix.settings.export, checked before any file is read, and recorded in dataset.json as
they were used."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import write_raster

from geopix2pix.chips.export import export_chips
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.runtime.device import default_workers
from geopix2pix.settings.export import ExportOptions


def test_the_stride_and_workers_default_to_the_chip_size_and_the_cores():
    options = ExportOptions(chip_size=64)
    assert (options.stride, options.workers, options.split_block) == (64, default_workers(), None)
    assert options.with_split_block(128).split_block == 128


def test_default_workers_count_the_cores_where_the_os_has_no_affinity(monkeypatch):
    """macOS and Windows have no os.sched_getaffinity: the machine's cores count (a laptop's
    export and train used to fail there with AttributeError)."""
    import os

    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    monkeypatch.setattr("geopix2pix.runtime.device._cpu_quota", lambda: None)
    assert (default_workers(), default_workers(leave=1)) == (6, 5)
    assert ExportOptions(chip_size=64).workers == 6


@pytest.mark.parametrize("changes, message", [
    (dict(chip_size=48), "--chip-size 48: use a power of two from 32 to 2048"),
    (dict(stride=0), "--stride 0: use a positive number of pixels"),
    (dict(max_nodata=1.5), "--max-nodata 1.5: use a fraction from 0 to 1"),
    (dict(val_fraction=1.0), "--val-fraction 1.0: use a fraction from 0 to below 1"),
    (dict(target_resampling="lanczos"), "--target-resampling lanczos: use one of nearest, "),
    (dict(split_block=16, chip_size=32), "--split-block 16: use at least the chip size (32)"),
    (dict(seed=-1), "--seed -1: use 0 to 4294967295"),
    (dict(workers=-1), "--workers -1: use 0 or more (0 and 1 export in this process)"),
    (dict(workers=10_000), "--workers 10000: this process may use "),
    (dict(aoi_mode="inside"), "--aoi-mode inside: use one of intersects, within"),
    (dict(max_shift=0.0), "--max-shift 0.0: use a positive number of source pixels"),
    (dict(max_shift=1.0, shift_check=False), "--max-shift 1.0 needs the shift check; drop "),
    (dict(correct_shift=True, shift_check=False), "--correct-shift needs the shift check; drop"),
    (dict(mask_values=[]), "--mask-values \"\": give the mask codes"),
    (dict(mask_values=[3.0, float("nan")]), "--mask-values 3,nan: give the mask codes"),
])
def test_bad_values_are_one_line_naming_the_option(changes, message):
    with pytest.raises(GeoPix2PixError) as caught:
        ExportOptions(**changes)
    assert str(caught.value).startswith(message)


def test_dataset_json_records_the_options_as_used(tmp_path):
    data = np.random.default_rng(0).random((2, 128, 128), dtype=np.float32)
    source = write_raster(tmp_path / "s.tif", data)
    target = write_raster(tmp_path / "t.tif", data[:1])
    export_chips(source, target, tmp_path / "chips", chip_size=32, workers=0, progress=False)
    options = json.loads((tmp_path / "chips" / "dataset.json").read_text())["options"]
    assert options == dict(chip_size=32, stride=32, source_bands=[1, 2], target_bands=[1],
                           target_resampling="bilinear", aoi=None, aoi_layer=None,
                           aoi_mode="intersects", source_nodata=None, target_nodata=None,
                           max_nodata=0.1, max_shift=None, shift_check=True,
                           correct_shift=False, source_mask=None, target_mask=None,
                           mask_values=None, val_fraction=0.2,
                           split_block=options["split_block"],
                           seed=0, source_scaling="percentile", target_scaling="minmax")
    assert list(options) == [f.name for f in dataclasses.fields(ExportOptions)
                             if f.name in options]  # in the declaration's order
    assert options["split_block"] in (32, 64, 128, 256)  # chosen: 8, 4, 2 or 1 chips

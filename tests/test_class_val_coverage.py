"""A class map's val chips against its train chips: dataset.json counts the val chips' codes, and
train --categorical warns of a code only val holds (the model cannot learn it) and of a train
class the val chips lack (their scores then reward never predicting it)."""

from __future__ import annotations

import json
from pathlib import Path

import rasterio
from test_train_categorical import TINY, class_pair

from geopix2pix.chips.export import export_chips
from geopix2pix.training import train


def test_a_class_missing_from_the_val_chips_is_warned_of(tmp_path):
    """Code 9 only inside train chips: the val scores cannot judge it and reward never
    predicting it (a tester's road mask whose val chips held no road scored the all-background
    map 1.000), so train --categorical says so; a class that val holds too is not named."""
    out = chips_with_code_9_in(tmp_path, "train")
    info = json.loads((out / "dataset.json").read_text())["target"]
    assert all(code != 9 for code, _ in info["val_classes"][0])
    lines: list[str] = []
    train(out, tmp_path / "run", categorical=True, max_steps=1, samples=0, log=lines.append,
          **TINY)
    said = [line for line in lines if "hold no pixel of class code(s)" in line]
    assert said[0].startswith(f"warning: the val chips of {out} hold no pixel of class code(s) "
                              "9 of the train chips")
    # the end-of-run comparison (one step loses to the baselines) repeats why, and advises
    # no baseline map the val scores favour for the wrong reason
    assert len(said) == 2 and "does not beat the best simple baselines" in said[1]
    assert "--baseline" not in said[1] and said[1].endswith("before trusting this comparison")


def test_a_class_only_in_val_chips_is_counted_at_export_and_warned_of(tmp_path):
    """Code 9 only inside what becomes a val chip: dataset.json counts the val chips' codes,
    and train --categorical says the model cannot learn it (a tester found it silently left
    out of the scores)."""
    out = chips_with_code_9_in(tmp_path, "val")
    rows = json.loads((tmp_path / "probe" / "dataset.json").read_text())
    info = json.loads((out / "dataset.json").read_text())["target"]
    assert [9, 100] in info["val_classes"][0]
    assert all(code != 9 for code, _ in info["stats"][0]["classes"])
    assert rows["counts"] == json.loads((out / "dataset.json").read_text())["counts"]
    lines: list[str] = []
    train(out, tmp_path / "run", categorical=True, max_steps=1, samples=0, log=lines.append,
          **TINY)
    said = [line for line in lines if "hold class code(s) 9 (100 pixels)" in line]
    assert len(said) == 1 and said[0].startswith("warning: the val chips of")


def chips_with_code_9_in(tmp_path: Path, split: str) -> Path:
    """Chips of `class_pair` whose code 9 (100 pixels) lies inside one chip of `split` alone:
    exported once to find such a chip, then again with the code written into its window."""
    source, target = class_pair(tmp_path, size=128)
    options = dict(chip_size=64, split_block=64, seed=3, workers=0, progress=False,
                   target_resampling="nearest", val_fraction=0.25)
    export_chips(source, target, tmp_path / "probe", **options)
    chip_path = next(p for p in (tmp_path / "probe" / "target").glob("*.tif")
                     if _split_of(tmp_path / "probe", p.stem) == split)
    with rasterio.open(chip_path) as chip:
        window = rasterio.windows.from_bounds(*chip.bounds, transform=rasterio.open(
            target).transform).round_offsets().round_lengths()
    with rasterio.open(target, "r+") as dst:
        block = dst.read(1, window=window)
        block[20:30, 20:30] = 9
        dst.write(block, 1, window=window)
    export_chips(source, target, tmp_path / "chips", **{**options, "workers": 2})
    return tmp_path / "chips"


def _split_of(chips: Path, chip_id: str) -> str:
    import sqlite3

    with sqlite3.connect(chips / "chips.gpkg") as db:
        return db.execute("SELECT split FROM chips WHERE id = ?", (chip_id,)).fetchone()[0]

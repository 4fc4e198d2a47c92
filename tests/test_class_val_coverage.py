"""A class map's val chips against its train chips: train --categorical warns when the val chips
hold no pixel of a train class (their scores then reward never predicting it)."""

from __future__ import annotations

import json

import rasterio
from test_train_categorical import TINY, _split_of, class_pair

from geopix2pix.chips.export import export_chips
from geopix2pix.training import train


def test_a_class_missing_from_the_val_chips_is_warned_of(tmp_path):
    """Code 9 only inside train chips: the val scores cannot judge it and reward never
    predicting it (a tester's road mask whose val chips held no road scored the all-background
    map 1.000), so train --categorical says so; a class that val holds too is not named."""
    source, target = class_pair(tmp_path, size=128)
    export_chips(source, target, tmp_path / "probe", chip_size=64, split_block=64, seed=3,
                 workers=0, progress=False, target_resampling="nearest", val_fraction=0.25)
    train_chip = next(p for p in (tmp_path / "probe" / "target").glob("*.tif")
                      if _split_of(tmp_path / "probe", p.stem) == "train")
    with rasterio.open(train_chip) as chip:
        window = rasterio.windows.from_bounds(*chip.bounds, transform=rasterio.open(
            target).transform).round_offsets().round_lengths()
    with rasterio.open(target, "r+") as dst:
        block = dst.read(1, window=window)
        block[20:30, 20:30] = 9
        dst.write(block, 1, window=window)
    out = tmp_path / "chips"
    export_chips(source, target, out, chip_size=64, split_block=64, seed=3, workers=0,
                 progress=False, target_resampling="nearest", val_fraction=0.25)
    info = json.loads((out / "dataset.json").read_text())["target"]
    assert all(code != 9 for code, _ in info["val_classes"][0])
    lines: list[str] = []
    train(out, tmp_path / "run", categorical=True, max_steps=1, samples=0, log=lines.append,
          **TINY)
    said = [line for line in lines if "hold no pixel of class code(s)" in line]
    assert len(said) == 1 and said[0].startswith(f"warning: the val chips of {out} hold no "
                                                 "pixel of class code(s) 9 of the train chips")

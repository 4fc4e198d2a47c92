"""The join of issue 19: `export-chips --unpaired` on two domains on different grids and CRSs,
then `train --model cyclegan` on that folder: the cycle loss drops, a resume is the uninterrupted
run, both model files predict on exact grids, and `--model pix2pix` is refused in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import write_raster
from PIL import Image
from rasterio.crs import CRS
from test_train_cyclegan import assert_same_tensors, stopped_and_resumed

from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import load_model
from geopix2pix.prediction.predictor import predict
from geopix2pix.raster.render import GAP
from geopix2pix.training import TrainingStopped, train

TINY = dict(model="cyclegan", generator="resnet_6blocks", ngf=8, ndf=8, batch_size=4,
            workers=0, quiet=True, device="cpu", samples=1)
UTM33 = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)
DEGREES = Affine(0.0001, 0.0, 16.0, 0.0, -0.0001, 45.0)  # EPSG:4326, far from domain A
TIMING = ("images_per_second", "epoch_seconds")


def _domains(folder: Path) -> tuple[Path, Path]:
    """Domain A: a 2-band float32 'SAR' in UTM 33N with nodata -9999 in a corner. Domain B: a
    3-band uint16 'optical' image in degrees elsewhere, of another size, nodata 0."""
    y, x = np.mgrid[0:128, 0:128]
    a = np.stack([np.sin(x / 9.0) + np.cos(y / 7.0), np.cos((x + y) / 11.0)]).astype("float32")
    a[:, :12, :12] = -9999
    y, x = np.mgrid[0:112, 0:144]
    field = np.sin(x / 8.0) * np.cos(y / 10.0)
    b = np.stack([1000 + 400 * field, 1500 - 300 * field,
                  800 + 200 * np.cos(x / 13.0)]).astype("uint16")
    return (write_raster(folder / "a.tif", a, nodata=-9999, transform=UTM33),
            write_raster(folder / "b.tif", b, nodata=0, crs="EPSG:4326", transform=DEGREES))


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("unpaired")
    a, b = _domains(folder)
    assert main(["export-chips", "--unpaired", "--source", str(a), "--target", str(b), "-o",
                 str(folder / "chips"), "--chip-size", "32", "--stride", "16",
                 "--split-block", "64", "--workers", "0", "--quiet"]) == 0
    return folder / "chips"


def _rows(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def test_cyclegan_trains_on_an_unpaired_export_and_predicts_both_ways(chips, tmp_path):
    said: list[str] = []
    result = train(chips, tmp_path / "run", max_steps=40, epochs=1, decay_epochs=0, lr=1e-3,
                   **{**TINY, "quiet": True}, log=said.append)
    counts = json.loads((chips / "dataset.json").read_text())["counts"]
    # each domain's chips (a tester read only the larger domain's)
    assert (f"{counts['source']['train']} source + {counts['target']['train']} target train / "
            f"{counts['source']['val']} source + {counts['target']['val']} target val chips"
            ) in next(line for line in said if line.startswith("training on "))
    rows = _rows(result.run_dir)
    first = float(rows[0]["val_cycle_a"]) + float(rows[0]["val_cycle_b"])
    last = float(rows[-1]["val_cycle_a"]) + float(rows[-1]["val_cycle_b"])
    assert last < 0.8 * first, (first, last)  # 1.00 -> 0.74 at seed 0
    assert rows[-1]["val_l1"] == ""  # no pairs: no A -> B validation L1
    assert result.comparison is None and result.baselines == {}  # nor a mean scored on pairs
    folder = chips.parent
    for name, scene, like in (("model.safetensors", folder / "a.tif", folder / "b.tif"),
                              ("model-ba.safetensors", folder / "b.tif", folder / "a.tif")):
        out = tmp_path / f"{name}.tif"
        with rasterio.open(scene) as src:  # the model file knows its input domain's grid
            meta = load_model(result.run_dir / name).metadata
            assert (CRS.from_user_input(meta["crs"]), tuple(meta["pixel_size"])) == (
                src.crs, src.res)
        predict(scene, out, model=result.run_dir / name, progress=False)
        with rasterio.open(scene) as src, rasterio.open(like) as other, \
                rasterio.open(out) as dst:
            # the input's grid, the other domain's bands, dtype and nodata
            assert (dst.crs, dst.transform, dst.width, dst.height) == (
                src.crs, src.transform, src.width, src.height)
            assert (dst.count, dst.dtypes, dst.nodata) == (other.count, other.dtypes,
                                                           other.nodata)
            invalid = ~src.read_masks(1).astype(bool)
            assert (dst.read_masks(1)[invalid] == 0).all()  # nodata in, nodata out
            assert dst.read_masks(1)[~invalid].all()


def test_a_resumed_unpaired_run_is_the_uninterrupted_one(chips, tmp_path):
    full, resumed = stopped_and_resumed(chips, tmp_path, 4, max_steps=8, epochs=1,
                                        decay_epochs=1, val_every=3, pool_size=3, **TINY)
    assert resumed.steps == full.steps == 8
    assert _rows(resumed.run_dir) == _rows(full.run_dir)
    assert_same_tensors(full.run_dir, resumed.run_dir,
                        ("model.safetensors", "model-ba.safetensors"))
    for name in ("model.safetensors", "model-ba.safetensors"):  # the train means, read back
        assert load_model(resumed.run_dir / name).metadata["baselines"] == \
            load_model(full.run_dir / name).metadata["baselines"]


def test_an_augmented_run_is_the_same_resumed_and_with_loader_workers(chips, tmp_path):
    """--augment flip draws each chip's flip from (seed, step): the run stopped and resumed
    with a loader worker is the uninterrupted one in the main process (the flips came from the
    global generator, each worker's own, so --workers, a runtime option, changed the weights
    and a resume drew other flips)."""
    options = dict(max_steps=8, epochs=1, decay_epochs=1, val_every=3, pool_size=3,
                   augment="flip", **TINY)
    full = train(chips, tmp_path / "full", **options)
    with pytest.raises(TrainingStopped):
        train(chips, tmp_path / "cut", callback=lambda info: info["step"] == 4,
              **{**options, "workers": 1})
    resumed = train(chips, tmp_path / "cut", resume=True, workers=1, quiet=True)
    assert resumed.steps == full.steps == 8
    assert _rows(resumed.run_dir) == _rows(full.run_dir)
    assert_same_tensors(full.run_dir, resumed.run_dir,
                        ("model.safetensors", "model-ba.safetensors"))
    plain = train(chips, tmp_path / "plain", **{**options, "augment": "none"})
    assert _rows(plain.run_dir) != _rows(full.run_dir)  # (the flips are drawn at all)


def test_pix2pix_refuses_the_unpaired_folder_in_one_line(chips, tmp_path, capsys):
    code = main(["train", str(chips), "-o", str(tmp_path / "run"), "--model", "pix2pix",
                 "--max-steps", "1", "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "holds unpaired chips" in err and "--model cyclegan" in err, err
    assert not (tmp_path / "run").exists()


def test_a_domain_without_val_chips_leaves_the_other_domains_validation(tmp_path, capsys):
    """A tester's target domain (one 32 px raster) had no val chip: validation was dropped for
    both domains, with a warning that the folder had none; and samples/ repeated chips."""
    a, b = _domains(tmp_path)
    with rasterio.open(b) as ds:  # one chip's worth of domain B: no val chip
        small = write_raster(tmp_path / "b_small.tif", ds.read(window=((0, 32), (0, 32))),
                             nodata=0, crs="EPSG:4326", transform=DEGREES)
    chips, run = tmp_path / "chips", tmp_path / "run"
    assert main(["export-chips", "--unpaired", "--source", str(a), "--target", str(small),
                 "-o", str(chips), "--chip-size", "32", "--split-block", "64", "--workers", "0",
                 "--quiet"]) == 0
    counts = json.loads((chips / "dataset.json").read_text())["counts"]
    assert counts["target"]["val"] == 0 and counts["source"]["val"] > 0
    lines: list[str] = []
    train(chips, run, max_steps=4, epochs=1, decay_epochs=0, log=lines.append,
          **{**TINY, "samples": 4})
    said = "\n".join(lines)
    assert "the target domain has no val chips" in said and "val_cycle_a" in said
    assert "the chips folder has no val chips" not in said
    rows = _rows(run)
    assert rows[-1]["val_cycle_a"] and not rows[-1]["val_cycle_b"]
    best = load_model(run / "model-best.safetensors").metadata["validation"]
    assert set(best) == {"val_cycle_a"}
    # samples: each domain's chips once (A: its val chips; B: its one train chip)
    sample = np.asarray(Image.open(next((run / "samples").glob("*.png"))))
    rows = min(4, counts["source"]["val"]) + 1
    assert sample.shape[0] == rows * 32 + (rows - 1) * GAP


def test_the_identity_line_comes_after_a_refused_resume(chips, tmp_path, capsys):
    """A resume of a run that does not exist was one error line after 'identity loss off'."""
    assert main(["train", str(chips), "-o", str(tmp_path / "none"), "--resume",
                 "--model", "cyclegan"]) == 2
    out = capsys.readouterr()
    assert "identity loss off" not in out.out + out.err
    assert len(out.err.strip().splitlines()) == 1


def test_show_chips_shows_each_domain_and_show_results_says_why_it_cannot(chips, tmp_path):
    """A tester's show_chips looked up a target chip's id among the source chips ('no such
    file'), and show_results told a CycleGAN model's user to train CycleGAN."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from geopix2pix import show_chips, show_results
    from geopix2pix.chips.dataset import chip_ids

    fig = show_chips(chips, n=3, split="train")
    titles = [ax.get_title() for ax in fig.axes[:2]]
    assert titles == ["source domain", "target domain"]
    shown = [t.get_text() for ax in fig.axes for t in ax.texts]
    sources, targets = (set(chip_ids(chips, "train", d)) for d in ("source", "target"))
    assert len(shown) == 6 and sum(s in sources for s in shown) == 3
    assert sum(s in targets for s in shown) == 3
    run = train(chips, tmp_path / "run", max_steps=1, **TINY)
    with pytest.raises(GeoPix2PixError, match="holds unpaired chips: input | prediction"):
        show_results(run.model_path, chips, n=1)


def test_validation_counts_each_chip_of_the_smaller_domain_once(chips):
    """The val items run to the larger domain's count; the smaller domain's chips repeat to
    fill them, and a repeat has no valid pixel, so the validation scores (over valid pixels)
    weigh each chip once (a tester's SAR chips counted 2 or 3 times each)."""
    from collections import Counter

    from geopix2pix.chips.dataset import ChipDataset

    val = ChipDataset(chips, "val", unpaired=True, draw_targets=False)
    sizes = {domain: len(ids) for domain, ids in val.domain_ids.items()}
    assert len(set(sizes.values())) == 2 and len(val) == max(sizes.values())
    for domain in ("source", "target"):
        counted: Counter = Counter()
        for item in (val[i] for i in range(len(val))):
            counted[item[f"{domain}_id"]] += int(item[f"{domain}_valid"].sum())
        own = {chip: int(val.domain_chip(domain, i)[1].sum())
               for i, chip in enumerate(val.domain_ids[domain])}
        assert dict(counted) == own, domain


def test_validation_runs_no_generator_on_a_repeated_chip():
    """A reviewer's 16 source and 1,758 target val chips: validation ran the A cycle on 1,742
    repeats of the source chips, whose validity is zeroed (they count once), for nothing; a
    2-step run spent minutes on it. The scores are the same without them."""
    from types import SimpleNamespace

    import torch
    from torch import nn

    from geopix2pix.training.device import DeviceSetup
    from geopix2pix.training.families.cyclegan import CycleGAN

    class Counting(nn.Module):
        def __init__(self, bands_out: int) -> None:
            super().__init__()
            self.bands_out, self.items = bands_out, 0

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            self.items += image.shape[0]
            return image.mean(1, keepdim=True).repeat(1, self.bands_out, 1, 1).tanh()

    g_a, g_b = Counting(3), Counting(2)
    family = SimpleNamespace(nets={"g_a": g_a, "g_b": g_b},
                             setup=DeviceSetup(torch.device("cpu"), None, False))
    generator = torch.Generator().manual_seed(0)
    source, target = torch.rand(8, 2, 8, 8, generator=generator), torch.rand(8, 3, 8, 8,
                                                                            generator=generator)
    source_valid = torch.ones(8, 1, 8, 8, dtype=torch.bool)
    source_valid[3:] = False  # 3 source val chips, repeated to the 8 target ones
    batches = [{"source": source[i:i + 4], "source_valid": source_valid[i:i + 4],
                "target": target[i:i + 4], "target_valid": torch.ones(4, 1, 8, 8, dtype=bool)}
               for i in (0, 4)]
    scores = CycleGAN.validate(family, batches, None)
    assert g_a.items == 3 + 8 and g_b.items == 3 + 8  # A's 3 live chips both ways, B's 8
    live = [{"source": source[:3], "source_valid": source_valid[:3], "target": target,
             "target_valid": torch.ones(8, 1, 8, 8, dtype=bool)}]
    assert scores == pytest.approx(CycleGAN.validate(family, live, None), rel=1e-6)

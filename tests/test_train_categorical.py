"""`train --categorical`: a class map learned as classes (cross-entropy on one score per class),
its class table from the chips, its scores and samples (the refusals of targets that are not
class maps: test_class_map_targets)."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster
from PIL import Image
from rasterio.transform import from_origin

from geopix2pix.chips.dataset import ChipDataset
from geopix2pix.chips.export import export_chips
from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import ModelMetadata, load_model
from geopix2pix.training import train
from geopix2pix.training.losses import Categorical, masked_cross_entropy

TINY = dict(recipe="paper", ngf=8, ndf=8, batch_size=4, workers=0, quiet=True, device="cpu")
CODES = (3, 7, 12)
COLOURS = {0: (0, 0, 0, 0), 3: (230, 200, 40, 255), 7: (20, 140, 30, 255),
           12: (30, 80, 220, 255)}


def class_pair(folder: Path, size: int = 256) -> tuple[Path, Path]:
    """A smooth 2-band 'image' and a paletted uint8 class map made from it by thresholds
    (nodata 0 in a corner), so the classes are learnable from each pixel's neighbourhood."""
    y, x = np.mgrid[0:size, 0:size]
    field = np.sin(x / 19.0) + np.cos(y / 13.0) + 0.5 * np.sin((x + y) / 7.0)
    image = np.stack([field, np.cos(x / 11.0)]).astype("float32")
    classes = np.where(field < -0.5, 3, np.where(field < 0.6, 7, 12)).astype("uint8")
    classes[:8, :8] = 0
    source = write_raster(folder / "image.tif", image)
    target = write_raster(folder / "classes.tif", classes, nodata=0)
    with rasterio.open(target, "r+") as dst:
        dst.write_colormap(1, COLOURS)
    return source, target


@pytest.fixture(scope="module")
def class_chips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("classes")
    source, target = class_pair(folder)
    export_chips(source, target, folder / "chips", chip_size=64, stride=32, split_block=128,
                 target_resampling="nearest", workers=1, progress=False)
    return folder / "chips"


@pytest.fixture(scope="module")
def class_run(class_chips, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    return train(class_chips, out, categorical=True, max_steps=100, epochs=1, decay_epochs=0,
                 lr=1e-3, samples=2, **TINY)


def rows_of(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_the_dataset_gives_class_indices_and_drops_codes_of_no_class(class_chips):
    dataset = ChipDataset(class_chips, "train", classes=[7, 3])  # 12 is no class here
    raw = ChipDataset(class_chips, "train")  # without classes: scaled values, as before
    for i in range(len(dataset)):
        item, plain = dataset[i], raw[i]
        target, valid = item["target"], item["valid"]
        assert target.dtype == torch.float32 and target.shape[0] == 1
        with rasterio.open(class_chips / "target" / f"{item['id']}.tif") as chip:
            codes = torch.from_numpy(chip.read().astype("float32"))
        # the classes in ascending order of code: 3 -> 0, 7 -> 1; 12 and nodata invalid
        assert torch.equal(valid, plain["valid"] & ((codes == 3) | (codes == 7)))
        assert torch.equal(target[valid], (codes[valid] == 7).float())
        assert (target[~valid] == 0).all()
        # the input is kept where a code is no class (only the loss leaves the pixel out)
        assert torch.equal(item["source"], plain["source"])
    assert raw[0]["target"].min() >= -1 and raw[0]["target"].max() <= 1


def test_a_class_map_is_learned_as_classes(class_run, class_chips):
    model = load_model(class_run.best_model_path)
    meta = ModelMetadata.of(model)
    assert model.spec.output == "logits" and model.spec.out_channels == 3
    assert meta.categorical and meta.target.classes == list(CODES)
    assert meta.target.dtype == "uint8" and meta.target.nodata == 0
    assert meta.target.band_metadata.colormap[7][:3] == COLOURS[7][:3]
    assert meta.training["categorical"] is True
    rows = rows_of(class_run.run_dir)
    for row in rows:
        assert row["loss_g_l1"] == "" and row["val_l1"] == "" and row["val_psnr"] == ""
        assert float(row["loss_g_ce"]) > 0 and 0 <= float(row["val_accuracy"]) <= 1
    # better than always answering the most frequent class of the val chips
    counts = np.zeros(3)
    for item in ChipDataset(class_chips, "val", classes=list(CODES)):
        counts += np.bincount(item["target"][item["valid"]].long().numpy(), minlength=3)
    majority = counts.max() / counts.sum()
    best = max(float(r["val_accuracy"]) for r in rows)
    assert best > max(0.8, majority + 0.1), (best, majority)
    assert float(rows[-1]["val_ce"]) < float(rows[0]["val_ce"])
    assert float(rows[-1]["val_miou"]) > 0.5
    # model-best: the highest validation mean IoU
    assert class_run.best["val_miou"] == pytest.approx(
        max(float(r["val_miou"]) for r in rows), rel=1e-5)


def test_samples_show_the_classes_in_their_colours(class_run):
    sample = sorted((class_run.run_dir / "samples").glob("epoch_*.png"))[-1]
    image = np.asarray(Image.open(sample))
    width = (image.shape[1] - 8) // 3
    target_panel = image[:64, 2 * (width + 4):]
    colours = {tuple(c) for c in target_panel.reshape(-1, 3)}
    assert colours <= {COLOURS[c][:3] for c in CODES} | {(0, 0, 0)}  # nodata: black


def test_cross_entropy_ignores_pixels_under_the_mask():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8)
    classes = torch.randint(0, 4, (2, 1, 8, 8)).float()
    valid = torch.rand(2, 1, 8, 8) > 0.3
    changed = classes.clone()
    changed[~valid] = 3 - changed[~valid]
    assert masked_cross_entropy(logits, classes, valid) == \
        masked_cross_entropy(logits, changed, valid)
    expected = torch.nn.functional.cross_entropy(
        logits.permute(0, 2, 3, 1)[valid[:, 0]], classes[:, 0][valid[:, 0]].long())
    assert torch.allclose(masked_cross_entropy(logits, classes, valid), expected)
    truth = Categorical(4).truth(classes)
    assert truth.shape == (2, 4, 8, 8) and torch.equal(truth.argmax(1), classes[:, 0].long())


def test_the_cli_trains_a_class_map_and_says_so(class_chips, tmp_path, capsys):
    code = main(["train", str(class_chips), "-o", str(tmp_path / "run"), "--categorical",
                 "--max-steps", "2", "--epochs", "1", "--decay-epochs", "0", "--ngf", "8",
                 "--ndf", "8", "--batch-size", "4", "--workers", "0", "--device", "cpu",
                 "-q"])
    assert code == 0
    err = capsys.readouterr().err
    assert "class map: 3 classes (codes 3, 7, 12)" in err
    # two steps do not beat the simple baselines, which is the one warning
    assert [line for line in err.splitlines() if "warning" in line] == [
        line for line in err.splitlines() if line.startswith("warning: model-best (val accuracy")]
    saved = json.loads((tmp_path / "run" / "train.json").read_text())["options"]
    assert saved["categorical"] is True


def test_a_resumed_run_keeps_categorical(class_chips, tmp_path):
    out = tmp_path / "run"
    train(class_chips, out, categorical=True, max_steps=2, epochs=1, decay_epochs=1,
          samples=0, **TINY)
    with pytest.raises(GeoPix2PixError, match="categorical"):
        train(class_chips, out, resume=True, categorical=False, max_steps=2, epochs=1,
              decay_epochs=1, **TINY)


def test_a_run_from_before_categorical_existed_resumes(class_chips, tmp_path):
    """A checkpoint and train.json written before the option existed lack it: they resume as
    the regression they were (a reviewer found them refused: categorical None -> False)."""
    out = tmp_path / "run"
    options = dict(max_steps=4, epochs=1, decay_epochs=1, samples=0, **TINY)
    with pytest.raises(KeyboardInterrupt):  # stopped after 2 steps, as by Ctrl-C
        train(class_chips, out, callback=lambda info: info["step"] == 2, **options)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    del state["options"]["categorical"]
    del state["digest"]  # nor had checkpoints a digest then
    torch.save(state, out / "checkpoint.pt")
    saved = json.loads((out / "train.json").read_text())
    del saved["options"]["categorical"]
    (out / "train.json").write_text(json.dumps(saved))
    result = train(class_chips, out, resume=True, **options)
    assert result.steps == 4
    with pytest.raises(GeoPix2PixError, match="categorical: False -> True"):  # still checked
        train(class_chips, out, resume=True, categorical=True, **options)


def test_show_results_draws_a_class_map_in_its_colours(class_run, class_chips):
    """The notebook helper takes a categorical model on its own chips (a reviewer found it
    refused: "the model gives 3 target bands"), predicting each pixel's most probable code."""
    import matplotlib

    matplotlib.use("Agg")
    from geopix2pix.plot import predict_chips, show_results

    ids = ChipDataset(class_chips, "val").ids[:2]
    for _, pred, target, source_valid, target_valid in predict_chips(
            class_run.best_model_path, class_chips, ids):
        valid = source_valid & target_valid
        assert pred.shape == target.shape == (1, 64, 64)
        assert set(np.unique(pred).tolist()) <= set(CODES)
        assert (pred[0][valid] == target[0][valid]).mean() > 0.7
    figure = show_results(class_run.best_model_path, class_chips, n=2)
    panel = figure.axes[1].get_images()[0].get_array()  # the first row's prediction
    colours = {tuple(c) for c in np.asarray(panel).reshape(-1, 3)}
    assert colours <= {COLOURS[c][:3] for c in CODES} | {(0, 0, 0)}


def test_validation_scores_of_a_class_map_match_a_count_by_hand():
    """val_ce, val_accuracy and val_miou over the valid pixels of every batch; with the batches
    split between two 'ranks' whose sums are added, the same scores."""
    from geopix2pix.training.device import device_setup
    from geopix2pix.training.validate import evaluate_classes

    torch.manual_seed(0)
    batches = []
    for _ in range(3):
        scores = torch.randn(2, 3, 8, 8)  # the stand-in generator returns its input
        target = torch.randint(0, 3, (2, 1, 8, 8)).float()
        valid = torch.rand(2, 1, 8, 8) > 0.25
        batches.append({"source": scores, "target": target, "valid": valid})
    setup = device_setup("cpu", False)
    identity = torch.nn.Identity()
    got = evaluate_classes(identity, batches, setup, 3)
    guess = torch.cat([b["source"].argmax(1)[b["valid"][:, 0]] for b in batches])
    truth = torch.cat([b["target"][:, 0][b["valid"][:, 0]].long() for b in batches])
    ious = [((guess == k) & (truth == k)).sum() / ((guess == k) | (truth == k)).sum()
            for k in range(3)]
    ce = torch.nn.functional.cross_entropy(
        torch.cat([b["source"].permute(0, 2, 3, 1)[b["valid"][:, 0]] for b in batches]), truth)
    assert got["val_accuracy"] == pytest.approx(float((guess == truth).float().mean()))
    assert got["val_miou"] == pytest.approx(float(sum(ious) / 3))
    assert got["val_ce"] == pytest.approx(float(ce), rel=1e-6)
    assert evaluate_classes(identity, batches[:1], setup, 3) != got  # one rank's share alone
    other: dict = {}

    def add_other_rank(totals):  # the 2-rank all-reduce: this rank's sums + the other's
        return totals + other["totals"]

    def keep(totals):
        other["totals"] = totals
        return totals

    evaluate_classes(identity, batches[1:], setup, 3, reduce=keep)
    reduced = evaluate_classes(identity, batches[:1], setup, 3, reduce=add_other_rank)
    assert reduced == pytest.approx(got)


def test_balanced_class_weights_follow_the_class_table(class_chips, tmp_path, capsys):
    """--class-weights balanced: each class weighs pixels / (classes x its pixels) of the train
    chips' exact counts; the weighted cross-entropy is torch's cross_entropy(weight=...)."""
    from geopix2pix.chips.manifest import DatasetInfo
    from geopix2pix.training.classes import MAX_WEIGHT, balanced_weights

    info = DatasetInfo.load(class_chips)
    counts = dict((c, n) for c, n in info.target.stats[0]["classes"])
    weights = balanced_weights(info, list(CODES))
    total = sum(counts.values())
    assert weights.tolist() == pytest.approx([total / (3 * counts[c]) for c in CODES])
    info.target.stats[0]["classes"] = [[3, 1], [7, 10**6]]  # a class of one pixel: capped
    assert balanced_weights(info, [3, 7]).tolist() == pytest.approx(
        [MAX_WEIGHT, (10**6 + 1) / 2e6])
    torch.manual_seed(1)
    logits, classes = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8)).float()
    valid = torch.rand(2, 1, 8, 8) > 0.3
    w = torch.tensor([0.5, 2.0, 4.0])
    expected = torch.nn.functional.cross_entropy(
        logits.permute(0, 2, 3, 1)[valid[:, 0]], classes[:, 0][valid[:, 0]].long(), weight=w)
    assert torch.allclose(masked_cross_entropy(logits, classes, valid, w), expected)
    assert main(["train", str(class_chips), "-o", str(tmp_path / "run"), "--categorical",
                 "--class-weights", "balanced", "--max-steps", "1", "--ngf", "8", "--ndf", "8",
                 "--workers", "0", "--device", "cpu", "-q"]) == 0
    shown = ", ".join(f"{v:.3g}" for v in balanced_weights(DatasetInfo.load(class_chips),
                                                             list(CODES)))
    assert f"cross-entropy, weights {shown}" in capsys.readouterr().err


def test_class_weights_need_categorical(class_chips, tmp_path):
    with pytest.raises(GeoPix2PixError, match="--class-weights balanced weighs the classes of a "
                                              "class map; pass --categorical too"):
        train(class_chips, tmp_path / "run", class_weights="balanced", max_steps=1, **TINY)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("shift, resampling, warned", [(5.0, "bilinear", True),
                                                       (5.0, "nearest", False),
                                                       (0.0, "bilinear", False)])
def test_export_warns_when_a_paletted_class_map_is_averaged(tmp_path, shift, resampling,
                                                            warned):
    """A colour-table target resampled with bilinear gets codes of no class: export says so
    (a tester found it said only at train --categorical, after the export)."""
    source, target = class_pair(tmp_path, size=128)
    with rasterio.open(target) as src:
        codes, profile, table = src.read(), src.profile, src.colormap(1)
    profile["transform"] = from_origin(500000.0 + shift, 5200000.0, 10.0, 10.0)
    moved = tmp_path / "moved.tif"
    with rasterio.open(moved, "w", **profile) as dst:
        dst.write(codes)
        dst.write_colormap(1, table)
    summary = export_chips(source, moved, tmp_path / "chips", chip_size=64, workers=0,
                           progress=False, target_resampling=resampling)
    said = [w for w in summary.warnings if "is a class map (a colour table)" in w]
    assert bool(said) is warned, summary.warnings
    if warned:
        assert said[0].startswith(f"the target {moved} is a class map")


def test_a_class_map_stuck_on_one_class_keeps_its_best_by_cross_entropy_and_warns(tmp_path):
    """A rare class that the input does not show (2% of pixels, at random): the model answers
    the common class everywhere, so the validation mean IoU is the same every epoch. model-best
    is then the epoch of the lowest validation cross-entropy, not the first (a tester got
    epoch 1's untrained weights), and the log says once what to try."""
    rng = np.random.default_rng(5)
    classes = np.where(rng.random((1, 256, 256)) < 0.02, 9, 1).astype("uint8")
    source = rng.random((1, 256, 256), dtype=np.float32)
    export_chips(write_raster(tmp_path / "s.tif", source), write_raster(tmp_path / "t.tif",
                                                                        classes),
                 tmp_path / "chips", chip_size=64, stride=32, split_block=128, workers=0,
                 progress=False, target_resampling="nearest")
    lines: list[str] = []
    result = train(tmp_path / "chips", tmp_path / "run", categorical=True, max_steps=40,
                   epochs=1, decay_epochs=0, lr=1e-3, samples=0, log=lines.append, **TINY)
    rows = rows_of(tmp_path / "run")
    assert len(rows) >= 4 and len({r["val_miou"] for r in rows}) == 1, rows
    ces = [float(r["val_ce"]) for r in rows]
    assert result.best["epoch"] == 1 + ces.index(min(ces)) != 1
    stuck = [line for line in lines if "mean IoU has stayed" in line]
    assert len(stuck) == 1 and "--class-weights balanced" in stuck[0]


@pytest.mark.parametrize("codes, warned", [(200, True), (40, False)])
def test_a_target_of_more_codes_than_a_legend_is_warned_of(tmp_path, codes, warned):
    """A hillshade (uint8, 1..255) trained with --categorical became 255 classes without a
    word; over 64 codes the log says the values may be quantities; 40 (a CORINE-like legend)
    pass."""
    rng = np.random.default_rng(2)
    target = rng.integers(1, codes + 1, (1, 128, 128)).astype("uint8")
    target[0, 0, :codes // 2] = np.arange(1, codes // 2 + 1)  # every code in the chips
    target[0, 1, :codes - codes // 2] = np.arange(codes // 2 + 1, codes + 1)
    source = rng.random((1, 128, 128), dtype=np.float32)
    export_chips(write_raster(tmp_path / "s.tif", source), write_raster(tmp_path / "t.tif",
                                                                        target),
                 tmp_path / "chips", chip_size=64, workers=0, progress=False, val_fraction=0,
                 target_resampling="nearest")
    lines: list[str] = []
    train(tmp_path / "chips", tmp_path / "run", categorical=True, max_steps=1, samples=0,
          log=lines.append, **TINY)
    said = [line for line in lines if "more than a class map's legend" in line]
    assert said == ([f"warning: the target of {tmp_path / 'chips'} holds {codes} codes, more "
                     "than a class map's legend has (up to 64 here): if its values are "
                     "quantities (a hillshade, heights, reflectance), train without "
                     "--categorical to regress them"] if warned else [])


def test_the_python_api_issues_its_warnings_as_geopix2pix_warnings(tmp_path):
    """export_chips, train (with its default log) and evaluate say their warnings through
    Python's warnings, as predict does, so a notebook shows them and a script can catch them
    (a tester found train's only on stderr); the command line prints its own lines instead."""
    from geopix2pix import GeoPix2PixWarning, evaluate

    source, target = class_pair(tmp_path, size=128)
    with rasterio.open(target) as src:
        codes, profile, table = src.read(), src.profile, src.colormap(1)
    profile["transform"] = from_origin(500005.0, 5200000.0, 10.0, 10.0)  # half a pixel off
    moved = tmp_path / "moved.tif"
    with rasterio.open(moved, "w", **profile) as dst:
        dst.write(codes)
        dst.write_colormap(1, table)
    with pytest.warns(GeoPix2PixWarning, match="is a class map .* resampled"):
        export_chips(source, moved, tmp_path / "chips", chip_size=64, workers=0,
                     progress=False)
    with pytest.warns(GeoPix2PixWarning, match="--target-resampling bilinear and a target"):
        train(tmp_path / "chips", tmp_path / "run", categorical=True, max_steps=1, samples=0,
              **TINY)
    with pytest.warns(GeoPix2PixWarning, match="look like class maps"):
        evaluate(target, moved)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeoPix2PixWarning)  # the CLI prints, never warns
        assert main(["evaluate", str(target), str(moved)]) == 0

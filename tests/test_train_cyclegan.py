"""`train --model cyclegan`: a real CPU run on generated chips (pairing ignored), its resume,
its two model files (A -> B, B -> A) predicted on exact grids, and its refusals."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster
from safetensors import safe_open

from geopix2pix.chips.export import export_chips
from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import ModelMetadata, load_model
from geopix2pix.models.schema import SchemaError
from geopix2pix.prediction.predictor import predict
from geopix2pix.training import TrainingStopped, train
from geopix2pix.training.checkpoint import load_checkpoint

TINY = dict(model="cyclegan", generator="resnet_6blocks", ngf=8, ndf=8, batch_size=4,
            workers=0, quiet=True, device="cpu", samples=2)


def _rasters(folder: Path) -> tuple[Path, Path]:
    """A smooth 2-band 'image' (domain A) and a 1-band float map of it (domain B)."""
    y, x = np.mgrid[0:128, 0:128]
    field = np.sin(x / 9.0) + np.cos(y / 7.0)
    image = np.stack([field, np.cos((x + y) / 11.0)]).astype("float32")
    source = write_raster(folder / "a.tif", image)
    target = write_raster(folder / "b.tif", (50 + 20 * field).astype("float32"), nodata=-1)
    return source, target


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cyclegan")
    source, target = _rasters(folder)
    export_chips(source, target, folder / "chips", chip_size=32, stride=16, split_block=64,
                 workers=1, progress=False)
    return folder / "chips"


@pytest.fixture(scope="module")
def run(chips, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    lines: list[str] = []
    result = train(chips, out, max_steps=40, epochs=1, decay_epochs=0, lr=1e-3, log=lines.append,
                   **TINY)
    return result, lines


def assert_same_tensors(one: Path, other: Path, names: tuple[str, ...]) -> None:
    """The model files `names` of two run folders hold the same tensors (their metadata may
    differ, e.g. the run folder's name)."""
    for name in names:
        with safe_open(str(one / name), "pt") as a, safe_open(str(other / name), "pt") as b:
            assert list(a.keys()) == list(b.keys()), name  # noqa: SIM118
            assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys()), name  # noqa: SIM118


def stopped_and_resumed(chips: Path, tmp_path: Path, stop_at: int, **options):
    """(an uninterrupted run, the same run stopped after step `stop_at` and resumed)."""
    full = train(chips, tmp_path / "full", **options)
    with pytest.raises(TrainingStopped):
        train(chips, tmp_path / "cut", callback=lambda info: info["step"] == stop_at, **options)
    return full, train(chips, tmp_path / "cut", resume=True, workers=0, quiet=True)


def _rows(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_a_cpu_run_lowers_the_cycle_loss_and_writes_both_directions(run):
    result, lines = run
    rows = _rows(result.run_dir)
    first = float(rows[0]["val_cycle_a"]) + float(rows[0]["val_cycle_b"])
    last = float(rows[-1]["val_cycle_a"]) + float(rows[-1]["val_cycle_b"])
    assert last < 0.7 * first, (first, last)
    assert float(rows[-1]["loss_cycle_A"]) < float(rows[0]["loss_cycle_A"])
    assert int(rows[-1]["step"]) == 40 == result.steps
    for name in ("model.safetensors", "model-ba.safetensors", "model-best.safetensors",
                 "model-ba-best.safetensors", "checkpoint.pt"):
        assert (result.run_dir / name).is_file(), name
    assert (result.reverse_model_path, result.reverse_best_model_path) == (
        result.run_dir / "model-ba.safetensors", result.run_dir / "model-ba-best.safetensors")
    assert len(list((result.run_dir / "samples").glob("epoch_*.png"))) == len(rows)
    # 2 bands in A, 1 in B: no identity loss, and the log says so
    assert "identity loss off: domain A has 2 band(s), B 1" in lines
    assert float(rows[-1]["loss_idt_A"]) == 0.0
    saved = load_checkpoint(result.run_dir)
    pools = saved["family_ranks"][0]
    assert pools["pool_b"]["images"].shape[1:] == (1, 32, 32)  # fakes of B, for D_A
    assert pools["pool_a"]["images"].shape[1:] == (2, 32, 32)


def test_both_model_files_load_and_predict_on_exact_grids(run, chips, tmp_path):
    result, _ = run
    folder = chips.parent
    for name, scene, bands_in, bands_out, direction in (
            ("model.safetensors", folder / "a.tif", 2, 1, "a_to_b"),
            ("model-ba.safetensors", folder / "b.tif", 1, 2, "b_to_a")):
        model = load_model(result.run_dir / name)
        meta = ModelMetadata.of(model)
        assert (meta.family, meta.direction) == ("cyclegan", direction)
        assert (model.spec.name, model.spec.in_channels, model.spec.out_channels) == (
            "resnet_6blocks", bands_in, bands_out)
        assert len(meta.source.scaling.low) == bands_in
        assert meta.training["model"] == "cyclegan" and "lambda_l1" not in meta.training
        out = tmp_path / f"{direction}.tif"
        predict(scene, out, model=model, progress=False)
        with rasterio.open(scene) as src, rasterio.open(out) as dst:
            assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
            assert dst.count == bands_out
            assert np.isfinite(dst.read()).all()


def test_a_baseline_of_a_cyclegan_model_is_refused_for_what_it_is(run, chips, tmp_path, capsys):
    """A tester got "written before geopix2pix fitted them; train again" for a new file:
    CycleGAN files carry the constant (train mean) alone (the linear ones are fitted on
    pairs)."""
    result, _ = run
    code = main(["predict", str(chips.parent / "a.tif"), str(tmp_path / "out.tif"), "-m",
                 str(result.run_dir / "model.safetensors"), "--baseline", "linear"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert ("a CycleGAN model file carries only the constant (train mean) baseline, because "
            "the linear ones are fitted on pairs") in err
    assert not (tmp_path / "out.tif").exists()


def test_a_resumed_run_is_the_uninterrupted_one(chips, tmp_path):
    full, resumed = stopped_and_resumed(chips, tmp_path, 3, max_steps=10, epochs=1,
                                        decay_epochs=1, val_every=4, pool_size=3, **TINY)
    assert resumed.steps == full.steps == 10
    assert_same_tensors(full.run_dir, resumed.run_dir,
                        ("model.safetensors", "model-ba.safetensors", "model-best.safetensors"))
    saved = [load_checkpoint(run)["family_ranks"][0] for run in (full.run_dir,
                                                                  resumed.run_dir)]
    for side in ("pool_a", "pool_b"):
        assert torch.equal(saved[0][side]["images"], saved[1][side]["images"])
        assert torch.equal(saved[0][side]["generator"], saved[1][side]["generator"])
    assert [r["loss_cycle_A"] for r in _rows(full.run_dir)] == \
        [r["loss_cycle_A"] for r in _rows(resumed.run_dir)]


def test_the_command_names_both_directions_model_files(chips, tmp_path, capsys):
    assert main(["train", str(chips), "-o", str(tmp_path / "run"), "--model", "cyclegan",
                 "--max-steps", "1", "--ngf", "8", "--ndf", "8", "--generator", "local",
                 "--workers", "0", "-q"]) == 0
    assert "model model.safetensors, best model-best.safetensors; B -> A: " \
        "model-ba.safetensors, best model-ba-best.safetensors" in capsys.readouterr().out


def test_the_refusals_are_one_line(chips, tmp_path):
    with pytest.raises(GeoPix2PixError, match="identity loss needs domains of as many bands"):
        train(chips, tmp_path / "idt", lambda_identity=0.5, max_steps=1, **TINY)
    train(chips, tmp_path / "p2p", max_steps=1, ngf=8, ndf=8, batch_size=4, workers=0,
          quiet=True, device="cpu", samples=0)
    with pytest.raises(GeoPix2PixError, match="trains a pix2pix model, not cyclegan"):
        train(chips, tmp_path / "p2p", resume=True, model="cyclegan")


def test_model_metadata_names_a_known_family_and_direction(run):
    metadata = load_model(run[0].run_dir / "model-ba.safetensors").metadata
    assert ModelMetadata.from_dict(metadata).direction == "b_to_a"
    with pytest.raises(SchemaError, match="direction"):
        ModelMetadata.from_dict({**metadata, "direction": "sideways"})
    with pytest.raises(SchemaError, match="family"):
        ModelMetadata.from_dict({**metadata, "family": "stylegan"})


def test_two_ranks_train_it_each_with_its_own_pools(chips, tmp_path):
    """torchrun on the CPU: both ranks train, rank 0 writes both model files, and the
    checkpoint holds each rank's history pools."""
    from test_distributed import torchrun

    script = tmp_path / "cyclegan.py"
    script.write_text(
        "from geopix2pix.training import train\n"
        f"train({str(chips)!r}, {str(tmp_path / 'run')!r}, model='cyclegan', "
        "generator='resnet_6blocks', ngf=8, ndf=8, batch_size=2, workers=0, quiet=True, "
        "device='cpu', max_steps=4, epochs=1, decay_epochs=1, samples=1)\n")
    done = torchrun([str(script)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = load_checkpoint(tmp_path / "run")
    assert saved["world_size"] == 2 and len(saved["family_ranks"]) == 2
    assert (tmp_path / "run" / "model-ba.safetensors").is_file()


def test_the_local_generator_takes_its_layers_in_both_directions(chips, tmp_path):
    out = tmp_path / "run"
    train(chips, out, max_steps=1, epochs=1, decay_epochs=0,
          **{**TINY, "generator": "local", "local_layers": 5})
    for name in ("model.safetensors", "model-ba.safetensors"):
        spec = load_model(out / name).spec
        assert (spec.name, spec.layers) == ("local", 5), name


def test_augment_reaches_the_unpaired_train_chips(chips, tmp_path):
    """--augment flip changes what G learns from (it was accepted and then ignored)."""
    runs = {mode: tmp_path / mode for mode in ("none", "flip")}
    for mode, out in runs.items():
        train(chips, out, max_steps=2, epochs=1, decay_epochs=0, augment=mode, **TINY)
    with safe_open(str(runs["none"] / "model.safetensors"), "pt") as a, \
            safe_open(str(runs["flip"] / "model.safetensors"), "pt") as b:
        assert any(not torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # noqa: SIM118


def test_on_paired_chips_the_end_compares_a_to_b_with_b_s_train_mean(run, chips):
    """Paired chips give CycleGAN a truth: the end of the run scores the mean its A -> B file
    carries on the val pairs as validation scores A -> B (masked L1, [-1, 1] scale), puts it
    beside model-best's, and warns when model-best does not beat it."""
    from geopix2pix.chips.dataset import ChipDataset

    result, lines = run
    mean = torch.tensor(load_model(result.model_path).metadata["baselines"]["constant"]["bias"],
                        dtype=torch.float64).view(-1, 1, 1)
    total, count = 0.0, 0
    for item in ChipDataset(chips, "val"):  # each pair where both chips are valid
        errors = (item["target"].double() - mean).abs()[:, item["valid"][0]]
        total, count = total + float(errors.sum()), count + errors.numel()
    assert count > 0
    expected = total / count
    assert result.baselines["constant"]["val_l1"] == pytest.approx(expected, rel=1e-6)
    model = result.best["val_l1"]
    assert result.comparison == (f"model-best: val L1 A -> B {model:.4g} · constant "
                                 f"{expected:.4g} (B's train mean; on the paired val chips, on "
                                 "the [-1, 1] scale)")
    warned = [line for line in lines if "does not beat domain B's train mean" in line]
    assert len(warned) == (model >= expected) and \
        all("--model pix2pix" in line for line in warned)

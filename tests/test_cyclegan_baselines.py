"""A CycleGAN model file carries its output domain's train mean as its constant baseline: a real
run on an unpaired export, the mean checked against the chips themselves, and
``predict --baseline constant`` writing it on the scene's exact grid; the linear ones (fitted on
pairs) refused in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_train_cyclegan_unpaired import TINY, _domains

from geopix2pix.chips.dataset import chip_ids
from geopix2pix.chips.manifest import DatasetInfo
from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import load_model
from geopix2pix.prediction.predictor import predict
from geopix2pix.training import train

# file, its input scene, its input domain's band count, its output domain
FILES = (("model.safetensors", "a.tif", 2, "target"), ("model-ba.safetensors", "b.tif", 3,
                                                        "source"))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("constant")
    a, b = _domains(folder)
    chips = folder / "chips"
    assert main(["export-chips", "--unpaired", "--source", str(a), "--target", str(b), "-o",
                 str(chips), "--chip-size", "32", "--stride", "16", "--split-block", "64",
                 "--workers", "0", "--quiet"]) == 0
    result = train(chips, folder / "run", max_steps=2, epochs=1, decay_epochs=0, **TINY)
    return chips, result.run_dir


def scaled_train_mean(chips: Path, domain: str) -> np.ndarray:
    """The domain's train chips on the generator's [-1, 1] scale, averaged over their valid
    pixels (each chip read here, its nodata its mask)."""
    scaling = getattr(DatasetInfo.load(chips), domain).scaling
    total, count = 0.0, 0
    for chip in chip_ids(chips, "train", domain):
        with rasterio.open(chips / domain / f"{chip}.tif") as ds:
            data = ds.read()
            valid = (data != ds.nodata).all(axis=0) & np.isfinite(data).all(axis=0)
        scaled = scaling.forward(data, valid).astype(np.float64)
        total = total + scaled[:, valid].sum(axis=1)
        count += int(valid.sum())
    assert count > 0
    return total / count


def test_each_file_carries_its_output_domains_train_mean_alone(run):
    chips, run_dir = run
    for name, _, in_bands, domain in FILES:
        baselines = load_model(run_dir / name).metadata["baselines"]
        assert set(baselines) == {"constant", "residual"}, name  # no linear: no pairs
        assert baselines["residual"] == "none"
        expected = scaled_train_mean(chips, domain)
        assert np.allclose(baselines["constant"]["bias"], expected, rtol=0, atol=1e-9), name
        assert baselines["constant"]["weight"] == [[0.0] * in_bands] * len(expected)
    saved = json.loads((run_dir / "baselines.json").read_text())  # what a resume reads back
    assert saved["family"] == "cyclegan" and set(saved["maps"]) == {"a_to_b", "b_to_a"}


def test_predict_writes_the_mean_in_the_output_domain_on_the_scenes_grid(run, tmp_path):
    chips, run_dir = run
    folder = chips.parent
    for name, scene, _, domain in FILES:
        like = folder / ("b.tif" if domain == "target" else "a.tif")  # the output domain's
        out = tmp_path / f"{name}.tif"
        predict(folder / scene, out, model=run_dir / name, baseline="constant", progress=False)
        scaling = getattr(DatasetInfo.load(chips), domain).scaling
        mean = scaling.inverse(scaled_train_mean(chips, domain)[:, None, None])[:, 0, 0]
        with rasterio.open(folder / scene) as src, rasterio.open(like) as other, \
                rasterio.open(out) as dst:
            assert (dst.crs, dst.transform, dst.width, dst.height) == (
                src.crs, src.transform, src.width, src.height)
            assert (dst.count, dst.dtypes, dst.nodata) == (other.count, other.dtypes,
                                                           other.nodata)
            written = dst.read()
            valid = src.read_masks(1).astype(bool)
            assert (dst.read_masks(1)[~valid] == 0).all() and dst.read_masks(1)[valid].all()
        for band, value in enumerate(mean):
            values = written[band][valid]
            if np.issubdtype(written.dtype, np.integer):
                assert (values == np.round(value)).all(), (name, band, value)
            else:
                assert np.allclose(values, value, rtol=1e-5), (name, band, value)


def test_the_linear_baselines_of_a_cyclegan_file_are_refused_in_one_line(run, tmp_path,
                                                                          capsys):
    chips, run_dir = run
    scene, out = chips.parent / "a.tif", tmp_path / "out.tif"
    for baseline in ("linear", "discriminant"):
        with pytest.raises(GeoPix2PixError, match="carries only the constant .train mean. "
                                                  "baseline, because the linear ones are fitted"
                                                  " on pairs"):
            predict(scene, out, model=run_dir / "model.safetensors", baseline=baseline,
                    progress=False)
        code = main(["predict", str(scene), str(out), "-m", str(run_dir / "model.safetensors"),
                     "--baseline", baseline])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "CycleGAN model file carries only the constant (train mean) baseline" in err
    assert not out.exists()


def test_a_cyclegan_file_with_other_baselines_than_its_constant_is_refused(run, tmp_path, capsys):
    """Model files are untrusted: an edited file's baselines are checked, one line each."""
    import safetensors.torch
    from safetensors import safe_open

    _, run_dir = run
    path = run_dir / "model.safetensors"
    tensors = safetensors.torch.load_file(path)
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["geopix2pix"])
    constant = meta["baselines"]["constant"]
    for index, (baselines, message) in enumerate((
            ({"residual": "none"}, "constant map is missing"),
            ({"constant": {"weight": [[0.0]] * 3, "bias": constant["bias"]}},
             "map 1 bands to 3, the generator 2 to 3"),
            ({"constant": constant, "residual": "linear"}, "without the linear map"),
            ({"constant": constant, "linear": {"weight": [[0.0, 0.0]] * 3, "bias": [0.0] * 3},
              "residual": "linear"}, "carries the constant (train mean) baseline alone"),
            ({"constant": constant, "pix2pix": True}, "the linear map is missing"))):
        edited = tmp_path / f"edited{index}.safetensors"
        family = {k: v for k, v in meta.items() if k not in ("family", "direction")} \
            if baselines.pop("pix2pix", False) else meta  # (a file saying it is Pix2Pix's)
        safetensors.torch.save_file(tensors, edited, {"geopix2pix": json.dumps(
            {**family, "baselines": baselines})})
        with pytest.raises(GeoPix2PixError, match=re.escape(message)):
            load_model(edited)
        code = main(["predict", str(run_dir.parent / "a.tif"), str(tmp_path / "o.tif"), "-m",
                     str(edited), "--baseline", "constant"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_a_damaged_or_foreign_baselines_json_is_computed_again(tmp_path):
    """--resume reads a CycleGAN run's baselines.json back only when it is this dataset's, a
    CycleGAN run's and of these shapes, the constant alone; anything else: None (computed
    again), never an exception."""
    from geopix2pix.training.cyclegan_baselines import read

    constant = {"weight": [[0.0, 0.0]] * 3, "bias": [0.1, 0.2, 0.3]}
    back = {"weight": [[0.0, 0.0, 0.0]] * 2, "bias": [0.4, 0.5]}
    good = {"dataset": "abc", "family": "cyclegan", "pixels": {"a_to_b": 9, "b_to_a": 9},
            "maps": {"a_to_b": {"constant": constant}, "b_to_a": {"constant": back}}}
    path = tmp_path / "baselines.json"
    path.write_text(json.dumps(good))
    maps = read(path, "abc", 2, 3)
    assert maps is not None and maps["a_to_b"].constant.bias == (0.1, 0.2, 0.3)
    assert maps["b_to_a"].constant.bias == (0.4, 0.5)
    for bad in (
            json.dumps(good)[:40],  # truncated
            json.dumps({**good, "dataset": "other"}),
            json.dumps({**good, "family": "pix2pix"}),
            json.dumps({k: v for k, v in good.items() if k != "family"}),  # Pix2Pix's layout
            json.dumps({**good, "maps": {**good["maps"], "b_to_a": {"constant": constant}}}),
            json.dumps({**good, "maps": {**good["maps"], "a_to_b": {
                "constant": constant, "linear": constant}}}),
            json.dumps({**good, "maps": []}), "[]", "null"):
        path.write_text(bad)
        assert read(path, "abc", 2, 3) is None, bad
    path.unlink()
    assert read(path, "abc", 2, 3) is None

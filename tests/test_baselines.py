"""Built-in baselines in runs (their fits: test_baselines_fit.py): their scores beside the model's,
baselines.json on resume, the warning when the model loses, `predict --baseline`, the class-map
baselines, the residual generator, and model files from before baselines."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster
from safetensors import safe_open

from geopix2pix.chips.dataset import ChipDataset
from geopix2pix.chips.export import export_chips
from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError, GeoPix2PixWarning
from geopix2pix.models import GeneratorSpec, ModelMetadata, build_generator, load_model
from geopix2pix.models.baseline import (
    PixelMap,
    ResidualGenerator,
    zero_output_layer,
)
from geopix2pix.prediction import predict
from geopix2pix.training import TrainingStopped, train

TINY = dict(recipe="paper",
            ngf=8, ndf=8, batch_size=4, workers=0, quiet=True, device="cpu", samples=0)
COEFFS = (0.8, -1.5, 40.0)  # target = a * band1 + b * band2 + c


def test_a_class_map_file_from_before_the_discriminant_loads_and_shows_the_nearest_mean(
        class_run, tmp_path):
    """Files written before the discriminant (no discriminant, no class residual: earlier
    versions refused one) still load, predict their baselines and show the nearest class mean;
    `--baseline discriminant` is one line."""
    import matplotlib
    import safetensors.torch

    matplotlib.use("Agg")
    from geopix2pix.plot import show_results

    result, chips, source = class_run
    with safe_open(str(result.model_path), "pt") as f:
        meta = json.loads(f.metadata()["geopix2pix"])
    del meta["baselines"]["discriminant"]
    del meta["weights_sha256"]  # files from before the discriminant had no digest either
    old = tmp_path / "old.safetensors"
    safetensors.torch.save_file(safetensors.torch.load_file(result.model_path), old,
                                {"geopix2pix": json.dumps(meta)})
    model = load_model(old)
    assert ModelMetadata.of(model).baselines.names() == ("linear", "constant")
    titles = [ax.get_title() for ax in show_results(old, chips, n=1).axes]
    assert titles == ["input", "prediction", "nearest class mean", "target"]
    predict(source, tmp_path / "nearest.tif", model=model, baseline="linear", progress=False)
    with pytest.raises(GeoPix2PixError, match="--baseline discriminant: this model file"):
        predict(source, tmp_path / "d.tif", model=model, baseline="discriminant",
                progress=False)


def test_a_discriminant_belongs_to_a_class_map_and_a_class_residual_needs_one(class_run,
                                                                            linear_run,
                                                                            tmp_path):
    """Model files that say otherwise (edited: no version writes them) are refused in one
    line: a discriminant on a model of values; a class map's residual generator without one; a
    residual the generator was not trained with (a tester's edit changed every prediction)."""
    import safetensors.torch

    def edited(path, change, name):
        tensors = safetensors.torch.load_file(path)
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["geopix2pix"])
        change(meta["baselines"])
        out = tmp_path / name
        safetensors.torch.save_file(tensors, out, {"geopix2pix": json.dumps(meta)})
        return out

    values = linear_run[0].model_path
    classes = class_run[0].model_path
    good = {"weight": [[0.0] * 2], "bias": [0.0]}
    for path, change, message in (
            (values, lambda b: b.update(discriminant=good), "is for a class map"),
            (classes, lambda b: b.update(residual="linear", discriminant=None), "is missing"),
            (values, lambda b: b.update(residual="linear"), "trained with --residual none")):
        with pytest.raises(GeoPix2PixError, match=message):
            load_model(edited(path, change, f"{message[:5]}.safetensors"))


def _linear_pair(folder: Path) -> tuple[Path, Path]:
    """Two smooth source bands (nodata in a corner) and a float32 target that is exactly
    `COEFFS` applied to them."""
    y, x = np.mgrid[0:128, 0:128]
    bands = np.stack([50 + 20 * np.sin(x / 9.0) + 10 * np.cos(y / 7.0),
                      30 + 15 * np.cos((x - y) / 11.0)]).astype("float32")
    a, b, c = COEFFS
    target = (a * bands[0].astype(float) + b * bands[1] + c).astype("float32")
    bands[:, :5, :5] = -9999
    source = write_raster(folder / "bands.tif", bands, nodata=-9999)
    return source, write_raster(folder / "target.tif", target, nodata=-1.0)


@pytest.fixture(scope="module")
def linear_chips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("linear")
    source, target = _linear_pair(folder)
    export_chips(source, target, folder / "chips", chip_size=32, stride=32, split_block=64,
                 source_scaling="minmax", workers=1, progress=False)
    return folder / "chips"


@pytest.fixture(scope="module")
def linear_run(linear_chips, tmp_path_factory):
    """One training step on a target that is a linear map of the source: the model loses."""
    out = tmp_path_factory.mktemp("run") / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(linear_chips, out, max_steps=1, epochs=1, decay_epochs=0, **TINY)
    return result, [str(w.message) for w in caught if w.category is GeoPix2PixWarning]


def _units(chips: Path, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The split's valid target values in data units, and the mask, chip by chip."""
    data = ChipDataset(chips, split)
    scaling = data.target_scaling
    items = [data[i] for i in range(len(data))]
    return ([scaling.inverse(it["target"].double().numpy())[0][it["valid"][0].numpy()]
             for it in items], [it["valid"] for it in items])


def test_linear_target_gives_a_zero_error_linear_baseline_and_the_warning(linear_run,
                                                                        linear_chips):
    result, messages = linear_run
    saved = json.loads((result.run_dir / "baselines.json").read_text())
    assert saved["scores"] == result.baselines
    linear, constant = result.baselines["linear"], result.baselines["constant"]
    assert linear["val_mae"] < 1e-3 and linear["val_rmse"] < 1e-3 and linear["val_ssim"] > 0.999
    train_values = np.concatenate(_units(linear_chips, "train")[0])
    val_values = np.concatenate(_units(linear_chips, "val")[0])
    # the constant is the train mean: its val RMSE is the val values' spread about that mean
    rmse = np.sqrt(np.mean((val_values - train_values.mean()) ** 2))
    assert constant["val_rmse"] == pytest.approx(rmse, rel=1e-5)
    assert saved["pixels"] == len(train_values)
    assert result.comparison == (
        f"model-best: val MAE {result.best['val_mae']:.4g} · linear {linear['val_mae']:.4g} · "
        f"constant {constant['val_mae']:.4g}")
    assert any(m.startswith("model-best (val MAE") and "does not beat the linear baseline" in m
               for m in messages)


def test_cli_prints_the_comparison_and_the_warning(linear_chips, tmp_path, capsys):
    code = main(["train", str(linear_chips), "-o", str(tmp_path / "run"), "--max-steps", "1",
                 "--epochs", "1", "--decay-epochs", "0", "--ngf", "8", "--ndf", "8",
                 "--workers", "0", "--device", "cpu", "-q", "--recipe", "paper"])
    captured = capsys.readouterr()
    assert code == 0
    assert "model-best: val MAE " in captured.out and " · linear " in captured.out
    assert "warning: model-best (val MAE" in captured.err


def test_resume_reads_baselines_json_back(linear_chips, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        train(linear_chips, out, max_steps=2, epochs=1, decay_epochs=0,
              callback=lambda info: True, **TINY)
    path = out / "baselines.json"
    saved = json.loads(path.read_text())
    saved["scores"]["linear"]["val_mae"] = 123.0  # a mark: a refit would not give it
    path.write_text(json.dumps(saved))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeoPix2PixWarning)
        result = train(linear_chips, out, resume=True, **TINY)
    assert result.baselines["linear"]["val_mae"] == 123.0
    assert ModelMetadata.of(load_model(out / "model.safetensors")).baselines.linear.weight == \
        tuple(tuple(row) for row in saved["maps"]["linear"]["weight"])


def _scaled_input(scene: Path, info: ModelMetadata) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(scene) as src:
        data = src.read()
        valid = src.dataset_mask() > 0
    return info.source.scaling.forward(data, valid), valid


def test_predict_baseline_linear_writes_the_fitted_map_on_the_scene_grid(linear_run,
                                                                        tmp_path):
    result, _ = linear_run
    scene = _linear_pair(tmp_path)[0]
    model = load_model(result.best_model_path)
    info = ModelMetadata.of(model)
    out = tmp_path / "linear.tif"
    predict(scene, out, model=result.best_model_path, baseline="linear", progress=False)
    scaled, valid = _scaled_input(scene, info)
    maps = info.baselines.linear
    expected = np.clip(np.einsum("oi,ihw->ohw", np.array(maps.weight), scaled)
                       + np.array(maps.bias)[:, None, None], -1, 1)
    expected = info.target.scaling.inverse(expected)[0]
    with rasterio.open(out) as dst, rasterio.open(scene) as src:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        assert dst.dtypes[0] == "float32" and dst.nodata == -1.0
        written = dst.read(1)
    np.testing.assert_allclose(written[valid], expected[valid], atol=1e-3)
    assert np.all(written[~valid] == -1.0)
    a, b, c = COEFFS  # and it is the true map wherever that lies in the training range
    with rasterio.open(scene) as src:
        bands = src.read().astype(float)
    truth = a * bands[0] + b * bands[1] + c
    inside = valid & (truth >= info.target.scaling.low[0]) & (truth <= info.target.scaling.high[0])
    assert inside.mean() > 0.9
    np.testing.assert_allclose(written[inside], truth[inside], atol=0.05)


def test_predict_baseline_constant_and_the_cli_option(linear_run, tmp_path, capsys):
    result, _ = linear_run
    scene = _linear_pair(tmp_path)[0]
    out = tmp_path / "constant.tif"
    assert main(["predict", str(scene), str(out), "-m", str(result.best_model_path),
                 "--baseline", "constant", "-q"]) == 0
    with rasterio.open(out) as dst:
        values = dst.read(1, masked=True)
    train_values = np.concatenate(_units(_chips_of(result), "train")[0])
    assert values.min() == pytest.approx(values.max(), abs=1e-3)
    assert float(values.mean()) == pytest.approx(train_values.mean(), abs=1e-3)


def _chips_of(result) -> Path:
    return Path(json.loads((result.run_dir / "train.json").read_text())["chips_dir"])


def test_a_model_file_from_before_baselines_loads_predicts_and_refuses_baseline(
        model_file, tmp_path, capsys):
    from predict_helpers import write_scene

    scene = write_scene(tmp_path / "scene.tif", 80, 70)
    assert "baselines" not in load_model(model_file).metadata
    assert ModelMetadata.of(load_model(model_file)).baselines is None
    predict(scene, tmp_path / "out.tif", model=model_file, progress=False)
    assert (tmp_path / "out.tif").is_file()
    code = main(["predict", str(scene), str(tmp_path / "b.tif"), "-m", model_file,
                 "--baseline", "linear", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "carries no baselines" in err and len(err.strip().splitlines()) == 1


def test_residual_generator_starts_at_the_linear_map():
    spec = GeneratorSpec("unet", 2, 1, 32, ngf=8)
    inner = build_generator(spec)
    zero_output_layer(inner)
    linear = PixelMap(((0.5, -0.25),), (0.1,))
    residual = ResidualGenerator(inner, linear).eval()
    x = torch.rand(2, 2, 32, 32) * 2 - 1
    expected = (0.5 * x[:, :1] - 0.25 * x[:, 1:] + 0.1).clamp(-1, 1)
    torch.testing.assert_close(residual(x), expected)
    assert all(key.startswith(("inner.", "linear.")) for key in residual.state_dict())


def test_residual_run_predicts_linear_plus_generator_from_the_model_file(linear_chips,
                                                                         tmp_path):
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeoPix2PixWarning)
        result = train(linear_chips, out, max_steps=1, epochs=1, decay_epochs=0,
                       residual="linear", lr=1e-12, **TINY)
    # nearly untrained: exactly at the linear baseline, which fits this target
    assert result.best["val_mae"] == pytest.approx(result.baselines["linear"]["val_mae"],
                                                   abs=1e-3)
    model = load_model(result.model_path)
    assert isinstance(model.generator, ResidualGenerator)
    assert ModelMetadata.of(model).training["residual"] == "linear"
    scene = _linear_pair(tmp_path)[0]
    predict(scene, tmp_path / "model.tif", model=model, progress=False)
    predict(scene, tmp_path / "linear.tif", model=model, baseline="linear", progress=False)
    with rasterio.open(tmp_path / "model.tif") as a, rasterio.open(tmp_path / "linear.tif") as b:
        np.testing.assert_allclose(a.read(1), b.read(1), atol=1e-3)


def test_a_class_map_residual_starts_at_the_discriminant_unclamped(tmp_path_factory):
    """--residual linear with --categorical: G's class scores start as the linear discriminant
    (log-posteriors, far outside [-1, 1]: never clamped), in training and from the model file;
    predict writes the discriminant's classes until G has learnt anything."""
    folder = tmp_path_factory.mktemp("residual_classes")
    result, _, source = _one_class_step(folder, residual="linear", lr=1e-9)
    model = load_model(result.model_path)
    info = ModelMetadata.of(model)
    assert isinstance(model.generator, ResidualGenerator) and not model.generator.clamp
    assert info.baselines.start == info.baselines.discriminant
    assert set(result.baselines) == {"linear", "constant", "discriminant"}
    assert "linear discriminant" in result.comparison
    start = result.metrics[0]  # validated before the first step: the discriminant's scores
    assert start["epoch"] == 0 and start["loss_g_ce"] is None
    assert start["val_miou"] == pytest.approx(result.baselines["discriminant"]["val_miou"],
                                              abs=1e-6)
    predict(source, folder / "model.tif", model=model, progress=False)
    predict(source, folder / "fisher.tif", model=model, baseline="discriminant", progress=False)
    with rasterio.open(folder / "model.tif") as a, rasterio.open(folder / "fisher.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))
    scaled, valid = _scaled_input(source, info)
    scores = np.einsum("oi,ihw->ohw", np.array(info.baselines.discriminant.weight),
                       scaled) + np.array(info.baselines.discriminant.bias)[:, None, None]
    assert np.abs(scores[:, valid]).max() > 1.5  # what a clamp would have cut


def test_predict_baseline_discriminant_is_refused_for_values(linear_run, tmp_path, capsys):
    scene = _linear_pair(tmp_path)[0]
    assert main(["predict", str(scene), str(tmp_path / "o.tif"), "-m",
                 str(linear_run[0].model_path), "--baseline", "discriminant", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--baseline discriminant: this model file carries none" in err


def _one_class_step(folder: Path, **options):
    """(result, chips, source) of one training step of a class map (`class_pair`'s thresholds
    of a smooth field)."""
    from test_train_categorical import class_pair

    source, target = class_pair(folder, size=128)
    export_chips(source, target, folder / "chips", chip_size=32, stride=32, split_block=64,
                 target_resampling="nearest", workers=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeoPix2PixWarning)
        result = train(folder / "chips", folder / "run", max_steps=1, epochs=1, decay_epochs=0,
                       categorical=True, **TINY, **options)
    return result, folder / "chips", source


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    return _one_class_step(tmp_path_factory.mktemp("classes"))


def _class_pixels(chips: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's valid scaled source pixels (n, bands) and class indices (n,)."""
    data = ChipDataset(chips, split, classes=ModelMetadata.of(
        load_model(chips.parent / "run" / "model.safetensors")).target.classes)
    items = [data[i] for i in range(len(data))]
    x = np.concatenate([it["source"].permute(1, 2, 0)[it["valid"][0]].numpy() for it in items])
    k = np.concatenate([it["target"][0][it["valid"][0]].numpy() for it in items]).astype(int)
    return x, k


def test_class_map_baselines_are_scored_like_the_model(class_run):
    result, chips, _ = class_run
    x_train, k_train = _class_pixels(chips, "train")
    x_val, k_val = _class_pixels(chips, "val")
    majority = np.bincount(k_train).argmax()
    means = np.stack([x_train[k_train == c].mean(0) for c in range(3)])
    nearest = ((x_val[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    scores = result.baselines
    assert scores["constant"]["val_accuracy"] == pytest.approx((k_val == majority).mean())
    assert scores["linear"]["val_accuracy"] == pytest.approx((nearest == k_val).mean())
    ious = [((nearest == c) & (k_val == c)).sum() / ((nearest == c) | (k_val == c)).sum()
            for c in range(3) if ((nearest == c) | (k_val == c)).any()]
    assert scores["linear"]["val_miou"] == pytest.approx(np.mean(ious))
    assert result.comparison.startswith("model-best: val accuracy ")
    assert "nearest class mean" in result.comparison and "majority class" in result.comparison
    assert "linear discriminant" in result.comparison


def test_predict_baseline_linear_writes_the_nearest_class_codes(class_run, tmp_path):
    result, chips, scene = class_run
    model = load_model(result.best_model_path)
    info = ModelMetadata.of(model)
    out = tmp_path / "nearest.tif"
    predict(scene, out, model=model, baseline="linear", progress=False)
    scaled, valid = _scaled_input(scene, info)
    x_train, k_train = _class_pixels(chips, "train")
    means = np.stack([x_train[k_train == c].mean(0) for c in range(3)])
    distance = ((scaled.transpose(1, 2, 0)[..., None, :] - means) ** 2).sum(-1)
    expected = np.asarray(info.target.classes)[distance.argmin(-1)]
    with rasterio.open(out) as dst, rasterio.open(scene) as src:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        assert dst.dtypes[0] == "uint8" and dst.nodata == 0
        written = dst.read(1)
    # equal but where two class means are nearly equally near (float32 against float64)
    gap = np.sort(distance, -1)[..., 1] - np.sort(distance, -1)[..., 0]
    assert np.array_equal(written[valid & (gap > 1e-4)], expected[valid & (gap > 1e-4)])


def test_show_results_shows_the_baseline_beside_the_model(class_run):
    import matplotlib

    matplotlib.use("Agg")
    from geopix2pix.plot import show_results

    result, chips, _ = class_run
    figure = show_results(result.best_model_path, chips, n=1)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["input", "prediction", "linear discriminant", "target"]
    assert [ax.get_title() for ax in show_results(result.best_model_path, chips, n=1,
                                                  baseline=False).axes] == \
        ["input", "prediction", "target"]

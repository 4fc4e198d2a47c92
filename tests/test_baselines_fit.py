"""The baselines' streaming fits, exact against numpy on the valid pixels (least squares, nearest
class mean and majority, the linear discriminant), the checks of their numbers in a model file,
and the end-of-run warning's words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geopix2pix.models.baseline import BaselineMaps, PixelMap
from geopix2pix.training.baselines import (
    accumulate,
    explained_variance,
    solve_classes,
    solve_linear,
)


def _batches(rng, chips=5, bands=3, out=2, size=8):
    """One-chip batches of random values, a third of the pixels invalid with wild targets."""
    for _ in range(chips):
        valid = rng.random((1, 1, size, size)) > 0.33
        target = rng.normal(size=(1, out, size, size))
        target[np.broadcast_to(~valid, target.shape)] = 1e6  # must never count
        yield {"source": torch.tensor(rng.normal(size=(1, bands, size, size))),
               "target": torch.tensor(target), "valid": torch.tensor(valid)}


def test_streaming_fit_equals_lstsq_on_the_valid_pixels(rng):
    batches = list(_batches(rng))
    sums = accumulate(batches, 3, 2, None)
    # X^T X, X^T y and the target's squares: the same size for any number of pixels
    assert sums.numel() == 4 * 6 + 2
    linear, constant, pixels = solve_linear(sums, 3, 2)
    x = np.concatenate([b["source"].permute(0, 2, 3, 1)[b["valid"][:, 0]].numpy()
                        for b in batches])
    y = np.concatenate([b["target"].permute(0, 2, 3, 1)[b["valid"][:, 0]].numpy()
                        for b in batches])
    beta = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)[0]
    assert pixels == len(x)
    np.testing.assert_allclose(np.array(linear.weight), beta[:3].T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(linear.bias, beta[3], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(constant.bias, y.mean(0), rtol=1e-12)
    assert np.array(constant.weight).shape == (2, 3) and not np.any(constant.weight)
    # the linear map's R^2 over both bands, as numpy's residuals give it
    residual = ((y - np.c_[x, np.ones(len(x))] @ beta) ** 2).sum()
    assert explained_variance(sums, 3, 2) == pytest.approx(
        1 - residual / ((y - y.mean(0)) ** 2).sum(), rel=1e-9)


def test_explained_variance_is_one_for_an_exact_linear_target_and_zero_for_noise(rng):
    source = rng.normal(size=(1, 2, 16, 16))
    exact = 3 * source[:, :1] - source[:, 1:] + 0.5
    valid = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    batch = {"source": torch.tensor(source), "target": torch.tensor(exact), "valid": valid}
    assert explained_variance(accumulate([batch], 2, 1, None), 2, 1) == pytest.approx(1.0)
    flat = {**batch, "target": torch.full((1, 1, 16, 16), 2.0, dtype=torch.float64)}
    assert explained_variance(accumulate([flat], 2, 1, None), 2, 1) == 0.0


def test_class_fit_is_the_nearest_class_mean_and_the_majority(rng):
    batches = []
    for _ in range(4):
        valid = torch.tensor(rng.random((1, 1, 8, 8)) > 0.3)
        classes = torch.tensor(rng.choice(3, (1, 1, 8, 8), p=[0.2, 0.7, 0.1]), dtype=torch.float32)
        batches.append({"source": torch.tensor(rng.normal(size=(1, 2, 8, 8))) + classes,
                        "target": classes, "valid": valid})
    nearest, majority, _, pixels = solve_classes(accumulate(batches, 2, 4, 4), 2, 4)
    x = np.concatenate([b["source"].permute(0, 2, 3, 1)[b["valid"][:, 0]].numpy()
                        for b in batches])
    k = np.concatenate([b["target"][:, 0][b["valid"][:, 0]].numpy() for b in batches]).astype(int)
    means = np.stack([x[k == c].mean(0) for c in range(3)])
    assert pixels == len(x) and majority.bias == (0.0, 1.0, 0.0, 0.0)
    scores = x @ np.array(nearest.weight).T + np.array(nearest.bias)
    nearest_mean = ((x[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(scores.argmax(1), nearest_mean)  # class 3 absent: never


def test_the_linear_discriminant_streamed_equals_fisher_s_on_the_valid_pixels(rng):
    """Class means, pooled within-class covariance and log class shares, from the streamed sums
    exactly as from all valid pixels at once; a class without pixels is never chosen."""
    batches = []
    for _ in range(4):
        valid = torch.tensor(rng.random((1, 1, 8, 8)) > 0.3)
        classes = torch.tensor(rng.choice(3, (1, 1, 8, 8), p=[0.2, 0.7, 0.1]), dtype=torch.float32)
        noise = torch.tensor(rng.normal(size=(1, 3, 8, 8))) * torch.tensor([1.0, 0.2, 3.0])[
            None, :, None, None]  # bands of unequal variance: not the nearest mean
        batches.append({"source": noise + classes, "target": classes, "valid": valid})
    *_, fisher, _ = solve_classes(accumulate(batches, 3, 4, 4), 3, 4)
    x = np.concatenate([b["source"].permute(0, 2, 3, 1)[b["valid"][:, 0]].numpy()
                        for b in batches])
    k = np.concatenate([b["target"][:, 0][b["valid"][:, 0]].numpy() for b in batches]).astype(int)
    means = np.stack([x[k == c].mean(0) for c in range(3)])
    within = sum(((x[k == c] - means[c]).T @ (x[k == c] - means[c])) for c in range(3)) / len(x)
    within += 1e-3 * np.trace(within) / 3 * np.eye(3)
    inverse = np.linalg.inv(within)
    expected = np.stack([x @ inverse @ m - m @ inverse @ m / 2 + np.log((k == c).mean())
                         for c, m in enumerate(means)], 1)
    scores = x @ np.array(fisher.weight).T + np.array(fisher.bias)
    # the same but for a term shared by every class (the pooled mean's): equal less their mean
    present = scores[:, :3] - scores[:, :3].mean(1, keepdims=True)
    np.testing.assert_allclose(present, expected - expected.mean(1, keepdims=True), rtol=1e-9,
                               atol=1e-9)
    assert (scores[:, 3] < scores[:, :3].min(1)).all()  # class 3 absent: never
    assert (scores.argmax(1) == k).mean() > 0.6


def test_a_band_constant_in_the_train_chips_weighs_nothing_in_the_discriminant(rng):
    """A band saturated in every train chip (e.g. at the scaling's clip) has only the ridge for
    its variance: the discriminant ignores it, whatever it holds at prediction (uncentred, its
    weights were ~1e6 and every pixel came out as a class without train pixels)."""
    batches = []
    for _ in range(4):
        classes = torch.tensor(rng.choice(3, (1, 1, 8, 8), p=[0.3, 0.5, 0.2]), dtype=torch.float32)
        noise = torch.tensor(rng.normal(0, 0.02, size=(1, 2, 8, 8)))
        constant = torch.ones(1, 1, 8, 8, dtype=torch.float64)
        batches.append({"source": torch.cat([noise + 0.1 * classes, constant], 1),
                        "target": classes, "valid": torch.ones(1, 1, 8, 8, dtype=torch.bool)})
    *_, fisher, _ = solve_classes(accumulate(batches, 3, 4, 4), 3, 4)
    weight, bias = np.array(fisher.weight), np.array(fisher.bias)
    assert np.abs(weight[:, 2]).max() < 1e-6 and np.abs(weight).max() < 1e4
    x = np.concatenate([b["source"].permute(0, 2, 3, 1).reshape(-1, 3).numpy() for b in batches])
    k = np.concatenate([b["target"].reshape(-1).numpy() for b in batches]).astype(int)
    for value in (1.0, 0.0, -1.0):  # the band as the train chips hold it, and otherwise
        guess = (np.c_[x[:, :2], np.full(len(x), value)] @ weight.T + bias).argmax(1)
        assert (guess == k).mean() > 0.9


def test_baseline_maps_refuse_non_finite_or_misshapen_numbers():
    good = {"weight": [[1.0, 2.0]], "bias": [0.5]}
    maps = BaselineMaps.from_dict({"linear": good, "constant": good, "residual": "linear"})
    assert BaselineMaps.from_dict(maps.to_dict()) == maps
    fisher = BaselineMaps.from_dict({**maps.to_dict(), "discriminant": good})
    assert BaselineMaps.from_dict(fisher.to_dict()) == fisher
    assert fisher.start == fisher.discriminant
    assert maps.start == maps.linear and maps.names() == ("linear", "constant")
    with pytest.raises(ValueError, match="differ in shape"):
        BaselineMaps.from_dict({**maps.to_dict(), "discriminant": {"weight": [[1.0]], "bias": [0]}})
    for bad in ({"weight": [[1.0, float("nan")]], "bias": [0.5]},
                {"weight": [[1.0, 2.0]], "bias": [0.5, 1.0]},
                {"weight": [[1.0, "2"]], "bias": [0.5]}, [1.0]):
        with pytest.raises(ValueError):
            BaselineMaps.from_dict({"linear": bad, "constant": good})


def test_a_constant_alone_loads_and_a_missing_or_misshapen_constant_is_refused():
    """A CycleGAN file carries its output domain's train mean alone (no pairs, no linear)."""
    good = {"weight": [[0.0, 0.0]], "bias": [0.5]}
    alone = BaselineMaps.from_dict({"constant": good})
    assert alone.linear is None and alone.names() == ("constant",)
    assert BaselineMaps.from_dict(alone.to_dict()) == alone and "linear" not in alone.to_dict()
    alone.check_shape(2, 1)
    with pytest.raises(ValueError, match="map 2 bands to 1, the generator 3 to 1"):
        alone.check_shape(3, 1)
    with pytest.raises(ValueError, match="only the constant .train mean. baseline"):
        alone.map("linear")
    with pytest.raises(ValueError, match="no linear map"):
        alone.start  # noqa: B018
    for bad, message in (({"linear": good}, "constant map is missing"),
                         ({"constant": None}, "constant map is missing"),
                         ({"constant": good, "residual": "linear"}, "without the linear map"),
                         ({"constant": good, "linear": {"weight": [[1.0]], "bias": [0.0]}},
                          "linear, constant maps differ in shape"),
                         ({"constant": good, "discriminant": {"weight": [[1.0]], "bias": [0]}},
                          "differ in shape")):
        with pytest.raises(ValueError, match=message):
            BaselineMaps.from_dict(bad)


def test_the_class_map_warning_names_the_leading_baselines_and_only_new_advice():
    from types import SimpleNamespace

    from geopix2pix.training.baselines import RunBaselines, shortfall

    good = PixelMap(((1.0,),), (0.0,))
    run = RunBaselines(BaselineMaps(good, good, "linear", good), scores={
        "linear": {"val_accuracy": 0.5, "val_miou": 0.3},
        "constant": {"val_accuracy": 0.9, "val_miou": 0.2},
        "discriminant": {"val_accuracy": 0.8, "val_miou": 0.45}})
    best = {"val_accuracy": 0.85, "val_miou": 0.4}
    recipe = SimpleNamespace(residual="linear", class_weights="balanced")
    line = shortfall(best, run, True, recipe)
    assert "accuracy 0.900: majority class; mean IoU 0.450: linear discriminant" in line
    assert line.endswith(": train longer; `geopix2pix predict --baseline discriminant` writes "
                         "the linear discriminant's map")
    plain = shortfall(best, run, True, SimpleNamespace(residual="none", class_weights="none"))
    assert "train longer, with --residual linear (from the discriminant) or with " \
        "--class-weights balanced;" in plain
    assert shortfall({"val_accuracy": 0.95, "val_miou": 0.5}, run, True, recipe) is None
    # over the discriminant without weights (the land-cover recipe): weights would move the
    # priors it starts from, so they are not advised
    unweighted = shortfall(best, run, True, SimpleNamespace(residual="linear",
                                                           class_weights="none"))
    assert "class-weights" not in unweighted and ": train longer; " in unweighted
    # val chips without class 255: the majority map's lead is no advice (a tester's road mask)
    blind = shortfall(best, run, True, recipe, unjudged=[255])
    assert "--baseline" not in blind and blind.endswith(
        "train longer; but the val chips hold no pixel of class code(s) 255, so these scores "
        "favour never predicting them: export val chips that cover every class before "
        "trusting this comparison")


def test_the_value_warning_advises_the_residual_only_where_the_linear_map_helps():
    """A newcomer's README run on the DEM -> hillshade pair (--max-steps 20) was told to train
    'with --residual linear', which docs/train.md measures far worse there: the heights'
    linear map explains nothing of a hillshade (it scored as the train mean)."""
    from types import SimpleNamespace

    from geopix2pix.training.baselines import RunBaselines, shortfall

    good = PixelMap(((1.0,),), (0.0,))
    best = {"val_mae": 55.22, "epoch": 3}
    useless = RunBaselines(BaselineMaps(good, good), scores={
        "linear": {"val_mae": 54.44}, "constant": {"val_mae": 54.44}})
    short = SimpleNamespace(residual="none", max_steps=20)
    line = shortfall(best, useless, False, short)
    assert "does not beat the linear baseline fitted on the train chips (val MAE 54.44" in line
    assert ": train longer (than --max-steps 20); `geopix2pix predict" in line
    assert "--residual" not in line
    helpful = RunBaselines(BaselineMaps(good, good), scores={
        "linear": {"val_mae": 40.0}, "constant": {"val_mae": 54.44}})
    line = shortfall(best, helpful, False, SimpleNamespace(residual="none", max_steps=None))
    assert ": train longer or with --residual linear; " in line
    assert shortfall({"val_mae": 39.0, "epoch": 3}, helpful, False, short) is None

"""A run whose weights stop being finite numbers (a learning rate far too high) stops at its next
validation, which writes nothing: with a model-best from before (a residual run's validated
start) the run ends with a warning and that model-best; without one it is an error and leaves
nothing. NaN or infinite options are refused first. (A tester's --lr 1e30 run reported val MAE 0
and a model-best of NaN weights, exit 0.)"""

from __future__ import annotations

import math

import pytest
from test_training import make_chips

from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import load_model
from geopix2pix.settings.train import TrainConfig

TINY = ["--ngf", "4", "--ndf", "4", "--batch-size", "4", "-q", "--device", "cpu", "--workers",
        "0", "--max-steps", "12", "--val-every", "4", "--lr", "1e30"]


@pytest.fixture(scope="module")
def chips(tmp_path_factory):
    return make_chips(tmp_path_factory.mktemp("diverged"))


def test_a_run_diverging_before_any_validation_is_an_error_leaving_nothing(chips, tmp_path,
                                                                           capsys):
    run = tmp_path / "run"
    assert main(["train", str(chips), "-o", str(run), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("Error: training diverged by step 8: the networks' weights are no longer "
                   "finite numbers (NaN or infinite), so it stopped there, before any validation "
                   "scored them: nothing worth keeping was trained; train again with a lower "
                   "--lr (this run's: 1e+30)")
    assert not run.exists()


def test_a_run_diverging_after_a_validation_keeps_it_as_model_best(chips, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(chips), "-o", str(run), *TINY, "--residual", "linear"]) == 0
    err = capsys.readouterr().err
    assert ("warning: training diverged by step 8: the networks' weights are no longer finite "
            "numbers (NaN or infinite), so it stopped there; model-best.safetensors and "
            "model.safetensors hold the last validated weights (model-best: epoch 0); train "
            "again with a lower --lr (this run's: 1e+30)") in err
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("0,0,")  # the start alone was validated
    for name in ("model.safetensors", "model-best.safetensors"):  # finite: they predict
        load_model(run / name)


@pytest.mark.parametrize("option", ["lr", "lambda_l1", "lambda_a"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_or_infinite_options_are_refused(option, value):
    model = "cyclegan" if option == "lambda_a" else "pix2pix"
    with pytest.raises(GeoPix2PixError, match=f"--{option.replace('_', '-')} {value}"):
        TrainConfig.from_options(model=model, **{option: value})

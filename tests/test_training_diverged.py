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

TINY = ["--recipe", "paper",
        "--ngf", "4", "--ndf", "4", "--batch-size", "4", "-q", "--device", "cpu", "--workers",
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


def test_an_overwrite_run_diverging_before_it_replaced_the_earlier_keeps_it(chips, tmp_path,
                                                                            capsys):
    """A reviewer's --overwrite run diverged after its validated start: it exited 0 with its
    files in the hidden folder it was built in, and the earlier run looked replaced."""
    from test_faults_overwrite import digest, leftovers

    run = tmp_path / "run"
    assert main(["train", str(chips), "-o", str(run), *TINY, "--lr", "1e-3",
                 "--max-steps", "2"]) == 0
    before = digest(run)
    assert main(["train", str(chips), "-o", str(run), *TINY, "--residual", "linear",
                 "--overwrite"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"so it stopped there, before it replaced the earlier run in {run}, which is as it was; "
        "train again with a lower --lr (this run's: 1e+30)")
    assert digest(run) == before and leftovers(tmp_path) == []


def test_two_ranks_diverging_after_a_validation_end_together(chips, tmp_path):
    """A reviewer's torchrun run hung: a rank that saw model.safetensors already copied by rank
    0 skipped the copy's rendezvous and waited for the others elsewhere."""
    from test_distributed import torchrun

    run = tmp_path / "run"
    done = torchrun(["-m", "geopix2pix", "train", str(chips), "-o", str(run), *TINY,
                     "--batch-size", "2", "--residual", "linear"], tmp_path)  # (the last counts)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("warning: training diverged by step") == 1  # rank 0 speaks
    for name in ("model.safetensors", "model-best.safetensors"):
        load_model(run / name)


@pytest.mark.parametrize("value", [math.nan, 1.0, -0.1])
def test_adams_beta1_is_checked_like_the_others(value):
    """A reviewer's train(beta1=nan) was torch's raw ValueError."""
    with pytest.raises(GeoPix2PixError, match=f"beta1={value}: use a decay from 0 to below 1"):
        TrainConfig.from_options(beta1=value)


@pytest.mark.parametrize("residual", ["none", "linear"])
def test_a_run_stopped_after_diverging_saves_no_checkpoint_of_nan_weights(chips, tmp_path,
                                                                          residual):
    """A stop between validations saved the weights as they were: NaN ones were resumed from,
    and the divergence was found an epoch later. It now ends as diverged at the stop."""

    from geopix2pix import train
    from geopix2pix.training.checkpoint import CHECKPOINT

    run = tmp_path / "run"
    options = dict(recipe="paper", ngf=4, ndf=4, batch_size=4, quiet=True, device="cpu",
                   workers=0, max_steps=12, val_every=4, lr=1e30, residual=residual)

    def stop_at_step_3(info):
        return info["step"] == 3

    if residual == "none":  # nothing validated: an error, nothing left
        with pytest.raises(GeoPix2PixError, match="training diverged by step 3: .* before any "
                                                  "validation scored them"):
            train(chips, run, callback=stop_at_step_3, **options)
        assert not run.exists()
        return
    result = train(chips, run, callback=stop_at_step_3, log=lambda line: None, **options)
    assert result.steps == 3  # ended there, with the validated start as model-best
    load_model(run / "model-best.safetensors")
    assert not (run / CHECKPOINT).exists()  # (the only one it could save held NaN)


def test_a_run_whose_batch_norm_statistics_diverged_is_not_saved_to_resume(chips, tmp_path):
    """A reviewer's U-Net at --lr 1e8 stopped at step 2 with finite weights but NaN running
    statistics: it said "continue from checkpoint.pt", which --resume then refused as damaged.
    The statistics count as the weights do."""
    from geopix2pix import train

    with pytest.raises(GeoPix2PixError, match="training diverged by step 2: .* before any "
                                              "validation scored them"):
        train(chips, tmp_path / "run", recipe="paper", ngf=4, ndf=4, batch_size=4, lr=1e8,
              val_every=4, max_steps=12, device="cpu", workers=0, quiet=True,
              callback=lambda info: info["step"] == 2, log=lambda line: None)
    assert not (tmp_path / "run").exists()


def test_only_the_generators_statistics_count_with_every_weight():
    """A discriminator's batch-norm statistics are never used (it trains in train mode), and an
    fp16 step GradScaler skips can leave them NaN: that is no divergence. A generator's are
    used by validation and predict, and every network's weights are trained."""
    import torch

    from geopix2pix.training.loop import _finite

    class Family:
        GENERATORS = ("generator",)

        def __init__(self):
            self.nets = {"generator": torch.nn.BatchNorm2d(2),
                         "discriminator": torch.nn.BatchNorm2d(2)}

        def networks(self):
            return self.nets

    family = Family()
    assert _finite(family)
    with torch.no_grad():
        family.nets["discriminator"].running_var[0] = math.nan
        assert _finite(family)
        family.nets["generator"].running_var[0] = math.inf
        assert not _finite(family)
        family.nets["generator"].running_var[0] = 1.0
        family.nets["discriminator"].weight[0] = math.nan
        assert not _finite(family)


def test_a_run_diverging_with_a_raised_loss_weight_names_it_beside_the_lr(chips, tmp_path,
                                                                          capsys):
    """A reviewer's --lambda-l1 1e308 made the losses infinite at a sane --lr, and the error
    blamed the learning rate alone."""
    run = tmp_path / "run"
    args = [*TINY, "--lr", "1e-3", "--lambda-l1", "1e308", "--gan-warmup", "0"]
    assert main(["train", str(chips), "-o", str(run), *args]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "train again with a lower --lr (this run's: 0.001) or the loss weights raised above "
        "their defaults (--lambda-l1 1e+308)")

"""torchrun on the CPU (gloo, 2 processes) of a CycleGAN run: each rank sums the train means
over its shard of the chips and the sums are added, so the model files carry the one-process
means."""

from __future__ import annotations

import json

import numpy as np
from test_distributed import cli_args, torchrun
from test_train_cyclegan_unpaired import _domains

from geopix2pix.cli import main
from geopix2pix.models import load_model
from geopix2pix.training import train

OPTIONS = dict(model="cyclegan", generator="resnet_6blocks", ngf=8, ndf=8, max_steps=2,
               epochs=1, decay_epochs=0, workers=0, device="cpu", quiet=True)


def test_two_ranks_carry_the_train_means_of_one_process(tmp_path):
    a, b = _domains(tmp_path)
    chips = tmp_path / "chips"
    assert main(["export-chips", "--unpaired", "--source", str(a), "--target", str(b), "-o",
                 str(chips), "--chip-size", "32", "--stride", "16", "--split-block", "64",
                 "--workers", "0", "--quiet"]) == 0
    one = train(chips, tmp_path / "one", batch_size=4, samples=0, **OPTIONS).run_dir
    two = tmp_path / "two"
    done = torchrun(["-m", "geopix2pix", "train", str(chips), "-o", str(two), "--batch-size",
                     "2", *cli_args(OPTIONS)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ours, ref = (json.loads((run / "baselines.json").read_text()) for run in (two, one))
    assert ours["pixels"] == ref["pixels"] and min(ref["pixels"].values()) > 0
    for name in ("model.safetensors", "model-ba.safetensors"):
        mine, theirs = (load_model(run / name).metadata["baselines"] for run in (two, one))
        assert set(mine) == {"constant", "residual"}
        np.testing.assert_allclose(mine["constant"]["bias"], theirs["constant"]["bias"],
                                   rtol=1e-12, atol=1e-14)

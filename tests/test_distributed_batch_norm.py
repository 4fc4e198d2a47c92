"""Batch-norm statistics under torchrun (gloo, 2 processes on the CPU): each rank's running
statistics are replaced by the ranks' mean at each epoch end (and left alone in one process),
and --sync-bn needs CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_distributed import OPTIONS, make_chips, torchrun

from geopix2pix.models import load_model
from geopix2pix.training.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    return make_chips(tmp_path_factory.mktemp("ddp"))


BATCH_NORM_RUNS = """
import shutil, sys
import torch
from geopix2pix.runtime import distributed
from geopix2pix.training import train

chips, out = sys.argv[1], sys.argv[2]
average, epoch_ends = distributed.average_running_stats, []


def recording(generator, discriminator):  # every rank's statistics before, and after
    def stats():
        return [t.clone() for t in distributed.running_stats(generator)
                + distributed.running_stats(discriminator)]

    before = distributed.all_gather_object(stats())
    average(generator, discriminator)
    epoch_ends.append({"ranks": before, "mean": stats()})


distributed.average_running_stats = recording
distributed.init_from_env(torch.device("cpu"))  # once: the runs share the process group
train(chips, out + "/full", **{options})
try:
    train(chips, out + "/part", callback=lambda info: info["step"] == 2, **{options})
except KeyboardInterrupt:
    pass
if distributed.is_writer():
    shutil.copy(out + "/part/checkpoint.pt", out + "/stopped.pt")
distributed.barrier()
train(chips, out + "/part", resume=True, **{options})
if distributed.is_writer():
    torch.save(epoch_ends, out + "/epoch_ends.pt")
distributed.cleanup()
"""


def running_stats(state: dict) -> list[torch.Tensor]:
    """A state dict's running means and variances, in the order of ``running_stats``."""
    return [v for k, v in state.items() if k.endswith((".running_mean", ".running_var"))]


def test_two_ranks_average_batch_norm_statistics_at_each_epoch_end(chips, tmp_path):
    """Batch norm (the default) updates each rank's running statistics from its own chips: each
    epoch end replaces them by the ranks' mean, so the ranks validate and save one network, the
    checkpoint holds it, and a run resumed from it goes on as the uninterrupted one."""
    options = {**OPTIONS, "norm": "batch", "batch_size": 8, "max_steps": 4, "epochs": 2}
    script = tmp_path / "batch_norm.py"  # 33 train chips / 16 per step: 2 steps per epoch
    script.write_text(BATCH_NORM_RUNS.replace("{options}", repr(options)))
    done = torchrun([str(script), str(chips), str(tmp_path)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "networks differ" not in done.stderr
    ends = torch.load(tmp_path / "epoch_ends.pt", weights_only=True)
    assert len(ends) == 4  # full run: 2 epochs; stopped at its first end; resumed: the second
    for end in ends:
        rank0, rank1 = end["ranks"]
        assert len(rank0) == len(end["mean"]) > 0
        assert not all(torch.equal(a, b) for a, b in zip(rank0, rank1))  # they had drifted
        for a, b, mean in zip(rank0, rank1, end["mean"]):
            assert torch.equal(mean, ((a.double() + b.double()) / 2).float())
    replicas = [json.loads((tmp_path / run / "train.json").read_text())["replicas"]
                for run in ("full", "part")]
    assert replicas[0]["identical"] and replicas[1]["identical"]
    assert replicas[0] == replicas[1]  # resumed from the averaged checkpoint: the same run
    stopped = torch.load(tmp_path / "stopped.pt", weights_only=True)
    final = load_checkpoint(tmp_path / "full")
    model = load_model(tmp_path / "full" / "model.safetensors").generator.state_dict()
    for saved, end in ((stopped, ends[2]), (final, ends[1])):
        stats = running_stats(saved["generator"]) + running_stats(saved["discriminator"])
        assert all(torch.equal(s, m) for s, m in zip(stats, end["mean"], strict=True))
    assert all(torch.equal(s, m) for s, m in zip(running_stats(model), ends[1]["mean"]))  # G first


def test_one_process_leaves_batch_norm_statistics_alone(monkeypatch):
    """No collective call and no change in one process; instance norm has nothing to average."""
    from geopix2pix.models import build_discriminator
    from geopix2pix.runtime import distributed

    def no_collective(values):
        raise AssertionError("a collective call in one process")

    monkeypatch.setattr(distributed, "all_reduce_sum", no_collective)
    disc = build_discriminator(2, ndf=4, n_layers=2, norm="batch")
    stats = distributed.running_stats(disc)
    assert [t.shape[0] for t in stats] == [8, 8, 16, 16]  # the 2 batch norms' mean and var
    disc.train()(torch.randn(2, 2, 32, 32))
    before = {k: v.clone() for k, v in disc.state_dict().items()}
    distributed.average_running_stats(disc)
    assert all(torch.equal(v, before[k]) for k, v in disc.state_dict().items())
    assert distributed.running_stats(build_discriminator(2, ndf=4, n_layers=2,
                                                         norm="instance")) == []


def test_sync_bn_needs_cuda_and_is_a_no_op_on_one_rank(monkeypatch):
    from geopix2pix.errors import GeoPix2PixError
    from geopix2pix.models import build_discriminator
    from geopix2pix.runtime import distributed

    disc = build_discriminator(2, ndf=4, n_layers=2)
    assert distributed.sync_batch_norm(disc, torch.device("cpu")) is disc  # one process
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(GeoPix2PixError, match="--sync-bn needs CUDA"):
        distributed.sync_batch_norm(disc, torch.device("cpu"))
    from geopix2pix.prediction.distributed import shard

    assert shard(list("abcde"), 1, 2) == ["b", "d"]

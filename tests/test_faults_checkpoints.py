"""Fault battery: checkpoint.pt on `train --resume` and `--encoder-weights` are untrusted input.

The checkpoint of a real run (trained for two steps) is tampered with (tensors of other shapes,
an optimizer state of another network, RNG states torch refuses, values of the wrong kind), or
replaced by a truncated file, a pickle or text; encoder weights are a legacy pickle, a pickle
with code, or tensors of other names, shapes or kinds. Each is exit 2 with one line naming the
file, no traceback, no warning, no pickle run, and the run folder as it was.
"""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from fault_helpers import Marker, one_error_line, trained_run
from safetensors.torch import save_file

from geopix2pix.cli import main
from geopix2pix.models import GeneratorSpec, build_generator

TINY = ["--ngf", "4", "--ndf", "4", "--batch-size", "2", "--workers", "0", "-q",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    chips, run = trained_run(tmp_path_factory.mktemp("faults_checkpoints"))
    return {"chips": chips, "run": run}


# --- checkpoint.pt on --resume --------------------------------------------------------------

def _generator_key(state) -> str:
    return next(k for k, v in state["generator"].items() if v.dim() == 4)


def _ckpt_wrong_shape(state):
    key = _generator_key(state)
    state["generator"][key] = torch.zeros(1, 2, 3, 4)


def _ckpt_missing(state):
    del state["discriminator"][next(iter(state["discriminator"]))]


def _ckpt_adam_shape(state):
    entry = next(iter(state["opt_g"]["state"].values()))
    entry["exp_avg"] = torch.zeros(7)


def _ckpt_groups(state):
    state["opt_d"]["param_groups"][0]["params"] = state["opt_d"]["param_groups"][0]["params"][1:]


def _ckpt_rng(state):
    state["rng"]["torch"] = torch.zeros(10, dtype=torch.uint8)


def _ckpt_rng_zeroed(state):  # the right shape and type, but torch refuses it at the restore
    state["rng"]["torch"] = torch.zeros_like(state["rng"]["torch"])


def _ckpt_option_key(state):  # (train.json cannot write it: a traceback at the resume)
    state["options"][(1, 2)] = 1


def _ckpt_adam_scalar(state):  # a scalar moment broke the first step after the resume
    next(iter(state["opt_g"]["state"].values()))["exp_avg"] = torch.tensor(0.0)


def _ckpt_step(state):
    state["step"] = "two"


def _ckpt_options(state):
    state["options"]["batch_size"] = torch.zeros(3)


def _ckpt_nan_weight(state):  # a diverged run's weights: blamed on --lr an epoch later
    state["generator"][_generator_key(state)].view(-1)[0] = float("nan")


def _ckpt_partial(state):
    state["partial"] = {"sums": [0.0], "batches": 1, "images": 2, "seconds": 1.0}


def _ckpt_set(key, value):
    def edit(state):
        state[key] = value
    return edit


CHECKPOINT_CASES = [
    ("generator-wrong-shape", _ckpt_wrong_shape, "generator is not this run's network"),
    ("discriminator-missing-tensor", _ckpt_missing, "1 missing"),
    ("adam-state-wrong-shape", _ckpt_adam_shape, "opt_g.state"),
    ("optimizer-groups", _ckpt_groups, "opt_d.param_groups[0].params"),
    ("rng-state", _ckpt_rng, "rng.torch"),
    ("rng-state-zeroed", _ckpt_rng_zeroed, "rng.torch is not a valid generator state"),
    ("step-not-a-number", _ckpt_step, "step is 'two'"),
    ("option-key-not-a-string", _ckpt_option_key, "options has the key (1, 2), not a string"),
    ("adam-state-scalar", _ckpt_adam_scalar, "exp_avg is [], its parameter"),
    ("options-with-a-tensor", _ckpt_options, "options['batch_size']"),
    ("partial-epoch-sums", _ckpt_partial, "partial.sums"),
    ("nan-weight", _ckpt_nan_weight, "holds NaN or infinite values, so training had diverged"),
    # a run that never wrote model-best said it had one (no score beats NaN or -1)
    ("best-nan", _ckpt_set("best", float("nan")), "best is nan: model-best's score is 0 or more"),
    ("best-negative", _ckpt_set("best", -1.0), "best is -1.0: model-best's score is 0 or more"),
    # said complete, with model files never written; samples of epoch 10**18
    ("step-past-the-schedule", _ckpt_set("step", 10**18), "is at step 1000000000000000000 of"),
    ("epoch-past-the-schedule", _ckpt_set("epoch", 10**18), "past this run's"),
]


def resume(world, run: Path) -> list[str]:
    return ["train", str(world["chips"]), "-o", str(run), "--resume", "-q", "--workers", "0",
            "--device", "cpu"]


def copy_run(world, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    return run


@pytest.mark.parametrize("name, edit, words", CHECKPOINT_CASES,
                         ids=[c[0] for c in CHECKPOINT_CASES])
def test_a_tampered_checkpoint_is_one_line_on_resume(world, capsys, tmp_path, name, edit, words):
    run = copy_run(world, tmp_path)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    edit(state)
    del state["digest"]  # a crafted file: no digest to betray it, the checks still refuse it
    torch.save(state, run / "checkpoint.pt")
    before = sorted(p.name for p in run.iterdir())
    line = one_error_line(capsys, main(resume(world, run)))
    assert str(run / "checkpoint.pt") in line and words in line, line
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_checkpoint_changed_after_writing_is_refused_by_its_digest(world, capsys, tmp_path):
    """A tester flipped one byte of a generator weight in checkpoint.pt: --resume carried on
    from the damaged weights. The checkpoint records a digest of its contents."""
    run = copy_run(world, tmp_path)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    key = _generator_key(state)
    state["generator"][key].view(-1)[0] += 1e-3  # a value within range, of the right shape
    torch.save(state, run / "checkpoint.pt")
    line = one_error_line(capsys, main(resume(world, run)))
    assert f"{run / 'checkpoint.pt'} does not match the digest it records" in line, line
    state.pop("digest")  # a checkpoint from before the digest: not checked against one
    torch.save(state, run / "checkpoint.pt")
    assert main(resume(world, run)) == 0


def test_a_checkpoint_of_compressed_entries_is_refused_before_it_is_inflated(world, capsys,
                                                                            tmp_path):
    """torch.save stores its zip entries as they are; a compressed one inflates before any
    check (a reviewer's 5.8 MB file of deflated zeros took 6.5 GB). Such a file is refused
    unread: here the run's own checkpoint with its entries deflated."""
    import zipfile

    run = copy_run(world, tmp_path)
    path = run / "checkpoint.pt"
    with zipfile.ZipFile(path) as source:
        entries = [(info, source.read(info.filename)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w") as out:
        for info, data in entries:
            info.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(info, data)
    line = one_error_line(capsys, main(resume(world, run)))
    assert f"--resume: cannot read {path}: it is damaged or incomplete (its zip entries are " \
        "compressed or larger than the file, which torch.save never writes)" in line, line


@pytest.mark.parametrize("damage", ["truncated", "pickle", "text"])
def test_a_damaged_or_hostile_checkpoint_is_one_line_without_a_warning(world, capsys, tmp_path,
                                                                       damage):
    run = copy_run(world, tmp_path)
    path, marker = run / "checkpoint.pt", tmp_path / "pwned"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:2000])
    elif damage == "pickle":
        path.write_bytes(pickle.dumps({"format_version": 1, "x": Marker(marker)}, protocol=4))
    else:
        path.write_text("not a checkpoint\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = one_error_line(capsys, main(resume(world, run)))
    assert f"cannot read {path}" in line and not marker.exists(), line
    assert [str(w.message) for w in caught] == []


def test_an_untouched_checkpoint_resumes(world, capsys, tmp_path):
    """(The run is complete: its checkpoint is checked and restored, and nothing is left.)"""
    run = copy_run(world, tmp_path)
    assert main(resume(world, run)) == 0, capsys.readouterr().err
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2


def test_a_run_started_with_more_workers_than_this_machine_has_resumes(world, capsys, tmp_path):
    """train.json keeps the run's --workers; a run started on a bigger machine (64) resumed
    here was refused for an option the user never typed."""
    import json

    run = copy_run(world, tmp_path)
    saved = json.loads((run / "train.json").read_text())
    saved["options"]["workers"] = 64
    (run / "train.json").write_text(json.dumps(saved))
    assert main([a for a in resume(world, run) if a not in ("--workers", "0")]) == 0, \
        capsys.readouterr().err


# --- --encoder-weights ------------------------------------------------------------------------

def _encoder_state() -> dict[str, torch.Tensor]:
    return build_generator(GeneratorSpec("smp:Unet:resnet18", 1, 1, 64)).encoder.state_dict()


def _encoder_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / ("weights.safetensors" if kind == "wrong-kind" else "weights.pt")
    if kind == "legacy-pickle":
        path.write_bytes(pickle.dumps({"conv1.weight": [1.0, 2.0]}, protocol=4))
        return path
    if kind == "pickle-code":
        path.write_bytes(pickle.dumps({"conv1.weight": Marker(tmp_path / "pwned")}))
        return path
    state = _encoder_state()
    if kind == "wrong-keys":
        state = {f"backbone.{k}": v for k, v in state.items()}
    elif kind == "wrong-shape":
        state["conv1.weight"] = torch.zeros(64, 1, 3, 3)
    else:
        state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"].to(torch.int32)
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return path
    torch.save(state, path)
    return path


ENCODER_CASES = [("legacy-pickle", "cannot read encoder weights file"),
                 ("pickle-code", "pickled Python objects"),
                 ("wrong-keys", "missing (e.g."),
                 ("wrong-shape", "1 wrong shape (e.g. conv1.weight is [64, 1, 3, 3]"),
                 ("wrong-kind", "integer values")]


@pytest.mark.parametrize("kind, words", ENCODER_CASES, ids=[c[0] for c in ENCODER_CASES])
def test_bad_encoder_weights_are_one_line_without_a_warning(world, capsys, tmp_path, kind,
                                                            words):
    path = _encoder_file(tmp_path, kind)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = one_error_line(capsys, main([
            "train", str(world["chips"]), "-o", str(tmp_path / "run"), "--generator",
            "smp:Unet:resnet18", "--encoder-weights", str(path), "--max-steps", "1", *TINY]))
    assert str(path) in line and words in line, line
    assert [str(w.message) for w in caught] == []
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "run").exists()



@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files by /proc")
def test_a_checkpoint_is_on_the_disk_before_it_takes_its_name(tmp_path, monkeypatch):
    """checkpoint.pt was renamed into place unflushed: after a power cut the name could hold an
    empty file, the run's only way to continue. It is fsynced whole first."""
    import os

    from geopix2pix.training import checkpoint

    synced = []

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        synced.append((Path(name).name, os.fstat(fd).st_size,
                       (tmp_path / "checkpoint.pt").exists()))

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    path = checkpoint.save_checkpoint(tmp_path, {"step": 3, "weights": torch.ones(1000)})
    (name, size, named_yet), = synced
    assert name.startswith(".checkpoint.") and size == path.stat().st_size and not named_yet

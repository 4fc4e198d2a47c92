"""torchrun on the CPU (gloo, 2 processes): DDP training (prediction: test_distributed_predict).

Every run is real: `python -m torch.distributed.run --standalone --nproc-per-node 2 -m geopix2pix
...`. Which files each rank writes is recorded by an audit hook (a test-only sitecustomize on
PYTHONPATH): rank 1 must write nothing in the run folder.

The one-process comparison uses instance norm and 32 px chips: batch norm without --sync-bn
normalises each rank's half batch by its own statistics (so it differs from one process by
design), and PyTorch's SyncBatchNorm runs on GPUs only; a 32 px U-Net (depth 5) has no dropout
layers, whose draws would differ per rank. What is left differs from one process only by float
rounding, except the biases of convolutions followed by instance norm: their gradient is zero in
exact arithmetic, so Adam turns rounding noise into +-lr steps there. Those biases do not change
any output, so the comparison is on outputs and logged losses/metrics, not on raw parameters.
With batch norm, the ranks' running statistics are averaged at each epoch end
(test_distributed_batch_norm).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import limit_file_size, run_whole, write_raster

from geopix2pix.chips.dataset import ChipDataset
from geopix2pix.chips.export import export_chips
from geopix2pix.cli import main
from geopix2pix.models import build_generator, load_model
from geopix2pix.training import train
from geopix2pix.training.checkpoint import load_checkpoint

OPTIONS = dict(recipe="paper",
               ngf=4, ndf=4, n_layers=2, norm="instance", max_steps=6, epochs=1, decay_epochs=1,
               workers=0, device="cpu", quiet=True)
PACKAGE = Path(load_checkpoint.__code__.co_filename).parents[2]  # (the geopix2pix tested)
AUDIT = """
import atexit, os
_watch, _log, _rank = (os.environ.get(k) for k in ("AUDIT_WATCH", "AUDIT_LOG", "RANK"))
if _watch and _log and _rank is not None:
    _seen = []
    _write = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def _hook(event, args):
        if event == "open" and isinstance(args[0], (str, os.PathLike)):
            mode, flags = args[1], args[2]
            if (mode is None and flags & _write) or (mode and any(c in mode for c in "wax+")):
                _seen.append(os.fspath(args[0]))
        elif event in ("os.rename", "os.replace", "os.link"):
            _seen.append(os.fspath(args[1]))
        elif event in ("os.mkdir", "os.remove", "shutil.rmtree"):
            _seen.append(os.fspath(args[0]))

    import sys
    sys.addaudithook(_hook)

    def _dump():
        inside = [p for p in _seen if os.path.abspath(p).startswith(_watch)]
        with open(os.path.join(_log, f"rank{_rank}.txt"), "w") as f:
            f.write("\\n".join(inside))

    atexit.register(_dump)
"""


def torchrun(args: list[str], tmp: Path, watch: Path | None = None,
             file_size: int | None = None) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 ARGS` on the CPU, one thread per process
    (with ``file_size``, no process may write a file larger than that)."""
    hook = tmp / "audit"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(AUDIT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join((str(hook),
                                                                              str(PACKAGE))),
           "AUDIT_WATCH": str(watch.resolve()) if watch else "", "AUDIT_LOG": str(hook)}
    return run_whole([sys.executable, "-m", "torch.distributed.run", "--standalone",
                      "--nproc-per-node", "2", *args], timeout=300, env=env,
                     preexec_fn=None if file_size is None else limit_file_size(file_size))


def test_an_error_every_rank_meets_is_said_once(tmp_path):
    """A reviewer's torchrun runs printed a bad option's or a missing folder's error once per
    rank; each launch now says it once."""
    for args, error in ((["train", str(tmp_path / "none"), "-o", str(tmp_path / "run")],
                         "no such chips folder"),
                        (["train", str(tmp_path), "-o", str(tmp_path / "run"), "--bogus"],
                         "No such option")):
        done = torchrun(["-m", "geopix2pix", *args], tmp_path)
        assert done.returncode != 0
        said = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert len(said) == 1 and error in said[0], done.stderr[-3000:]


def audit(tmp: Path, rank: int) -> list[str]:
    return [p for p in (tmp / "audit" / f"rank{rank}.txt").read_text().splitlines() if p]


def cli_args(options: dict) -> list[str]:
    args = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args


def make_chips(folder: Path) -> Path:
    """32 px chips of a smooth DEM and its hillshade (33 train)."""
    y, x = np.mgrid[0:128, 0:128]
    dem = 100 + 30 * np.sin(x / 11.0) + 25 * np.cos(y / 13.0) + 10 * np.sin((x + y) / 7.0)
    gy, gx = np.gradient(dem)
    shade = np.clip(128 + 40 * (gx - gy), 0, 255).astype("uint8")
    source = write_raster(folder / "dem.tif", dem.astype("float32"))
    target = write_raster(folder / "shade.tif", shade)
    export_chips(source, target, folder / "chips", chip_size=32, stride=16, split_block=64,
                 workers=1, progress=False)
    return folder / "chips"


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    return make_chips(tmp_path_factory.mktemp("ddp"))


@pytest.fixture(scope="module")
def one_process(chips, tmp_path_factory):
    """The reference: one process, batch 4 (= 2 ranks x 2)."""
    return train(chips, tmp_path_factory.mktemp("one") / "run", batch_size=4, **OPTIONS)


@pytest.fixture(scope="module")
def two_ranks(chips, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two")
    run = tmp / "run"
    done = torchrun(["-m", "geopix2pix", "train", str(chips), "-o", str(run), "--batch-size",
                     "2", *cli_args(OPTIONS)], tmp, watch=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp, run, done


def rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def outputs(model_path: Path, chips: Path) -> torch.Tensor:
    generator = load_model(model_path).generator
    val = ChipDataset(chips, "val")
    with torch.no_grad():
        return generator(torch.stack([val[i]["source"] for i in range(len(val))]))


def assert_like_one_process(run: Path, reference: Path, chips: Path) -> None:
    ours, ref = rows(run), rows(reference)
    assert [(r["epoch"], r["step"], r["lr"]) for r in ours] == \
        [(r["epoch"], r["step"], r["lr"]) for r in ref]
    for key in ("loss_g_gan", "loss_g_l1", "loss_d", "val_l1", "val_mae", "val_psnr", "val_ssim"):
        assert float(ours[-1][key]) == pytest.approx(float(ref[-1][key]), rel=1e-4), key
    spec = load_model(reference / "model.safetensors").spec
    torch.manual_seed(0)
    initial = build_generator(spec).eval()
    val = ChipDataset(chips, "val")
    with torch.no_grad():
        start = initial(torch.stack([val[i]["source"] for i in range(len(val))]))
    trained = outputs(reference / "model.safetensors", chips)
    moved = float((trained - start).abs().max())
    assert moved > 1e-2  # training changed the outputs ...
    diff = float((outputs(run / "model.safetensors", chips) - trained).abs().max())
    assert diff < 1e-3 * moved, (diff, moved)  # ... the same way on 2 ranks as on one


def test_two_ranks_keep_replicas_identical_and_train_like_one_process(two_ranks, one_process,
                                                                      chips):
    tmp, run, done = two_ranks
    info = json.loads((run / "train.json").read_text())
    assert (info["world_size"], info["batch_size_per_rank"], info["effective_batch_size"]) == \
        (2, 2, 4)
    replicas = info["replicas"]
    assert replicas["identical"] and len(set(replicas["generator"])) == 1
    assert len(replicas["generator"]) == 2 and len(set(replicas["discriminator"])) == 1
    assert "batch 2 per rank x 2 = 4 per step" in done.stderr
    assert done.stderr.count("training on") == 1  # rank 0 alone logs
    meta = load_model(run / "model.safetensors").metadata["training"]
    assert (meta["world_size"], meta["effective_batch_size"], meta["step"]) == (2, 4, 6)
    assert_like_one_process(run, one_process.run_dir, chips)


def test_two_ranks_fit_and_score_the_baselines_of_one_process(two_ranks, one_process):
    """Each rank reads its shard of the chips and the sums are added: one fit, not two."""
    _, run, done = two_ranks
    ours = json.loads((run / "baselines.json").read_text())
    ref = json.loads((one_process.run_dir / "baselines.json").read_text())
    assert ours["pixels"] == ref["pixels"]
    for name in ("linear", "constant"):
        for key in ("weight", "bias"):
            np.testing.assert_allclose(ours["maps"][name][key], ref["maps"][name][key],
                                       rtol=1e-9, atol=1e-12)
        for key, value in ref["scores"][name].items():
            assert ours["scores"][name][key] == pytest.approx(value, rel=1e-6), key
    assert done.stdout.count("model-best: val MAE") == 1  # rank 0 alone reports


def test_only_rank_0_writes_files(two_ranks, one_process):
    tmp, run, _ = two_ranks
    written = audit(tmp, 0)
    assert any(p.endswith("checkpoint.pt") for p in written)  # the hook saw rank 0's writes
    assert audit(tmp, 1) == []
    names = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    reference = one_process.run_dir
    assert names == sorted(str(p.relative_to(reference)) for p in reference.rglob("*"))


STOP_AT_3 = """
import atexit, gc, sys


@atexit.register  # runs last: after geopix2pix's own exit handler
def count_ddp():
    alive = [o for o in gc.get_objects() if type(o).__name__ == "DistributedDataParallel"]
    print(f"DDP wrappers alive at exit: {len(alive)}", file=sys.stderr)


from geopix2pix.training import train
try:
    train(sys.argv[1], sys.argv[2], callback=lambda info: info["step"] == 3, batch_size=2,
          **{options})
except KeyboardInterrupt:
    print("stopped", file=sys.stderr)
"""


def test_two_rank_checkpoint_resumes_in_one_process(chips, one_process, tmp_path, capsys):
    run = tmp_path / "run"
    script = tmp_path / "stop_at_3.py"
    script.write_text(textwrap.dedent(STOP_AT_3.replace("{options}", repr(OPTIONS))))
    done = torchrun([str(script), str(chips), str(run)], tmp_path)
    assert done.returncode == 0 and done.stderr.count("stopped") == 2, done.stderr[-3000:]
    # freed while Python still ran: freed during its shutdown, gloo's threads could abort it
    assert done.stderr.count("DDP wrappers alive at exit: 0") == 2, done.stderr[-3000:]
    saved = load_checkpoint(run)
    assert (saved["step"], saved["world_size"], len(saved["rng_ranks"])) == (3, 2, 2)
    assert not (run / "metrics.csv").exists()  # stopped mid-epoch, before any epoch end

    base = ["train", str(chips), "-o", str(run), "--resume", *cli_args(OPTIONS)]
    assert main(base + ["--batch-size", "2"]) == 2  # another effective batch: refused
    assert "resume with --batch-size 4" in capsys.readouterr().err
    assert main(base + ["--batch-size", "4"]) == 0
    assert load_checkpoint(run)["step"] == 6
    assert_like_one_process(run, one_process.run_dir, chips)


def test_a_write_failing_on_rank_0_stops_every_rank_with_its_one_line(chips, tmp_path):
    """Rank 0 cannot write the model file (files may not pass 30 kB, as on a full disk): it
    says so in one line, and rank 1, waiting for it, stops with it (exit 2) instead of
    hanging or printing a lost-connection traceback of its own."""
    run = tmp_path / "run"
    done = torchrun(["-m", "geopix2pix", "train", str(chips), "-o", str(run), "--batch-size",
                     "2", *cli_args(OPTIONS)], tmp_path, file_size=30_000)
    assert done.returncode != 0
    assert done.stderr.count("Error: cannot write") == 1, done.stderr[-3000:]
    assert f"{run / 'model.safetensors'} (File too large): the file is larger than this " \
        "file system" in done.stderr
    assert "[rank1]" not in done.stderr and "[rank0]" not in done.stderr  # no traceback
    assert "exitcode  : 2" in done.stderr  # rank 1 stopped on it (torchrun's summary)
    assert not (run / "model.safetensors").exists()


WRITER_FAILS = """
import sys
import torch
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.runtime import distributed


def interrupted():
    raise KeyboardInterrupt


def full():
    raise GeoPix2PixError("cannot write x.tif (No space left on device)")


distributed.init_from_env(torch.device("cpu"))
for action in (interrupted, full):
    try:
        distributed.writer_first(action)
    except BaseException as exc:
        print(f"rank {distributed.rank()}: {type(exc).__name__}", file=sys.stderr, flush=True)
distributed.cleanup()
"""


def test_a_failed_or_interrupted_write_on_rank_0_stops_every_rank_the_same_way(tmp_path):
    """writer_first: rank 0 interrupted -> every rank KeyboardInterrupt; rank 0's error ->
    its one line printed once, at once, and the other ranks ReportedElsewhere."""
    script = tmp_path / "writer_fails.py"
    script.write_text(WRITER_FAILS)
    done = torchrun([str(script)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # found anywhere in stderr: two ranks printing at the same moment can share a line
    said = r"rank \d: (?:GeoPix2PixError|KeyboardInterrupt|ReportedElsewhere|\w+Error)"
    assert sorted(re.findall(said, done.stderr)) == [
        "rank 0: GeoPix2PixError", "rank 0: KeyboardInterrupt", "rank 1: KeyboardInterrupt",
        "rank 1: ReportedElsewhere"], done.stderr[-3000:]
    assert done.stderr.count("Error: cannot write x.tif (No space left on device)") == 1


FAIL_AT_3 = """
import atexit, gc, sys


@atexit.register  # runs last: after geopix2pix's own exit handler
def count_ddp():
    alive = [o for o in gc.get_objects() if type(o).__name__ == "DistributedDataParallel"]
    print(f"DDP wrappers alive at exit: {len(alive)}", file=sys.stderr)


from geopix2pix.training import train


def fail(info):
    if info["step"] == 3:
        raise RuntimeError("a bug in the callback")


train(sys.argv[1], sys.argv[2], callback=fail, batch_size=2, **{options})
"""


def test_a_run_ending_in_an_uncaught_exception_frees_ddp_before_python_exits(chips, tmp_path):
    """The traceback Python keeps of an uncaught exception (sys.last_traceback) holds the
    trainer through exit; its DDP wrappers are let go all the same."""
    script = tmp_path / "fail_at_3.py"
    script.write_text(textwrap.dedent(FAIL_AT_3.replace("{options}", repr(OPTIONS))))
    done = torchrun([str(script), str(chips), str(tmp_path / "run")], tmp_path)
    assert done.returncode != 0 and "a bug in the callback" in done.stderr
    assert done.stderr.count("DDP wrappers alive at exit: 0") == 2, done.stderr[-3000:]


@contextlib.contextmanager
def long_run(chips: Path, run: Path, ready: str, **options):
    """torchrun training two ranks on a run too long to end by itself (`options` over OPTIONS),
    yielding (torchrun, its ranks' pids) once `run` holds the file `ready`; the ranks are
    killed afterwards had they run on (torchrun starts each in a session of its own)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               "2", "-m", "geopix2pix", "train", str(chips), "-o", str(run), "--batch-size", "2",
               *cli_args({**OPTIONS, "max_steps": 1_000_000, **options})]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PACKAGE)}
    ranks: list[int] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env) as launcher:
        try:
            deadline = time.monotonic() + 240
            while not (run / ready).exists():
                assert time.monotonic() < deadline and launcher.poll() is None, \
                    launcher.stderr.read()[-3000:] if launcher.poll() is not None else "slow"
                time.sleep(0.5)
            ranks += _children(launcher.pid)
            yield launcher, ranks
        finally:
            launcher.kill()  # (a failed wait: Popen's exit would wait for the run's end)
            for rank in ranks:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rank, signal.SIGKILL)


def test_the_ranks_stop_when_torchrun_itself_is_killed(chips, tmp_path):
    """A reviewer's `kill -9` of torchrun (as the OOM killer would) left both ranks training
    on to the end of the run, writing its folder. They now stop as SIGTERM stops them: at a
    step's end, checkpoint saved, exit 143, rank 0 saying what is left."""
    run = tmp_path / "run"
    with long_run(chips, run, "train.json", val_every=1_000_000) as (launcher, ranks):
        time.sleep(2)  # (training)
        launcher.kill()  # torchrun alone, not its ranks
        # the ranks hold the pipes: they are read to the end once both ranks have ended
        _, err = launcher.communicate(timeout=120)
    assert len(ranks) == 2
    assert f"Stopped: continue from {run / 'checkpoint.pt'} with --resume" in err, err[-3000:]
    assert load_checkpoint(run)["step"] < 1_000_000


def test_a_rank_killed_mid_run_leaves_the_other_one_line(chips, tmp_path):
    """A reviewer killed rank 1 (as the OOM killer would) after the first validation: rank 0
    printed gloo's 63-line 'Connection reset by peer' traceback. It now says in one line that
    another process of the run ended, and which checkpoint to continue from (or, when
    torchrun's SIGTERM to it comes first, that it stopped)."""
    run = tmp_path / "run"
    with long_run(chips, run, "checkpoint.pt", val_every=8) as (launcher, ranks):
        os.kill(next(pid for pid in ranks if _rank_of(pid) == 1), signal.SIGKILL)
        _, err = launcher.communicate(timeout=180)
    assert "[rank0]" not in err and "pair.cc" not in err, err[-3000:]  # no traceback
    lines = [line for line in err.splitlines() if "another torchrun process" in line
             or line.startswith("Stopped")]
    assert len(lines) == 1 and f"continue from {run / 'checkpoint.pt'}" in lines[0], err[-3000:]


DIES_AT_WRAP = """
import os
if os.environ.get("RANK") == "1":
    import signal
    from geopix2pix.runtime import distributed

    def _dies(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)  # (as the OOM killer would)

    distributed.wrap = _dies
"""


def test_a_rank_lost_during_the_set_up_leaves_the_other_one_line(chips, tmp_path):
    """A reviewer's rank 1 killed while DDP was being built (the set-up, before the first
    step) left rank 0 with gloo's traceback, then a second one from torchrun's SIGTERM during
    the exit: the lost-process line covered the training loop alone."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(DIES_AT_WRAP)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join((str(hook), str(PACKAGE)))}
    done = run_whole([sys.executable, "-m", "torch.distributed.run", "--standalone",
                      "--nproc-per-node", "2", "-m", "geopix2pix", "train", str(chips), "-o",
                      str(run), "--batch-size", "2", *cli_args(OPTIONS)], timeout=300, env=env)
    assert done.returncode != 0
    assert "[rank0]" not in done.stderr and "Exception ignored" not in done.stderr, \
        done.stderr[-3000:]
    # (or, when torchrun's SIGTERM to rank 0 comes first, how it stopped)
    said = [line for line in done.stderr.splitlines()
            if line.startswith(("Error:", "Stopped", "Terminated."))]
    assert len(said) == 1, done.stderr[-3000:]
    assert said[0].startswith(("Stopped", "Terminated.")) or (
        "lost contact with another torchrun process" in said[0]
        and said[0].endswith("nothing was saved yet: run it again")), said


def _rank_of(pid: int) -> int:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(v for v in environ if v.startswith(b"RANK="))[5:])


def _children(pid: int) -> list[int]:
    """The processes `pid` started (Linux)."""
    tasks = Path(f"/proc/{pid}/task")
    return [int(child) for task in tasks.iterdir()
            for child in (task / "children").read_text().split()]

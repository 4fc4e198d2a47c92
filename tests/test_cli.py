"""The command line itself: usage errors are one line, exit status 2, like every bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import geopix2pix as g
from geopix2pix.cli import main


@pytest.mark.parametrize("args, message", [
    (["predict", "--foo"], "Error: No such option '--foo'. (Did you mean one of: '--co', "
                           "'--cog'?) (see 'geopix2pix predict --help')"),
    (["predict", "a.tif", "b.tif"], "Error: Missing option '--model' / '-m'. "
                                    "(see 'geopix2pix predict --help')"),
    (["nosuch"], "Error: No such command 'nosuch'. (see 'geopix2pix --help')"),
    (["train", "chips", "-o", "run", "--norm", "group"],
     "Error: Invalid value for '--norm': 'group' is not one of 'batch', 'instance'. "
     "(see 'geopix2pix train --help')"),
])
def test_usage_errors_are_one_line_naming_the_help_to_read(args, message, capsys):
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [message] and captured.out == ""


def test_the_program_alone_shows_its_help(capsys):
    assert main([]) in (0, 2)  # click >= 8.2 exits 2, as `git` alone does
    err = capsys.readouterr()
    assert "export-chips" in err.out + err.err and "Error" not in err.out + err.err


LATE_SIGTERM = """
import atexit, os, signal
from geopix2pix import cli
cli.main = lambda: 0  # a command that finished
atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))  # SIGTERM while shutting down
cli.run()
"""


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_stop_after_the_command_finished_ends_with_its_status(signum):
    """A SIGTERM or Ctrl-C once the command is done (Python shutting down) raised from wherever
    shutdown was, printing a traceback: it now ends the process with the command's status."""
    done = subprocess.run([sys.executable, "-c", LATE_SIGTERM.replace("SIGTERM", signum)],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (0, "")


CTRL_C_WHILE_LOADING = """
import builtins
real_import = builtins.__import__
def interrupted_import(name, *args, **kwargs):
    if name == "rasterio":  # Ctrl-C while the program loads its libraries
        raise KeyboardInterrupt
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupted_import
from geopix2pix.__main__ import run
run()
"""


def test_ctrl_c_while_the_program_loads_is_aborted_not_a_traceback():
    done = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_LOADING, "--help"],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr, done.stdout) == (130, "Aborted.\n", "")


SIGTERM_WHILE_LOADING = CTRL_C_WHILE_LOADING.replace(
    "raise KeyboardInterrupt", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")


def test_sigterm_while_the_program_loads_says_terminated():
    """SIGTERM's default ended a program still loading (its first 0.7 s) without a word."""
    done = subprocess.run([sys.executable, "-c", SIGTERM_WHILE_LOADING, "--help"],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr, done.stdout) == (143, "Terminated.\n", "")


def test_the_installed_program_runs_the_command_line():
    """The console script (pyproject's entry point, beside the interpreter pip installed into)."""
    program = Path(sys.executable).with_name("geopix2pix")
    done = subprocess.run([str(program), "--version"], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, f"geopix2pix, version {g.__version__}")


# --- messages: what a user reads ---------------------------------------------------------------

@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    import numpy as np
    from conftest import write_raster

    folder = tmp_path_factory.mktemp("rasters")
    data = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32)
    source, target = write_raster(folder / "s.tif", data), write_raster(folder / "t.tif", data[:1])
    g.export_chips(source, target, folder / "chips", chip_size=32, val_fraction=0, workers=0,
                   progress=False)
    return folder


def one_line(capsys, args) -> str:
    """Run the CLI, expect exit 2 and exactly one line on stderr; return it."""
    assert main([str(a) for a in args]) == 2
    captured = capsys.readouterr()
    assert len(captured.err.splitlines()) == 1 and captured.out == "", captured.err
    return captured.err.rstrip("\n")


def test_predict_help_says_how_the_default_bands_are_chosen(capsys):
    assert main(["predict", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert ("[default: the source bands chosen at export (e.g. 4,3,2) when the scene is like the "
            "training rasters, else all its bands but alpha; a scene giving another number of "
            "bands than the model takes needs --bands]") in text
    assert "all but alpha]" not in text


@pytest.mark.parametrize("option, value", [("--source-bands", "1-0"), ("--target-bands", "0")])
def test_band_zero_says_band_numbers_start_at_1(rasters, tmp_path, capsys, option, value):
    err = one_line(capsys, ["export-chips", rasters / "s.tif", rasters / "t.tif", "-o",
                            tmp_path / "c", option, value])
    assert err == (f"Error: {option} {value}: band numbers start at 1 (there is no band 0); "
                   "write bands like 1,2,3 or 1-3")
    assert not (tmp_path / "c").exists()


def test_encoder_weights_with_the_unet_names_the_option(rasters, tmp_path, capsys):
    err = one_line(capsys, ["train", rasters / "chips", "-o", tmp_path / "run",
                            "--encoder-weights", "X", "--max-steps", "1", "--device", "cpu",
                            "--recipe", "paper"])
    assert err == ("Error: --encoder-weights X: only an smp generator has an encoder to load "
                   "them into (--generator unet is trained from scratch); pass --generator "
                   "smp:<Architecture>:<encoder> (e.g. smp:Unet:resnet34) or drop "
                   "--encoder-weights")
    assert not (tmp_path / "run").exists()


def test_predict_with_a_run_folder_as_model_says_which_file(rasters, tmp_path, capsys):
    run = tmp_path / "dem_run"
    run.mkdir()
    args = ["predict", rasters / "s.tif", tmp_path / "o.tif", "-m", run]
    assert one_line(capsys, args) == (
        f"Error: {run} is a folder, not a model file; pass the model.safetensors (or "
        f"model-best.safetensors) that `geopix2pix train` writes in its run folder (there is "
        f"none in {run})")
    (run / "model.safetensors").write_bytes(b"")
    (run / "model-best.safetensors").write_bytes(b"")
    assert one_line(capsys, args) == (
        f"Error: {run} is a folder, not a model file; pass {run / 'model.safetensors'} (the "
        f"latest epoch) or {run / 'model-best.safetensors'} (the best validation score)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dem_run"]


def test_predict_into_a_link_says_so_with_or_without_overwrite(rasters, tmp_path, capsys,
                                                                 model_file):
    """Not "pass --overwrite", which was then refused: the link and its file stay."""
    real = tmp_path / "real.tif"
    real.write_text("kept")
    (tmp_path / "link.tif").symlink_to(real)
    for overwrite in ([], ["--overwrite"]):
        err = one_line(capsys, ["predict", rasters / "s.tif", tmp_path / "link.tif", "-m",
                                model_file, *overwrite])
        assert err.startswith(f"Error: {tmp_path / 'link.tif'} is a link (to {real})"), err
    assert (tmp_path / "link.tif").is_symlink() and real.read_text() == "kept"


def test_predict_into_a_folder_hints_out_dir(rasters, tmp_path, capsys, model_file):
    err = one_line(capsys, ["predict", rasters / "s.tif", tmp_path, "-m", model_file])
    assert err == (f"Error: OUT {tmp_path} is a folder; to write <scene name>.tif into it, pass "
                   f"--out-dir {tmp_path} (predict SCENES... --out-dir {tmp_path} -m MODEL)")
    err = one_line(capsys, ["predict", rasters, tmp_path / "o.tif", "-m", model_file])
    assert err == (f"Error: SCENE {rasters} is a folder, not a raster; pass its rasters (e.g. "
                   f"{rasters / '*.tif'}) with --out-dir DIR")
    assert list(tmp_path.iterdir()) == []


def test_warnings_start_with_lower_case_warning(rasters, tmp_path, capsys):
    out = tmp_path / "chips"
    assert main(["export-chips", str(rasters / "s.tif"), str(rasters / "t.tif"), "-o", str(out),
                 "--chip-size", "32", "-q", "--workers", "0", "--split-block", "512"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: 0 val chips") and "Warning" not in err


@pytest.mark.parametrize("option, value, message", [
    ("--lr", "-1", "Error: --lr -1.0: use a learning rate above 0 (e.g. 2e-4)"),
    ("--lambda-l1", "-2", "Error: --lambda-l1 -2.0: use 0 or more (a finite number)"),
    ("--lambda-l1", "nan", "Error: --lambda-l1 nan: use 0 or more (a finite number)"),
    ("--lr", "inf", "Error: --lr inf: use a learning rate above 0 (e.g. 2e-4)"),
    ("--lr", "3e38", "Error: --lr 3e+38: use at most 8.5e+37, whose first Adam step still "),
    ("--lr", "8.505e37", "Error: --lr 8.505e+37: use at most 8.5e+37, whose first Adam "),
    ("--workers", "1000", "Error: --workers 1000: this process may use "),
    ("--workers", "-1", "Error: --workers -1: use 0 or more (0 loads in the main process)"),
])
def test_train_numbers_out_of_range_name_the_option(tmp_path, capsys, option, value, message):
    assert main(["train", str(tmp_path / "chips"), "-o", str(tmp_path / "run"), option,
                 value]) == 2
    assert capsys.readouterr().err.strip().startswith(message)


@pytest.mark.parametrize("device, message", [
    ("gpu", "Error: --device gpu: use auto, cpu, cuda or cuda:N"),
    ("cuda:1", "Error: --device cuda:1: no CUDA device is available; use --device cpu"),
])
def test_train_predict_and_demo_check_their_device_alike(tmp_path, capsys, monkeypatch, device,
                                                         message):
    """--device is declared once (settings/common.py): the demo's took only auto, cpu or cuda."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", str(tmp_path / "chips"), "-o", str(tmp_path / "run"), "--device",
                 device]) == 2
    assert capsys.readouterr().err.strip() == message
    assert main(["predict", str(tmp_path / "s.tif"), str(tmp_path / "o.tif"), "-m",
                 str(tmp_path / "m.safetensors"), "--device", device]) == 2
    assert capsys.readouterr().err.strip() == message
    assert main(["demo", "-o", str(tmp_path / "demo"), "--device", device]) == 2
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "demo").exists()


def test_the_demo_command_prints_the_apis_warnings_as_lines(capsys):
    """The command line ignores GeoPix2PixWarnings (each command prints its own lines), but the
    demo runs the API: its warnings are shown as "warning: ..." lines."""
    import warnings

    from geopix2pix.cli.warning_lines import warnings_as_lines
    from geopix2pix.errors import GeoPix2PixWarning, warn_user

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=GeoPix2PixWarning)  # as main() sets
        with warnings_as_lines():
            warn_user("the held-out scene differs")
    assert capsys.readouterr().err == "warning: the held-out scene differs\n"


HELP_WITHOUT_TORCH = """
import sys
from geopix2pix.cli import main
for command in ([], ["export-chips"], ["train"], ["predict"], ["evaluate"], ["demo"]):
    assert main([*command, "--help"]) == 0
print(sorted(m for m in ("torch", "geopandas") if m in sys.modules))
"""


def test_every_help_starts_without_torch():
    """`geopix2pix --help` and each `COMMAND --help` import neither torch nor geopandas: the
    help of a command-line tool must come at once (torch alone takes seconds to import)."""
    done = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TORCH], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:]


def test_evaluate_json_to_standard_output_and_never_over_a_link_or_pipe(rasters, tmp_path,
                                                                        capsys):
    """`--json -` (or /dev/stdout) prints the JSON alone on stdout, the table on stderr. A
    --json that is a link or a pipe is refused even with --overwrite: the report is renamed
    into place, which replaced a root user's /dev/stdout link with a file."""
    import json
    import os

    pair = [rasters / "t.tif", rasters / "t.tif"]
    for target in ("-", "/dev/stdout"):
        assert main(["evaluate", *map(str, pair), "--json", target]) == 0
        captured = capsys.readouterr()
        assert json.loads(captured.out)["valid_pixels"] == 64 * 64
        assert "overall" in captured.err
    assert not Path("-").exists()
    real = tmp_path / "real.json"
    real.write_text("{}")
    (tmp_path / "link.json").symlink_to(real)
    os.mkfifo(tmp_path / "fifo.json")
    for overwrite in ([], ["--overwrite"]):  # (not "pass --overwrite", then refused)
        err = one_line(capsys, ["evaluate", *pair, "--json", tmp_path / "link.json", *overwrite])
        assert "link.json is a link (to " in err and "give the path of the file" in err
    err = one_line(capsys, ["evaluate", *pair, "--json", tmp_path / "fifo.json", "--overwrite"])
    assert "fifo.json is a device, pipe or socket" in err and "--json -" in err
    assert (tmp_path / "link.json").is_symlink() and real.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.json", "link.json", "real.json"]


def test_a_stop_while_an_error_is_said_ends_as_a_stop(tmp_path, monkeypatch, capsys):
    """torchrun sends SIGTERM to the other ranks as soon as one fails: once it came while rank
    0 was printing its own error line, and a traceback followed. Now it ends as a stop."""
    import click

    from geopix2pix.runtime.stopping import Terminated

    said = []

    def interrupted_echo(message=None, **kwargs):
        said.append(message)
        raise Terminated

    monkeypatch.setattr(click, "echo", interrupted_echo)
    assert main(["evaluate", str(tmp_path / "missing.tif"), str(tmp_path / "b.tif")]) == 143
    assert said and "missing.tif" in said[0]
    assert capsys.readouterr().err == "Terminated.\n"

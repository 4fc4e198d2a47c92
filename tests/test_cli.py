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


def test_a_sigterm_after_the_command_finished_ends_with_its_status():
    """A SIGTERM once the command is done (Python shutting down) raised Terminated from
    wherever shutdown was, printing a traceback: it now ends the process with the status."""
    done = subprocess.run([sys.executable, "-c", LATE_SIGTERM], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stderr) == (0, "")


CTRL_C_WHILE_LOADING = """
import builtins
real_import = builtins.__import__
def interrupted_import(name, *args, **kwargs):
    if name == "torch":  # Ctrl-C while the program loads its libraries
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


def test_the_installed_program_runs_the_command_line():
    """The console script (pyproject's entry point, beside the interpreter pip installed into)."""
    program = Path(sys.executable).with_name("geopix2pix")
    done = subprocess.run([str(program), "--version"], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, f"geopix2pix, version {g.__version__}")

"""The command line itself: usage errors are one line, exit status 2, like every bad input."""

from __future__ import annotations

import pytest

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

"""The `geopix2pix` command: a click group (like rasterio's `rio`), one small module per command
(registered in `COMMANDS`), each a thin layer over the Python API. Errors a user can fix
print one line and exit with 2."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import warnings

import click

from geopix2pix import __version__
from geopix2pix.cli.demo import demo_command
from geopix2pix.cli.evaluate import evaluate_command
from geopix2pix.cli.export_chips import export_chips_command
from geopix2pix.cli.predict import predict_command
from geopix2pix.cli.train import train_command
from geopix2pix.errors import (
    GeoPix2PixError,
    GeoPix2PixWarning,
    data_errors,
    error_line,
    was_reported,
)
from geopix2pix.runtime.ranks import first_to_say, stop_status
from geopix2pix.runtime.stopping import Terminated, raise_terminated


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="geopix2pix")
def cli() -> None:
    """geopix2pix: translate georeferenced rasters with Pix2Pix.

    export-chips -> train -> predict -> evaluate. Every output is a GeoTIFF on an exact grid.
    """


COMMANDS = (export_chips_command, train_command, predict_command, evaluate_command, demo_command)
for command in COMMANDS:
    cli.add_command(command)


# click >= 8.2 raises this for a group run without a command (older ones print the help)
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the group, turning GeoPix2PixError, and the errors of reading or
    writing data (a damaged file, a full disk), into one line and exit status 2. A Ctrl-C or
    SIGTERM while such an error is being said ends it as a stop does (torchrun sends SIGTERM
    to the other ranks as soon as one fails: it came while rank 0 was saying why, and its
    traceback followed)."""
    try:
        return _main(argv)
    except KeyboardInterrupt as stop:
        return stop_status(isinstance(stop, Terminated))


def _main(argv: list[str] | None) -> int:
    from rasterio.errors import NotGeoreferencedWarning

    # A raster without CRS is refused in our own words, or used with --allow-no-crs: rasterio's
    # multi-line warning about it says nothing more
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
            # the commands print "warning: ..." lines of their own
            warnings.filterwarnings("ignore", category=GeoPix2PixWarning)
            cli.main(args=argv, prog_name="geopix2pix", standalone_mode=False)
    except (GeoPix2PixError, *data_errors()) as exc:
        line = error_line(exc)
        if not was_reported(exc) and first_to_say(line):  # (torchrun: once, not per rank)
            click.echo(line, err=True)
        return 2
    except click.exceptions.Abort as exc:
        # Terminated, or a stop that says SIGTERM caused it (train's, also within the demo)
        return stop_status(getattr(exc.__cause__, "signum", None) == signal.SIGTERM)
    except _NO_ARGS_IS_HELP as exc:  # `geopix2pix` alone: the help, not an error
        exc.show()
        return exc.exit_code
    except click.UsageError as exc:  # click's own shows usage, a hint and the error: 3 lines
        where = exc.ctx.command_path if exc.ctx else "geopix2pix"
        line = f"Error: {exc.format_message()} (see '{where} --help')"
        if first_to_say(line):
            click.echo(line, err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


def _exit_with(code: int, signum, frame) -> None:
    """SIGTERM or Ctrl-C once the command is done (while Python shuts down): its outputs are
    complete, so end now with its exit status (rather than a traceback from wherever shutdown
    was)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def run() -> None:
    """The `geopix2pix` program: `main`, with SIGTERM stopping it as Ctrl-C does (by default
    it would end the process at once, leaving temporary files behind)."""
    signal.signal(signal.SIGTERM, raise_terminated)
    code = main()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, functools.partial(_exit_with, code))
    sys.exit(code)

"""The API's warnings as the program's "warning: ..." lines, printed as they come.

The command line ignores GeoPix2PixWarnings elsewhere (`cli.main`); a command that calls an API
function which warns while it works (the demo, export-chips) shows them this way, so a warning
found early (a raster's nodata, its orientation) is read before the work, not after it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import click

from geopix2pix.errors import GeoPix2PixWarning


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """GeoPix2PixWarnings as "warning: ..." lines on stderr, each time one is issued."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", GeoPix2PixWarning)
        shown = warnings.showwarning

        def show(message, category, *args, **kwargs) -> None:
            if issubclass(category, GeoPix2PixWarning):
                click.echo(f"warning: {message}", err=True)
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield

"""Option types shared by several commands."""

from __future__ import annotations

import click

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.raster.io import parse_bands

OFF = "  [default: off]"  # click shows no default for a flag that is off


class BandList(click.ParamType):
    """A 1-based band list: '1,2,3' or '1-3'."""

    name = "BANDS"

    def convert(self, value, param, ctx):
        """Parse the band list; a bad one is a one-line error naming the option."""
        if value is None or isinstance(value, list):
            return value
        try:
            return parse_bands(value)
        except ValueError as exc:
            option = param.opts[0] if param is not None and param.opts else "BANDS"
            shown = value if value.strip() else '""'
            raise GeoPix2PixError(f"{option} {shown}: {exc}") from None


BANDS = BandList()


def creation_options(ctx, param, values) -> dict[str, str]:
    """`--co NAME=VALUE ...` -> {NAME: VALUE}, as rasterio's `rio` commands take them."""
    options: dict[str, str] = {}
    for pair in values:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{pair!r}: use NAME=VALUE, e.g. ZLEVEL=1", ctx, param)
        options[name.strip().upper()] = value
    return options

"""The command line's options, derived from the settings (`geopix2pix.settings`): each command
takes ``@click_options(ItsSettings)`` and so the names, types, defaults, choices and help that
the settings declare once; plus the parameter types the settings' kinds need."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import Any

import click

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.raster.bands import parse_bands
from geopix2pix.settings.declare import Option, declared, flag_of

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


def _inverted(ctx, param, value: bool) -> bool:
    return not value


def mask_codes(ctx, param, text: str | None) -> list[float] | None:
    """--mask-values 3,8,9,10 -> [3.0, 8.0, 9.0, 10.0]; a slip is one line naming the option."""
    from geopix2pix.chips.masks import parse_mask_values

    return parse_mask_values(text)


KINDS: dict[str, dict[str, Any]] = {
    "file": dict(type=click.Path(dir_okay=False)),
    "output": dict(type=click.Path(), metavar="FILE"),  # checked by the API: one line, advice
    "folder": dict(type=click.Path(file_okay=False)),
    "bands": dict(type=BANDS),
    "gdal": dict(metavar="NAME=VALUE", multiple=True, callback=creation_options),
    "codes": dict(callback=mask_codes),
}


def click_options(settings: type, *, exclude: Iterable[str] = (),
                  last: Iterable[str] = ()) -> Callable[[Callable], Callable]:
    """Decorate a click command with an option for each command-line field of `settings`, in
    their order (those named in `last` at the end), but for those in `exclude`."""
    hints = typing.get_type_hints(settings)
    skipped, ending = set(exclude), list(last)
    fields = [(f, m) for f, m in declared(settings) if m.cli and f.name not in skipped]
    fields.sort(key=lambda item: ending.index(item[0].name) + 1 if item[0].name in ending else 0)

    def decorate(command: Callable) -> Callable:
        for field, meaning in reversed(fields):
            command = click.option(*_names(field.name, meaning),
                                   **_keywords(field, meaning, hints[field.name]))(command)
        return command

    return decorate


def _names(name: str, meaning: Option) -> list[str]:
    flag = flag_of(name, meaning)
    if meaning.negatable:
        flag = f"{flag}/--no-{flag[2:]}"
    return [flag, *([meaning.short] if meaning.short else []), name]


def _keywords(field: dataclasses.Field, meaning: Option, hint: Any) -> dict[str, Any]:
    """click.option's keywords for `field`: its type, default and help."""
    default = None if field.default is dataclasses.MISSING else field.default
    shown = meaning.shown_default
    keywords: dict[str, Any] = {}
    if _plain_type(hint) is bool and not meaning.negatable:
        keywords.update(is_flag=True, default=False)
        if meaning.inverted:
            keywords["callback"] = _inverted
        shown = shown or ("off" if not (default ^ meaning.inverted) else None)
    else:
        keywords.update(_value_type(meaning, hint))
        if meaning.kind != "gdal":
            keywords["default"] = default
    if meaning.metavar:
        keywords["metavar"] = meaning.metavar
    keywords["help"] = meaning.help + (f"  [default: {shown}]" if shown else "")
    return keywords


def _value_type(meaning: Option, hint: Any) -> dict[str, Any]:
    if meaning.kind is not None:
        return dict(KINDS[meaning.kind])
    if meaning.choices is not None:
        return dict(type=click.Choice(list(meaning.choices)))
    if meaning.minimum is not None:
        return dict(type=click.IntRange(min=meaning.minimum))
    plain = _plain_type(hint)
    return dict(type=plain) if plain in (int, float) else {}


def _plain_type(hint: Any) -> Any:
    """int for ``int | None``; the hint itself when it is not optional."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, type(int | None)) and len(
        args) == 1 else hint

"""`option(...)`: one option of a command, declared once as a dataclass field that carries what the
command line needs (help, choices, short flag, ...) beside its type and default.

The command line (`geopix2pix.cli.options.click_options`), the Python API's keyword checking
(`geopix2pix.settings.checking.from_keywords`) and what a run records all read these fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

KEY = "geopix2pix"  # the key of a field's metadata under which its `Option` is


@dataclass(frozen=True)
class Option:
    """What a field means on the command line and in a run's records.

    help: the --help text (a default that click cannot show goes in `shown_default`).
    choices: the values it takes (the CLI offers them; `check_declared` checks them).
    flag: its name on the command line when not the field's (``--steps`` for ``max_steps``).
    short: its one-letter alias (``-q``). metavar: its value's name in --help (``PX``).
    negatable: a boolean given as ``--x/--no-x`` (else a flag that sets it).
    inverted: a boolean the flag turns off (``--quiet`` sets ``progress`` False).
    kind: "file" or "folder" (a path), "output" (a file to write, that the API refuses
        when a folder), "bands" (1,2,3 or 1-3), "gdal" (repeated NAME=VALUE),
        "codes" (3,8,9,10: numbers).
    minimum: the least whole number it takes (`check_declared`; the command line's IntRange).
    shown_default: what --help says of the default (``[default: ...]``) where click shows none.
    cli: on the command line at all (else Python only, e.g. ``sample_size``).
    runtime: how a run goes rather than what it makes: not recorded, may change on --resume.
    """

    help: str = ""
    choices: tuple[str, ...] | None = None
    flag: str | None = None
    short: str | None = None
    metavar: str | None = None
    negatable: bool = False
    inverted: bool = False
    kind: str | None = None
    minimum: int | None = None
    shown_default: str | None = None
    cli: bool = True
    runtime: bool = False


def option(default: Any = None, *, factory: Any = None, **meaning: Any) -> Any:
    """A dataclass field with `default` (or a `factory` for a mutable one) and its `Option`."""
    metadata = {KEY: Option(**meaning)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def declared(settings: Any) -> list[tuple[dataclasses.Field, Option]]:
    """The fields of a settings dataclass (class or instance) with their `Option`, in order."""
    return [(f, f.metadata.get(KEY, Option(cli=False))) for f in dataclasses.fields(settings)]


def runtime_names(settings: Any) -> tuple[str, ...]:
    """The names of the options of `settings` that say how a run goes, not what it makes."""
    return tuple(f.name for f, meaning in declared(settings) if meaning.runtime)


def check_choice(settings: Any, name: str) -> None:
    """Refuse a value of option `name` outside its declared choices, naming its flag."""
    from geopix2pix.errors import GeoPix2PixError

    meaning = dict((f.name, m) for f, m in declared(settings))[name]
    value = getattr(settings, name)
    if meaning.choices is not None and value not in meaning.choices:
        raise GeoPix2PixError(f"{flag_of(name, meaning)} {value}: use one of "
                              f"{', '.join(meaning.choices)}")


def check_declared(settings: Any) -> None:
    """Refuse a value outside its option's declared choices or below its declared minimum (the
    API's; click's Choice and IntRange are the command line's), naming its flag."""
    from geopix2pix.errors import GeoPix2PixError

    for field, meaning in declared(settings):
        value = getattr(settings, field.name)
        if meaning.choices is not None and value is not None:
            check_choice(settings, field.name)
        if meaning.minimum is not None and value is not None and value < meaning.minimum:
            raise GeoPix2PixError(f"{flag_of(field.name, meaning)} {value}: use at least "
                                  f"{meaning.minimum}")


def flag(settings: Any, name: str) -> str:
    """The command-line flag of option `name` of a settings dataclass (class or instance)."""
    meaning = next((m for f, m in declared(settings) if f.name == name), Option())
    return flag_of(name, meaning)


def flag_of(name: str, meaning: Option) -> str:
    """The option's name on the command line: ``--batch-size`` for ``batch_size``."""
    return meaning.flag or "--" + name.replace("_", "-")

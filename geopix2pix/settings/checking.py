"""The Python API's options checked as the command line's are: a misspelt name or a value of the
wrong type is a one-line GeoPix2PixError naming the option and what it takes (``chip_size='64':
expected an integer``), not a TypeError from deep inside; `from_keywords` builds a command's
settings (`geopix2pix.settings`) so. Types come from the annotations of the function
or dataclass that takes the options; only the simple ones are checked (numbers, strings, bools,
lists and dicts of them, None); anything else (paths, models) is left to the code that uses it.

`api_function` does the same for the call itself: a misspelt keyword (``chipsize=64``), a
missing argument or one positional argument too many is a one-line GeoPix2PixError naming it
and the valid names, not Python's TypeError.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import numbers
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.settings.declare import check_declared

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)

_NAMES = {bool: "True or False", int: "an integer", float: "a number", str: "a string",
          type(None): "None"}


def from_keywords(settings: type[T], options: Mapping[str, Any], what: str) -> T:
    """`settings` (a dataclass of options) built from keyword `options` (`checked_keywords`);
    the dataclass checks the values."""
    built = settings(**checked_keywords(settings, options, what))
    check_declared(built)
    return built


def checked_keywords(settings: type, options: Mapping[str, Any], what: str) -> dict[str, Any]:
    """`options` for `settings` (a dataclass of options) as Python's own numbers: an unknown
    name or a value of the wrong type is a one-line GeoPix2PixError naming it (``unknown
    predict option(s): co; valid: ...``)."""
    known = [f.name for f in dataclasses.fields(settings)]
    unknown = [name for name in options if name not in known]
    if unknown:
        raise GeoPix2PixError(f"unknown {what} option(s): {', '.join(sorted(unknown))}; "
                              f"valid: {', '.join(sorted(known))}")
    return check_types(options, settings)


def check_types(values: Mapping[str, Any], owner: Any) -> dict[str, Any]:
    """`values` as Python's own numbers (numpy's 64 -> 64, a tuple of band numbers -> a list);
    GeoPix2PixError for the first whose type its annotation in `owner` (a function or dataclass)
    rules out."""
    hints = typing.get_type_hints(owner)
    checked = dict(values)
    for name, value in values.items():
        hint = hints.get(name)
        if hint is not None and _matches(value, hint) is False:
            raise GeoPix2PixError(f"{name}={value!r}: expected {_describe(hint)}")
        checked[name] = _plain(value)
    return checked


def _plain(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (numbers.Number, list, tuple)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, numbers.Integral) for v in value):
        return [int(v) for v in value]
    return value


def _matches(value: Any, hint: Any) -> bool | None:
    """Whether `value` fits `hint`; None when the hint is not one this checks."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        results = [_matches(value, arg) for arg in args]
        return None if None in results and not any(results) else any(results)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint in (str, type(None)):
        return isinstance(value, hint)
    if _is_path_type(hint):
        return isinstance(value, os.PathLike)
    if origin is Callable:
        return callable(value)
    if origin is Sequence and args:
        return isinstance(value, Sequence) and not isinstance(value, str) and all(
            _matches(item, args[0]) is not False for item in value)
    if origin is Mapping and len(args) == 2:
        return isinstance(value, Mapping) and all(
            _matches(k, args[0]) is not False and _matches(v, args[1]) is not False
            for k, v in value.items())
    return None


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if any(map(_is_path_type, args)):  # (str | os.PathLike: "a path")
            args = tuple(a for a in args if a is not str)
        return " or ".join(_describe(arg) for arg in args)
    if origin is Sequence and args:
        return f"a list of {_plural(args[0])}"
    if origin is Mapping and len(args) == 2:
        return f"a dict of {_plural(args[0])} to {_plural(args[1])}"
    if _is_path_type(hint):
        return "a path"
    if origin is Callable:
        return "a function"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _plural(hint: Any) -> str:
    described = _describe(hint)
    return {int: "integers", float: "numbers", str: "strings"}.get(
        hint, "paths" if described == "a path" else described)


def api_function(function: F | None = None, *, settings: type | None = None) -> Any:
    """Decorate a public API function (or a class's ``__init__``): a call that does not fit its
    signature is a one-line GeoPix2PixError (``unknown export_chips option(s): chipsize; valid:
    ...``) instead of a TypeError; otherwise the call is unchanged. With `settings` (the
    dataclass whose fields its ``**options`` take), a keyword that is neither an argument nor an
    option is refused so too, naming both. ``functools.wraps`` keeps the real signature for
    help() and IDEs."""
    if function is None:
        return functools.partial(api_function, settings=settings)
    signature = inspect.signature(function)
    name = _api_name(function)
    options = [f.name for f in dataclasses.fields(settings)] if settings is not None else None

    checked: dict[str, Any] | None = None  # the arguments whose type is checked (first call)

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal checked
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise GeoPix2PixError(_call_error(name, signature, args, kwargs, exc)) from None
        if options is not None:
            _refuse_unknown(name, signature, options, kwargs)
        if checked is None:
            checked = _checked_arguments(function, signature)
        listed = False
        for argument, hint in checked.items():
            if argument not in bound.arguments:
                continue
            if _takes_sequence(hint) and _one_pass(bound.arguments[argument]):  # (Path.glob's
                bound.arguments[argument], listed = list(bound.arguments[argument]), True  # paths
            if _matches(bound.arguments[argument], hint) is False:
                raise GeoPix2PixError(f"{name}(): {argument}={bound.arguments[argument]!r}: "
                                      f"expected {_describe(hint)}")
        return function(*bound.args, **bound.kwargs) if listed else function(*args, **kwargs)

    return typing.cast(F, call)


def _takes_sequence(hint: Any) -> bool:
    """Whether `hint` (``PathLike | Sequence[PathLike]``) takes a sequence (not a callback)."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) \
        else (hint,)
    return any(typing.get_origin(a) is Sequence for a in args)


def _one_pass(value: Any) -> bool:
    """An iterable that is not a sequence, a mapping, a string or a path (a generator, a set)."""
    return isinstance(value, Iterable) and not isinstance(
        value, (Sequence, Mapping, str, bytes, os.PathLike))


def _checked_arguments(function: Callable[..., Any], signature: inspect.Signature
                       ) -> dict[str, Any]:
    """The arguments of `function` whose hints are paths (``str | os.PathLike``, maybe None)
    or functions (``Callable``): checked before the call, which would otherwise fail deep
    inside (a path given as a number), or only at the end (a callback that is not one)."""
    found, names = {}, inspect.unwrap(function).__globals__  # (the module that wrote the hints)
    for argument, parameter in signature.parameters.items():
        try:
            hint = eval(parameter.annotation, names) \
                if isinstance(parameter.annotation, str) else parameter.annotation
        except Exception:  # a name imported for type checkers only
            continue
        if _is_path_or_callable(hint):
            found[argument] = hint
    return found


def _is_path_type(hint: Any) -> bool:
    """``os.PathLike`` or a class of paths (``pathlib.Path``)."""
    return hint is os.PathLike or (isinstance(hint, type) and issubclass(hint, os.PathLike))


def _is_path_or_callable(hint: Any) -> bool:
    """A function, a path (``str | os.PathLike``, ``str | Path``), or paths: one of them or a
    sequence of them (``PathLike | Sequence[PathLike]``), maybe None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] \
        if typing.get_origin(hint) in (typing.Union, types.UnionType) else [hint]
    if all(typing.get_origin(a) is Callable for a in args):
        return bool(args)
    sequences = [a for a in args if typing.get_origin(a) is Sequence]
    paths = [a for a in args if a not in sequences]
    return any(map(_is_path_type, paths)) and all(a is str or _is_path_type(a) for a in paths) \
        and all(_is_path_or_callable(typing.get_args(a)[0]) for a in sequences
                if typing.get_args(a))


def _refuse_unknown(name: str, signature: inspect.Signature, options: list[str],
                    kwargs: dict) -> None:
    unknown = [k for k in kwargs if k not in signature.parameters and k not in options]
    if unknown:
        valid = sorted({*_keywords(signature), *options})
        raise GeoPix2PixError(f"unknown {name} option(s): {', '.join(unknown)}; valid: "
                              f"{', '.join(valid)}")


def _api_name(function: Callable[..., Any]) -> str:
    """``export_chips``; ``ChipDataset`` for ``ChipDataset.__init__``."""
    if function.__name__ == "__init__":
        return function.__qualname__.rsplit(".", 2)[-2]
    return function.__name__


def _keywords(signature: inspect.Signature) -> list[str]:
    return sorted(name for name, p in signature.parameters.items()
                  if p.kind in _KEYWORD_KINDS and name != "self")


def _call_error(name: str, signature: inspect.Signature, args: tuple, kwargs: dict,
                exc: TypeError) -> str:
    """The one line for a call `signature.bind` refused with `exc`."""
    valid = _keywords(signature)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD
                    for p in signature.parameters.values())
    unknown = [] if takes_any else [k for k in kwargs if k not in valid]
    if unknown:
        return f"unknown {name} option(s): {', '.join(unknown)}; valid: {', '.join(valid)}"
    positional = [n for n, p in signature.parameters.items()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and n != "self"]
    if "too many positional" in str(exc):
        given = len(args) - ("self" in signature.parameters)
        return (f"{name}() takes at most {len(positional)} positional argument(s) "
                f"({', '.join(positional)}) but got {given}; pass the others by name")
    extra = [k for k in kwargs if k not in signature.parameters]  # into **options
    missing = str(exc).rsplit("'", 2)[-2] if str(exc).count("'") >= 2 else ""
    close = difflib.get_close_matches(missing, extra, n=1)
    if close:  # predict(modle=...): say the slip, not only that `model` is missing
        return (f"{name}(): missing '{missing}' (given as '{close[0]}'?); "
                f"see help(geopix2pix.{name})")
    return f"{name}(): {exc}; see help(geopix2pix.{name})"

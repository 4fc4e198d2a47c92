"""Every module of geopix2pix opens with a docstring saying what it is for, in a short first
paragraph (details, if any, follow it), so a reader knows what a file holds before reading it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import geopix2pix

PACKAGE = Path(geopix2pix.__file__).parent
MAX_OPENING_LINES = 10  # the first paragraph: what the module is for, not all it does


def undocumented(package: Path) -> list[str]:
    """The modules under ``package`` (as paths relative to it) without a module docstring, or
    whose docstring's first paragraph runs over `MAX_OPENING_LINES` lines."""
    found = []
    for path in sorted(package.rglob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        opening = docstring.strip().split("\n\n")[0].splitlines()
        if not opening:
            found.append(f"{path.relative_to(package)}: no module docstring")
        elif len(opening) > MAX_OPENING_LINES:
            found.append(f"{path.relative_to(package)}: first paragraph of {len(opening)} lines")
    return found


def test_every_module_says_what_it_is_for():
    assert undocumented(PACKAGE) == []


@pytest.mark.parametrize("text, expected", [
    ("", "empty.py: no module docstring"),
    ("import os\n", "empty.py: no module docstring"),
    ("# a comment is not a docstring\nx = 1\n", "empty.py: no module docstring"),
    ('""" """\n', "empty.py: no module docstring"),
    ('"""' + "line\n" * 11 + '"""\n', "empty.py: first paragraph of 11 lines"),
])
def test_a_module_without_a_short_docstring_is_caught(tmp_path, text, expected):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "__init__.py").write_text('"""A package."""\n')
    (tmp_path / "sub" / "empty.py").write_text(text)
    assert undocumented(tmp_path) == [f"{Path('sub', expected)}"]


def test_a_short_docstring_with_details_after_it_passes(tmp_path):
    (tmp_path / "ok.py").write_text('"""What it is for.\n\n' + "detail\n" * 30 + '"""\n')
    assert undocumented(tmp_path) == []

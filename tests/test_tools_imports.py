"""Every name that tools/ and examples/ import from geopix2pix exists, also those imported inside
functions that no test runs (a bench's `TrainingStopped` moved and only a run found it)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*(ROOT / "tools").glob("*.py"), *(ROOT / "examples").glob("*.py")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_names_a_script_imports_from_geopix2pix_exist(script):
    imported = [(node.module, alias.name) for node in ast.walk(ast.parse(script.read_text()))
                if isinstance(node, ast.ImportFrom) and node.module
                and node.module.split(".")[0] == "geopix2pix" for alias in node.names]
    for module, name in imported:
        owner = importlib.import_module(module)
        assert hasattr(owner, name) or importlib.util.find_spec(f"{module}.{name}"), \
            f"{script.name}: from {module} import {name}"

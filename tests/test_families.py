"""Model families as plug-ins: the run (trainer, loop, run folder, checkpoint) reaches a family
only through `families.base.ModelFamily`, and families are found by name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import geopix2pix.training as training
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.training.families import FAMILIES, ModelFamily, family_for

RUN_MODULES = ("trainer.py", "loop.py", "run_folder.py", "run_checkpoint.py")
# what belongs to a family, not to the run
FAMILY_PARTS = {"step", "networks", "losses", "ema", "validate", "samples", "classes",
                "families.pix2pix", "geopix2pix.models.baseline", "geopix2pix.models.metadata"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("module", RUN_MODULES)
def test_the_run_imports_no_part_of_a_family(module):
    imported = {name.lstrip(".") for name in _imports(Path(training.__file__).parent / module)}
    assert not imported & FAMILY_PARTS, imported & FAMILY_PARTS


def test_families_are_found_by_name():
    assert family_for("pix2pix") is FAMILIES["pix2pix"]
    assert issubclass(FAMILIES["pix2pix"], ModelFamily)
    with pytest.raises(GeoPix2PixError, match="--model nope: unknown model family; use one of "
                                              "pix2pix"):
        family_for("nope")

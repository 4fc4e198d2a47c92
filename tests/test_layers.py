"""Data flows one way through geopix2pix: each package imports only from itself and earlier layers.

The layers, earliest first (`LAYERS`): the support modules (errors, jsonvalues, metrics, the
package's ``__version__``), runtime, raster, settings (torch-free option declarations), then the
stages chips, models, training, the prediction engine, the per-scene prediction API, evaluation,
demo and plot, the lazy public API (``geopix2pix/__init__.py``), the CLI, and ``__main__``; and
prediction and evaluation, though after training, never import it (`APART`). So settings never
imports a stage above it, and nothing but ``__main__`` imports the CLI.

The check reads the source with `ast` and runs none of it. It counts every import: top-level or
inside a function, absolute or relative (``from . import x``, ``from ..raster import io``), and
imports by name (a string constant such as ``"geopix2pix.chips.export:export_chips"`` in a lazy
import table, or an `importlib.import_module` argument). Imports under ``if TYPE_CHECKING:`` count
too: they run under type checkers and IDEs, and a type from a later layer in an earlier one's
signatures is the same tangle as an import at run time.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

import geopix2pix

PACKAGE = Path(geopix2pix.__file__).parent

# Earliest first. A module belongs to the layer of the longest dotted prefix listed here; a module
# may import from its own layer and earlier ones.
LAYERS: list[tuple[str, ...]] = [
    ("geopix2pix.errors", "geopix2pix.jsonvalues", "geopix2pix.metrics",
     "geopix2pix.__version__"),  # support, below everything (set before the root imports)
    ("geopix2pix.runtime",),
    ("geopix2pix.raster",),
    ("geopix2pix.settings",),
    ("geopix2pix.chips",),
    ("geopix2pix.models",),
    ("geopix2pix.training",),
    ("geopix2pix.prediction.engine",),
    ("geopix2pix.prediction",),
    ("geopix2pix.evaluation",),
    ("geopix2pix.demo", "geopix2pix.plot"),
    ("geopix2pix",),  # the public API, imported lazily by name
    ("geopix2pix.cli",),
    ("geopix2pix.__main__",),
]

ROOT = LAYERS.index(("geopix2pix",))
# Later layers that still must not import an earlier one: prediction runs a model file, never the
# training code that wrote it.
APART = {(LAYERS.index((later,)), LAYERS.index((earlier,))) for later, earlier in [
    ("geopix2pix.prediction.engine", "geopix2pix.training"),
    ("geopix2pix.prediction", "geopix2pix.training"),
    ("geopix2pix.evaluation", "geopix2pix.training"),
]}

# (importing module, imported module) pairs that break the order today, each with the reason it
# is allowed for now; the lead removes them as the code is fixed. Empty: no layer is broken.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}

_BY_NAME = re.compile(r"geopix2pix(\.\w+)+(:\w+)?")


def layer_of(name: str) -> int | None:
    """The index in `LAYERS` of a dotted module (or module.attribute) name, None if it is outside
    the package or in no layer."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        for index, layer in enumerate(LAYERS):
            if prefix in layer:
                return index
    return None


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    """The dotted name of the module at `path` (under the folder `root` that holds the package),
    and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def imported_names(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted name) of everything the module imports, wherever the import statement is;
    ``from X import y`` gives ``X.y`` (y may be a module or an attribute of X)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and _BY_NAME.fullmatch(node.value)):
            found.append((node.lineno, node.value.replace(":", ".")))
    return found


def excepted(module: str, name: str) -> bool:
    """Whether `module` importing `name` is one of the `KNOWN_EXCEPTIONS`."""
    return any(module == importer and (name == imported or name.startswith(imported + "."))
               for importer, imported in KNOWN_EXCEPTIONS)


def violations(root: Path) -> list[str]:
    """Every import against the layer order in the package ``root/geopix2pix``, as
    ``module:line imports name``, and every module that belongs to no layer."""
    found = []
    for path in sorted((root / "geopix2pix").rglob("*.py")):
        module, is_package = module_name(path, root)
        own = layer_of(module)
        if own is None or (own == ROOT and module != "geopix2pix"):
            found.append(f"{module} is in no layer of LAYERS")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, name in imported_names(tree, module, is_package):
            target = layer_of(name)
            against = target is not None and (target > own or (own, target) in APART)
            if against and not excepted(module, name):
                found.append(f"{module}:{line} imports {name}")
    return found


def test_every_import_goes_to_the_same_or_an_earlier_layer():
    assert violations(PACKAGE.parent) == []


def test_every_layer_names_modules_that_exist():
    """A renamed or removed package must leave `LAYERS` too (a layer of nothing checks nothing)."""
    modules = {module_name(path, PACKAGE.parent)[0] for path in PACKAGE.rglob("*.py")}
    for prefix in [prefix for layer in LAYERS for prefix in layer]:
        if prefix != "geopix2pix.__version__":
            assert any(m == prefix or m.startswith(prefix + ".") for m in modules), prefix


def test_known_exceptions_are_still_needed():
    """An exception whose import is gone must leave the list (so it cannot hide a new one)."""
    for (module, imported), reason in KNOWN_EXCEPTIONS.items():
        assert reason, f"{module} -> {imported} needs its reason"
        path = PACKAGE.parent / Path(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [name for _, name in imported_names(tree, module, path.name == "__init__.py")]
        assert any(name == imported or name.startswith(imported + ".") for name in names), \
            f"{module} no longer imports {imported}: remove it from KNOWN_EXCEPTIONS"


# A small package that keeps the order, and imports that break it in each way the check reads.
CLEAN = {
    "__init__.py": "__version__ = '0'\nfrom geopix2pix.errors import E\n"
                   "_LAZY = {'train': 'geopix2pix.training.trainer:train'}\n",
    "errors.py": "class E(Exception):\n    pass\n",
    "raster/__init__.py": "",
    "raster/io.py": "from geopix2pix.errors import E\nfrom geopix2pix import __version__\n",
    "settings/__init__.py": "",
    "settings/predict.py": "from ..raster import io\nfrom . import common\n",
    "training/__init__.py": "from .trainer import train\n",
    "training/trainer.py": "from geopix2pix.settings.predict import io\n",
    "prediction/__init__.py": "",
    "prediction/engine/__init__.py": "",
    "prediction/engine/blend.py": "import geopix2pix.raster.io\n",
    "prediction/predictor.py": "from .engine import blend\n",
    "cli/__init__.py": "from geopix2pix.prediction.predictor import x\n",
    "__main__.py": "from geopix2pix.cli import run\n",
}
PLANTED = {
    "top-level absolute": ("settings/predict.py",
                           "from geopix2pix.prediction.engine.blend import BLENDS\n",
                           "geopix2pix.settings.predict:1 imports geopix2pix.prediction.engine"),
    "relative inside a function": ("raster/io.py",
                                   "def f():\n    from ..chips import export\n",
                                   "geopix2pix.raster.io:2 imports geopix2pix.chips.export"),
    "relative package import": ("prediction/engine/blend.py", "from .. import predictor\n",
                                "geopix2pix.prediction.engine.blend:1 imports "
                                "geopix2pix.prediction.predictor"),
    "type checking only": ("prediction/predictor.py",
                           "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                           "    from geopix2pix.training import trainer\n",
                           "geopix2pix.prediction.predictor:3 imports geopix2pix.training.trainer"),
    "the cli": ("training/trainer.py", "import geopix2pix.cli\n",
                "geopix2pix.training.trainer:1 imports geopix2pix.cli"),
    "by name": ("raster/__init__.py",
                "import importlib\nimportlib.import_module('geopix2pix.cli')\n",
                "geopix2pix.raster:2 imports geopix2pix.cli"),
    "the lazy public API": ("training/__init__.py", "from geopix2pix import predict\n",
                            "geopix2pix.training:1 imports geopix2pix.predict"),
    "a module in no layer": ("newstage/__init__.py", "",
                             "geopix2pix.newstage is in no layer of LAYERS"),
}


def write_package(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / "geopix2pix" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_a_package_that_keeps_the_order_passes(tmp_path):
    write_package(tmp_path, CLEAN)
    assert violations(tmp_path) == []


@pytest.mark.parametrize("planted", PLANTED, ids=list(PLANTED))
def test_a_planted_import_against_the_order_is_caught(tmp_path, planted):
    relative, text, expected = PLANTED[planted]
    write_package(tmp_path, {**CLEAN, relative: text + CLEAN.get(relative, "")})
    assert any(found.startswith(expected) for found in violations(tmp_path)), expected

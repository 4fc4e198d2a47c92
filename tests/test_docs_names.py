"""The user and contributor pages name files and modules that exist: a module moved or renamed
must take the docs along (docs/architecture.md names every package)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATH = re.compile(r"\b(?:geopix2pix|tools|tests|examples)/[\w/.*-]*\w")
DOTTED = re.compile(r"\bgeopix2pix(?:\.\w+)+")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def missing_paths(text: str, root: Path) -> list[str]:
    """The repository paths (``geopix2pix/...``, ``tools/...``, a pattern such as
    ``tests/test_faults_*.py``) in `text` that match nothing under `root`."""
    return [path for path in PATH.findall(text) if not any(root.glob(path))]


def defined_names(module: Path) -> set[str]:
    """What a module defines or imports at its top level, and the names its ``_LAZY`` table
    imports on first use."""
    names = set()
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
            if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets) \
                    and isinstance(node.value, ast.Dict):
                names.update(k.value for k in node.value.keys if isinstance(k, ast.Constant))
    return names


def module_file(root: Path, parts: list[str]) -> Path | None:
    for path in (root / Path(*parts)).with_suffix(".py"), root / Path(*parts) / "__init__.py":
        if path.exists():
            return path
    return None


def missing_modules(text: str, root: Path) -> list[str]:
    """The dotted names ``geopix2pix.x.y`` in `text` that name no module, or no name the
    longest module they start with defines (a method after it is not checked)."""
    found = []
    for name in DOTTED.findall(text):
        parts = name.split(".")
        end = next((end for end in range(len(parts), 0, -1) if module_file(root, parts[:end])), 0)
        if not end or (end < len(parts)
                       and parts[end] not in defined_names(module_file(root, parts[:end]))):
            found.append(name)
    return found


def test_the_pages_name_paths_that_exist():
    for page in pages():
        assert missing_paths(page.read_text(encoding="utf-8"), ROOT) == [], page.name


def test_the_pages_name_modules_that_exist():
    for page in pages():
        assert missing_modules(page.read_text(encoding="utf-8"), ROOT) == [], page.name


def test_the_architecture_page_names_every_package():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for init in sorted((ROOT / "geopix2pix").rglob("__init__.py")):
        package = init.parent.relative_to(ROOT / "geopix2pix").as_posix()
        if package != ".":
            assert f"**{package}/**" in text, package


def test_a_stale_name_is_caught(tmp_path):
    files = {"geopix2pix/__init__.py": "", "geopix2pix/evaluation/__init__.py": "",
             "geopix2pix/evaluation/evaluate.py": "def evaluate():\n    pass\n",
             "tests/test_evaluate.py": ""}
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    text = ("See geopix2pix/prediction/evaluate.py and geopix2pix/evaluation/evaluate.py, "
            "`geopix2pix.prediction.evaluate.evaluate`, `geopix2pix.evaluation.evaluate.evaluate`, "
            "`geopix2pix.evaluation.evaluate.report`, tests/test_*.py and tests/bench_*.py.")
    assert missing_paths(text, tmp_path) == ["geopix2pix/prediction/evaluate.py",
                                             "tests/bench_*.py"]
    assert missing_modules(text, tmp_path) == ["geopix2pix.prediction.evaluate.evaluate",
                                               "geopix2pix.evaluation.evaluate.report"]

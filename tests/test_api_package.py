"""The package as Python sees it: typed (py.typed shipped), light to import (no torch, geopandas
or matplotlib until used), every listed name resolving, and its warnings shown as warnings from a
REPL or `python -c`."""

from __future__ import annotations

import pytest

import geopix2pix as g


def test_the_package_is_typed_and_ships_its_marker():
    from pathlib import Path

    root = Path(g.__file__).parent
    assert (root / "py.typed").is_file()
    pyproject = (root.parent / "pyproject.toml").read_text()
    assert '[tool.setuptools.package-data]\ngeopix2pix = ["py.typed"]' in pyproject


IMPORT_LIGHT = """
import sys
import geopix2pix
heavy = sorted(m for m in ("torch", "geopandas", "matplotlib") if m in sys.modules)
print(heavy)
"""


def test_import_stays_light_and_every_listed_name_resolves():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", IMPORT_LIGHT], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr
    for name in g.__all__:
        assert name == "__version__" or getattr(g, name).__name__ == name
    assert g.TrainResult.__module__ == "geopix2pix.training.trainer"
    summary_fields = g.ExportSummary.__dataclass_fields__
    assert {"out_dir", "kept", "skipped", "warnings"} <= set(summary_fields)
    assert {"EvaluationReport", "SceneResult", "LoadedModel"} <= set(g.__all__)


@pytest.mark.parametrize("how", ["-c", "stdin"])
def test_a_warning_from_a_repl_or_python_c_is_shown_not_raised(tmp_path, how):
    """In `python -c`, a piped script or a REPL, __main__ has no source to show; the warning
    must still be a warning (a tester's evaluate raised ImportError there)."""
    import subprocess
    import sys

    code = ("import geopix2pix\n"
            "from geopix2pix.errors import warn_user\n"
            "warn_user('the scene differs')\n"
            "print('after')\n")
    args, given = ([sys.executable, "-c", code], None) if how == "-c" else \
        ([sys.executable, "-"], code)
    done = subprocess.run(args, input=given, capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "after\n"
    assert "GeoPix2PixWarning: the scene differs" in done.stderr

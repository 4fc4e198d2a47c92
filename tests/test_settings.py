"""Each option is declared once (geopix2pix.settings): the command line's options are derived
from the settings dataclasses, with the same names, defaults and choices, and a field declared
there is on the command line without another line of code."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import click
import pytest
from click.testing import CliRunner

from geopix2pix.cli import cli
from geopix2pix.cli.options import click_options
from geopix2pix.settings.declare import declared, flag_of, option
from geopix2pix.settings.demo import DemoOptions
from geopix2pix.settings.evaluate import EvaluateOptions
from geopix2pix.settings.export import ExportOptions
from geopix2pix.settings.predict import PredictOptions
from geopix2pix.settings.train import TrainConfig


@pytest.mark.parametrize("command, settings", [
    ("train", TrainConfig), ("predict", PredictOptions), ("export-chips", ExportOptions),
    ("evaluate", EvaluateOptions), ("demo", DemoOptions)])
def test_every_command_line_option_is_a_declared_field(command, settings):
    params = {p.name: p for p in cli.commands[command].params if isinstance(p, click.Option)}
    for field, meaning in declared(settings):
        if not meaning.cli:
            assert field.name not in params
            continue
        param = params[field.name]
        assert flag_of(field.name, meaning) in param.opts
        default = field.default if field.default is not dataclasses.MISSING else None
        if meaning.inverted:  # --quiet for progress=True
            assert (param.default, default) == (False, True)
        elif meaning.kind != "gdal":
            assert param.default == default, field.name
        if meaning.choices:
            assert tuple(param.type.choices) == tuple(meaning.choices)


@dataclasses.dataclass
class Toy:
    size: int = option(4, short="-s", help="Size.")
    mode: str = option("a", choices=("a", "b"), help="Mode.")
    check: bool = option(True, negatable=True, help="Check.")
    progress: bool = option(True, flag="--quiet", inverted=True, help="Quiet.")
    bands: Sequence[int] | None = option(None, kind="bands", help="Bands",
                                         shown_default="all")
    hidden: int = option(7, cli=False)


def test_a_declared_field_becomes_its_option():
    seen = {}

    @click.command(context_settings={"show_default": True})
    @click_options(Toy)
    def toy(**options):
        seen.update(options)

    runner = CliRunner()
    assert runner.invoke(toy, ["-s", "8", "--mode", "b", "--no-check", "--quiet",
                               "--bands", "1-3"]).exit_code == 0
    assert seen == dict(size=8, mode="b", check=False, progress=False, bands=[1, 2, 3])
    assert Toy(**seen).hidden == 7
    assert runner.invoke(toy, []).exit_code == 0
    assert seen == dict(size=4, mode="a", check=True, progress=True, bands=None)
    help_text = " ".join(runner.invoke(toy, ["--help"]).output.split())
    for shown in ("-s, --size INTEGER Size. [default: 4]", "--mode [a|b] Mode. [default: a]",
                  "--check / --no-check Check. [default: check]",
                  "--quiet Quiet. [default: off]", "--bands BANDS Bands [default: all]"):
        assert shown in help_text
    assert "hidden" not in help_text
    assert runner.invoke(toy, ["--mode", "c"]).exit_code == 2


def test_options_may_be_left_out_or_moved_last():
    @click.command()
    @click_options(Toy, exclude=("mode",), last=("size",))
    def toy(**options):
        pass

    names = [p.name for p in toy.params]
    assert names == ["check", "progress", "bands", "size"]

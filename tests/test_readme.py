"""The README's two commands for a fresh machine are the ones CI and newcomers run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks[:2]]


def test_first_command_installs_and_runs_the_demo():
    assert readme_commands()[0] == "python3 -m pip install -e . && geopix2pix demo"


def test_ci_runs_the_readmes_test_command_verbatim():
    test_command = readme_commands()[1]
    assert "pytest" in test_command and "pip install" in test_command
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_every_command_documents_its_options_with_defaults():
    import click
    from click.testing import CliRunner

    from geopix2pix.cli import cli

    runner = CliRunner()
    for name, command in cli.commands.items():
        text = runner.invoke(cli, [name, "--help"]).output
        assert "[default:" in text, name
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{name} --{param.name} has no help"

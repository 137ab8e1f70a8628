"""The README is part of the product: what it promises must exist, and what exists must be in it."""

import re
from pathlib import Path

from click.testing import CliRunner

from taskevents.cli import main
from taskevents.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented_with_its_default() -> None:
    for name, field in Settings.model_fields.items():
        row = re.search(rf"^\| `TASKEVENTS_{name.upper()}` \| `([^`]*)` \|", README, re.MULTILINE)
        assert row, f"TASKEVENTS_{name.upper()} is not in the README's configuration table"
        assert row.group(1) == str(field.default), name


def test_every_command_is_documented() -> None:
    for name in main.list_commands(None):  # type: ignore[arg-type]
        assert f"taskevents {name}" in README, name
    assert CliRunner().invoke(main, ["--help"]).exit_code == 0


def test_the_quickstart_commands_exist() -> None:
    root = Path(__file__).resolve().parent.parent
    for script in re.findall(r"^\./(scripts/\w+)", README, re.MULTILINE):
        assert (root / script).exists(), script
    assert (root / ".ci/run").read_text().count("scripts/test") == 1

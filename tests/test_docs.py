"""The docs are part of the product: what they promise must exist, and what exists must be in them."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from taskevents.cli import COMMANDS, main
from taskevents.settings import ApiClientSettings, ProducerSettings, Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = {path.name: path.read_text() for path in (ROOT / "docs").glob("*.md")}
CONFIGURATION = DOCS["configuration.md"]
PACKAGE = ("shared", "ingest", "api")


def _sources(*folders: str) -> dict[Path, str]:
    return {path: path.read_text() for folder in folders for path in (ROOT / folder).rglob("*.py")}


def test_every_setting_is_documented_with_its_default() -> None:
    fields = {**ProducerSettings.model_fields, **ApiClientSettings.model_fields, **Settings.model_fields}
    for name, field in fields.items():
        row = re.search(rf"^\| `TASKEVENTS_{name.upper()}` \| `([^`]*)` \|", CONFIGURATION, re.MULTILINE)
        assert row, f"TASKEVENTS_{name.upper()} is not in docs/configuration.md's table"
        assert row.group(1) == str(field.default), name


def test_every_variable_the_code_names_is_documented_and_is_a_setting() -> None:
    """Not only the settings: any TASKEVENTS_* the code spells out (a command's envvar, say)."""
    settings = {f"TASKEVENTS_{name.upper()}" for name in Settings.model_fields}
    named = {
        var
        for text in _sources(*PACKAGE).values()
        for var in re.findall(r"TASKEVENTS_[A-Z][A-Z0-9_]*[A-Z0-9]", text)
    }
    assert named, "the scan found nothing: is the pattern right?"
    for var in named:
        assert re.search(rf"^\| `{var}` \|", CONFIGURATION, re.MULTILINE), f"{var} is not documented"
    assert named <= settings, f"read outside Settings: {sorted(named - settings)}"


def test_every_command_is_documented_and_has_help() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["--help"]).exit_code == 0
    for name in COMMANDS:
        assert f"`taskevents {name}" in DOCS["operations.md"], name
        done = runner.invoke(main, [name, "--help"])
        assert done.exit_code == 0, (name, done.output)
        assert "Environment:" in done.output or name == "dead-letters", name  # lists what it reads


def test_the_quickstart_commands_exist() -> None:
    for script in re.findall(r"^\./(scripts/\w+)", README, re.MULTILINE):
        assert (ROOT / script).exists(), script
    assert (ROOT / ".ci/run").read_text().count("scripts/test") == 1


def test_the_readme_fits_on_a_screen_and_links_every_page() -> None:
    assert len(README.splitlines()) <= 80
    for page in DOCS:
        assert f"docs/{page}" in README, f"the README does not link docs/{page}"


@pytest.mark.parametrize("name", ["README.md", *sorted(DOCS)])
def test_every_relative_link_leads_somewhere(name: str) -> None:
    text = README if name == "README.md" else DOCS[name]
    base = ROOT if name == "README.md" else ROOT / "docs"
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (base / target).exists(), f"{name} links {target}, which does not exist"


def test_every_file_the_code_and_docs_cite_exists() -> None:
    """A comment or a page that cites a file of the repository (a test module, a source file) cites one
    that exists."""
    texts = {**_sources(*PACKAGE, "tests", "benchmarks"), ROOT / "README.md": README}
    texts.update({ROOT / "docs" / name: text for name, text in DOCS.items()})
    cited = re.compile(r"\b((?:shared|ingest|api|tests|benchmarks|scripts|docs)/[\w/]+\.(?:py|md))\b")
    missing = {
        (path.relative_to(ROOT).as_posix(), ref)
        for path, text in texts.items()
        for ref in cited.findall(text)
        if not (ROOT / ref).exists()
    }
    assert not missing, sorted(missing)


def test_the_readme_layout_matches_the_tree() -> None:
    block = README.split("## Development", 1)[1]
    listed = set(re.findall(r"^(\w+)/\s", block, re.MULTILINE))
    folders = {
        p.name
        for p in ROOT.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and p.name not in ("data", "build")
        and "egg" not in p.name
    }
    assert listed == folders, (sorted(listed), sorted(folders))


# What each command reads from the environment (its --help must list each).
_WORKER = [
    "redis_url",
    "db",
    "queue",
    "batch_size",
    "max_payload_bytes",
    "sqlite_synchronous",
    "checkpoint_interval",
    "max_attempts",
]
READS = {
    "ingest": [*_WORKER, "heartbeat_ttl", "archive_dir", "log_level"],
    "api": ["db", "redis_url", "queue", "archive_dir", "api_host", "api_port", "query_timeout", "log_level"]
    + [name for name in Settings.model_fields if name.startswith("stream_")],
    "emit": list(ProducerSettings.model_fields),
    "simulate": list(ProducerSettings.model_fields),
    "tail": ["api_url"],
    "redis": ["redis_url", "redis_dir"],
    "dead-letters": ["redis_url", "queue"],
    "jobs": ["redis_url", "db", "queue", "retention", "archive_dir", "archive_every", "dead_retention"],
    "archive": ["redis_url", "db", "queue", "retention", "archive_dir", "dead_retention"],
    "restore": ["redis_url", "db", "queue", "archive_dir"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_lists_the_variables_it_reads(command: str) -> None:
    done = CliRunner().invoke(main, [command, "--help"])
    assert done.exit_code == 0, done.output
    missing = [name for name in READS[command] if f"TASKEVENTS_{name.upper()}" not in done.output]
    assert not missing, (command, missing)

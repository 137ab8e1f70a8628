"""The UI's build is reproducible and its checks pass: the committed api/ui/dist/ is exactly what the
sources build to (so what ships is what was reviewed), the TypeScript type-checks, and the view
logic's unit tests (api/ui/test/, node:test) pass. Node is needed here only: installing and running
taskevents never needs it."""

import subprocess
from pathlib import Path

import pytest

from tests.browser import UI_DIR

pytestmark = pytest.mark.node


def run(*command: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=UI_DIR, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_the_committed_build_is_what_the_sources_build_to(tmp_path: Path) -> None:
    run("node", "build.mjs", "--outdir", str(tmp_path))
    committed = {p.name: p.read_bytes() for p in (UI_DIR / "dist").iterdir()}
    rebuilt = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(rebuilt) == sorted(committed), "rebuild with `cd api/ui && npm run build` and commit dist/"
    changed = [name for name in rebuilt if rebuilt[name] != committed[name]]
    assert not changed, f"{changed} differ: rebuild with `cd api/ui && npm run build` and commit dist/"


def test_the_ui_type_checks() -> None:
    run("node", "node_modules/typescript/bin/tsc", "--noEmit", "-p", ".")


def test_the_view_logic_unit_tests_pass() -> None:
    done = run("npm", "test", "--silent")
    # node --test's summary: tests ran, none failed (a run of no tests is a failure too).
    summary = done.stdout + done.stderr
    assert "# fail 0" in summary and "# pass 0" not in summary, summary

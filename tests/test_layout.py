"""The rules of the codebase that a reader relies on."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_packages(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_data_flows_one_way() -> None:
    assert not imported_packages("shared") & {"ingest", "api"}
    assert "ingest" not in imported_packages("api")


def test_importing_starts_nothing_and_reads_no_environment() -> None:
    probe = (
        "import os, threading\n"
        "before = threading.active_count()\n"
        "read = []\n"
        "class Env(dict):\n"
        "    def __getitem__(self, k): read.append(k); return super().__getitem__(k)\n"
        "    def get(self, k, d=None): read.append(k); return super().get(k, d)\n"
        "os.environ = Env(os.environ)\n"
        "import shared, shared.settings, shared.event, shared.db, ingest, ingest.worker\n"
        "import api, api.app, api.cli\n"
        "assert threading.active_count() == before, 'a thread was started'\n"
        "assert not [k for k in read if k.startswith('TASKEVENTS')], read\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={"TASKEVENTS_DB": "x"}
    )
    assert done.returncode == 0, done.stderr

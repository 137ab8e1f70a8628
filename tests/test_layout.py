"""The rules of the codebase that a reader relies on."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The folders of the repository and the import names they install as (pyproject.toml).
FOLDERS = {"shared": "taskevents", "ingest": "taskevents.ingest", "api": "taskevents.api"}
SERVER_MODULES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "prometheus_client",
    "sse_starlette",
    "tenacity",
    "httpx",
)


def imported_modules(folder: str) -> set[str]:
    """Every absolute module name the folder's code imports."""
    found: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
    return found


def test_data_flows_one_way() -> None:
    """The package imports neither the worker nor the API; the API never imports the worker."""
    shared = imported_modules("shared")
    assert not {m for m in shared if m.startswith(("taskevents.ingest", "taskevents.api"))}
    assert not {m for m in imported_modules("api") if m.startswith("taskevents.ingest")}


def test_everything_imports_through_the_one_namespace() -> None:
    """No code imports `shared`, `ingest` or `api` by their folder names."""
    for folder in (*FOLDERS, "tests", "benchmarks"):
        stray = {m for m in imported_modules(folder) if m.split(".")[0] in FOLDERS}
        assert not stray, (folder, stray)


def test_the_producer_imports_no_server() -> None:
    probe = (
        "import sys\n"
        "import taskevents\n"
        "from taskevents import Emitter, emit_phase_enter\n"
        "import taskevents.producer_cli\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {SERVER_MODULES!r})\n"
        "assert not loaded, loaded\n"
        "assert not [m for m in sys.modules if m.startswith(('taskevents.ingest', 'taskevents.api'))]\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_importing_starts_nothing_and_reads_no_environment() -> None:
    probe = (
        "import os, threading\n"
        "before = threading.active_count()\n"
        "read = []\n"
        "class Env(dict):\n"
        "    def __getitem__(self, k): read.append(k); return super().__getitem__(k)\n"
        "    def get(self, k, d=None): read.append(k); return super().get(k, d)\n"
        "os.environ = Env(os.environ)\n"
        "import taskevents, taskevents.settings, taskevents.event, taskevents.db, taskevents.cli\n"
        "import taskevents.ingest, taskevents.ingest.worker, taskevents.ingest.cli\n"
        "import taskevents.api, taskevents.api.app, taskevents.api.cli, taskevents.api.tail\n"
        "assert threading.active_count() == before, 'a thread was started'\n"
        "assert not [k for k in read if k.startswith('TASKEVENTS')], read\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={"TASKEVENTS_DB": "x"}
    )
    assert done.returncode == 0, done.stderr

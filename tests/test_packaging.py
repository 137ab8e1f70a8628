"""What `pip install taskevents` gives a runner: one import name, the producer, and no web server.

The wheel is built from this checkout and installed into a fresh virtual environment, as a runner's
machine would get it: `taskevents` is the only top-level package, `from taskevents import Emitter`
works, FastAPI, uvicorn and prometheus-client are not installed, `taskevents emit` works, and a
command of the server says which extra to install.
"""

import json
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # From a copy of what the package is made of, as the Dockerfile builds it: setuptools writes its
    # build/ folder beside the sources.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("shared", "ingest", "api"):
        ignore = shutil.ignore_patterns("__pycache__", "node_modules", ".test-build")
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("taskevents-*.whl")
    return built


def test_the_wheel_installs_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"taskevents"}
    for module in ("taskevents/__init__.py", "taskevents/emitter.py", "taskevents/ingest/worker.py"):
        assert module in names
    assert "taskevents/api/app.py" in names and not any(n.startswith("tests/") for n in names)


def test_the_wheel_ships_the_built_ui_and_not_its_sources(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    manifest = json.loads(archive.read("taskevents/api/ui/dist/manifest.json"))
    for asset in (manifest["js"], manifest["css"], "LICENSES.txt"):
        assert f"taskevents/api/ui/dist/{asset}" in archive.namelist()
    ui = [n for n in archive.namelist() if n.startswith("taskevents/api/ui/")]
    assert all(n.startswith("taskevents/api/ui/dist/") for n in ui), ui  # no TypeScript, no node_modules


def test_a_runner_gets_the_producer_and_no_web_server(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "runner"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    probe = (
        "import importlib.util, sys\n"
        "from taskevents import Emitter, emit_phase_enter\n"
        "for name in ('fastapi', 'uvicorn', 'prometheus_client', 'sse_starlette', 'tenacity', 'httpx'):\n"
        "    assert importlib.util.find_spec(name) is None, name + ' was installed'\n"
        "for name in ('ingest', 'api', 'shared'):\n"
        "    assert importlib.util.find_spec(name) is None, name + ' is a top-level package'\n"
        "Emitter('redis://127.0.0.1:1/0', flush_timeout=0).close(0)\n"
    )
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    taskevents = str(env_dir / "bin" / "taskevents")
    helped = subprocess.run([taskevents, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "ingest" in helped.stdout and "[server]" in helped.stdout
    assert subprocess.run([taskevents, "emit", "--help"], capture_output=True).returncode == 0
    for command in ("api", "ingest", "tail"):
        missing = subprocess.run([taskevents, command], capture_output=True, text=True)
        assert missing.returncode == 1, (command, missing.stderr)
        extra = "tail" if command == "tail" else "server"
        assert f"pip install 'taskevents[{extra}]'" in missing.stderr, (command, missing.stderr)

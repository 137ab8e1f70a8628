"""The benchmark scripts run: --help, and the read-API benchmark's --quick smoke run (a few seconds)."""

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
API_BENCH = ROOT / "benchmarks" / "api_bench.py"


def run_api_bench(tmp_path: Path, *args: str) -> tuple[str, dict]:
    output = tmp_path / "api.json"
    done = subprocess.run(
        [sys.executable, str(API_BENCH), "--quick", "--cache-dir", str(tmp_path / "cache"),
         "--output", str(output), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, orjson.loads(output.read_bytes())


def test_api_bench_help() -> None:
    done = subprocess.run(
        [sys.executable, str(API_BENCH), "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "Datasette" in done.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("redis_server")  # the suite's rule: skipped without one, failed in CI
@pytest.mark.redis_server
def test_api_bench_quick_in_process(tmp_path: Path) -> None:
    table, results = run_api_bench(tmp_path, "--only", "inprocess")
    sizes = results["config"]["sizes"]
    for size in sizes:
        store = results["stores"][str(size)]
        assert store["events"] == size and store["write_path"].startswith("decode_batch")
        measured = results["inprocess"][str(size)]
        for name in ("page", "page_spread", "snapshot", "graph", "graph_probe", "page_read_only"):
            assert len(measured[name]["runs"]) == results["config"]["reps"]
            assert 0 < measured[name]["median_ms"] <= measured[name]["p99_ms"]
    assert set(results["inprocess"]["flat_ratio"]) >= {"page", "snapshot", "graph_probe"}
    assert "| measurement | measured | target | met |" in table
    # A second run finds the stores in the cache instead of building them again.
    _, again = run_api_bench(tmp_path, "--only", "inprocess", "--reps", "1")
    assert all(s["cached"] for s in again["stores"].values())


@pytest.mark.slow
@pytest.mark.usefixtures("redis_server")
@pytest.mark.redis_server
def test_api_bench_quick_http_against_datasette(tmp_path: Path) -> None:
    table, results = run_api_bench(tmp_path, "--only", "http", "--http-seconds", "1")
    http = results["http"]
    assert http["same_rows"]["identical"]
    for name in ("api", "datasette"):
        assert http[name]["requests_per_s"] > 0
        assert all(r["ok"] == r["requests"] for r in http[name]["runs"])
    assert "HTTP: API / Datasette" in table

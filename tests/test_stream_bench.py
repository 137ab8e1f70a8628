"""The live-stream benchmark runs: --help, and --quick (a few seconds, every part a real process)."""

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
STREAM_BENCH = ROOT / "benchmarks" / "stream_bench.py"


def test_stream_bench_help() -> None:
    done = subprocess.run([sys.executable, str(STREAM_BENCH), "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--clients" in done.stdout


@pytest.mark.slow
@pytest.mark.redis_server
def test_stream_bench_quick(tmp_path: Path, redis_server: object) -> None:
    output = tmp_path / "stream.json"
    done = subprocess.run(
        [sys.executable, str(STREAM_BENCH), "--quick", "--output", str(output)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = orjson.loads(output.read_bytes())
    assert results["missed"] == 0 and results["duplicates"] == 0
    assert results["deliveries_received"] == results["deliveries_expected"] > 0
    assert results["clients_ended"] == results["config"]["clients"]
    assert 0 < results["latency_ms"]["median"] <= results["latency_ms"]["p99"]
    assert "| measurement | measured | target | met |" in done.stdout

"""The benchmark scripts run: --help, the read-API benchmark's --quick smoke run (a few seconds), the UI
benchmark's and the screenshots' (in Chromium, on private stacks)."""

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
API_BENCH = ROOT / "benchmarks" / "api_bench.py"


def run_bench(script: str, output: Path, *args: str, timeout: float = 300) -> tuple[str, dict]:
    """Run benchmarks/<script> with `args` and `--output`; its stdout (the tables) and its JSON."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--output", str(output)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, orjson.loads(output.read_bytes())


def run_api_bench(tmp_path: Path, *args: str) -> tuple[str, dict]:
    args = ("--quick", "--cache-dir", str(tmp_path / "cache"), *args)
    return run_bench("api_bench.py", tmp_path / "api.json", *args, timeout=120)


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


@pytest.mark.slow
@pytest.mark.browser
def test_ui_bench_quick_opens_each_run_and_meets_its_bounds(tmp_path: Path) -> None:
    """The UI benchmark's smoke run against its own private stack: every visit ready, its newest event
    shown, older pages read while scrolling back, the DOM bounded, nothing thrown in the page."""
    output = tmp_path / "ui.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ui_bench.py"), "--quick", "--output", str(output)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = orjson.loads(output.read_bytes())
    visits = [v for rep in results["visits"].values() for v in rep]
    assert len(visits) == 2
    for v in visits:
        assert v["ready_ms"] is not None and v["newest_painted_ms"] is not None
        assert v["pages_loaded"] >= 1 and v["scroll_stalled_at"] is None
        assert v["elements_scrolled"] < 5000 and v["page_errors"] == 0, v["page_error_texts"]
        assert v["click_expand_all_ms"] is not None and v["search_failed_ms"] is not None
    assert "| **ready**" in done.stdout


@pytest.mark.slow
@pytest.mark.browser
def test_the_screenshots_are_remade(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "screenshots.py"), "--tasks", "8", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("task-list.png", "task-page.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.redis_server
def test_retention_bench_quick_archives_shrinks_the_store_and_measures_ingest(tmp_path: Path) -> None:
    stdout, results = run_bench("retention_bench.py", tmp_path / "retention.json", "--quick")
    storage = results["storage"]
    assert (
        storage["compression_ratio"] > 3
        and storage["archive_bytes_per_event"] < storage["store_bytes_per_event"]
    )
    assert storage["file_bytes_reclaimed"] < storage["file_bytes_before"] / 2
    assert "| ingest while archiving / alone |" in stdout


@pytest.mark.slow
@pytest.mark.redis_server
@pytest.mark.postgres
def test_pg_ingest_bench_quick_stores_every_event_partitioned_and_counts_each_part(tmp_path: Path) -> None:
    stdout, results = run_bench("pg_ingest_bench.py", tmp_path / "pg.json", "--quick")
    assert results["configs"] == ["sqlite", "postgresql-1", "postgresql-2"]
    sqlite, pg, two = (results[c]["median"] for c in results["configs"])
    assert sqlite["events_per_s"] > 0 and pg["events_per_s"] > 0 and two["events_per_s"] > 0
    assert pg["postgres_us"] > 0 and sqlite["postgres_us"] < pg["postgres_us"] / 10  # its server's CPU
    assert sqlite["redis_us"] > 0 and pg["worker_us"] > 0 and two["worker_us"] > 0
    assert 0 < two["producer_us"] < 1000 and 0 < sqlite["producer_us"] < 1000
    assert "| PostgreSQL, 2 |" in stdout


@pytest.mark.slow
@pytest.mark.postgres
def test_pg_read_bench_small_stores_give_the_same_bytes_from_both(tmp_path: Path) -> None:
    args = ["--sizes", "2000,20000", "--reps", "1", "--calls", "20", "--graph-calls", "5"]
    stdout, results = run_bench(
        "pg_read_bench.py", tmp_path / "reads.json", *args, "--cache-dir", str(tmp_path / "stores")
    )
    assert results["same_bytes"] is True
    for store in ("sqlite", "postgresql"):
        assert all(
            results["stores"]["20000"][store][read]["median_ms"] > 0 for read in ("page", "snapshot", "graph")
        )
    assert "| graph (ms, median) |" in stdout


@pytest.mark.slow
@pytest.mark.redis_server
def test_ingest_bench_quick_measures_the_production_loop_beside_sqlites_ceiling(tmp_path: Path) -> None:
    stdout, results = run_bench(
        "ingest_bench.py", tmp_path / "ingest.json", "--quick", "--only", "ingest", "--reps", "1"
    )
    ingest = results["ingest"]
    # Every mode's store was checked (all events, every task's seqs 1..n) before its figure counted.
    assert ingest["ceiling"]["events_per_s"] > 0 and ingest["drain"]["events_per_s"] > 0
    assert ingest["ratio_to_ceiling"] == pytest.approx(
        ingest["ceiling"]["runs"][0]["seconds"] / ingest["drain"]["runs"][0]["seconds"]
    )
    assert "1c. SQLite's ceiling" in stdout and "production loop (1b) / ceiling (1c)" in stdout
    # The ceiling again with the other core busy decoding events, on a thread and in a process.
    for side in ("thread", "process"):
        runs = ingest[f"ceiling_{side}"]["runs"]
        assert ingest[f"ceiling_{side}_share"] == pytest.approx(
            ingest["ceiling"]["runs"][0]["seconds"] / runs[0]["seconds"]
        )
    assert "1d. the ceiling beside a thread" in stdout and "1e. the ceiling beside a process" in stdout


@pytest.mark.slow
@pytest.mark.redis_server
def test_ingest_steps_times_the_writers_steps_beside_the_bare_loop(tmp_path: Path) -> None:
    stdout, results = run_bench(
        "ingest_steps.py", tmp_path / "steps.json", "--events", "12000", "--rounds", "1"
    )
    (one,) = results["rounds"]
    steps = one["steps_seconds"]
    # The writer's thread is busy for part of the drain, its statements a part of its commits.
    assert 0 < steps["writer: the prepared statements"] <= steps["writer: commit and acknowledgement"]
    assert 0 < one["writer_busy_share"] <= 1
    assert (
        one["waits_between_commits_seconds"] + steps["writer: commit and acknowledgement"]
        <= one["drain_seconds"]
    )
    assert one["ratio_to_ceiling"] == pytest.approx(one["ceiling_seconds"] / one["drain_seconds"])
    assert "| writer: the prepared statements |" in stdout


@pytest.mark.slow
@pytest.mark.redis_server
def test_stream_capacity_quick_steps_through_client_counts(tmp_path: Path) -> None:
    stdout, results = run_bench("stream_capacity.py", tmp_path / "capacity.json", "--quick")
    assert [r["config"]["clients"] for r in results["runs"]] == [10, 20]
    for r in results["runs"]:
        assert r["missed"] == 0 and r["duplicates"] == 0 and r["client_processes"] >= 1
        assert r["deliveries_received"] == r["deliveries_expected"] > 0
        assert r["api_cpu_us_per_delivery"] > 0
    assert "| watchers | deliveries/s |" in stdout

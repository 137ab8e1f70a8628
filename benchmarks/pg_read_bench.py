"""Read latency on PostgreSQL beside SQLite: a page, a snapshot and a graph, at 10,000 and 1,000,000 events.

    .venv/bin/python benchmarks/pg_read_bench.py [--sizes 10000,1000000] [--reps 3] [--calls 200]

Each store is api_bench.py's dataset (benchmarks/api_dataset.py, cached in the same folder), built
into SQLite by the worker's writer, then copied row for row (COPY) into a database of a PostgreSQL
server the benchmark starts itself (tests/pgserver.py: initdb and pg_ctl on a free port, in a
temporary directory; never the machine's own server). The same reads are then timed through each
store's own reader (`ReadStore.run` and `PgReadStore.run`, the functions of api/reads.py the
endpoints call, without HTTP), SQLite and PostgreSQL alternating repetition by repetition:

- page: 100 events from the middle of the store's big task (a tenth of the store's events);
- snapshot: that task's last 100 events, its phase, status and open spans;
- graph: the span graph of the probe task that every store holds (api_bench.py's `graph_probe`).

"Flat" is the median at the biggest size over the median at the smallest, per store. Results:
benchmarks/results/pg_read_bench.json.
"""

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import api_bench
import api_dataset
from report import publish, say

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/pgserver.py: the suite's own way of starting PostgreSQL

import psycopg  # noqa: E402

from taskevents.api import reads  # noqa: E402
from taskevents.api.pgstore import PgReadStore  # noqa: E402
from taskevents.api.store import ReadStore  # noqa: E402
from taskevents.pgdb import open_pg_writer  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402

READS = ("page", "snapshot", "graph")


def copy_store(path: Path, url: str) -> float:
    """Every row of the SQLite store into the (new, migrated) PostgreSQL one; seconds taken."""
    started = time.perf_counter()
    open_pg_writer(url).close()
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with psycopg.connect(url) as dst:
        for table in ("task_events", "tasks", "spans"):
            columns = [
                row[0]
                for row in dst.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                    " ORDER BY ordinal_position",
                    (table,),
                )
            ]
            names = ", ".join(columns)
            with dst.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in src.execute(f"SELECT {names} FROM {table}"):
                    copy.write_row(row)
        dst.commit()
        dst.autocommit = True
        dst.execute("VACUUM ANALYZE")
    src.close()
    return time.perf_counter() - started


def calls_for(size: int, sizes: list[int]) -> dict[str, tuple[Any, tuple[Any, ...]]]:
    task, events, _ = api_bench.big_task(size)
    probe, _, _ = api_bench.small_probe(tuple(sizes))
    return {
        "page": (reads.events_page, (task, api_bench.page_start(events), api_bench.PAGE)),
        "snapshot": (reads.snapshot, (task, api_bench.PAGE)),
        "graph": (reads.graph, (probe, 10_000)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--calls", type=int, default=200, help="timed calls per page/snapshot repetition")
    parser.add_argument("--graph-calls", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "taskevents-api-bench"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/pg_read_bench.json")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    results: dict[str, Any] = {"sizes": sizes, "reps": args.reps, "calls": args.calls, "stores": {}}
    pg = PostgresServer()
    pg.start()
    try:
        for size in sizes:
            spec = api_dataset.spec_for(size, sizes, args.seed)
            path, meta = api_dataset.build(spec, args.cache_dir, log=say)
            url = pg.database(f"reads_{size}")
            say(f"store {size:,} events: copying into PostgreSQL")
            copied = copy_store(path, url)
            say(f"  copied in {copied:.1f} s")
            stores: dict[str, ReadStore | PgReadStore] = {
                "sqlite": ReadStore(path, size=1),
                "postgresql": PgReadStore(url, f"reads_{size}", size=1),
            }
            calls = calls_for(size, sizes)
            same = {
                name: stores["sqlite"].run(read, *a) == stores["postgresql"].run(read, *a)
                for name, (read, a) in calls.items()
            }
            runs: dict[str, dict[str, list[dict[str, float]]]] = {s: {r: [] for r in READS} for s in stores}
            for _ in range(args.reps):
                for name, (read, a) in calls.items():
                    n = args.graph_calls if name == "graph" else args.calls
                    warmup = max(5, n // 10)
                    for store_name, store in stores.items():  # alternating, so both see the same machine
                        ns = api_bench.time_read(store, [(read, a)] * (warmup + n), warmup)
                        runs[store_name][name].append(api_bench.summary_ms(ns))
            out = {
                store_name: {name: api_bench.over_reps(r) for name, r in by_read.items()}
                for store_name, by_read in runs.items()
            }
            for store_name, by_read in out.items():
                for name, m in by_read.items():
                    say(f"  {size:>9,} {store_name:<10} {name:<9} median {m['median_ms']:.3f} ms")
            results["stores"][str(size)] = {"copy_seconds": copied, "same_bytes": same, **out, "meta": meta}
            for store in stores.values():
                store.close()
    finally:
        pg.close()
    first, last = results["stores"][str(sizes[0])], results["stores"][str(sizes[-1])]
    results["flat"] = {
        s: {name: last[s][name]["median_ms"] / first[s][name]["median_ms"] for name in READS}
        for s in ("sqlite", "postgresql")
    }
    heads = [f"{store} {n:,}" for store in ("SQLite", "PostgreSQL") for n in sizes]
    lines = [
        f"| read | {' | '.join(heads)} | flat SQLite | flat PostgreSQL |",
        "|---" * (3 + 2 * len(sizes)) + "|",
    ]
    for name in READS:
        cells = [
            f"{results['stores'][str(n)][s][name]['median_ms']:.3f}"
            for s in ("sqlite", "postgresql")
            for n in sizes
        ]
        lines.append(
            f"| {name} (ms, median) | {' | '.join(cells)} | {results['flat']['sqlite'][name]:.2f}× |"
            f" {results['flat']['postgresql'][name]:.2f}× |"
        )
    same_everywhere = all(all(v["same_bytes"].values()) for v in results["stores"].values())
    lines.append(f"\nsame bytes from both stores: {same_everywhere}; median over {args.reps} repetitions")
    results["same_bytes"] = same_everywhere
    publish(results, args.output, "\n".join(lines))


if __name__ == "__main__":
    main()

"""Read-API benchmark (issue 3, "Speed"): the API in process at three store sizes, then over HTTP
against Datasette serving the same SQLite file.

  1. stores     1,000,000 events over 10,000 tasks, with one task of 100,000 events and 5,000 spans,
                and the same shape scaled to 10,000 and 100,000 events (benchmarks/api_dataset.py).
                Written by the worker's own code: wire frames -> `decode_batch` -> `StoreWriter.commit`
                in batches (--via-redis: through a private redis-server and `Worker.drain()`).
                Cached in --cache-dir by their parameters and the writer's source; --rebuild forces.
  2. inprocess  per store: the app of `api.app.create_app(settings)` called as ASGI, in this process,
                the way uvicorn calls it (routing, validation, the read on a worker thread, the body)
                but without sockets or HTTP parsing: a 100-event page of the big task at its middle
                seq, its snapshot and its span graph; the same reads through `ReadStore.run` alone
                (the store's share); and the graph of a probe task of the same shape in every store,
                so "flat as the store grows" compares like with like. Median and p99 of many calls.
  3. http       on the largest store: `python -m taskevents.api` (uvicorn) and `datasette serve -i`
                (immutable, read-only: Datasette's fastest mode) on the same file, both running,
                measured in turn (ABAB...) by benchmarks/api_loadgen.py in a process of its own: 16 keep-alive
                connections, 100-event pages over many tasks and seqs, the same requests in the same
                order for both. Datasette gets its table JSON, `_nocount=1&_nofacet=1&_nosuggest=1`,
                facet suggestions off. Before timing, both must return the same rows for a sample.

Prints markdown tables with the issue's targets and writes every figure, each repetition included,
to benchmarks/results/api.json. Latency figures are medians over --reps repetitions of each
repetition's median and p99.
"""

import argparse
import asyncio
import os
import platform
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import quote

import api_dataset
import httpx
import orjson
import psutil
import uvloop
from report import publish, say

from taskevents.api import reads
from taskevents.api.app import create_app
from taskevents.ingest.localredis import RedisServer
from taskevents.settings import Settings

HERE = Path(__file__).resolve().parent
SECTIONS = ("inprocess", "http")
LADDER = (10_000, 100_000, 1_000_000)
QUICK_LADDER = (2_000, 20_000)
TARGETS = {
    "page_ms": 2.0,
    "snapshot_ms": 2.0,
    "graph_ms": 50.0,
    "flat_ratio": 1.5,  # median at the largest store / at the smallest
    "ratio_vs_datasette": 2.0,
    "http_p99_ms": 25.0,
}
# (full run, --quick)
DEFAULTS = {
    "calls": (2000, 200),
    "graph_calls": (100, 20),
    "reps": (3, 2),
    "http_seconds": (10.0, 2.0),
    "http_reps": (3, 1),
}
PAGE = 100
NOTES = (
    "In process = the ASGI app called directly (what uvicorn calls per request), not sockets or",
    "TestClient: the app's own time to serve, its read on a worker thread included. `read only` =",
    "`ReadStore.run(reads.…)`. Targets are judged on the median; a p99 over the target is flagged. The",
    "big task's graph grows with its spans; the probe task has the same shape in every store. HTTP: one",
    "uvicorn process each; the load generator is a separate process on the same 2 cores (its CPU is",
    "shown); Datasette runs immutable (-i), its fastest mode, with facet suggestions off. Other processes",
    "on the machine add noise: see the load average.",
)


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...]
    calls: int
    graph_calls: int
    reps: int
    http_seconds: float
    http_reps: int
    connections: int
    seed: int
    sections: tuple[str, ...]
    rebuild: bool
    via_redis: bool
    cache_dir: Path
    output: Path
    quick: bool


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="api_bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    full = {name: full for name, (full, _) in DEFAULTS.items()}
    parser.add_argument(
        "--sizes",
        help=f"comma-separated store sizes in events (default {','.join(map(str, LADDER))}; "
        f"--quick {','.join(map(str, QUICK_LADDER))})",
    )
    parser.add_argument(
        "--calls", type=int, help=f"timed calls per page/snapshot repetition ({full['calls']})"
    )
    parser.add_argument(
        "--graph-calls", type=int, help=f"timed graph calls per repetition ({full['graph_calls']})"
    )
    parser.add_argument(
        "--reps", type=int, help=f"repetitions of each in-process measurement ({full['reps']})"
    )
    parser.add_argument(
        "--http-seconds", type=float, help=f"measured seconds per HTTP run ({full['http_seconds']:g})"
    )
    parser.add_argument(
        "--http-reps", type=int, help=f"HTTP runs per server, alternating ({full['http_reps']})"
    )
    parser.add_argument("--connections", type=int, default=16, help="HTTP connections (default 16)")
    parser.add_argument("--quick", action="store_true", help="small stores and few calls: a smoke run")
    parser.add_argument("--seed", type=int, default=7, help="seed of stores and request mix (default 7)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"subset of {','.join(SECTIONS)}")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the stores even if cached")
    parser.add_argument(
        "--via-redis", action="store_true", help="build stores through redis-server and Worker.drain()"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "taskevents-api-bench",
        help="where built stores are kept (default %(default)s)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=HERE / "results" / "api.json",
        help="JSON results (default %(default)s)",
    )
    args = parser.parse_args(argv)
    sections = tuple(s for s in args.only.split(",") if s)
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"--only: unknown sections {sorted(unknown)}")
    pick = 1 if args.quick else 0
    sizes = (
        tuple(sorted(int(s) for s in args.sizes.split(",")))
        if args.sizes
        else (QUICK_LADDER if args.quick else LADDER)
    )
    if sizes[0] < 1000:
        parser.error("--sizes: at least 1,000 events per store")
    values: dict[str, Any] = {name: getattr(args, name) or v[pick] for name, v in DEFAULTS.items()}
    return Config(
        sizes=sizes,
        **values,
        connections=args.connections,
        seed=args.seed,
        sections=sections,
        rebuild=args.rebuild,
        via_redis=args.via_redis,
        cache_dir=args.cache_dir,
        output=args.output,
        quick=args.quick,
    )


# --- helpers ---------------------------------------------------------------------------------------


def summary_ms(ns: list[int]) -> dict[str, float]:
    ordered = sorted(ns)
    n = len(ordered)
    return {
        "calls": n,
        "median_ms": ordered[n // 2] / 1e6,
        "p99_ms": ordered[min(n - 1, int(0.99 * n))] / 1e6,
        "max_ms": ordered[-1] / 1e6,
        "mean_ms": statistics.fmean(ordered) / 1e6,
    }


def over_reps(runs: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "runs": runs,
        "median_ms": statistics.median(r["median_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def big_task(size: int) -> tuple[str, int, int]:
    """The store's big task: the probe of its own size (id, events, spans)."""
    events, spans = api_dataset.probe_shape(size)
    return api_dataset.probe_task_id(events, spans), events, spans


def page_start(events: int) -> int:
    """The `since_seq` of the timed page: the task's middle, or as late as still gives a full page."""
    return max(0, min(events // 2, events - PAGE))


def small_probe(sizes: tuple[int, ...]) -> tuple[str, int, int]:
    """The probe present in every store: the shape of the smallest one."""
    events, spans = api_dataset.probe_shape(sizes[0])
    return api_dataset.probe_task_id(events, spans), events, spans


# --- the app, called as ASGI in this process -------------------------------------------------------


class AsgiCaller:
    """Calls an ASGI app the way a server does: its lifespan at start and end, then one scope per request."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        self._lifespan_task: asyncio.Task[None] | None = None
        self._shutdown = asyncio.Event()

    async def __aenter__(self) -> "AsgiCaller":
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        messages = [{"type": "lifespan.startup"}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await self._shutdown.wait()
            return {"type": "lifespan.shutdown"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                started.set_result(None)
            elif message["type"] == "lifespan.startup.failed":
                started.set_exception(RuntimeError(message.get("message", "lifespan startup failed")))

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        self._lifespan_task = asyncio.ensure_future(self.app(scope, receive, send))
        await started
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._shutdown.set()
        if self._lifespan_task is not None:
            await self._lifespan_task

    async def get(self, target: str) -> tuple[int, bytes]:
        path, _, query = target.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "state": {},
            "headers": [(b"host", b"127.0.0.1:8000"), (b"accept", b"*/*")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        sent = False
        status = 0
        body: list[bytes] = []
        disconnected = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(body)


async def time_asgi(caller: AsgiCaller, targets: list[str], warmup: int) -> list[int]:
    """Nanoseconds of each call; the first `warmup` calls are not returned."""
    clock = time.perf_counter_ns
    out = []
    for i, target in enumerate(targets):
        t0 = clock()
        status, _ = await caller.get(target)
        t1 = clock()
        if status != 200:
            raise RuntimeError(f"GET {target}: {status}")
        if i >= warmup:
            out.append(t1 - t0)
    return out


def time_read(store: Any, calls: list[tuple[Callable[..., Any], tuple[Any, ...]]], warmup: int) -> list[int]:
    clock = time.perf_counter_ns
    out = []
    for i, (read, args) in enumerate(calls):
        t0 = clock()
        store.run(read, *args)
        t1 = clock()
        if i >= warmup:
            out.append(t1 - t0)
    return out


def check_bodies(
    store_path: Path, task: str, events: int, spans: int, bodies: dict[str, bytes]
) -> dict[str, Any]:
    """The answers are the right ones, not fast errors: 100 events, the snapshot's window, every span."""
    page = orjson.loads(bodies["page"])
    snap = orjson.loads(bodies["snapshot"])
    graph = orjson.loads(bodies["graph"])
    middle = page_start(events)
    problems = []
    if [e["seq"] for e in page["events"]] != list(range(middle + 1, middle + 1 + PAGE)):
        problems.append(f"page: not seqs {middle + 1} .. {middle + PAGE}")
    if page["total"] != events or page["has_more"] != (events > middle + PAGE):
        problems.append(f"page: total {page['total']}, has_more {page['has_more']}")
    if len(snap["events"]) != PAGE or snap["latest_seq"] != events or not snap["active_spans"]:
        problems.append("snapshot: wrong window, latest_seq or no active spans")
    if len(graph["spans"]) != spans or len(graph["edges"]) != spans - 1:
        problems.append(f"graph: {len(graph['spans'])} nodes, {len(graph['edges'])} edges for {spans} spans")
    if problems:
        raise RuntimeError(f"{store_path.name}, {task}: " + "; ".join(problems))
    return {
        "page_bytes": len(bodies["page"]),
        "snapshot_bytes": len(bodies["snapshot"]),
        "snapshot_active_spans": len(snap["active_spans"]),
        "graph_bytes": len(bodies["graph"]),
        "graph_spans": len(graph["spans"]),
    }


async def bench_store_async(cfg: Config, path: Path, size: int, redis_url: str) -> dict[str, Any]:
    task, events, spans = big_task(size)
    probe, _, probe_spans = small_probe(cfg.sizes)
    middle = page_start(events)
    rng = random.Random(cfg.seed)
    page = f"/api/tasks/{task}/events?since_seq={middle}&limit={PAGE}"
    targets = {
        "page": [page],
        "page_spread": [
            f"/api/tasks/{task}/events?since_seq={rng.randint(0, events - PAGE)}&limit={PAGE}"
            for _ in range(cfg.calls)
        ],
        "snapshot": [f"/api/tasks/{task}/events/snapshot?limit={PAGE}"],
        "graph": [f"/api/tasks/{task}/graph"],
        "graph_probe": [f"/api/tasks/{probe}/graph"],
    }
    reads_of: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
        "page": (reads.events_page, (task, middle, PAGE)),
        "snapshot": (reads.snapshot, (task, PAGE)),
        "graph": (reads.graph, (task, 10_000)),
    }
    settings = Settings(db=path, redis_url=redis_url, queue="bench:api")
    app = create_app(settings)
    out: dict[str, Any] = {
        "store_events": size,
        "big_task": {"task_id": task, "events": events, "spans": spans},
        "probe_task": {"task_id": probe, "spans": probe_spans},
    }
    async with AsgiCaller(app) as caller:
        bodies = {name: (await caller.get(t[0]))[1] for name, t in targets.items() if name != "page_spread"}
        out["answers"] = check_bodies(path, task, events, spans, bodies)
        for name, pool in targets.items():
            n = cfg.graph_calls if name.startswith("graph") else cfg.calls
            warmup = max(5, n // 10)
            runs = []
            for _ in range(cfg.reps):
                calls = [pool[i % len(pool)] for i in range(warmup + n)]
                runs.append(summary_ms(await time_asgi(caller, calls, warmup)))
            out[name] = over_reps(runs)
            say(
                f"  {size:>9,} events, {name:<12} median {out[name]['median_ms']:.3f} ms, "
                f"p99 {out[name]['p99_ms']:.3f} ms"
            )
        store = app.state.store
        for name, (read, args) in reads_of.items():
            n = cfg.graph_calls if name == "graph" else cfg.calls
            warmup = max(5, n // 10)
            # On a worker thread, as the endpoint does: the read alone, without routing or the hop.
            runs = [
                summary_ms(await asyncio.to_thread(time_read, store, [(read, args)] * (warmup + n), warmup))
                for _ in range(cfg.reps)
            ]
            out[f"{name}_read_only"] = over_reps(runs)
    return out


def bench_inprocess(cfg: Config, stores: dict[int, Path], redis_url: str) -> dict[str, Any]:
    results = {}
    for size, path in stores.items():
        say(f"in process: store of {size:,} events")
        results[str(size)] = uvloop.run(bench_store_async(cfg, path, size, redis_url))
    first, last = results[str(cfg.sizes[0])], results[str(cfg.sizes[-1])]
    results["flat_ratio"] = {
        name: last[name]["median_ms"] / first[name]["median_ms"]
        for name in ("page", "page_spread", "snapshot", "graph_probe")
    }
    return results


# --- over HTTP: the API process and Datasette ------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def cpu_seconds(self) -> float:
        """CPU time of the server and any children (uvicorn with workers forks them)."""
        try:
            procs = [psutil.Process(self.proc.pid)]
            procs += procs[0].children(recursive=True)
            return sum(p.cpu_times().user + p.cpu_times().system for p in procs)
        except psutil.NoSuchProcess:
            return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_server(
    name: str, cmd: list[str], env: dict[str, str], port: int, ready_path: str, workdir: Path
) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, proc, port, log)
    deadline = time.monotonic() + 120  # Datasette -i reads the schema (and counts) at start
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{name} did not answer {ready_path} within 120 s: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def request_mix(path: Path, n: int, seed: int) -> list[tuple[str, int]]:
    """`n` full 100-event pages: a task with more than 100 events, then a since_seq in it, uniformly."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tasks = conn.execute(
            "SELECT task_id, event_count FROM tasks WHERE event_count > ? ORDER BY task_id", (PAGE,)
        ).fetchall()
    finally:
        conn.close()
    rng = random.Random(seed)
    return [(t, rng.randint(0, count - PAGE)) for t, count in (rng.choice(tasks) for _ in range(n))]


def api_path(task: str, since: int) -> str:
    return f"/api/tasks/{quote(task, safe='')}/events?since_seq={since}&limit={PAGE}"


def datasette_path(db: str, task: str, since: int) -> str:
    return (
        f"/{db}/task_events.json?task_id={quote(task, safe='')}&seq__gt={since}&_sort=seq&_size={PAGE}"
        "&_shape=objects&_nocount=1&_nofacet=1&_nosuggest=1"
    )


def same_rows(api_port: int, ds_port: int, db: str, sample: list[tuple[str, int]]) -> dict[str, Any]:
    """Both servers return the same events (every column; Datasette's payload is the stored text)."""
    with httpx.Client(timeout=30) as client:
        for task, since in sample:
            ours = client.get(f"http://127.0.0.1:{api_port}{api_path(task, since)}")
            theirs = client.get(f"http://127.0.0.1:{ds_port}{datasette_path(db, task, since)}")
            ours.raise_for_status()
            theirs.raise_for_status()
            a = ours.json()["events"]
            b = [{**row, "payload": orjson.loads(row["payload"])} for row in theirs.json()["rows"]]
            if a != b or len(a) != PAGE:
                raise RuntimeError(
                    f"{task} after {since}: the API and Datasette disagree ({len(a)} vs {len(b)} rows)"
                )
    return {"sampled_requests": len(sample), "rows_compared": len(sample) * PAGE, "identical": True}


def run_loadgen(server: Server, paths_file: Path, cfg: Config) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(HERE / "api_loadgen.py"),
        "--port",
        str(server.port),
        "--paths",
        str(paths_file),
        "--connections",
        str(cfg.connections),
        "--warmup",
        "1",
        "--duration",
        str(cfg.http_seconds),
    ]
    cpu0, machine0 = server.cpu_seconds(), psutil.cpu_times()
    done = subprocess.run(cmd, capture_output=True, check=False)
    cpu1, machine1 = server.cpu_seconds(), psutil.cpu_times()
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.decode()[-2000:]}")
    result = orjson.loads(done.stdout.splitlines()[-1])
    wall = cfg.http_seconds + 1  # the run's warm-up second included, as in the CPU deltas
    busy = sum(machine1) - sum(machine0) - (machine1.idle - machine0.idle)
    result["server_cpu_share"] = (cpu1 - cpu0) / wall
    # CPU per request is what other load on the machine disturbs least: the server's cost, not its luck.
    result["server_cpu_ms_per_request"] = (cpu1 - cpu0) / result["requests_answered_in_run"] * 1000
    result["machine_busy_share"] = busy / (sum(machine1) - sum(machine0))
    if result["ok"] != result["requests"] or result["connection_errors"]:
        raise RuntimeError(
            f"{server.name}: errors under load: {result['statuses']} {result['connection_errors']}"
        )
    return result


def bench_http(cfg: Config, path: Path, redis_url: str, workdir: Path) -> dict[str, Any]:
    db = path.stem
    mix = request_mix(path, 20_000, cfg.seed + 1)
    files = {"api": workdir / "api-paths.txt", "datasette": workdir / "datasette-paths.txt"}
    files["api"].write_text("\n".join(api_path(t, s) for t, s in mix) + "\n")
    files["datasette"].write_text("\n".join(datasette_path(db, t, s) for t, s in mix) + "\n")
    env = dict(
        os.environ,
        TASKEVENTS_DB=str(path),
        TASKEVENTS_REDIS_URL=redis_url,
        TASKEVENTS_QUEUE="bench:api",
        TASKEVENTS_LOG_LEVEL="WARNING",
    )
    api_port, ds_port = free_port(), free_port()
    servers: dict[str, Server] = {}
    try:
        say(f"http: starting python -m taskevents.api on :{api_port} and datasette -i on :{ds_port}")
        servers["api"] = start_server(
            "api",
            [sys.executable, "-m", "taskevents.api", "--host", "127.0.0.1", "--port", str(api_port)],
            env,
            api_port,
            "/api/events/health",
            workdir,
        )
        servers["datasette"] = start_server(
            "datasette",
            [
                sys.executable,
                "-m",
                "datasette",
                "serve",
                "-i",
                str(path),
                "--host",
                "127.0.0.1",
                "--port",
                str(ds_port),
                "--setting",
                "suggest_facets",
                "off",
            ],
            env,
            ds_port,
            "/-/versions.json",
            workdir,
        )
        check = same_rows(api_port, ds_port, db, random.Random(cfg.seed + 2).sample(mix, 50))
        say(f"http: both servers return the same rows for {check['sampled_requests']} sampled pages")
        runs: dict[str, list[dict[str, Any]]] = {"api": [], "datasette": []}
        for rep in range(cfg.http_reps):
            order = ("api", "datasette") if rep % 2 == 0 else ("datasette", "api")
            for name in order:
                r = run_loadgen(servers[name], files[name], cfg)
                runs[name].append(r)
                say(
                    f"http {name} rep {rep + 1}/{cfg.http_reps}: {r['requests_per_s']:,.0f} req/s, "
                    f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                    f"server CPU {r['server_cpu_share']:.0%}, load generator CPU {r['loadgen_cpu_share']:.0%}"
                )
    finally:
        for server in servers.values():
            server.stop()
    out: dict[str, Any] = {
        "store_events": cfg.sizes[-1],
        "database": db,
        "connections": cfg.connections,
        "distinct_pages": len(set(mix)),
        "tasks_in_mix": len({t for t, _ in mix}),
        "same_rows": check,
    }
    for name, rs in runs.items():
        out[name] = {
            "runs": rs,
            **{
                k: statistics.median(r[k] for r in rs)
                for k in (
                    "requests_per_s",
                    "p50_ms",
                    "p99_ms",
                    "server_cpu_share",
                    "server_cpu_ms_per_request",
                    "loadgen_cpu_share",
                    "machine_busy_share",
                    "response_bytes_mean",
                )
            },
        }
    out["ratio_api_over_datasette"] = out["api"]["requests_per_s"] / out["datasette"]["requests_per_s"]
    # Each repetition's pair ran back to back, under the same background load: a check on the above.
    out["ratio_per_repetition"] = [
        a["requests_per_s"] / d["requests_per_s"] for a, d in zip(runs["api"], runs["datasette"], strict=True)
    ]
    return out


# --- report ----------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "versions": {p: _version(p) for p in ("fastapi", "starlette", "uvicorn", "datasette", "uvloop")},
        "load_average_1m": {"start": os.getloadavg()[0]},
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def ms(m: dict[str, Any]) -> str:
    return f"{m['median_ms']:.2f} / {m['p99_ms']:.2f}"


def table(results: dict[str, Any]) -> str:
    sizes = results["config"]["sizes"]
    largest = str(sizes[-1])
    rows: list[tuple[str, str, str, str]] = []
    if ip := results.get("inprocess"):
        big = ip[largest]
        bt = big["big_task"]
        shape = f"{bt['events']:,} events, {bt['spans']:,} spans"
        for name, label, target in (
            ("page", f"100-event page at the middle seq ({shape})", "page_ms"),
            ("snapshot", "snapshot (100 events + state)", "snapshot_ms"),
            ("graph", f"graph ({bt['spans']:,} spans)", "graph_ms"),
        ):
            t = TARGETS[target]
            met = yes(big[name]["median_ms"] < t) + ("" if big[name]["p99_ms"] < t else " (p99 over)")
            rows.append(
                (
                    f"in process, {int(largest):,}-event store: {label}, median / p99",
                    f"{ms(big[name])} ms",
                    f"< {t:g} ms",
                    met,
                )
            )
        for name, label in (("page", "page"), ("snapshot", "snapshot"), ("graph_probe", "probe graph")):
            r = ip["flat_ratio"][name]
            rows.append(
                (
                    f"flat: {label} median, {sizes[-1]:,} / {sizes[0]:,} events",
                    f"{r:.2f}×",
                    f"≤ {TARGETS['flat_ratio']:g}×",
                    yes(r <= TARGETS["flat_ratio"]),
                )
            )
    if h := results.get("http"):
        a, d = h["api"], h["datasette"]
        rows.append(
            (
                f"HTTP, {h['connections']} connections, 100-event pages: API requests/s",
                f"{a['requests_per_s']:,.0f}",
                "",
                "",
            )
        )
        rows.append(
            ("HTTP: Datasette (-i) requests/s, same file and rows", f"{d['requests_per_s']:,.0f}", "", "")
        )
        r = h["ratio_api_over_datasette"]
        paired = ", ".join(f"{x:.2f}" for x in h["ratio_per_repetition"])
        rows.append(
            (
                f"HTTP: API / Datasette (each repetition: {paired})",
                f"{r:.2f}×",
                "≥ 2×",
                yes(r >= TARGETS["ratio_vs_datasette"]),
            )
        )
        rows.append(
            (
                "HTTP: API p50 / p99",
                f"{a['p50_ms']:.1f} / {a['p99_ms']:.1f} ms",
                "p99 < 25 ms",
                yes(a["p99_ms"] < TARGETS["http_p99_ms"]),
            )
        )
        rows.append(("HTTP: Datasette p50 / p99", f"{d['p50_ms']:.1f} / {d['p99_ms']:.1f} ms", "", ""))
    lines = ["| measurement | measured | target | met |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    if ip:
        head = " | ".join(f"{int(s):,} events" for s in sizes)
        lines += ["", f"| in process, median / p99 ms | {head} |", "|---|" + "---|" * len(sizes)]
        for name, label in (
            ("page", "page of 100, middle seq (ASGI)"),
            ("page_read_only", "page of 100: read only"),
            ("page_spread", "page of 100, random seqs (ASGI)"),
            ("snapshot", "snapshot (ASGI)"),
            ("snapshot_read_only", "snapshot: read only"),
            ("graph", "graph of the big task (ASGI)"),
            ("graph_read_only", "graph of the big task: read only"),
            ("graph_probe", "graph of the probe task (ASGI)"),
        ):
            lines.append(f"| {label} | " + " | ".join(ms(ip[str(s)][name]) for s in sizes) + " |")
        lines.append(
            "| big task: events / spans | "
            + " | ".join(
                f"{ip[str(s)]['big_task']['events']:,} / {ip[str(s)]['big_task']['spans']:,}" for s in sizes
            )
            + " |"
        )
    if h:
        lines += [
            "",
            "| HTTP (medians of runs) | requests/s | p50 ms | p99 ms | server CPU | server CPU per request "
            "| load generator CPU |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in ("api", "datasette"):
            s = h[name]
            lines.append(
                f"| {name} | {s['requests_per_s']:,.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
                f"{s['server_cpu_share']:.0%} of a core | {s['server_cpu_ms_per_request']:.2f} ms | "
                f"{s['loadgen_cpu_share']:.0%} of a core |"
            )
    stores = results.get("stores", {})
    built = {s["write_path"] for s in stores.values()}
    load = results["environment"]["load_average_1m"]
    lines += [
        "",
        *NOTES,
        f"Stores written by: {', '.join(sorted(built))}.",
        f"Load average (1 min) at start / end: {load['start']:.1f} / {load['end']:.1f} on "
        f"{results['environment']['cpus']} cores.",
    ]
    return "\n".join(lines)


def run(cfg: Config, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "config": {**asdict(cfg), "cache_dir": str(cfg.cache_dir), "output": str(cfg.output)},
        "targets": TARGETS,
        "environment": environment(),
    }
    stores: dict[int, Path] = {}
    results["stores"] = {}
    for size in cfg.sizes:
        spec = api_dataset.spec_for(size, list(cfg.sizes), cfg.seed, via_redis=cfg.via_redis)
        stores[size], results["stores"][str(size)] = api_dataset.build(
            spec, cfg.cache_dir, rebuild=cfg.rebuild, log=say
        )
    # A private redis-server for the API's readiness checks and metrics: never the machine's own.
    redis_server = RedisServer(workdir / "redis").start()
    try:
        if "inprocess" in cfg.sections:
            results["inprocess"] = bench_inprocess(cfg, stores, redis_server.url)
        if "http" in cfg.sections:
            results["http"] = bench_http(cfg, stores[cfg.sizes[-1]], redis_server.url, workdir)
    finally:
        redis_server.stop()
    results["environment"]["load_average_1m"]["end"] = os.getloadavg()[0]
    return results


def main() -> None:
    cfg = parse_args()
    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp:
        results = run(cfg, Path(tmp))
    publish(results, cfg.output, table(results))


if __name__ == "__main__":
    main()

"""Live-stream benchmark: latency from `emit()` to an SSE client, with many tasks and clients at once.

Runs the whole system as deployed, each part in its own process, on a private redis-server (never
the one on port 6379): the ingest worker (`python -m taskevents.ingest`), ONE API process
(`python -m taskevents.api`),
a producer process that emits `--rate` events/s in total round-robin over `--tasks` tasks, and
`--clients` SSE clients (spread evenly over the tasks, connected before the first event) in
`--client-procs` processes of their own (one per 250 clients unless told), reading raw HTTP with
asyncio so that the clients cost little CPU.

Each event's payload carries `t`, the producer's `time.time()` just before `emit()`; a client takes
`time.time()` when the event's frame arrives. Latency = arrival - t, over the events emitted after
`--warmup` seconds. At the end every task gets a `runner_exit`; each client must then have received
every seq 1..last exactly once (missed and duplicated deliveries are counted). The API process's CPU
(psutil: user + system time over the measured window, in % of one core) is the cost of the fan-out:
notifications, one store read per commit, frames to every client; divided by the deliveries made
in that window it is the API's CPU per delivered event, and one core divided by that, the most
deliveries a second one API process could make if nothing else ran on its core.

Prints a markdown table with the issue's targets (median <= 20 ms, p99 <= 100 ms, nothing missed) and
writes every figure to benchmarks/results/stream.json.
"""

import argparse
import asyncio
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import redis
import uvloop

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from report import publish  # noqa: E402  (beside this script)

from taskevents.emitter import Emitter  # noqa: E402
from taskevents.ingest.localredis import RedisServer  # noqa: E402
from taskevents.keys import QueueKeys  # noqa: E402
from taskevents.simulate import simulate  # noqa: E402

TARGETS = {"median_ms": 20.0, "p99_ms": 100.0, "missed": 0}
QUEUE = "bench:events"
CLIENTS_PER_PROCESS = 250


@dataclass
class Config:
    tasks: int = 100
    rate: int = 5000
    clients: int = 200
    seconds: float = 20.0
    warmup: float = 3.0
    output: Path = HERE / "results" / "stream.json"
    archiving: int = 0  # ended runs stored first, archived by passes during the measurement
    passes: bool = True  # False: the backlog stored, no `jobs` process (stream_pairs.py's control)
    client_procs: int = 0  # processes the SSE clients run in; 0: one per CLIENTS_PER_PROCESS

    def procs(self) -> int:
        return self.client_procs or max(1, -(-self.clients // CLIENTS_PER_PROCESS))


def parse_args() -> Config:
    parser = argparse.ArgumentParser(
        prog="stream_bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = Config()
    parser.add_argument("--tasks", type=int, default=d.tasks, help="tasks emitting (default %(default)s)")
    parser.add_argument("--rate", type=int, default=d.rate, help="events/s in total (default %(default)s)")
    parser.add_argument("--clients", type=int, default=d.clients, help="SSE clients (default %(default)s)")
    parser.add_argument(
        "--seconds", type=float, default=d.seconds, help="emitting time (default %(default)s)"
    )
    parser.add_argument(
        "--warmup", type=float, default=d.warmup, help="seconds not measured (default %(default)s)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds, small: checks that the script runs"
    )
    parser.add_argument("--output", type=Path, default=d.output, help="JSON results (default %(default)s)")
    parser.add_argument(
        "--archiving", type=int, default=0,
        help="store this many ended simulated runs first, and archive them during the measurement "
        "(`taskevents jobs`, retention 0 s: its passes follow one another while the backlog lasts)",
    )  # fmt: skip
    parser.add_argument(
        "--client-procs", type=int, default=0,
        help=f"processes the clients run in (default: one per {CLIENTS_PER_PROCESS} clients)",
    )  # fmt: skip
    parser.add_argument("--producer", action="store_true", help=argparse.SUPPRESS)  # internal: the emitter
    parser.add_argument("--client-port", type=int, help=argparse.SUPPRESS)  # internal: a client process
    parser.add_argument("--client-tasks", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.producer:
        produce(args.tasks, args.rate, args.seconds)
        sys.exit(0)
    if args.client_port:
        # uvloop (uvicorn[standard]'s, as the API runs on): the clients' own CPU, on the same 2 cores.
        uvloop.run(client_process(args.client_port, args.client_tasks.split(",")))
        sys.exit(0)
    if args.quick:
        return Config(tasks=10, rate=500, clients=20, seconds=3.0, warmup=1.0, output=args.output,
                      archiving=min(args.archiving, 50), client_procs=args.client_procs or 2)  # fmt: skip
    return Config(args.tasks, args.rate, args.clients, args.seconds, args.warmup, args.output, args.archiving,
                  client_procs=args.client_procs)  # fmt: skip


# --- the producer (its own process) ---------------------------------------------------------------


def produce(tasks: int, rate: int, seconds: float) -> None:
    """Emit `rate` events/s round-robin over the tasks for `seconds`, then a runner_exit per task."""
    from taskevents.emitter import Emitter  # the producer's import only

    emitter = Emitter(os.environ["TASKEVENTS_REDIS_URL"], queue=QUEUE)
    task_ids = [f"task-{i:03d}" for i in range(tasks)]
    explanation = "Progress estimate is based on the number of files processed so far."
    tick = 0.005  # emit in small bursts, 200 a second, like many runners would
    per_tick = rate * tick
    started = time.perf_counter()
    sent = owed = 0.0
    n = 0
    while (elapsed := time.perf_counter() - started) < seconds:
        owed = rate * elapsed - sent
        for _ in range(int(owed)):
            task_id = task_ids[n % tasks]
            payload = {"t": time.time(), "n": n, "progress": (n % 100) / 100, "explanation": explanation}
            emitter.emit(task_id, "work_item_progress", span_id=f"{task_id}/wi", actor="worker",
                         phase="executing", payload=payload)  # fmt: skip
            n += 1
            sent += 1
        time.sleep(max(0.0, tick - (time.perf_counter() - started - elapsed)) if per_tick else tick)
    for task_id in task_ids:
        emitter.emit(
            task_id, "runner_exit", span_id=f"{task_id}/runner", actor="runner", payload={"t": time.time()}
        )
    emitter.close(30)
    print(n, flush=True)


# --- the clients (processes of their own) ----------------------------------------------------------


@dataclass
class ClientStats:
    task_id: str
    seqs_ok: int = 0
    missed: int = 0
    duplicates: int = 0
    last_seq: int = 0
    end_seq: int | None = None
    latencies: list[float] = field(default_factory=list)
    to_store: list[float] = field(default_factory=list)  # emit() -> the worker's commit (created_at, ms)
    connected: bool = False
    arrivals: list[float] = field(default_factory=list)  # when each frame of the window came (not sent)
    in_window: int = 0  # deliveries that arrived within the CPU-measured window


async def sse_client(port: int, stats: ClientStats, measure_from: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"GET /sse/tasks/{stats.task_id}/events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
    )
    writer.write(request.encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    stats.connected = True
    buf = b""
    try:
        while True:
            size = int((await reader.readline()).strip(), 16)  # chunked transfer encoding
            if size == 0:
                return
            buf += (await reader.readexactly(size + 2))[:-2]
            *frames, buf = buf.split(b"\n\n")
            now = time.time()
            for frame in frames:
                if frame.startswith(b"id: "):
                    if now >= measure_from[0]:
                        stats.arrivals.append(now)
                    event = orjson.loads(frame[frame.index(b"\ndata: ") + 7 :])
                    seq = event["seq"]
                    if seq == stats.last_seq + 1:
                        stats.seqs_ok += 1
                        stats.last_seq = seq
                    elif seq <= stats.last_seq:
                        stats.duplicates += 1
                    else:
                        stats.missed += seq - stats.last_seq - 1
                        stats.seqs_ok += 1
                        stats.last_seq = seq
                    t = event["payload"].get("t")
                    if t is not None and t >= measure_from[0] and event["event_type"] != "runner_exit":
                        stats.latencies.append(now - t)
                        stats.to_store.append(datetime.fromisoformat(event["created_at"]).timestamp() - t)
                elif frame.startswith(b"event: end"):
                    stats.end_seq = orjson.loads(frame[frame.index(b"\ndata: ") + 7 :])["last_seq"]
                    return
    finally:
        writer.close()


async def client_process(port: int, task_ids: list[str]) -> None:
    """One client process: a client per entry of `task_ids`. Prints `ready` once all are connected;
    reads from stdin the time from which latencies count, then the CPU window's bounds; once every
    stream has ended (or 120 s after the bounds came) prints every client's counts and latencies
    as one JSON line."""
    stats = [ClientStats(task_id) for task_id in task_ids]
    measure_from = [float("inf")]
    clients = [asyncio.create_task(sse_client(port, s, measure_from)) for s in stats]
    while not all(s.connected for s in stats):
        await asyncio.sleep(0.05)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    measure_from[0] = float(await loop.run_in_executor(None, sys.stdin.readline))
    # Then the CPU window's bounds, once the producer has stopped: from there the streams have
    # 120 s to end.
    start, end = map(float, (await loop.run_in_executor(None, sys.stdin.readline)).split())
    await asyncio.wait(clients, timeout=120)
    for s in stats:
        s.in_window = sum(start <= t <= end for t in s.arrivals)
        s.arrivals = []
    sys.stdout.buffer.write(orjson.dumps([asdict(s) for s in stats]) + b"\n")
    sys.stdout.flush()


async def start_client_processes(
    cfg: Config, port: int, env: dict[str, str]
) -> list[asyncio.subprocess.Process]:
    """`cfg.clients` clients over `cfg.tasks` tasks, dealt round-robin to `cfg.procs()` processes; back
    once every client is connected."""
    task_ids = [f"task-{i % cfg.tasks:03d}" for i in range(cfg.clients)]
    procs = []
    for n in range(cfg.procs()):
        mine = task_ids[n :: cfg.procs()]
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(Path(__file__).resolve()),
                "--client-port",
                str(port),
                "--client-tasks",
                ",".join(mine),
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 30,
            )
        )
    for proc in procs:
        assert proc.stdout is not None
        if (await asyncio.wait_for(proc.stdout.readline(), 120)).strip() != b"ready":
            raise RuntimeError("a client process did not connect its clients")
    return procs


async def tell(procs: list[asyncio.subprocess.Process], line: str) -> None:
    """A line to every client process's stdin."""
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(line.encode() + b"\n")
        await proc.stdin.drain()


async def client_results(procs: list[asyncio.subprocess.Process]) -> list[ClientStats]:
    stats = []
    for proc in procs:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 180)
        await proc.wait()
        stats += [ClientStats(**s) for s in orjson.loads(line)]
    return stats


# --- the run --------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


async def run_clients(
    cfg: Config,
    port: int,
    env: dict[str, str],
    api: psutil.Process,
    worker: psutil.Process,
    client: redis.Redis,
) -> dict[str, Any]:
    client_procs = await start_client_processes(cfg, port, env)
    await asyncio.sleep(0.5)

    producer = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), "--producer", "--tasks", str(cfg.tasks),
        "--rate", str(cfg.rate), "--seconds", str(cfg.seconds), env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    started = time.time()
    jobs = None
    if cfg.archiving and cfg.passes:  # the `jobs` process, with a backlog: its passes follow one another
        jobs_env = {**env, "TASKEVENTS_RETENTION": "0s", "TASKEVENTS_ARCHIVE_EVERY": "1s"}
        jobs = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "taskevents", "jobs", env=jobs_env, start_new_session=True,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    await asyncio.sleep(cfg.warmup)
    measure_from = window_from = time.time()
    await tell(client_procs, f"{measure_from!r}")
    window_start = time.monotonic()
    clients_ps = [psutil.Process(p.pid) for p in client_procs]
    producing = psutil.Process(producer.pid)
    api_cpu0, worker_cpu0 = cpu_seconds(api), cpu_seconds(worker)
    clients_cpu0, producer_cpu0 = sum(map(cpu_seconds, clients_ps)), cpu_seconds(producing)
    batches0 = int(client.hget(QueueKeys(QUEUE).stats, "batches") or 0)
    ingested0 = int(client.hget(QueueKeys(QUEUE).stats, "ingested") or 0)
    await asyncio.sleep(max(0.5, cfg.seconds - cfg.warmup - 0.2))
    window = time.monotonic() - window_start
    window_to = time.time()
    api_cpu_seconds = cpu_seconds(api) - api_cpu0
    api_cpu = api_cpu_seconds / window * 100
    worker_cpu = (cpu_seconds(worker) - worker_cpu0) / window * 100
    clients_cpu = (sum(map(cpu_seconds, clients_ps)) - clients_cpu0) / window * 100
    producer_cpu = (cpu_seconds(producing) - producer_cpu0) / window * 100
    batches = int(client.hget(QueueKeys(QUEUE).stats, "batches") or 0) - batches0
    ingested = int(client.hget(QueueKeys(QUEUE).stats, "ingested") or 0) - ingested0

    archived = None
    if jobs is not None:
        os.killpg(jobs.pid, signal.SIGKILL)
        await jobs.wait()
        archived = archived_count(Path(env["TASKEVENTS_DB"]))

    out, _ = await producer.communicate()
    emitted = int(out.decode().strip() or 0)
    await tell(client_procs, f"{window_from!r} {window_to!r}")
    stats = await client_results(client_procs)
    # Deliveries the API made in the CPU window: the frames the clients received within it.
    deliveries_in_window = sum(s.in_window for s in stats)
    emitting = time.time() - started

    latencies = sorted(x * 1000 for s in stats for x in s.latencies)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    # Where the time goes: emit() -> committed (the store's created_at, to the millisecond) and the rest.
    to_store = [x * 1000 for s in stats for x in s.to_store]
    from_store = sorted(
        total - stored
        for total, stored in zip((x * 1000 for s in stats for x in s.latencies), to_store, strict=True)
    )
    to_store.sort()
    deliveries_expected = sum(s.end_seq or 0 for s in stats)
    missed = sum(s.missed + ((s.end_seq or 0) - s.last_seq if s.end_seq else 1) for s in stats)
    return {
        "archived_during": archived,  # --archiving: tasks the passes archived while measured
        "emitted": emitted + cfg.tasks,
        "emit_seconds": round(emitting, 2),
        "deliveries_expected": deliveries_expected,
        "deliveries_received": sum(s.seqs_ok for s in stats),
        "missed": missed,
        "duplicates": sum(s.duplicates for s in stats),
        "clients_ended": sum(s.end_seq is not None for s in stats),
        "latency_ms": {
            "samples": len(latencies),
            "median": round(statistics.median(latencies), 2),
            "p90": round(q[89], 2),
            "p99": round(q[98], 2),
            "max": round(latencies[-1], 2),
            "mean": round(statistics.fmean(latencies), 2),
        },
        "breakdown_ms": {
            "emit_to_commit": _summary(to_store),
            "commit_to_client": _summary(from_store),
            "note": "created_at has millisecond resolution and is taken as the batch is planned, at most "
            "one commit before its own commit starts",
        },
        "api_cpu_percent": round(api_cpu, 1),
        "api_cpu_us_per_delivery": round(api_cpu_seconds / deliveries_in_window * 1e6, 2),
        # One core's worth of the API's CPU per delivery: an upper bound, the event loop alone.
        "api_deliveries_per_core_second": round(deliveries_in_window / api_cpu_seconds),
        "deliveries_per_second": round(deliveries_in_window / window),
        "client_processes": len(client_procs),
        "worker_cpu_percent": round(worker_cpu, 1),
        "clients_cpu_percent": round(clients_cpu, 1),  # every client process
        "producer_cpu_percent": round(producer_cpu, 1),
        "measured_seconds": round(window, 2),
        "worker_batches_in_window": batches,
        "events_per_batch": round(ingested / batches, 1) if batches else None,
    }


def _summary(sorted_ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(sorted_ms, n=100, method="inclusive")
    return {"median": round(q[49], 2), "p90": round(q[89], 2), "p99": round(q[98], 2)}


def store_ended_runs(url: str, db: Path, runs: int) -> None:
    """`runs` simulated runs, every one ended, stored before the measurement: the passes' backlog."""
    emitter = Emitter(url, queue=QUEUE, buffer_size=2_000_000)
    events = simulate(emitter, tasks=runs, concurrency=50, rate=0, seed=3, prefix="old")
    assert emitter.close(120)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            if conn.execute("SELECT coalesce(sum(event_count), 0) FROM tasks").fetchone()[0] >= events:
                return
        finally:
            conn.close()
        time.sleep(0.2)
    raise RuntimeError("the backlog of ended runs was not stored in 300 s")


def archived_count(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM tasks WHERE archived = 1").fetchone()[0])
    finally:
        conn.close()


def run(cfg: Config, tmp: Path, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """One measurement; `extra_env`: settings for the worker and the API (stream_pairs.py)."""
    server = RedisServer(tmp / "redis").start()
    port = free_port()
    env = dict(os.environ, **(extra_env or {}), TASKEVENTS_REDIS_URL=server.url,
               TASKEVENTS_DB=str(tmp / "events.db"), TASKEVENTS_QUEUE=QUEUE, TASKEVENTS_LOG_LEVEL="WARNING",
               TASKEVENTS_ARCHIVE_DIR=str(tmp / "archive"))  # fmt: skip
    worker = subprocess.Popen([sys.executable, "-m", "taskevents.ingest"], env=env, cwd=ROOT)
    api = subprocess.Popen([sys.executable, "-m", "taskevents.api", "--port", str(port)], env=env, cwd=ROOT)
    client = redis.Redis.from_url(server.url)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if (tmp / "events.db").exists() and httpx.get(
                    f"http://127.0.0.1:{port}/api/events/health"
                ).is_success:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API or the worker did not start")
            time.sleep(0.1)
        if cfg.archiving:
            store_ended_runs(server.url, tmp / "events.db", cfg.archiving)
        measured = asyncio.run(
            run_clients(cfg, port, env, psutil.Process(api.pid), psutil.Process(worker.pid), client)
        )
        environment = {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "redis_server": client.info("server")["redis_version"],
            "load_average_at_start": os.getloadavg(),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    finally:
        client.close()
        for proc in (api, worker):
            proc.send_signal(signal.SIGTERM)
        for proc in (api, worker):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()
    config = {**asdict(cfg), "output": str(cfg.output), "env": extra_env or {}}
    return {"config": config, "targets": TARGETS, "environment": environment, **measured}


def table(results: dict[str, Any]) -> str:
    c, lat, split = results["config"], results["latency_ms"], results["breakdown_ms"]

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    rows = [
        "| measurement | measured | target | met |",
        "|---|---|---|---|",
        f"| latency emit() -> SSE client, median | {lat['median']} ms | <= 20 ms "
        f"| {met(lat['median'] <= 20)} |",
        f"| latency, p99 | {lat['p99']} ms | <= 100 ms | {met(lat['p99'] <= 100)} |",
        f"| latency, p90 / max | {lat['p90']} / {lat['max']} ms | | |",
        *(
            [f"| tasks archived by passes meanwhile | {results['archived_during']} | | |"]
            if results.get("archived_during") is not None
            else []
        ),
        f"| events missed / duplicated | {results['missed']} / {results['duplicates']} | 0 | "
        f"{met(results['missed'] == 0 and results['duplicates'] == 0)} |",
        f"| deliveries (events x clients of their task) | {results['deliveries_received']} of "
        f"{results['deliveries_expected']} | all "
        f"| {met(results['deliveries_received'] == results['deliveries_expected'])} |",
        f"| of which emit() -> commit, median / p99 | {split['emit_to_commit']['median']} / "
        f"{split['emit_to_commit']['p99']} ms | | |",
        f"| of which commit -> client, median / p99 | {split['commit_to_client']['median']} / "
        f"{split['commit_to_client']['p99']} ms | | |",
        f"| API process CPU (fan-out, one process) | {results['api_cpu_percent']} % of a core | | |",
        f"| API CPU per delivered event / deliveries per second | {results['api_cpu_us_per_delivery']} µs"
        f" / {results['deliveries_per_second']:,} | | |",
        f"| worker CPU / events per committed batch | {results['worker_cpu_percent']} % / "
        f"{results['events_per_batch']} | | |",
        f"| CPU of the SSE clients ({results['client_processes']} processes) / of the producer (same 2 "
        f"cores) | {results['clients_cpu_percent']} % / {results['producer_cpu_percent']} % | | |",
    ]
    head = (
        f"{c['tasks']} tasks emitting {c['rate']} events/s in total for {c['seconds']} s, {c['clients']} SSE "
        f"clients; {results['latency_ms']['samples']} latency samples after a {c['warmup']} s warm-up."
    )
    return head + "\n\n" + "\n".join(rows)


def main() -> None:
    cfg = parse_args()
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as tmp:
        results = run(cfg, Path(tmp))
    publish(results, cfg.output, table(results))


if __name__ == "__main__":
    main()

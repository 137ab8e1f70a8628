"""How many SSE watchers one API process holds: stream_bench.py's run at a growing number of clients.

Each step is a whole stream_bench.py run (its own redis-server, worker, ONE API process, producer,
clients in processes of their own, one per 250) at `--rate` events/s over `--tasks` tasks, with
`--clients` taking each value of `--steps` in turn. A step holds if nothing is missed or doubled
and the emit-to-client p99 is within `--p99` ms. Prints a row per step (deliveries a second, the
latencies and their two halves, the API's CPU and its CPU per delivered event) and the largest step
that held; writes every run's figures to benchmarks/results/stream_capacity.json.

Everything shares the machine's cores: the clients' and the producer's CPU is CPU the API does not
get, so a step that fails here may hold where the clients are elsewhere (the table says what each
part used).
"""

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import publish, say  # noqa: E402
from stream_bench import Config, run  # noqa: E402


def parse_args() -> tuple[list[int], float, Config, Path]:
    parser = argparse.ArgumentParser(
        prog="stream_capacity.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", default="200,400,600,800,1000", help="client counts (default %(default)s)")
    parser.add_argument("--tasks", type=int, default=200, help="tasks emitting (default %(default)s)")
    parser.add_argument("--rate", type=int, default=5000, help="events/s in total (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per step (default %(default)s)")
    parser.add_argument(
        "--p99", type=float, default=50.0, help="p99 a step must keep, ms (default %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help="two short small steps: checks that it runs")
    parser.add_argument(
        "--output",
        type=Path,
        default=HERE / "results" / "stream_capacity.json",
        help="JSON (default %(default)s)",
    )
    args = parser.parse_args()
    steps = [int(x) for x in args.steps.split(",") if x]
    cfg = Config(tasks=args.tasks, rate=args.rate, seconds=args.seconds)
    if args.quick:
        steps, cfg = [10, 20], Config(tasks=10, rate=300, seconds=3.0, warmup=1.0)
    return steps, args.p99, cfg, args.output


def held(r: dict[str, Any], p99: float) -> bool:
    return r["missed"] == 0 and r["duplicates"] == 0 and r["latency_ms"]["p99"] <= p99


def table(runs: list[dict[str, Any]], p99: float, cfg: Config) -> str:
    rows = [
        "| watchers | deliveries/s | median / p99 | emit -> commit p99 | commit -> client p99 "
        "| API CPU | API CPU per delivery | worker / clients / producer CPU | missed, doubled | held |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lat, split = r["latency_ms"], r["breakdown_ms"]
        rows.append(
            f"| {r['config']['clients']:,} | {r['deliveries_per_second']:,} "
            f"| {lat['median']} / {lat['p99']} ms "
            f"| {split['emit_to_commit']['p99']} ms | {split['commit_to_client']['p99']} ms "
            f"| {r['api_cpu_percent']} % | {r['api_cpu_us_per_delivery']} µs "
            f"| {r['worker_cpu_percent']} / {r['clients_cpu_percent']} / {r['producer_cpu_percent']} % "
            f"| {r['missed']}, {r['duplicates']} | {'yes' if held(r, p99) else '**no**'} |"
        )
    best = max((r["config"]["clients"] for r in runs if held(r, p99)), default=None)
    head = (
        f"{cfg.tasks} tasks, {cfg.rate:,} events/s, {cfg.seconds} s per step, ONE API process; a step holds "
        f"with nothing missed or doubled and p99 <= {p99:g} ms."
    )
    foot = f"Largest step that held: {best:,} watchers." if best else "No step held."
    return f"{head}\n\n" + "\n".join(rows) + f"\n\n{foot}"


def main() -> None:
    steps, p99, cfg, output = parse_args()
    runs = []
    for clients in steps:
        say(f"{clients} watchers")
        step = Config(**{**vars(cfg), "clients": clients})
        with tempfile.TemporaryDirectory(prefix="stream-capacity-") as tmp:
            runs.append(run(step, Path(tmp)))
        lat = runs[-1]["latency_ms"]
        say(f"  median {lat['median']} ms, p99 {lat['p99']} ms, API {runs[-1]['api_cpu_percent']} %")
    publish({"p99_ms": p99, "runs": runs}, output, table(runs, p99, cfg))


if __name__ == "__main__":
    main()

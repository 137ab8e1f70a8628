"""The live-stream benchmark twice per round, two configurations alternating, in one run: the way to
tell whether a change moved the stream's latency on a noisy machine (a sitting an hour later can move
the p99 by a quarter; a pair run back to back shares the machine's state).

    --against checkpoints   A: checkpoints inside the commit (TASKEVENTS_CHECKPOINT_INTERVAL=0, as
                            before the checkpointer); B: the worker's checkpointer (shipped)
    --against archiving     A: the stream beside a store holding --archiving ended runs; B: the
                            same while `taskevents jobs` archives them (the retention issue's
                            criterion: only the passes differ, not the store's size)

Every other option is stream_bench.py's. Prints each round's median / p99 and the medians of each
side, and writes every run's figures to benchmarks/results/stream_pairs_<against>.json.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import publish, say  # noqa: E402
from stream_bench import Config, run  # noqa: E402

SIDES = {
    "checkpoints": ("checkpoints in the commit", "checkpointer thread"),
    "archiving": ("backlog stored, no passes", "passes archiving it"),
}


def parse_args() -> tuple[str, int, Config]:
    parser = argparse.ArgumentParser(
        prog="stream_pairs.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = Config()
    parser.add_argument("--against", choices=sorted(SIDES), required=True, help="what B changes")
    parser.add_argument("--rounds", type=int, default=3, help="pairs, A then B (default %(default)s)")
    parser.add_argument("--tasks", type=int, default=d.tasks)
    parser.add_argument("--rate", type=int, default=d.rate, help="events/s (default %(default)s)")
    parser.add_argument("--clients", type=int, default=d.clients)
    parser.add_argument("--seconds", type=float, default=d.seconds)
    parser.add_argument("--warmup", type=float, default=d.warmup)
    parser.add_argument("--archiving", type=int, default=3000, help="ended runs for --against archiving")
    parser.add_argument("--quick", action="store_true", help="one short round: checks that it runs")
    args = parser.parse_args()
    cfg = Config(args.tasks, args.rate, args.clients, args.seconds, args.warmup)
    if args.quick:
        cfg = Config(tasks=10, rate=500, clients=20, seconds=3.0, warmup=1.0)
        args.rounds, args.archiving = 1, min(args.archiving, 50)
    cfg.archiving = args.archiving
    return args.against, args.rounds, cfg


def one(against: str, side: int, cfg: Config) -> dict[str, Any]:
    if against == "checkpoints":
        config = Config(**{**vars(cfg), "archiving": 0})
        env = {"TASKEVENTS_CHECKPOINT_INTERVAL": "0"} if side == 0 else {}
    else:
        config = Config(**{**vars(cfg), "passes": side == 1})
        env = {}
    with tempfile.TemporaryDirectory(prefix="stream-pairs-") as tmp:
        return run(config, Path(tmp), env)


def table(against: str, runs: list[list[dict[str, Any]]], cfg: Config) -> str:
    a, b = SIDES[against]

    def cell(r: dict[str, Any]) -> str:
        lat = r["latency_ms"]
        bad = r["missed"] + r["duplicates"]
        extra = f" ({r['archived_during']} archived)" if r.get("archived_during") is not None else ""
        return f"{lat['median']} / {lat['p99']} ms{extra}" + (f", **{bad} missed or doubled**" if bad else "")

    rows = [f"| round | {a}: median / p99 | {b}: median / p99 |", "|---|---|---|"]
    rows += [f"| {n} | {cell(pair[0])} | {cell(pair[1])} |" for n, pair in enumerate(runs, 1)]

    def medians(side: int) -> str:
        lat = [pair[side]["latency_ms"] for pair in runs]
        median = statistics.median(x["median"] for x in lat)
        return f"**{median:.1f} / {statistics.median(x['p99'] for x in lat):.1f} ms**"

    rows.append(f"| **medians** | {medians(0)} | {medians(1)} |")
    head = (
        f"{cfg.tasks} tasks, {cfg.rate} events/s, {cfg.clients} SSE clients, {cfg.seconds} s per run "
        f"({cfg.warmup} s warm-up), {len(runs)} rounds of {a} then {b}."
    )
    return head + "\n\n" + "\n".join(rows)


def main() -> None:
    against, rounds, cfg = parse_args()
    runs: list[list[dict[str, Any]]] = []
    for n in range(1, rounds + 1):
        pair = []
        for side in (0, 1):
            say(f"round {n}: {SIDES[against][side]}")
            pair.append(one(against, side, cfg))
            lat = pair[-1]["latency_ms"]
            say(f"  median {lat['median']} ms, p99 {lat['p99']} ms")
        runs.append(pair)
    output = HERE / "results" / f"stream_pairs_{against}.json"
    publish({"against": against, "rounds": runs}, output, table(against, runs, cfg))


if __name__ == "__main__":
    main()

"""The RQ baseline: one RQ job per event, each storing its event the original way.

`store_one` is the job function. Run as a script, this drains an RQ queue with one burst worker in a
fresh process (as a deployment would run `rq worker --burst`) and prints the drain time as JSON:

    python benchmarks/rq_baseline.py --redis-url URL --queue NAME --worker simple|fork
"""

import argparse
import sqlite3
import sys
import time

import original_design
import orjson
import redis
import rq

# One connection per process and database, with our writer's pragmas: the most favourable choice for
# RQ. SimpleWorker reuses it across jobs; the forking Worker runs each job in a fresh child, which
# opens its own.
_connections: dict[str, sqlite3.Connection] = {}


def store_one(db_path: str, event_json: str) -> int:
    """The job: store one wire event in its own transaction; returns its seq."""
    conn = _connections.get(db_path)
    if conn is None:
        conn = _connections[db_path] = original_design.connect(db_path, favoured=True)
    return original_design.emit_event(conn, orjson.loads(event_json))


def drain(redis_url: str, queue: str, worker_kind: str) -> dict[str, object]:
    """Run one burst worker until the queue is empty; the time excludes interpreter start-up."""
    conn = redis.Redis.from_url(redis_url)
    cls = rq.SimpleWorker if worker_kind == "simple" else rq.Worker
    worker = cls([rq.Queue(queue, connection=conn)], connection=conn)
    started = time.perf_counter()
    # WARNING: RQ logs two INFO lines per job otherwise, which would be charged to RQ.
    worker.work(burst=True, logging_level="WARNING")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "worker": cls.__name__, "successful": worker.successful_job_count,
            "failed": worker.failed_job_count}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--worker", choices=("simple", "fork"), default="simple")
    args = parser.parse_args()
    sys.stdout.write(orjson.dumps(drain(args.redis_url, args.queue, args.worker)).decode() + "\n")


if __name__ == "__main__":
    main()

"""A small closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending its next GET as
soon as the previous answer is in. Meant to run in a process of its own, beside the server it loads.

The client is as thin as Python allows (raw asyncio protocol on uvloop, requests pre-encoded, only the
status line and framing parsed), so that on a small machine the server, not the generator, is what
runs out of CPU. It reports its own CPU use so a reader can check that.

Reads the request paths (one per line) from --paths; connection i sends paths i, i + N, i + 2N, ...
round and round. Only requests sent after --warmup seconds and answered within the following
--duration seconds count. Prints one JSON object on stdout.
"""

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

try:
    import uvloop
except ImportError:  # pragma: no cover - uvicorn[standard] brings it
    uvloop = None  # type: ignore[assignment]


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `request()` sends a pre-encoded request and awaits (status, body bytes)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, int]] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.body_start = -1  # index in buf where the body starts, once the head is in
        self.length = -1  # Content-Length, or -1 while unknown
        self.chunked = False
        self.chunk_pos = 0  # chunked: where the next chunk's size line starts
        self.body_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed: {exc}"))

    def request(self, data: bytes) -> "asyncio.Future[tuple[int, int]]":
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        buf = self.buf
        if self.body_start < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            self.status = int(head[9:12])
            self.body_start = end + 4
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name == b"content-length":
                    self.length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value:
                    self.chunked = True
            self.chunk_pos = self.body_start
        if self.chunked:
            while True:
                line_end = buf.find(b"\r\n", self.chunk_pos)
                if line_end < 0:
                    return
                size = int(bytes(buf[self.chunk_pos : line_end]).split(b";")[0], 16)
                chunk_end = line_end + 2 + size + 2  # the chunk and its CRLF
                if len(buf) < chunk_end:
                    return
                self.body_bytes += size
                self.chunk_pos = chunk_end
                if size == 0:  # no trailers expected
                    self._complete(chunk_end)
                    return
        elif len(buf) >= self.body_start + max(self.length, 0):
            self.body_bytes = max(self.length, 0)
            self._complete(self.body_start + self.body_bytes)

    def _complete(self, end: int) -> None:
        del self.buf[:end]
        result = (self.status, self.body_bytes)
        self._reset()
        assert self.waiter is not None
        self.waiter.set_result(result)


async def _run(
    host: str, port: int, paths: list[str], connections: int, warmup: float, duration: float
) -> dict:
    loop = asyncio.get_running_loop()
    encoded = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\n\r\n".encode() for p in paths]
    conns = []
    for _ in range(connections):
        _, proto = await loop.create_connection(_Connection, host, port)
        conns.append(proto)
    latencies: list[int] = []
    statuses: dict[int, int] = {}
    body_bytes = [0]
    answered = [0]  # every answer, warm-up included: what the server's CPU time over the run served
    errors: list[str] = []
    clock = time.perf_counter_ns
    t_start = clock()
    t_measure = t_start + int(warmup * 1e9)
    t_end = t_measure + int(duration * 1e9)

    async def client(index: int, conn: _Connection) -> None:
        mine = encoded[index::connections] or encoded
        i = 0
        while True:
            t0 = clock()
            if t0 >= t_end:
                return
            try:
                status, size = await conn.request(mine[i % len(mine)])
            except ConnectionError as exc:
                errors.append(str(exc))
                return
            t1 = clock()
            i += 1
            answered[0] += 1
            if t0 >= t_measure and t1 <= t_end:
                latencies.append(t1 - t0)
                statuses[status] = statuses.get(status, 0) + 1
                body_bytes[0] += size

    tasks = [asyncio.create_task(client(i, c)) for i, c in enumerate(conns)]
    await asyncio.sleep(max(0.0, (t_measure - clock()) / 1e9))
    cpu0, wall0 = time.process_time(), clock()
    await asyncio.sleep(max(0.0, (t_end - clock()) / 1e9))
    cpu1, wall1 = time.process_time(), clock()
    await asyncio.gather(*tasks)
    for c in conns:
        assert c.transport is not None
        c.transport.close()
    latencies.sort()
    n = len(latencies)

    def pct(q: float) -> float:
        return latencies[min(n - 1, int(q * n))] / 1e6 if n else float("nan")

    ok = statuses.get(200, 0)
    return {
        "connections": connections,
        "seconds": duration,
        "requests": n,
        "requests_per_s": n / duration,
        "requests_answered_in_run": answered[0],
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "connection_errors": errors,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "max_ms": latencies[-1] / 1e6 if n else float("nan"),
        "mean_ms": statistics.fmean(latencies) / 1e6 if n else float("nan"),
        "response_bytes_mean": body_bytes[0] / n if n else 0,
        # CPU of this process over the measured window, as a share of one core (it uses one).
        "loadgen_cpu_share": (cpu1 - cpu0) / ((wall1 - wall0) / 1e9),
        "loadgen_cpu_us_per_request": (cpu1 - cpu0) / n * 1e6 if n else float("nan"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="api_loadgen.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="server address (default %(default)s)")
    parser.add_argument("--port", type=int, required=True, help="server port")
    parser.add_argument("--paths", type=Path, required=True, help="file of request paths, one per line")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not counted (default 1)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured (default 10)")
    args = parser.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        parser.error("this load generator only targets servers on this machine (loopback addresses)")
    paths = [line for line in args.paths.read_text().splitlines() if line]
    run = uvloop.run if uvloop is not None else asyncio.run
    result = run(_run(args.host, args.port, paths, args.connections, args.warmup, args.duration))
    result["pid"] = os.getpid()
    result["event_loop"] = "uvloop" if uvloop is not None else "asyncio"
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""What endpoints take from the application: the read store, the Redis client, the settings.

The dependencies are `async def` on purpose: FastAPI runs a sync dependency on a worker thread, an
async one inline, and these only look up `app.state`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, TypeVar

import anyio
import redis
from fastapi import Depends, Request

from taskevents.api.store import QueryTimeout, StoreReader
from taskevents.settings import Settings

T = TypeVar("T")

# How long a read may run inline on the event loop. Past it, the read is stopped and run again on a
# worker thread (with the full TASKEVENTS_QUERY_TIMEOUT), so one large page or a slow snapshot never
# stalls the loop, and with it every stream of the process, for longer than this.
INLINE_BUDGET = 0.010


@dataclass(slots=True)
class ReadRunner:
    """Runs an endpoint's read: inline on the loop's own connection while it is short (a hop to a
    thread costs more than a 0.3 ms page, see api/tasks.py), on the pool's threads when it is not."""

    loop: StoreReader | None  # None: every read on a thread (a PostgreSQL store, api/app.py)
    pool: StoreReader
    budget: float = INLINE_BUDGET
    moved: int = 0  # reads stopped inline and run again on a thread (tests, benchmarks)

    async def __call__(self, read: Callable[..., T], *args: Any) -> T:
        if self.loop is None:
            return await anyio.to_thread.run_sync(partial(self.pool.run, read, *args))
        try:
            return self.loop.run_within(self.budget, read, *args)
        except QueryTimeout:
            self.moved += 1
            return await anyio.to_thread.run_sync(partial(self.pool.run, read, *args))

    async def on_thread(self, read: Callable[..., T], *args: Any) -> T:
        """For reads known to be long (the graph): straight to the pool."""
        return await anyio.to_thread.run_sync(partial(self.pool.run, read, *args))


async def _reads(request: Request) -> ReadRunner:
    return request.app.state.reads


async def _store(request: Request) -> StoreReader:
    return request.app.state.store


async def _redis(request: Request) -> redis.Redis:
    return request.app.state.redis


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


# The pool (for reads that are always on a thread: readiness), and how endpoints read.
Store = Annotated[StoreReader, Depends(_store)]
Reads = Annotated[ReadRunner, Depends(_reads)]
RedisClient = Annotated[redis.Redis, Depends(_redis)]
AppSettings = Annotated[Settings, Depends(_settings)]

"""What endpoints take from the application: the read store, the Redis client, the settings.

The dependencies are `async def` on purpose: FastAPI runs a sync dependency on a worker thread, an
async one inline, and these only look up `app.state`.
"""

from typing import Annotated

import redis
from fastapi import Depends, Request

from api.store import ReadStore
from shared.settings import Settings


async def _store(request: Request) -> ReadStore:
    return request.app.state.store


async def _loop_store(request: Request) -> ReadStore:
    return request.app.state.loop_store


async def _redis(request: Request) -> redis.Redis:
    return request.app.state.redis


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


# For reads on a worker thread (the pool) and for short reads inline on the event loop.
Store = Annotated[ReadStore, Depends(_store)]
LoopStore = Annotated[ReadStore, Depends(_loop_store)]
RedisClient = Annotated[redis.Redis, Depends(_redis)]
AppSettings = Annotated[Settings, Depends(_settings)]

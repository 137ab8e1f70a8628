"""Events the worker set aside: each kept with its reason and its original bytes, and replayable.

An entry of `<queue>:dead` is a JSON object:
`{"code", "reason", "raw" | "raw_b64", "dead_at", "batch_id"}`; `raw` holds the original element when
it is UTF-8 text, `raw_b64` (base64) when it is not, so nothing is lost either way. An element too
large to be an event (`keep` bytes) is not kept whole, or a few of them would fill Redis: the entry
has `raw_head` (its first HEAD_BYTES, as text), `size`, `sha256` and `truncated: true` instead, and
cannot be replayed.
"""

import base64
import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from taskevents.clock import utc_now_ms
from taskevents.keys import QueueKeys

HEAD_BYTES = 4096


def entry(
    raw: bytes, code: str, reason: str, batch_id: int, *, keep: int | None = None, dead_at: str | None = None
) -> bytes:
    """A dead-letter record; past `keep` bytes only the element's head, size and hash are kept."""
    record: dict[str, Any] = {
        "code": code,
        "reason": reason,
        "dead_at": dead_at or utc_now_ms(),
        "batch_id": batch_id,
    }
    if keep is not None and len(raw) > keep:
        record["raw_head"] = raw[:HEAD_BYTES].decode("utf-8", "replace")
        record["size"] = len(raw)
        record["sha256"] = hashlib.sha256(raw).hexdigest()
        record["truncated"] = True
        return orjson.dumps(record)
    try:
        record["raw"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        record["raw_b64"] = base64.b64encode(raw).decode("ascii")
    return orjson.dumps(record)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    index: int
    record: dict[str, Any]
    stored: bytes  # the entry exactly as it is in Redis, so replay removes that one

    @property
    def complete(self) -> bool:
        """False when only the head of the element was kept: it cannot be replayed."""
        return not self.record.get("truncated")

    @property
    def raw(self) -> bytes:
        """The original element (its head only, when not `complete`)."""
        if "raw_head" in self.record:
            return str(self.record["raw_head"]).encode("utf-8")
        if "raw" in self.record:
            return str(self.record["raw"]).encode("utf-8")
        return base64.b64decode(self.record.get("raw_b64", ""))


_MOVE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


_PURGE = """
local count = redis.call('LLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return count
"""


class DeadLetters:
    def __init__(self, client: redis.Redis, keys: QueueKeys) -> None:
        self._redis = client
        self.keys = keys

    def count(self) -> int:
        return int(self._redis.llen(self.keys.dead))

    def count_by_code(self) -> Counter[str]:
        return Counter(letter.record.get("code", "?") for letter in self.iter())

    def iter(self, start: int = 0, limit: int | None = None, chunk: int = 500) -> Iterator[DeadLetter]:
        index, left = start, limit
        while left is None or left > 0:
            size = chunk if left is None else min(chunk, left)
            items = self._redis.lrange(self.keys.dead, index, index + size - 1)
            if not items:
                return
            for stored in items:
                assert isinstance(stored, bytes)  # the client does not decode responses
                yield DeadLetter(index, _parse(stored), stored)
                index += 1
            if left is not None:
                left -= len(items)

    def replay(self, *, code: str | None = None, limit: int | None = None) -> int:
        """Push dead letters back onto the queue (after a fix in the worker or producer); returns count.
        Entries that hold only the head of their element are left where they are.

        Each move is one script run (remove that entry, push its original bytes), so a crash or a
        second replayer moves an entry once or not at all.
        """
        move = self._redis.register_script(_MOVE)
        moved = 0
        for letter in list(self.iter()):
            if limit is not None and moved >= limit:
                break
            if (code is not None and letter.record.get("code") != code) or not letter.complete:
                continue
            moved += int(move(keys=[self.keys.dead, self.keys.queue], args=[letter.stored, letter.raw]))
        return moved

    def purge(self) -> int:
        # A script, not a MULTI: Redis refuses a MULTI at OOM, which is when a purge is most wanted.
        purge = self._redis.register_script(_PURGE)
        return int(purge(keys=[self.keys.dead]))


def _parse(stored: bytes) -> dict[str, Any]:
    try:
        record = orjson.loads(stored)
    except orjson.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        # Not one of ours (pushed by hand?): keep it replayable as it is.
        return {
            "code": "foreign",
            "reason": "not a dead-letter record",
            "raw": stored.decode("utf-8", "replace"),
        }
    return record

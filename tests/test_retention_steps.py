"""The worker's retention steps (ingest/archived.py) on their own: they end when there is nothing left
to do, and never spin on free pages that do not go away (fakeredis: no queue semantics needed here)."""

from typing import Any

import fakeredis

from taskevents.archive import TaskArchive
from taskevents.ingest.archived import Retention
from taskevents.keys import QueueKeys


class _Writer:
    """A writer whose store keeps `free` pages whatever the vacuum does, and has no rows to remove."""

    def __init__(self, free: list[int]) -> None:
        self.free = free
        self.calls: list[str] = []

    def drop_archived_rows(self, limit: int) -> int:
        self.calls.append("drop")
        return 0

    def reclaim(self, pages: int) -> int:
        self.calls.append("reclaim")
        return self.free.pop(0) if len(self.free) > 1 else self.free[0]


def _steps(writer: Any, tmp_path: Any, most: int = 20) -> int:
    retention = Retention(fakeredis.FakeRedis(), QueueKeys("t:events"), TaskArchive.at(tmp_path))
    for n in range(1, most + 1):
        if not retention.step(writer):
            return n
    raise AssertionError("still stepping")


def test_steps_end_once_the_pages_are_given_back(tmp_path: Any) -> None:
    writer = _Writer([3000, 1000, 0])
    assert _steps(writer, tmp_path) == 4  # drop (none), reclaim, reclaim, reclaim: 0 left
    assert writer.calls == ["drop", "reclaim", "reclaim", "reclaim"]


def test_steps_stop_when_free_pages_do_not_go_away(tmp_path: Any) -> None:
    writer = _Writer([500])  # a store where incremental vacuum frees nothing
    assert _steps(writer, tmp_path) == 3  # drop, reclaim (500), reclaim (still 500): stop

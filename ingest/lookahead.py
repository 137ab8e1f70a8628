"""Planning batch n + 1 on the worker's thread while batch n commits on the writer's.

The writer's thread then runs SQLite's statements and little else (ingest/writer.py `Prepared`):
seq planning, span folding and the statements' parameters are Python holding the GIL, and done on
the writer's thread they kept the writer from its next statement. A batch is planned against the
seqs its tasks will have once the batch in flight lands, which only this worker can change: the
queue's one writer. What the worker does not know (a task it has not seen since it started, or
since its memory of them was cleared) it plans as new; the writer checks every task's base inside
its transaction and plans a batch again itself if the base is wrong or an event is a repeat, so a
wrong guess costs time, never a seq. Once a commit differs from its plan, the batch planned behind
it is planned again here from what was committed, so that one repeat does not cascade.
"""

from collections.abc import Sequence

from taskevents.ingest.writer import BatchWriter, CommitResult, Decoded, Prepared


class Lookahead:
    """The worker thread's view of the latest seqs: what is committed, plus the batch in flight."""

    def __init__(self, writer: BatchWriter, cache_size: int = 100_000) -> None:
        self._writer = writer
        self._committed: dict[str, int] = {}  # task_id -> latest seq, as commits reported them
        self._in_flight: dict[str, int] = {}  # the same for the batch being committed
        self._planned: dict[str, tuple[int, int]] | None = None  # what that batch was planned to do
        self._cache_size = cache_size

    def plan(self, batch: Sequence[Decoded]) -> Prepared | None:
        """`batch` planned to follow the batch in flight (None if the store plans its own)."""
        base: dict[str, int | None] = {}
        for d in batch:
            task_id = d.event.task_id
            if task_id not in base:
                base[task_id] = self._in_flight.get(task_id, self._committed.get(task_id))
        return self._writer.prepare(batch, base)

    def sent(self, prepared: Prepared | None) -> None:
        """`prepared` is now the batch in flight (None: a batch the writer plans itself)."""
        self._planned = prepared.tasks if prepared is not None else None
        self._in_flight = {t: last for t, (_, last) in prepared.tasks.items()} if prepared else {}

    def landed(self, result: CommitResult) -> bool:
        """The batch in flight committed as `result`; False if it did not do what it was planned
        to (the batch planned behind it must be planned again)."""
        as_planned = self._planned == result.tasks
        if len(self._committed) + len(result.tasks) > self._cache_size:
            self._committed.clear()
        for task_id, (_, last) in result.tasks.items():
            self._committed[task_id] = last
        self._in_flight, self._planned = {}, None
        return as_planned

"""The real worker (`python -m taskevents.ingest`) with a fault injected for tests, never in production code.

`python -m tests.crashing_worker` runs the same command after wrapping `StoreWriter.commit`: a batch
holding an event whose payload has the key `__crash__` makes the commit path die every time, as a
bug in a C extension or the kernel's OOM killer would. `{"__crash__": "kill"}`: the process SIGKILLs
itself (no cleanup, no traceback); `{"__crash__": "raise"}`: an unexpected exception (the worker exits
with a traceback). Nothing in `ingest` knows about it: the worker's defence (counting claims,
isolating, dead-lettering `poison`) is the generic one any crash meets.
"""

import os
import signal
from collections.abc import Sequence
from typing import Any

from taskevents.ingest.cli import ingest_command
from taskevents.ingest.writer import CommitResult, Decoded, StoreWriter

_commit = StoreWriter.commit


def _crashing_commit(
    self: StoreWriter, batch_id: int, batch: Sequence[Decoded], *args: Any, **kw: Any
) -> CommitResult:
    for d in batch:
        how = d.event.payload.get("__crash__")
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif how == "raise":
            raise RuntimeError(f"injected fault: event {d.event.event_uid}")
    return _commit(self, batch_id, batch, *args, **kw)


if __name__ == "__main__":
    StoreWriter.commit = _crashing_commit  # type: ignore[method-assign]
    ingest_command(prog_name="python -m tests.crashing_worker")

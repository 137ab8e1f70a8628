"""taskevents: an event store and live API for watching agent runs.

This package is what every part uses (the event model, settings, Redis key names, the messages that
cross between processes, the SQLite schema) and the producer runners import:

    from taskevents import Emitter, emit_runner_spawn, emit_phase_enter, …

`taskevents.ingest` is the worker (pip install 'taskevents[server]'), `taskevents.api` the read API
and its tail client. Importing this package starts nothing, reads no environment, and imports
neither of them nor a web server.
"""

from taskevents.emitter import Emitter
from taskevents.lifecycle import (
    default_emitter,
    emit_checkpoint_commit,
    emit_checkpoint_invalid,
    emit_checkpoint_verified,
    emit_evidence_collected,
    emit_evidence_linked,
    emit_phase_enter,
    emit_phase_exit,
    emit_recovery_checkpoint_loaded,
    emit_recovery_complete,
    emit_recovery_initiated,
    emit_runner_exit,
    emit_runner_heartbeat,
    emit_runner_spawn,
    emit_work_item_complete,
    emit_work_item_failed,
    emit_work_item_progress,
    emit_work_item_start,
    set_default_emitter,
)

__all__ = [
    "Emitter",
    "default_emitter",
    "set_default_emitter",
    "emit_checkpoint_commit",
    "emit_checkpoint_invalid",
    "emit_checkpoint_verified",
    "emit_evidence_collected",
    "emit_evidence_linked",
    "emit_phase_enter",
    "emit_phase_exit",
    "emit_recovery_checkpoint_loaded",
    "emit_recovery_complete",
    "emit_recovery_initiated",
    "emit_runner_exit",
    "emit_runner_heartbeat",
    "emit_runner_spawn",
    "emit_work_item_complete",
    "emit_work_item_failed",
    "emit_work_item_progress",
    "emit_work_item_start",
]

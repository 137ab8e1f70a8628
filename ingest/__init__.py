"""The write path: the producer client (`Emitter`, the emit_* functions) and the ingest worker.

Importing this package starts nothing and reads no environment.
"""

from ingest.emitter import Emitter
from ingest.lifecycle import (
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

"""The original's convenience functions (names and arguments kept), plus the rest of the vocabulary.

Each takes an optional `explanation` (lands in the payload) and `emitter` (default: `default_emitter()`,
built from TASKEVENTS_* settings on first use).
"""

import threading
from typing import Any

from taskevents.emitter import Emitter

_default: Emitter | None = None
_default_lock = threading.Lock()


def default_emitter() -> Emitter:
    """The process-wide emitter, created from the environment the first time it is needed."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Emitter()  # TASKEVENTS_* from the environment, read now
        return _default


def set_default_emitter(emitter: Emitter | None) -> None:
    global _default
    with _default_lock:
        _default = emitter


def _send(
    emitter: Emitter | None,
    task_id: str,
    event_type: str,
    span_id: str,
    actor: str,
    payload: dict[str, Any],
    explanation: str | None,
    phase: str | None = None,
    parent_span_id: str | None = None,
) -> None:
    if explanation is not None:
        payload["explanation"] = explanation
    (emitter or default_emitter()).emit(
        task_id,
        event_type,
        span_id=span_id,
        actor=actor,
        phase=phase,
        parent_span_id=parent_span_id,
        payload=payload,
    )


# --- runner --------------------------------------------------------------------------------------


def emit_runner_spawn(
    task_id: str,
    span_id: str,
    runner_pid: int,
    runner_version: str,
    *,
    explanation: str | None = None,
    emitter: Emitter | None = None,
) -> None:
    payload = {"runner_pid": runner_pid, "runner_version": runner_version}
    _send(emitter, task_id, "runner_spawn", span_id, "runner", payload, explanation)


def emit_runner_exit(
    task_id: str,
    span_id: str,
    exit_code: int,
    outcome: str | None = None,
    *,
    explanation: str | None = None,
    emitter: Emitter | None = None,
) -> None:
    """`outcome` (`succeeded`/`failed`) wins over `exit_code` for the task's status."""
    payload: dict[str, Any] = {"exit_code": exit_code}
    if outcome is not None:
        payload["outcome"] = outcome
    _send(emitter, task_id, "runner_exit", span_id, "runner", payload, explanation)


def emit_runner_heartbeat(
    task_id: str, span_id: str, *, explanation: str | None = None, emitter: Emitter | None = None
) -> None:
    _send(emitter, task_id, "runner_heartbeat", span_id, "runner", {}, explanation)


# --- phases --------------------------------------------------------------------------------------


def emit_phase_enter(
    task_id: str,
    span_id: str,
    phase: str,
    parent_span_id: str | None = None,
    *,
    explanation: str | None = None,
    emitter: Emitter | None = None,
) -> None:
    _send(emitter, task_id, "phase_enter", span_id, "runner", {}, explanation, phase, parent_span_id)


def emit_phase_exit(
    task_id: str, span_id: str, phase: str, *, explanation: str | None = None, emitter: Emitter | None = None
) -> None:
    _send(emitter, task_id, "phase_exit", span_id, "runner", {}, explanation, phase)


# --- work items ----------------------------------------------------------------------------------


def emit_work_item_start(
    task_id: str,
    span_id: str,
    parent_span_id: str,
    work_item_id: str,
    work_type: str,
    *,
    phase: str | None = None,
    explanation: str | None = None,
    emitter: Emitter | None = None,
) -> None:
    payload = {"work_item_id": work_item_id, "work_type": work_type}
    _send(emitter, task_id, "work_item_start", span_id, "worker", payload, explanation, phase, parent_span_id)


def emit_work_item_progress(
    task_id: str,
    span_id: str,
    parent_span_id: str,
    work_item_id: str,
    progress: float | None = None,
    *,
    current: int | None = None,
    total: int | None = None,
    phase: str | None = None,
    explanation: str | None = None,
    emitter: Emitter | None = None,
) -> None:
    """Either `progress`, a fraction from 0 to 1 (payload `"progress": 0.4`), or `current` of `total`
    steps (payload `"progress": {"current": 4, "total": 10}`)."""
    value: float | dict[str, int]
    if progress is not None:
        if current is not None or total is not None:
            raise ValueError("progress: give a fraction, or current and total, not both")
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress: must be between 0 and 1, got {progress!r}")
        value = progress
    elif current is None or total is None or not 0 <= current <= total or total < 1:
        raise ValueError(f"progress: need 0 <= current <= total and total >= 1, got {current!r} of {total!r}")
    else:
        value = {"current": current, "total": total}
    payload = {"work_item_id": work_item_id, "progress": value}
    _send(
        emitter, task_id, "work_item_progress", span_id, "worker", payload, explanation, phase, parent_span_id
    )


def emit_work_item_complete(
    task_id: str,
    span_id: str,
    parent_span_id: str,
    work_item_id: str,
    work_type: str,
    *,
    phase: str | None = None,
    explanation: str | None = None,
    emitter: Emitter | None = None,
) -> None:
    payload = {"work_item_id": work_item_id, "work_type": work_type}
    _send(
        emitter, task_id, "work_item_complete", span_id, "worker", payload, explanation, phase, parent_span_id
    )


def emit_work_item_failed(
    task_id: str,
    span_id: str,
    parent_span_id: str,
    work_item_id: str,
    error_code: str,
    *,
    phase: str | None = None,
    explanation: str | None = None,
    emitter: Emitter | None = None,
) -> None:
    payload = {"work_item_id": work_item_id, "error_code": error_code}
    _send(
        emitter, task_id, "work_item_failed", span_id, "worker", payload, explanation, phase, parent_span_id
    )


# --- checkpoints and evidence --------------------------------------------------------------------


def emit_checkpoint_commit(
    task_id: str,
    span_id: str,
    checkpoint_id: str,
    checkpoint_type: str,
    phase: str,
    evidence_refs: Any,
    *,
    explanation: str | None = None,
    emitter: Emitter | None = None,
) -> None:
    """`evidence_refs`: any JSON value, e.g. `{"artifacts": [...], "commit_hash": "..."}`."""
    payload = {
        "checkpoint_id": checkpoint_id,
        "checkpoint_type": checkpoint_type,
        "evidence_refs": evidence_refs,
    }
    _send(emitter, task_id, "checkpoint_commit", span_id, "runner", payload, explanation, phase)


def emit_checkpoint_verified(
    task_id: str,
    span_id: str,
    checkpoint_id: str,
    phase: str,
    *,
    explanation: str | None = None,
    emitter: Emitter | None = None,
) -> None:
    _send(
        emitter,
        task_id,
        "checkpoint_verified",
        span_id,
        "supervisor",
        {"checkpoint_id": checkpoint_id},
        explanation,
        phase,
    )


def emit_checkpoint_invalid(
    task_id: str,
    span_id: str,
    checkpoint_id: str,
    phase: str,
    error_code: str,
    *,
    explanation: str | None = None,
    emitter: Emitter | None = None,
) -> None:
    payload = {"checkpoint_id": checkpoint_id, "error_code": error_code}
    _send(emitter, task_id, "checkpoint_invalid", span_id, "supervisor", payload, explanation, phase)


def emit_evidence_collected(
    task_id: str,
    span_id: str,
    phase: str,
    evidence_type: str,
    evidence_id: str,
    *,
    explanation: str | None = None,
    emitter: Emitter | None = None,
) -> None:
    payload = {"evidence_type": evidence_type, "evidence_id": evidence_id}
    _send(emitter, task_id, "evidence_collected", span_id, "runner", payload, explanation, phase)


def emit_evidence_linked(
    task_id: str,
    span_id: str,
    phase: str,
    evidence_id: str,
    checkpoint_id: str,
    *,
    explanation: str | None = None,
    emitter: Emitter | None = None,
) -> None:
    payload = {"evidence_id": evidence_id, "checkpoint_id": checkpoint_id}
    _send(emitter, task_id, "evidence_linked", span_id, "runner", payload, explanation, phase)


# --- recovery ------------------------------------------------------------------------------------


def emit_recovery_initiated(
    task_id: str, span_id: str, reason: str, *, explanation: str | None = None, emitter: Emitter | None = None
) -> None:
    _send(
        emitter,
        task_id,
        "recovery_initiated",
        span_id,
        "recovery",
        {"reason": reason},
        explanation,
        "recovery",
    )


def emit_recovery_checkpoint_loaded(
    task_id: str,
    span_id: str,
    checkpoint_id: str,
    *,
    explanation: str | None = None,
    emitter: Emitter | None = None,
) -> None:
    _send(
        emitter,
        task_id,
        "recovery_checkpoint_loaded",
        span_id,
        "recovery",
        {"checkpoint_id": checkpoint_id},
        explanation,
        "recovery",
    )


def emit_recovery_complete(
    task_id: str, span_id: str, *, explanation: str | None = None, emitter: Emitter | None = None
) -> None:
    _send(emitter, task_id, "recovery_complete", span_id, "recovery", {}, explanation, "recovery")

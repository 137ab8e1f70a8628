"""The event rules, applied to raw queue elements as the worker sees them."""

import json
from pathlib import Path

import orjson
import pytest

from taskevents.event import BadEvent, decode, encode_payload, exit_status

LIMIT = 64 * 1024
GOOD = {"task_id": "t1", "event_type": "phase_enter", "phase": "planning", "actor": "runner", "span_id": "s1"}


def raw(**changes: object) -> bytes:
    event = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in event.items() if v is not ...})


def test_a_good_event_decodes_with_defaults() -> None:
    event, payload = decode(raw(), LIMIT)
    assert (event.task_id, event.event_type, event.phase, event.actor, event.span_id) == (
        "t1",
        "phase_enter",
        "planning",
        "runner",
        "s1",
    )
    assert event.parent_span_id is None and event.event_uid is None
    assert payload == b"{}"


def test_unknown_extra_fields_are_ignored() -> None:
    event, _ = decode(raw(newer_field=1), LIMIT)
    assert event.task_id == "t1"


@pytest.mark.parametrize(
    ("element", "code", "words"),
    [
        (b"not json", "not_json", "not valid JSON"),
        (b"\xff\xfe{}", "not_json", "not valid JSON"),
        (b'{"task_id": "\\ud800"}', "not_json", "not valid JSON"),
        (b"[1, 2]", "not_object", "JSON list"),
        (b'"an event"', "not_object", "JSON str"),
        (b'{"task_id": NaN}', "not_json", "not valid JSON"),
        (b'{"x": 1e400}', "not_json", "infinity"),
        (raw(task_id=...), "invalid", "task_id: Field required"),
        (raw(task_id=""), "invalid", "task_id: String should have at least 1 character"),
        (raw(task_id="x" * 129), "invalid", "task_id: String should have at most 128"),
        (raw(task_id="a\nb"), "invalid", "task_id: String should match pattern"),
        (raw(actor=""), "invalid", "actor:"),
        (raw(span_id=...), "invalid", "span_id: Field required"),
        (raw(event_type="PhaseEnter"), "invalid", "event_type: String should match pattern"),
        (raw(phase="deploying"), "invalid", "phase: Input should be 'planning'"),
        (raw(task_id=7), "invalid", "task_id: Input should be a valid string"),
        (raw(payload=[1]), "invalid", "payload: Input should be a valid dictionary"),
        (raw(payload="{}"), "invalid", "payload: Input should be a valid dictionary"),
        (raw(payload={"blob": "x" * LIMIT}), "payload_too_large", "more than the limit"),
        (raw(emitted_at="yesterday"), "invalid", "emitted_at:"),
    ],
)
def test_bad_elements_are_refused_with_a_reason(element: bytes, code: str, words: str) -> None:
    with pytest.raises(BadEvent) as caught:
        decode(element, LIMIT)
    assert caught.value.code == code
    assert words in caught.value.reason


def test_payload_encoding_is_strict_json() -> None:
    assert encode_payload({"progress": 0.5, "none": None}, LIMIT) == b'{"progress":0.5,"none":null}'
    for bad, words in [
        ({"x": float("nan")}, "NaN"),
        ({"x": {1, 2}}, "not JSON-serializable"),
        ([1], "JSON object"),
    ]:
        with pytest.raises(BadEvent, match=words):
            encode_payload(bad, LIMIT)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "ok"),
    [("t-1", True), ("x" * 128, True), ("é/ü", True), ("", False), ("x" * 129, False), ("a\nb", False),
     ("ab\n", False), ("a\x7f", False)],
)  # fmt: skip
def test_is_name_is_the_rule_the_event_model_applies_to_ids(text: str, ok: bool) -> None:
    from taskevents.event import is_name

    assert is_name(text) is ok
    with_id = orjson.dumps({**GOOD, "task_id": text})
    if ok:
        assert decode(with_id, LIMIT)[0].task_id == text
    else:
        with pytest.raises(BadEvent):
            decode(with_id, LIMIT)


# The table lives in a fixture that the UI's tests read too (api/ui/test/lifecycle.test.ts): the page
# applies live events with the same rule, so a runner_exit gives the same status there as in the store.
EXIT_STATUS_CASES = json.loads((Path(__file__).parent / "fixtures" / "exit_status.json").read_text())


@pytest.mark.parametrize(
    ("payload", "status"),
    [pytest.param(c["payload"], c["status"], id=json.dumps(c["payload"])) for c in EXIT_STATUS_CASES],
)
def test_the_status_a_runner_exit_gives_its_task(payload: dict, status: str) -> None:
    assert exit_status(payload) == status

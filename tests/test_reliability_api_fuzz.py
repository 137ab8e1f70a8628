"""Every endpoint fuzzed from the API's own OpenAPI schema with schemathesis, in process (ASGI).

The store holds tasks written by the real worker, and a generated case is pointed at one of them about
half the time, so the fuzzer reaches the 200 paths as well as the 404 and 400 ones; positive (schema-
valid) and negative (schema-invalid) cases, 100 per endpoint and mode. Every check of schemathesis runs
on every answer: no 5xx, only documented status codes and content types, bodies that match their
response models (the error shape `{detail, code}` on 400, 404 and 503), invalid input refused with a
4xx. The SSE endpoint is fuzzed like the others (a stored task's stream replays and ends; an unseen
one ends at once, `stream_idle` being short here). A second pass runs before the store exists, where
503 `store_unavailable` is the documented answer. The WebSocket is not in OpenAPI: random resume
points check its close codes.
"""

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import hypothesis
import jsonschema_rs
import orjson
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from taskevents.api.app import create_app
from taskevents.ingest.localredis import RedisServer
from taskevents.ingest.worker import Worker
from taskevents.settings import Settings
from tests.api_helpers import emitter
from tests.stream_helpers import live

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

KNOWN_TASKS = ("fuzz-ended", "fuzz-running", "fuzz-ünïcode 😀")


def _seed(settings: Settings) -> None:
    """Three tasks through the real worker: one ended (its stream ends at once), one running, one with
    a unicode id; phases, spans, work items, checkpoints."""
    with emitter(settings) as em:
        for task in KNOWN_TASKS:
            root = f"{task}/runner"
            em.emit(task, "runner_spawn", span_id=root, actor="runner", payload={"runner_pid": 7})
            em.emit(task, "phase_enter", span_id=f"{task}/plan", parent_span_id=root, actor="runner",
                    phase="planning")  # fmt: skip
            for n in range(3):
                span = f"{task}/w{n}"
                em.emit(task, "work_item_start", span_id=span, parent_span_id=f"{task}/plan", actor="worker",
                        phase="planning", payload={"work_item_id": f"wi{n}"})  # fmt: skip
                em.emit(task, "work_item_complete", span_id=span, parent_span_id=f"{task}/plan",
                        actor="worker", phase="planning")  # fmt: skip
            checkpoint = {"checkpoint_id": "c1", "checkpoint_type": "plan", "evidence_refs": ["e1"]}
            em.emit(
                task, "checkpoint_commit", span_id=root, actor="runner", phase="planning", payload=checkpoint
            )
            if task != "fuzz-running":
                em.emit(task, "runner_exit", span_id=root, actor="runner", payload={"exit_code": 0})
    with Worker(settings) as worker:
        worker.drain()


def _settings(redis_server: RedisServer, db: Path) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        db=db,
        queue="fuzz:events",
        stream_idle=0.05,  # a stream of a task never seen ends at once instead of after 10 minutes
        stream_ping=0.1,
    )


@pytest.fixture(scope="module")
def api_schema(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The schema of an app over a store the real worker wrote (the app is fuzzed in process)."""
    settings = _settings(redis_server, tmp_path_factory.mktemp("fuzz") / "events.db")
    _seed(settings)
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))
    asgi.shutdown_lifespans()  # the app's lifespan (LiveHub, pools) was started by the first call


@pytest.fixture(scope="module")
def storeless_schema(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The same, before the worker has created the store: task endpoints answer 503."""
    settings = _settings(redis_server, tmp_path_factory.mktemp("fuzz-empty") / "events.db")
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))
    asgi.shutdown_lifespans()


def _real_cursor(api_schema: Any) -> str:
    """A cursor the API gave out: the one after the first task of the list."""
    response = api_schema["/api/tasks"]["GET"].Case(query={"limit": 1}).call()
    assert response.status_code == 200
    return response.json()["next_cursor"]


def _not_a_seq(text: str) -> bool:
    text = text.strip()
    return bool(text) and not (text.isascii() and text.isdigit() and int(text) <= 2**63 - 1)


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _valid_on_the_wire(case: Any) -> bool:
    """A negative case whose invalid values are invalid only by their JSON type (an array, a boolean
    where the schema wants text, or the reverse), which the query string turns back into text that is
    valid: `q=[false]` reaches the API as `q=false`, a valid search. schemathesis cannot tell; the API
    rightly answers it."""
    query = case.query or {}
    if all(isinstance(v, str) for v in query.values()):
        return False  # invalid text: a real negative case
    for parameter in case.operation.query:
        if parameter.name not in query:
            continue
        value = query[parameter.name]
        texts = [_text(v) for v in (value if isinstance(value, list) else [value])]
        readings: list[Any] = [texts] + ([texts[0]] if len(texts) == 1 else [])
        readings += [int(t) for t in texts[:1] if len(texts) == 1 and t.lstrip("-").isdigit()]
        readings += [t == "true" for t in texts[:1] if len(texts) == 1 and t in ("true", "false")]
        if not any(jsonschema_rs.is_valid(parameter.definition["schema"], r) for r in readings):
            return False
    return True


def _fuzz_one(case: Any, known: str | None, real_cursor: str, mode: GenerationMode, storeless: bool) -> int:
    """Send one case and run every check on the answer.

    `known` (None half the time) points the case at a stored task. Three values are valid for the
    schema but refused by the API, as documented: a task-list cursor it did not give out (the cursor is
    opaque), a Last-Event-ID that is not a seq, and a stream's task id that cannot exist (over 128
    characters or with control characters). schemathesis would count those 400s as schema-valid
    requests rejected; for them that one check is left out, and the 400 must be `bad_parameter`
    naming the value instead. Half the time they are replaced by valid ones, and every check applies.
    """
    path, query = case.path_parameters or {}, case.query or {}
    header = next((name for name in case.headers or {} if name.lower() == "last-event-id"), None)
    refused = []
    if known is not None and "task_id" in path:
        # A running task's stream never ends (keep-alives): streams are pointed at ended tasks.
        streaming = case.operation.path.startswith("/sse/")
        path["task_id"] = quote("fuzz-ended" if streaming and known == "fuzz-running" else known, safe="")
    if query.get("cursor") is not None:
        if known is not None and real_cursor:
            query["cursor"] = real_cursor
        else:
            refused.append("cursor")
    if header is not None and _not_a_seq(case.headers[header]):
        if known is not None:
            case.headers[header] = "3"
        else:
            refused.append("Last-Event-ID")
    task_id = unquote(path.get("task_id", ""))  # schemathesis keeps path parameters URL-encoded
    if case.operation.path.startswith("/sse/") and (
        len(task_id) > 128 or any(ord(c) < 32 or ord(c) == 127 for c in task_id)
    ):
        refused.append("task_id")
    if storeless:
        # Without a store, 503 is the documented answer (schemathesis counts every 5xx as an error):
        # every other check applies, and the 503 must be `store_unavailable` with a Retry-After.
        response = case.call_and_validate(excluded_checks=[not_a_server_error, positive_data_acceptance])
        if response.status_code >= 500:
            assert response.status_code == 503 and response.json()["code"] == "store_unavailable"
            if case.operation.path != "/api/ready":  # readiness is a report, not an error to retry
                assert response.headers.get("retry-after") == ["1"], response.headers
        return response.status_code
    if mode is GenerationMode.NEGATIVE and not refused and _valid_on_the_wire(case):
        return case.call_and_validate(excluded_checks=[negative_data_rejection]).status_code
    if not refused:
        return case.call_and_validate().status_code
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    if response.status_code == 400 and mode is GenerationMode.POSITIVE:
        body = response.json()
        assert body["code"] == "bad_parameter" and body["detail"].split(":")[0] in refused, (refused, body)
    return response.status_code


EXAMPLES = 100  # per operation and mode


def _fuzz_operation(
    operation: Any, mode: GenerationMode, examples: int, seen: Counter[int], real_cursor: str, storeless: bool
) -> None:
    @hypothesis.given(case=operation.as_strategy(mode), known=st.sampled_from((*KNOWN_TASKS, None)))
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def fuzz(case: Any, known: str | None) -> None:
        seen[_fuzz_one(case, known, real_cursor, mode, storeless)] += 1

    fuzz()


def _fuzz(
    schema: Any, mode: GenerationMode, examples: int, real_cursor: str, *, storeless: bool = False
) -> tuple[list[str], dict[str, Counter[int]]]:
    """Fuzz every operation; the failures (all of them, not just the first) and the statuses seen."""
    failures: list[str] = []
    statuses: dict[str, Counter[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        seen = statuses.setdefault(operation.path, Counter())
        try:
            _fuzz_operation(operation, mode, examples, seen, real_cursor, storeless)
        except hypothesis.errors.Unsatisfiable:
            # No negative case exists for an operation without parameters (/metrics, health, ready).
            assert mode is GenerationMode.NEGATIVE and not operation.query and not operation.path_parameters
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    return failures, statuses


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_endpoint_answers_as_its_schema_says(api_schema: Any, mode: GenerationMode) -> None:
    failures, statuses = _fuzz(api_schema, mode, EXAMPLES, _real_cursor(api_schema))
    print(f"\n{mode}: " + "; ".join(f"{path} {dict(seen)}" for path, seen in statuses.items()))
    assert not failures, "\n\n".join(failures)
    assert len(statuses) >= 11  # every endpoint of the schema, the live stream's SSE included
    assert not any(status >= 500 for seen in statuses.values() for status in seen)
    if mode is GenerationMode.POSITIVE:
        for path, seen in statuses.items():  # the stored tasks were reached, and the unknown ones
            if "{task_id}" in path:
                assert seen[200] > 0 and (seen[404] > 0 or path.startswith("/sse/")), (path, seen)
    else:
        for path, seen in statuses.items():
            if "{" in path or path == "/api/tasks":
                assert seen[400] > 0, (path, seen)  # invalid input refused, in the error shape


def test_before_the_store_exists_every_endpoint_answers_as_its_schema_says(storeless_schema: Any) -> None:
    """Task endpoints (the stream too) answer 503 `store_unavailable` in the error shape, as documented."""
    failures, statuses = _fuzz(storeless_schema, GenerationMode.POSITIVE, 25, real_cursor="", storeless=True)
    print("\nno store: " + "; ".join(f"{path} {dict(seen)}" for path, seen in statuses.items()))
    assert not failures, "\n\n".join(failures)
    for path, seen in statuses.items():
        if "{task_id}" in path or path == "/api/tasks":
            assert seen[503] > 0, (path, seen)


def test_every_status_the_api_can_answer_is_documented(api_schema: Any) -> None:
    """The regression the fuzzer found: the SSE endpoint answers 503 when the store is unreadable (as
    the README says) but its OpenAPI listed only 200 and 400."""
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if "{task_id}" in operation.path or operation.path == "/api/tasks":
            assert {"400", "503"} <= set(operation.definition.raw["responses"]), operation.path


# --- the WebSocket, which OpenAPI does not describe ---------------------------------------------------


def _valid_resume(raw: Any) -> bool:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        return False
    text = str(raw).strip()
    return bool(text) and text.isascii() and text.isdigit() and int(text) <= 2**63 - 1


def _first_message_resume(message: str) -> Any:
    try:
        value = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    return (
        value.get("since_seq")
        if isinstance(value, dict) and isinstance(value.get("since_seq"), int)
        else None
    )


def test_websocket_garbage_resume_points_close_with_4400_and_never_an_error(settings: Settings) -> None:
    """Random resume points, in the query or as the first message: a valid one streams the (ended)
    task to its end (close 1000), anything else closes with 4400; never 1011 (an internal error)."""
    with live(settings) as lv:
        lv.emit("ws", 3)
        lv.exit("ws")
        lv.flush()
        lv.wait_stored("ws", 4)
        url = lv.url.replace("http://", "ws://") + "/ws/tasks/ws/events"
        codes: Counter[int] = Counter()

        @hypothesis.given(
            since=st.one_of(st.text(max_size=25), st.integers().map(str)),
            message=st.one_of(
                st.text(max_size=40),
                st.builds(
                    lambda v: orjson.dumps({"since_seq": v}).decode(),
                    st.one_of(st.integers(), st.booleans(), st.none(), st.text(max_size=5), st.floats()),
                ),
            ),
            in_query=st.booleans(),
        )
        @hypothesis.settings(max_examples=80, deadline=None, database=None, derandomize=True)
        def resume(since: str, message: str, in_query: bool) -> None:
            with connect(f"{url}?since_seq={quote(since, safe='')}" if in_query else url) as ws:
                if not in_query:
                    ws.send(message)
                try:
                    while True:
                        ws.recv(timeout=10)
                except ConnectionClosed:
                    pass
            valid = _valid_resume(since) if in_query else _valid_resume(_first_message_resume(message))
            code = ws.close_code
            assert code == (1000 if valid else 4400), (since, message, in_query, code, ws.close_reason)
            codes[code] += 1

        resume()
    assert codes[1000] > 0 and codes[4400] > 0, codes

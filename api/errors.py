"""One error shape for every error the API gives: `{"detail": "<for a person>", "code": "<for a program>"}`.

| status | code | when |
|---|---|---|
| 400 | `bad_parameter` | a parameter is malformed or out of range (the detail names it) |
| 404 | `task_not_found` | no event of that task is stored |
| 404 | `not_found` | no such path |
| 405 | `method_not_allowed` | the path exists, the method does not |
| 410 | `archive_missing` | the task is archived and its archive file is gone |
| 503 | `store_unavailable` | the SQLite file is missing, not initialised yet, or unreadable |
| 503 | `query_timeout` | a read ran past TASKEVENTS_QUERY_TIMEOUT and was stopped |
| 503 | `archive_unreadable` | the task is archived and its archive cannot be read (corrupt, not its own) |
| 500 | `internal_error` | a bug (never caused by client input) |
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from taskevents.api.store import QueryTimeout, StoreUnavailable

log = logging.getLogger("taskevents.api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


class TaskNotFound(ApiError):
    def __init__(self, task_id: str) -> None:
        super().__init__(404, "task_not_found", f"no task {task_id!r} in the store")


class BadParameter(ApiError):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(400, "bad_parameter", f"{name}: {problem}")


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


def describe_validation_error(exc: RequestValidationError) -> str:
    """`limit: Input should be less than or equal to 1000 (got '5000')`, one clause per problem."""
    parts = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ()) if part not in ("query", "path", "header", "body")]
        name = ".".join(loc) or "request"
        text = f"{name}: {error.get('msg', 'invalid')}"
        if "input" in error and error["input"] is not None and error.get("type") != "missing":
            shown = repr(error["input"])  # bounded: a client may send megabytes in one parameter
            text += f" (got {shown[:60] + '…' if len(shown) > 60 else shown})"
        parts.append(text)
    return "; ".join(parts) or "invalid request"


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.detail)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "bad_parameter", describe_validation_error(exc))


async def _store_unavailable(_: Request, exc: Exception) -> JSONResponse:
    # Retry-After: the usual cause is a worker that has not created the store yet.
    return error_response(503, "store_unavailable", str(exc), headers={"Retry-After": "1"})


async def _query_timeout(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "query_timeout", str(exc), headers={"Retry-After": "1"})


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such path; the API is described at /docs"
    return error_response(exc.status_code, code, detail, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    handlers: dict[Any, Any] = {
        ApiError: _api_error,
        RequestValidationError: _validation_error,
        StoreUnavailable: _store_unavailable,
        QueryTimeout: _query_timeout,  # a StoreUnavailable: the more specific handler is used
        StarletteHTTPException: _http_error,
        Exception: _unexpected,
    }
    for exc_class, handler in handlers.items():
        app.add_exception_handler(exc_class, handler)

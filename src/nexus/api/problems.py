"""RFC 9457 problem details for every error the API returns.

``type`` is a stable URI per error code (``https://nexus.dev/problems/<code>``), ``detail`` says
what went wrong in words, and validation failures list each bad field under ``errors``.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from nexus.core.errors import PROBLEM_BASE, FieldError, NexusError
from nexus.core.logging import get_logger, request_id_var

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = get_logger("nexus.api")

_HTTP_CODES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("rate-limited", "Too many requests"),
    503: ("unavailable", "Service unavailable"),
}


class ProblemFieldError(BaseModel):
    loc: list[str | int] = Field(description="Path to the field, e.g. ['body', 'email'].")
    message: str
    type: str


class Problem(BaseModel):
    """An error, as application/problem+json (RFC 9457)."""

    type: str = Field(examples=[PROBLEM_BASE + "not-found"])
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[ProblemFieldError] | None = None


def problem_response(
    request: Request | None,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path if request is not None else None,
        "request_id": request_id_var.get(),
    }
    if errors:
        body["errors"] = [
            {"loc": list(e.loc), "message": e.message, "type": e.type} for e in errors
        ]
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def internal_error(request: Request | None) -> Response:
    """The 500 of an unexpected error: nothing about it but the request id."""
    return problem_response(
        request,
        status=500,
        code="internal-error",
        title="Internal error",
        detail="Something went wrong on our side; the request id identifies it in the logs.",
    )


def problem_from_error(request: Request | None, exc: NexusError) -> Response:
    return problem_response(
        request,
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        errors=exc.errors,
        headers=exc.headers or None,
    )


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    out = []
    for error in exc.errors():
        loc = tuple(p for p in error.get("loc", ()) if isinstance(p, str | int))
        out.append(FieldError(loc, str(error.get("msg", "invalid")), str(error.get("type", ""))))
    return out


def install_problem_handlers(app: FastAPI) -> None:
    async def on_nexus_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NexusError)
        return problem_from_error(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = _field_errors(exc)
        fields = ", ".join(".".join(map(str, e.loc)) for e in errors[:5])
        return problem_response(
            request,
            status=422,
            code="validation-error",
            title="Invalid input",
            detail=f"The request is not valid: check {fields}." if fields else "Invalid request.",
            errors=errors,
        )

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code, title = _HTTP_CODES.get(exc.status_code, ("http-error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No route {request.method} {request.url.path}."
        return problem_response(
            request,
            status=exc.status_code,
            code=code,
            title=title,
            detail=detail,
            headers=dict(exc.headers) if exc.headers else None,
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", path=request.url.path, method=request.method)
        return internal_error(request)

    app.add_exception_handler(NexusError, on_nexus_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": title}
    for status, title in [
        (400, "Bad request"),
        (401, "Authentication required"),
        (403, "Forbidden"),
        (404, "Not found"),
        (409, "Conflict"),
        (413, "Payload too large"),
        (414, "Query string too long"),
        (422, "Invalid input"),
        (429, "Too many requests"),
    ]
}

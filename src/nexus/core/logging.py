"""Structured logging: JSON in production, readable in development, a request id on every line.

Secrets never reach a log line. :func:`redact` runs last before rendering and blanks any field
whose name says it holds a secret, and any value anywhere that has the shape of a NEXUS
credential (``nx_pub_…``, ``nx_sec_…``, session tokens), so a secret that slips into an
exception message or a URL is caught too.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import structlog

REDACTED = "[redacted]"
_SECRET_FIELD = re.compile(
    r"pass(word)?|secret|token|api[_-]?key|authorization|cookie|csrf|credential|session",
    re.IGNORECASE,
)
# NEXUS credentials share the ``nx_`` prefix (see nexus.workspaces.service).
_SECRET_VALUE = re.compile(r"nx_(pub|sec|ses)_[A-Za-z0-9_\-]{8,}")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_FIELD.search(k) else _scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: blank secret-named fields and credential-shaped values."""
    for key in list(event_dict):
        if key != "event" and _SECRET_FIELD.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def _add_request_id(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    request_id = request_id_var.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def configure_logging(
    *, level: str = "info", fmt: Literal["json", "console"] = "console", stream: Any = None
) -> None:
    """Route structlog and the standard library (uvicorn, alembic) through one pipeline."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info if fmt == "json" else _identity,
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_text)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # Drop below-level records before any processor runs: the access log is on every
        # request's path.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "alembic"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # NEXUS writes its own access log (without query strings, which may carry tokens).
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False
    _access_sink[0] = _AccessSink(handler, fmt)


def _orjson_text(value: Any, **kwargs: Any) -> str:
    """JSON lines rendered by orjson, as :func:`log_request` renders the access log's."""
    default = kwargs.get("default", str)
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # what orjson refuses (integers past 64 bits): the standard library's
        return json.dumps(value, default=default)


def _identity(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return event_dict


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


# --- the access log -----------------------------------------------------------------------------

_ACCESS_LOGGER = "nexus.access"
_access = logging.getLogger(_ACCESS_LOGGER)
_root = logging.getLogger()


class _AccessSink:
    """Writes access lines straight to the handler :func:`configure_logging` installed.

    One line per request is the costliest thing the decide and ingest hot paths log; going
    through structlog and the standard library's record machinery cost as much as a decision.
    The line is the one the pipeline would write -- the same fields, order, timestamp and
    format, request id and bound context included, secrets scrubbed -- rendered directly.
    """

    def __init__(self, handler: logging.StreamHandler[Any], fmt: Literal["json", "console"]):
        self.handler = handler
        self.json = fmt == "json"

    @property
    def attached(self) -> bool:
        """Whether the handler is still the root logger's (tests and embedders swap them)."""
        return self.handler in _root.handlers

    def write(self, fields: dict[str, Any]) -> None:
        if self.json:
            line = _orjson_text(fields)
        else:
            rest = " ".join(
                f"{key}={value}"
                for key, value in sorted(fields.items())
                if key not in {"event", "level", "logger", "timestamp"}
            )
            head = f"{fields['timestamp']} [info     ] {fields['event']:<30}"
            line = f"{head} [{_ACCESS_LOGGER}] {rest}"
        handler = self.handler
        handler.acquire()
        try:
            handler.stream.write(line + "\n")
            handler.flush()
        except (OSError, ValueError):  # a closed or broken stream loses the line, not the request
            pass
        finally:
            handler.release()


# Set by configure_logging (a one-element list: module state without ``global``).
_access_sink: list[_AccessSink | None] = [None]


def log_request(*, method: str, path: str | None, status: int, duration_ms: float) -> None:
    """The access log line of one request (never the query string: tokens travel there)."""
    if not _access.isEnabledFor(logging.INFO):
        return
    sink = _access_sink[0]
    if sink is None or not sink.attached:
        get_logger(_ACCESS_LOGGER).info(
            "request", method=method, path=path, status=status, duration_ms=duration_ms
        )
        return
    fields: dict[str, Any] = {
        "method": method,
        "path": _scrub(path),
        "status": status,
        "duration_ms": duration_ms,
        "event": "request",
    }
    bound = structlog.contextvars.get_contextvars()
    if bound:
        fields.update(redact(None, "info", dict(bound)))
    request_id = request_id_var.get()
    if request_id is not None:
        fields.setdefault("request_id", request_id)
    fields["level"] = "info"
    fields["logger"] = _ACCESS_LOGGER
    stamp = datetime.now(UTC).isoformat(timespec="microseconds")
    fields["timestamp"] = stamp.replace("+00:00", "Z")
    sink.write(fields)

"""The one exception hierarchy of NEXUS.

Every error a user can cause is a :class:`NexusError` with a stable ``code``. The API maps it
to an RFC 9457 problem document (``type`` = ``https://nexus.dev/problems/<code>``), the CLI to one
line and a non-zero exit. Anything else that escapes is a bug and answers 500.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROBLEM_BASE = "https://nexus.dev/problems/"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid input field: ``loc`` is the path to it, e.g. ``("body", "email")``."""

    loc: tuple[str | int, ...]
    message: str
    type: str = "value_error"


@dataclass
class NexusError(Exception):
    """Root of every expected failure. Subclasses fix ``status`` and ``code``."""

    detail: str
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    status = 400
    code = "bad-request"
    title = "Bad request"

    def __post_init__(self) -> None:
        super().__init__(self.detail)

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.code

    def __str__(self) -> str:
        return self.detail


class InvalidInput(NexusError):
    status = 422
    code = "validation-error"
    title = "Invalid input"


class Unauthenticated(NexusError):
    status = 401
    code = "unauthenticated"
    title = "Authentication required"


class PermissionDenied(NexusError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(NexusError):
    status = 404
    code = "not-found"
    title = "Not found"


class Conflict(NexusError):
    status = 409
    code = "conflict"
    title = "Conflict"


class PayloadTooLarge(NexusError):
    status = 413
    code = "payload-too-large"
    title = "Payload too large"


class RateLimited(NexusError):
    status = 429
    code = "rate-limited"
    title = "Too many requests"


class Unavailable(NexusError):
    """The server is overloaded or not ready; the client should retry after ``Retry-After``."""

    status = 503
    code = "unavailable"
    title = "Service unavailable"


class ConfigurationError(NexusError):
    """Settings that NEXUS refuses to start with."""

    status = 500
    code = "configuration-error"
    title = "Configuration error"

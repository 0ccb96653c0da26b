"""The NEXUS flag client: definitions fetched once, kept fresh, evaluated in process.

A :class:`NexusClient` downloads the workspace's flag definitions from
``GET {base_url}/v1/flags/definitions``, evaluates flags locally with
:class:`nexus.experiments.flags.FlagSet` (no network call per evaluation), and re-fetches them
from a daemon thread every ``refresh_interval`` seconds with ``If-None-Match``, so an unchanged
set costs the server a 304. Whatever goes wrong while fetching (the server unreachable, a 5xx,
a revoked key, a body it cannot read), the client keeps serving the last definitions it could
read and logs a warning through :mod:`logging` (logger ``nexus.sdk.client``); evaluation never
raises into the caller.

Keys: a secret key (``nx_sec_...``) is sent as ``Authorization: Bearer <key>``, a public write
key (``nx_pub_...``) as ``Authorization: Basic base64(<key>:)``, the way the NEXUS API and
Segment-style SDKs send write keys.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Final, Self

import httpx

from nexus.experiments.flags import (
    ErrorCode,
    Evaluation,
    EvaluationContext,
    Flag,
    FlagDefinitionError,
    FlagSet,
    Reason,
    parse_flag,
)

__all__ = [
    "CONSENT_PATH",
    "DEFINITIONS_PATH",
    "ConsentNotRecorded",
    "NexusClient",
    "authorization_header",
]
CONSENT_PATH: Final = "/v1/consent"


class ConsentNotRecorded(RuntimeError):
    """The server did not record a consent answer (unreachable, refused, invalid)."""


logger = logging.getLogger(__name__)

DEFINITIONS_PATH: Final = "/v1/flags/definitions"
PUBLIC_KEY_PREFIX: Final = "nx_pub_"
_NO_ATTRIBUTES: Final[Mapping[str, Any]] = MappingProxyType({})
_NO_VALUE: Final = object()


def authorization_header(api_key: str) -> str:
    """The ``Authorization`` header value for ``api_key``: Basic for a public write key,
    Bearer for anything else (secret keys)."""
    if api_key.startswith(PUBLIC_KEY_PREFIX):
        return "Basic " + base64.b64encode(f"{api_key}:".encode()).decode("ascii")
    return f"Bearer {api_key}"


@dataclass(frozen=True, slots=True)
class _Definitions:
    """One readable set of definitions, swapped in whole so a reader never sees half of one.

    ``invalid`` maps the keys of flags that were in the set but could not be parsed to why,
    so evaluating them reports ``PARSE_ERROR`` rather than ``FLAG_NOT_FOUND``.
    """

    flags: FlagSet
    invalid: Mapping[str, str] = field(default_factory=dict)
    etag: str | None = None
    version: str | None = None


def _read_definitions(payload: Any, etag: str | None) -> _Definitions:
    """Definitions from a ``{"version": ..., "flags": [...]}`` body.

    A flag that does not parse is left out (and remembered as invalid) rather than costing
    the whole set; a body that is not of this shape raises ``ValueError``.
    """
    if not isinstance(payload, Mapping) or not isinstance(payload.get("flags"), list):
        raise ValueError('expected an object with a "flags" list')
    flags: list[Flag] = []
    invalid: dict[str, str] = {}
    for i, document in enumerate(payload["flags"]):
        try:
            flags.append(parse_flag(document, allow_unknown_fields=True))
        except FlagDefinitionError as error:
            key = document.get("key") if isinstance(document, Mapping) else None
            logger.warning("NEXUS flag definitions: skipping flags[%d]: %s", i, error)
            if isinstance(key, str):
                invalid[key] = str(error)
    version = payload.get("version")
    return _Definitions(FlagSet(flags), invalid, etag, None if version is None else str(version))


class NexusClient:
    """Evaluates a workspace's feature flags in process.

    ``base_url=None`` runs offline on ``definitions`` alone (a ``{"version", "flags"}``
    mapping, as the endpoint returns); with a URL, ``definitions`` only bootstraps the client
    until the first successful fetch. The constructor fetches once, synchronously (bounded by
    ``timeout``), so the first evaluation already sees the server's flags when it is reachable.
    ``refresh_interval=None`` turns background refreshing off; :meth:`refresh` still works.
    An ``http_client`` passed in is used but not closed by :meth:`close`.
    """

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        *,
        refresh_interval: float | None = 30.0,
        timeout: float = 5.0,
        http_client: httpx.Client | None = None,
        definitions: Mapping[str, Any] | None = None,
    ) -> None:
        if base_url is not None and not api_key:
            raise ValueError("an api_key is needed to fetch definitions from a server")
        if refresh_interval is not None and refresh_interval <= 0:
            raise ValueError("refresh_interval must be positive, or None for no refreshing")
        self._base = None if base_url is None else base_url.rstrip("/")
        self._url = None if self._base is None else self._base + DEFINITIONS_PATH
        self._authorization = authorization_header(api_key) if api_key else None
        self._timeout = timeout
        self._refresh_interval = refresh_interval
        self._owns_http = http_client is None and base_url is not None
        self._http = http_client or (httpx.Client(timeout=timeout) if base_url else None)
        self._definitions = (
            _Definitions(FlagSet())
            if definitions is None
            else _read_definitions(definitions, etag=None)
        )
        self._refresh_lock = threading.Lock()
        self._failing = False
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        if self._url is None:
            return
        self.refresh()
        if refresh_interval is not None:
            self._thread = threading.Thread(
                target=self._poll, name="nexus-flags-refresh", daemon=True
            )
            self._thread.start()

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop refreshing and release the HTTP client (if this client created it).

        Evaluation keeps working on the last definitions after closing.
        """
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout + 1)
        if self._owns_http and self._http is not None:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def definitions_version(self) -> str | None:
        """The ``version`` of the definitions being served (None before any were read)."""
        return self._definitions.version

    @property
    def flags(self) -> FlagSet:
        """The flags being served right now."""
        return self._definitions.flags

    # --- consent -----------------------------------------------------------------------------

    def consent(
        self, visitor_id: str, purposes: Mapping[str, bool], *, source: str | None = None
    ) -> dict[str, Any]:
        """Record a visitor's consent per purpose (``analytics``, ``emotion_analysis``,
        ``personalisation``, ``marketing``) with ``POST /v1/consent``; returns the server's
        answer (the visitor's answers and what is permitted).

        Unlike evaluation this raises: a consent answer that was not recorded must not pass
        silently. :class:`ConsentNotRecorded` says why.
        """
        if self._base is None or self._http is None:
            raise ConsentNotRecorded("this client has no server (base_url) to record consent")
        body: dict[str, Any] = {"visitor_id": visitor_id, "purposes": dict(purposes)}
        if source is not None:
            body["source"] = source
        headers = {"Accept": "application/json"}
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        try:
            response = self._http.post(
                self._base + CONSENT_PATH, json=body, headers=headers, timeout=self._timeout
            )
        except httpx.HTTPError as error:
            raise ConsentNotRecorded(f"could not reach {self._base}: {error!r}") from error
        if response.status_code != httpx.codes.OK:
            raise ConsentNotRecorded(
                f"{self._base}{CONSENT_PATH} answered {response.status_code}: {response.text[:300]}"
            )
        answer: dict[str, Any] = response.json()
        return answer

    # --- fetching ----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Fetch the definitions now; True when new ones replaced the current ones.

        Never raises: on any failure the current definitions stay and a warning is logged
        (once per run of failures; recovery is logged at INFO).
        """
        if self._url is None or self._http is None or self._closed.is_set():
            return False
        with self._refresh_lock:
            current = self._definitions
            headers = {"Accept": "application/json"}
            if self._authorization is not None:
                headers["Authorization"] = self._authorization
            if current.etag is not None:
                headers["If-None-Match"] = current.etag
            try:
                response = self._http.get(self._url, headers=headers, timeout=self._timeout)
            except httpx.HTTPError as error:
                return self._failed(f"could not reach {self._url}: {error!r}")
            if response.status_code == httpx.codes.NOT_MODIFIED:
                return self._succeeded(None)
            if response.status_code != httpx.codes.OK:
                return self._failed(
                    f"{self._url} answered {response.status_code}: {response.text[:200]!r}"
                )
            try:
                fresh = _read_definitions(response.json(), response.headers.get("etag"))
            except (ValueError, FlagDefinitionError) as error:
                return self._failed(f"could not read the definitions from {self._url}: {error}")
            return self._succeeded(fresh)

    def _failed(self, problem: str) -> bool:
        if not self._failing:
            logger.warning(
                "NEXUS flag definitions: %s; serving the last good definitions (version %s)",
                problem,
                self._definitions.version,
            )
        self._failing = True
        return False

    def _succeeded(self, fresh: _Definitions | None) -> bool:
        if self._failing:
            logger.info("NEXUS flag definitions: fetching works again")
        self._failing = False
        if fresh is None:
            return False
        self._definitions = fresh
        return True

    def _poll(self) -> None:
        interval = self._refresh_interval
        assert interval is not None
        while not self._closed.wait(interval):
            try:
                self.refresh()
            except Exception:  # the thread must outlive any surprise, or refreshing stops
                logger.exception("NEXUS flag definitions: refresh failed unexpectedly")

    # --- evaluating --------------------------------------------------------------------------

    def evaluate(
        self,
        key: str,
        targeting_key: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Evaluation:
        """Evaluate flag ``key`` for a visitor; errors come back as an erroring
        :class:`Evaluation` (reason ``ERROR``, an ``error_code``), never as an exception."""
        definitions = self._definitions
        context = EvaluationContext(
            targeting_key, _NO_ATTRIBUTES if attributes is None else attributes
        )
        try:
            result = definitions.flags.evaluate(key, context)
        except Exception as error:  # a caller's odd attribute must not break their request
            logger.warning("NEXUS flag %r: evaluation failed: %r", key, error)
            return Evaluation(key, None, None, Reason.ERROR, None, ErrorCode.GENERAL, repr(error))
        if result.error_code == ErrorCode.FLAG_NOT_FOUND and key in definitions.invalid:
            return Evaluation(
                key, None, None, Reason.ERROR, None, ErrorCode.PARSE_ERROR, definitions.invalid[key]
            )
        return result

    def evaluate_all(
        self, targeting_key: str | None = None, attributes: Mapping[str, Any] | None = None
    ) -> dict[str, Evaluation]:
        """Every flag for a visitor (flags that could not be parsed are left out)."""
        context = EvaluationContext(
            targeting_key, _NO_ATTRIBUTES if attributes is None else attributes
        )
        return self._definitions.flags.evaluate_all(context)

    def _value(
        self, key: str, targeting_key: str | None, attributes: Mapping[str, Any] | None
    ) -> Any:
        result = self.evaluate(key, targeting_key, attributes)
        return _NO_VALUE if result.error_code is not None else result.value

    def bool_value(
        self,
        key: str,
        default: bool,
        targeting_key: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> bool:
        """The flag's boolean value, or ``default`` on an error or a non-boolean value."""
        value = self._value(key, targeting_key, attributes)
        return value if isinstance(value, bool) else default

    def str_value(
        self,
        key: str,
        default: str,
        targeting_key: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> str:
        """The flag's string value, or ``default`` on an error or a non-string value."""
        value = self._value(key, targeting_key, attributes)
        return value if isinstance(value, str) else default

    def number_value(
        self,
        key: str,
        default: float,
        targeting_key: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> float:
        """The flag's numeric value (an ``int`` stays an ``int``), or ``default`` on an error
        or a value that is not a number (booleans are not numbers)."""
        value = self._value(key, targeting_key, attributes)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        return default

    def json_value(
        self,
        key: str,
        default: Any,
        targeting_key: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Any:
        """The flag's value whatever its JSON type (``null`` included), or ``default`` on an
        error. Values are shared between calls: copy before mutating."""
        value = self._value(key, targeting_key, attributes)
        return default if value is _NO_VALUE else value

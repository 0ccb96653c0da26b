"""A plug-in for model-generated copy: any OpenAI-compatible chat-completions server.

The phrase grammar (:mod:`nexus.evolution.copy`) varies copy with no model at all. A
workspace that runs a model -- llama.cpp's server, vLLM, Ollama, or a hosted API it chose --
can also ask it for candidates. That is **off by default** (:class:`GeneratorConfig` has
``enabled=False``): nothing here touches the network unless a workspace configured it, and
no model is ever contacted on NEXUS's own initiative.

What a model writes was approved by no one, so its candidates are **held for approval**
(``status="pending"``) unless the workspace turns ``require_approval`` off. The API key is
sent only in the ``Authorization`` header: it never appears in a log line, an error message
or an error's traceback.

:class:`Generator` is the protocol other backends implement; :class:`OpenAICompatibleGenerator`
speaks ``POST {base_url}/chat/completions`` with a bearer key.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

import httpx

from nexus.core.errors import FieldError, InvalidInput, NexusError
from nexus.core.logging import REDACTED, get_logger
from nexus.evolution.copy import (
    MAX_LENGTH,
    Candidate,
    CopyError,
    Kind,
    Status,
    Tone,
    check_copy,
    check_text,
)

log = get_logger("nexus.evolution")

MAX_CANDIDATES: Final = 20
MAX_PRODUCT_LENGTH: Final = 2000
MAX_EXAMPLES: Final = 20
MAX_TIMEOUT_S: Final = 300.0
MAX_RESPONSE_BYTES: Final = 1 << 20
_DETAIL_LENGTH: Final = 200

_KIND_PROMPT: Final[Mapping[Kind, str]] = {
    "headline": "page headlines",
    "body": "body lines for a landing page (one or two sentences each)",
    "cta": "call-to-action button texts (a few words, starting with a verb)",
}
_TONE_PROMPT: Final[Mapping[Tone, str]] = {
    "reassuring": "calm and confident; it removes risk and doubt",
    "urgent": "it prompts action now, without inventing scarcity or deadlines",
    "playful": "light, warm and witty",
    "formal": "precise and professional, without slang",
    "empathetic": "it acknowledges the reader's problem and feelings first",
}
_SYSTEM_PROMPT: Final = (
    "You write marketing copy for a web page. Reply with only a JSON array of strings, one "
    "candidate per string, and nothing else: no numbering, no explanations."
)
# Bullets and numbering a model puts in front of lines: "1.", "2)", "(3)", "-", "*", "•".
_LIST_MARKER = re.compile(r"^(?:[-*•·]|\(?\d{1,3}[.):])\s+")
_HEADING = re.compile(r"^#{1,6}\s")
_QUOTES: Final = (
    ("**", "**"),
    ('"', '"'),
    ("'", "'"),
    ("“", "”"),
    ("\u2018", "\u2019"),  # single curly quotes
    ("«", "»"),
    ("`", "`"),
)
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
_REFUSAL = re.compile(
    r"^\s*(?:i'?m sorry|i am sorry|sorry,|i can(?:no|')t|i cannot|i won'?t|"
    r"i'?m (?:not able|unable)|i am (?:not able|unable)|as an ai)",
    re.IGNORECASE,
)
_LOOPBACK_NAMES: Final = frozenset({"localhost"})


class GeneratorError(NexusError):
    """The generator could not give candidates; ``detail`` is one line that says why and
    never holds the API key."""

    status = 502
    code = "copy-generator-failed"
    title = "Copy generator failed"


class GeneratorDisabled(GeneratorError):
    """The workspace has not turned the generator on."""

    status = 409
    code = "copy-generator-disabled"
    title = "Copy generator disabled"


class GeneratorConfigError(InvalidInput, ValueError):
    """An invalid generator configuration (the API answers 422)."""

    @classmethod
    def at(cls, name: str, message: str) -> GeneratorConfigError:
        return cls(detail=f"{name}: {message}", errors=[FieldError(loc=(name,), message=message)])


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """Where a workspace's copy model lives, and whether to use it.

    ``base_url`` is the API root the server documents (``https://api.example.com/v1``,
    ``http://127.0.0.1:8080/v1``); requests go to ``{base_url}/chat/completions``.
    ``api_key`` is sent as a bearer token when set (local servers often need none); over
    plain http it may only go to a loopback address. ``timeout_s`` bounds each request as a
    whole. ``require_approval`` holds generated candidates as ``pending`` for a person.
    """

    base_url: str = ""
    model: str = ""
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    require_approval: bool = True
    enabled: bool = False
    temperature: float = 0.9

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", self.base_url.strip().rstrip("/"))
        if self.api_key == "":
            object.__setattr__(self, "api_key", None)
        object.__setattr__(self, "model", self.model.strip())
        if self.base_url:
            self._check_url()
        if self.enabled and not self.base_url:
            raise GeneratorConfigError.at("base_url", "an enabled generator needs a base URL")
        if self.enabled and not self.model:
            raise GeneratorConfigError.at("model", "an enabled generator needs a model name")
        if self.model:
            try:
                check_text(self.model, limit=200)
            except CopyError:
                raise GeneratorConfigError.at(
                    "model", "a model name is at most 200 characters, no control characters"
                ) from None
        if self.api_key is not None and (
            not self.api_key.isprintable() or any(c.isspace() for c in self.api_key)
        ):
            # Never echo the key: the message only says what is wrong with it.
            raise GeneratorConfigError.at(
                "api_key", "an API key is printable characters without spaces"
            )
        if not 0.0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise GeneratorConfigError.at(
                "timeout_s", f"must be more than 0 and at most {MAX_TIMEOUT_S:g} seconds"
            )
        if not 0.0 <= self.temperature <= 2.0:
            raise GeneratorConfigError.at("temperature", "must lie in [0, 2]")

    def _check_url(self) -> None:
        try:
            parts = urlsplit(self.base_url)
            _ = parts.port  # raises on a port that is not a number
        except ValueError:
            raise GeneratorConfigError.at("base_url", "is not a URL") from None
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise GeneratorConfigError.at("base_url", "must be an http or https URL with a host")
        if parts.username is not None or parts.password is not None:
            raise GeneratorConfigError.at(
                "base_url", "must not hold credentials; put the key in api_key"
            )
        if parts.query or parts.fragment:
            raise GeneratorConfigError.at("base_url", "must have no query or fragment")
        if parts.scheme == "http" and self.api_key and not _is_loopback(parts.hostname):
            raise GeneratorConfigError.at(
                "base_url", "an API key is sent only over https, or over http to a loopback address"
            )

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    @property
    def origin(self) -> str:
        """Scheme, host and port: how messages name the server (never the path or a key)."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True, slots=True)
class CopyRequest:
    """What to ask a generator for: ``count`` texts of ``kind`` in ``tone``, about
    ``product``, for ``audience``, in the voice of the workspace's approved ``examples``."""

    kind: Kind
    tone: Tone
    count: int = 5
    product: str = ""
    audience: str = ""
    examples: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Candidate validates kind and tone with the grammar's messages.
        Candidate(text="x", kind=self.kind, tone=self.tone)
        if not isinstance(self.count, int) or not 1 <= self.count <= MAX_CANDIDATES:
            raise CopyError.at(["count"], f"must be an integer from 1 to {MAX_CANDIDATES}")
        for name in ("product", "audience"):
            value = getattr(self, name)
            if value:
                object.__setattr__(
                    self, name, check_text(value, limit=MAX_PRODUCT_LENGTH, loc=[name])
                )
        if len(self.examples) > MAX_EXAMPLES:
            raise CopyError.at(["examples"], f"at most {MAX_EXAMPLES} examples")
        object.__setattr__(
            self,
            "examples",
            tuple(
                check_text(e, limit=MAX_LENGTH["body"], loc=["examples", i])
                for i, e in enumerate(self.examples)
            ),
        )


@runtime_checkable
class Generator(Protocol):
    """A source of copy candidates. Implementations return valid candidates of the asked
    kind and tone (at most ``request.count``, ``source="generator"``) or raise
    :class:`GeneratorError` with a one-line reason."""

    def generate(self, request: CopyRequest) -> list[Candidate]: ...


def _prompt(request: CopyRequest) -> str:
    limit = MAX_LENGTH[request.kind]
    lines = [
        f"Write {request.count} distinct {_KIND_PROMPT[request.kind]} in a {request.tone} "
        f"tone: {_TONE_PROMPT[request.tone]}.",
        f"Each is plain text of at most {limit} characters on one line.",
    ]
    if request.product:
        lines.append(f"The product: {request.product}")
    if request.audience:
        lines.append(f"The audience: {request.audience}")
    if request.examples:
        lines.append("Approved copy in this brand's voice, to match (do not repeat it):")
        lines.extend(f"- {example}" for example in request.examples)
    lines.append(f"Reply with only a JSON array of {request.count} strings.")
    return "\n".join(lines)


def _clean(item: str, kind: Kind) -> str | None:
    """One candidate line tidied (list markers, wrapping quotes, a trailing comma from a
    broken JSON list, runs of spaces), or None when it is not usable copy."""
    text = item.strip().rstrip(",").strip()
    text = _LIST_MARKER.sub("", text, count=1).strip()
    for opening, closing in _QUOTES:
        if len(text) >= 2 and text.startswith(opening) and text.endswith(closing):
            text = text[len(opening) : -len(closing)].strip()
            break
    text = re.sub(r"[ \t]+", " ", text)  # other control characters make it unusable below
    if (
        not any(c.isalnum() for c in text)  # "", "[", "```"
        or text.endswith(":")  # a preamble: "Here are five headlines:"
        or _HEADING.match(text)
        or _REFUSAL.match(text)
    ):
        return None
    try:
        return check_copy(text, kind)
    except CopyError:
        return None  # too long, or a control character


def _items(content: str) -> tuple[list[str], bool]:
    """The raw candidate strings of a model's answer, and whether they came as JSON."""
    fenced = _FENCE.match(content)
    text = fenced.group(1) if fenced else content
    start, end = text.find("["), text.rfind("]")
    for attempt in (text, text[start : end + 1] if 0 <= start < end else ""):
        try:
            value = json.loads(attempt)
        except ValueError:
            continue
        if isinstance(value, Mapping):  # {"candidates": [...]} or similar
            value = next((v for v in value.values() if isinstance(v, list)), [])
        if isinstance(value, list):
            return [v for v in value if isinstance(v, str)], True
        if isinstance(value, str):
            return [value], True
    # One candidate per line -- or a JSON array cut short (max_tokens), whose lines are
    # fragments like '["a", "b",' that still parse as strings once re-wrapped.
    items: list[str] = []
    for line in text.splitlines():
        try:
            fragment = json.loads("[" + line.strip().strip("[],") + "]")
        except ValueError:
            fragment = None
        if isinstance(fragment, list) and fragment and all(isinstance(v, str) for v in fragment):
            items.extend(fragment)
        else:
            items.append(line)
    return items, False


def parse_candidates(content: str, kind: Kind, *, count: int) -> list[str]:
    """Up to ``count`` distinct usable texts of ``kind`` from a model's answer: a JSON array
    of strings (possibly in a code fence or after a preamble) or one candidate per line.

    Raises :class:`GeneratorError` when the answer is a refusal.
    """
    items, as_json = _items(content)
    if not as_json:
        first = next((line for line in items if line.strip()), "")
        if _REFUSAL.match(first):
            raise GeneratorError(f"the model declined: {_one_line(first)}")
    texts: dict[str, str] = {}
    for item in items:
        text = _clean(item, kind)
        if text is not None:
            texts.setdefault(text.casefold(), text)
        if len(texts) >= count:
            break
    return list(texts.values())


def _one_line(text: str, limit: int = _DETAIL_LENGTH) -> str:
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class OpenAICompatibleGenerator:
    """Candidates from an OpenAI-compatible ``/chat/completions`` endpoint.

    Every call is one request with the workspace's timeout; ``transport`` replaces httpx's
    network transport (custom TLS, a proxy, tests).
    """

    def __init__(
        self, config: GeneratorConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.config = config
        self._transport = transport

    def __repr__(self) -> str:
        return f"OpenAICompatibleGenerator({self.config.origin!r}, model={self.config.model!r})"

    def generate(self, request: CopyRequest) -> list[Candidate]:
        config = self.config
        if not config.enabled:
            raise GeneratorDisabled(
                "the copy generator is off for this workspace; set enabled, base_url and model"
                " to use one"
            )
        started = time.monotonic()
        failure: GeneratorError | None = None
        try:
            texts = self._texts(self._post(request), request)
        except GeneratorError as error:
            # A fresh error, raised outside the except block: it has no __context__ chain to
            # the httpx exception (whose request holds the Authorization header), and its
            # detail is scrubbed of the key in case the server echoed it.
            failure = type(error)(self._redact(error.detail))
        if failure is not None:
            log.warning(
                "copy generator failed",
                origin=config.origin,
                model=config.model,
                kind=request.kind,
                reason=failure.detail,
            )
            raise failure
        status: Status = "pending" if config.require_approval else "approved"
        log.info(
            "copy generator answered",
            origin=config.origin,
            model=config.model,
            kind=request.kind,
            tone=request.tone,
            asked=request.count,
            usable=len(texts),
            elapsed_ms=round((time.monotonic() - started) * 1000),
        )
        return [
            Candidate(
                text=text, kind=request.kind, tone=request.tone, source="generator", status=status
            )
            for text in texts
        ]

    def _redact(self, text: str) -> str:
        key = self.config.api_key
        return text.replace(key, REDACTED) if key else text

    def _payload(self, request: CopyRequest) -> dict[str, Any]:
        limit = MAX_LENGTH[request.kind]
        return {
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": _SYSTEM_PROMPT},
                {"role": "user", "content": _prompt(request)},
            ],
            "temperature": self.config.temperature,
            # Room for every candidate at its length limit (about 4 characters a token).
            "max_tokens": min(8192, 64 + request.count * (limit // 3 + 16)),
            "stream": False,
        }

    def _post(self, request: CopyRequest) -> Any:
        config = self.config
        headers = {"Accept": "application/json", "User-Agent": "nexus-copy-generator"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        deadline = time.monotonic() + config.timeout_s
        where = f"the copy generator at {config.origin}"
        try:
            with (
                httpx.Client(
                    timeout=config.timeout_s,
                    transport=self._transport,
                    follow_redirects=False,
                    trust_env=False,
                ) as client,
                client.stream(
                    "POST", config.endpoint, json=self._payload(request), headers=headers
                ) as response,
            ):
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise GeneratorError(f"{where} sent more than {MAX_RESPONSE_BYTES} bytes")
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("deadline")
                    chunks.append(chunk)
                status, raw = response.status_code, b"".join(chunks)
        except httpx.TimeoutException:
            raise GeneratorError(f"{where} did not answer within {config.timeout_s:g} s") from None
        except httpx.HTTPError as error:
            raise GeneratorError(f"could not reach {where}: {type(error).__name__}") from None
        if status != 200:
            raise GeneratorError(f"{where} answered HTTP {status}{_error_detail(raw)}")
        try:
            return json.loads(raw)
        except ValueError:
            raise GeneratorError(f"{where} answered with a body that is not JSON") from None

    def _texts(self, body: Any, request: CopyRequest) -> list[str]:
        where = f"the copy generator at {self.config.origin}"
        choices = body.get("choices") if isinstance(body, Mapping) else None
        if not isinstance(choices, list) or not choices:
            raise GeneratorError(f"{where} answered without choices")
        texts: dict[str, str] = {}
        for choice in choices:
            message = choice.get("message") if isinstance(choice, Mapping) else None
            if not isinstance(message, Mapping):
                raise GeneratorError(f"{where} answered a choice without a message")
            refusal = message.get("refusal")
            if refusal:
                raise GeneratorError(f"the model declined: {_one_line(str(refusal))}")
            if choice.get("finish_reason") == "content_filter":
                raise GeneratorError("the model's content filter withheld the answer")
            content = message.get("content")
            if not isinstance(content, str):
                raise GeneratorError(f"{where} answered a message without text content")
            for text in parse_candidates(content, request.kind, count=request.count):
                texts.setdefault(text.casefold(), text)
        if not texts:
            raise GeneratorError(f"the model's answer held no usable {request.kind} candidates")
        return list(texts.values())[: request.count]


def _error_detail(raw: bytes) -> str:
    """``: <message>`` from an OpenAI-style error body, or nothing."""
    try:
        body = json.loads(raw)
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, Mapping) else None
    message = error.get("message") if isinstance(error, Mapping) else error
    return f": {_one_line(message)}" if isinstance(message, str) and message.strip() else ""


__all__: Sequence[str] = (
    "CopyRequest",
    "Generator",
    "GeneratorConfig",
    "GeneratorConfigError",
    "GeneratorDisabled",
    "GeneratorError",
    "OpenAICompatibleGenerator",
    "parse_candidates",
)

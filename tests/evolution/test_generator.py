"""The OpenAI-compatible copy generator against a real HTTP server in this process: the
request it sends, parsing, approval holding, and errors that never leak the key."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from structlog.testing import capture_logs

from nexus.evolution.copy import Candidate
from nexus.evolution.generator import (
    CopyRequest,
    Generator,
    GeneratorConfig,
    GeneratorConfigError,
    GeneratorDisabled,
    GeneratorError,
    OpenAICompatibleGenerator,
    parse_candidates,
)

KEY = "sk-test-5ecret-Key-0123456789"
MODEL = "tiny-copywriter"


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    delay_s: float = 0.0


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeServer:
    """Answers like a chat-completions server: 401 without the right key, 400 on a body
    without model and messages, else whatever ``respond`` says."""

    url: str
    seen: list[Seen] = field(default_factory=list)
    respond: Callable[[Any], Reply] = lambda _body: Reply()


def completion(content: str | None, **message: Any) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, **message},
                    "finish_reason": "stop",
                }
            ],
        }
    ).encode()


@pytest.fixture(scope="module")
def running() -> Iterator[FakeServer]:
    fake = FakeServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- stdlib's name
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            fake.seen.append(Seen(self.path, dict(self.headers.items()), body))
            if self.headers.get("Authorization") not in (f"Bearer {KEY}", None):
                reply = Reply(401, b'{"error": {"message": "Incorrect API key provided"}}')
            elif (
                not isinstance(body, dict)
                or body.get("model") != MODEL
                or not isinstance(body.get("messages"), list)
                or self.path != "/v1/chat/completions"
            ):
                reply = Reply(400, b'{"error": {"message": "bad request"}}')
            else:
                reply = fake.respond(body)
            time.sleep(reply.delay_s)
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except OSError:
                pass  # the client gave up (the timeout test)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(running: FakeServer) -> FakeServer:
    running.seen.clear()
    running.respond = lambda _body: Reply(body=completion('["Start free", "Try it now"]'))
    return running


def make(server: FakeServer, **changes: Any) -> OpenAICompatibleGenerator:
    settings: dict[str, Any] = {
        "base_url": server.url,
        "model": MODEL,
        "api_key": KEY,
        "timeout_s": 5.0,
        "enabled": True,
        **changes,
    }
    return OpenAICompatibleGenerator(GeneratorConfig(**settings))


REQUEST = CopyRequest(
    kind="cta",
    tone="reassuring",
    count=3,
    product="Acme, bookkeeping for small shops",
    audience="owners worried about cost",
    examples=("Start my free trial",),
)


def failure(generator: OpenAICompatibleGenerator, request: CopyRequest = REQUEST) -> str:
    with pytest.raises(GeneratorError) as caught:
        generator.generate(request)
    error = caught.value
    # One line, no key anywhere, and no chain back to the httpx error (whose request holds
    # the Authorization header).
    for text in (str(error), repr(error), *map(str, error.args)):
        assert KEY not in text
        assert "\n" not in text
    assert error.__context__ is None
    assert error.__cause__ is None
    return str(error)


def test_it_posts_a_chat_completion_with_the_key_model_and_brief(server: FakeServer) -> None:
    got = make(server).generate(REQUEST)
    assert [c.text for c in got] == ["Start free", "Try it now"]
    (seen,) = server.seen
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    assert seen.body["model"] == MODEL
    assert seen.body["stream"] is False
    roles = [m["role"] for m in seen.body["messages"]]
    assert roles == ["system", "user"]
    brief = seen.body["messages"][1]["content"]
    for expected in ("3 distinct call-to-action", "reassuring", "40 characters", "Acme", "worried"):
        assert expected in brief
    assert "- Start my free trial" in brief
    assert "JSON array" in seen.body["messages"][0]["content"]


def test_generated_candidates_are_held_for_approval_by_default(server: FakeServer) -> None:
    got = make(server).generate(REQUEST)
    assert all(isinstance(c, Candidate) for c in got)
    assert {(c.source, c.status, c.kind, c.tone) for c in got} == {
        ("generator", "pending", "cta", "reassuring")
    }
    approved = make(server, require_approval=False).generate(REQUEST)
    assert {c.status for c in approved} == {"approved"}


def test_a_workspace_without_a_key_sends_no_authorization(server: FakeServer) -> None:
    make(server, api_key=None).generate(REQUEST)
    assert "Authorization" not in server.seen[0].headers


def test_line_answers_are_tidied_deduplicated_and_capped(server: FakeServer) -> None:
    content = "\n".join(
        [
            "Here are three call-to-action texts:",
            "1. \u201cStart your free trial\u201d",
            "2) 'Start your free trial'",
            "- Try Acme risk-free",
            "* " + "x" * 41,
            "3. Cancel\x07 any time",
            "",
            "   See plans   ",
            "4. One more that is over the cap",
        ]
    )
    server.respond = lambda _body: Reply(body=completion(content))
    got = make(server).generate(REQUEST)
    assert [c.text for c in got] == ["Start your free trial", "Try Acme risk-free", "See plans"]


@pytest.mark.parametrize(
    "content",
    [
        '["Start free", "Try it now", "Start free", ""]',
        '```json\n["Start free", "Try it now"]\n```',
        'Sure! ["Start free", "Try it now"] Enjoy.',
        '{"candidates": ["Start free", "Try it now"]}',
        '[\n  "Start free",\n  "Try it now",\n  "See pl',  # cut short by max_tokens
    ],
)
def test_json_answers_are_read_in_their_common_shapes(content: str) -> None:
    assert parse_candidates(content, "cta", count=5)[:2] == ["Start free", "Try it now"]


def test_parsing_drops_what_is_not_copy() -> None:
    content = '["# Headlines", "Ok", "a\\u202eb", "Line\\nbreak", "**Bold move**", "[", "Ok"]'
    assert parse_candidates(content, "headline", count=10) == ["Ok", "Bold move"]


def test_a_disabled_generator_refuses_without_touching_the_network(server: FakeServer) -> None:
    generator = make(server, enabled=False)
    with pytest.raises(GeneratorDisabled, match="off for this workspace") as caught:
        generator.generate(REQUEST)
    assert caught.value.status == 409
    assert server.seen == []
    assert GeneratorConfig().enabled is False  # off unless a workspace turns it on


def test_http_errors_become_one_line_errors_without_the_key(server: FakeServer) -> None:
    server.respond = lambda _body: Reply(
        500, json.dumps({"error": {"message": f"upstream broke for key {KEY}"}}).encode()
    )
    message = failure(make(server))
    assert message.startswith(f"the copy generator at {server.url.removesuffix('/v1')} answered")
    assert "HTTP 500: upstream broke for key [redacted]" in message
    assert "HTTP 401: Incorrect API key" in failure(make(server, api_key="sk-wrong"))


def test_a_slow_server_times_out(server: FakeServer) -> None:
    server.respond = lambda _body: Reply(body=completion('["Late"]'), delay_s=1.0)
    started = time.monotonic()
    assert "did not answer within 0.2 s" in failure(make(server, timeout_s=0.2))
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b'{"choices": []}', "without choices"),
        (b'{"choices": [{"message": {"content": null}}]}', "without text content"),
        (completion(None, refusal="I can't help with that."), "declined: I can't help"),
        (completion("I'm sorry, but I can't write that."), "declined: I'm sorry"),
        (completion("\n\n   \n"), "no usable cta candidates"),
        (
            json.dumps(
                {"choices": [{"message": {"content": "x"}, "finish_reason": "content_filter"}]}
            ).encode(),
            "content filter",
        ),
        (b"[" + b" " * (1 << 20) + b"]", "more than 1048576 bytes"),
    ],
)
def test_unusable_answers_become_generator_errors(
    server: FakeServer, body: bytes, message: str
) -> None:
    server.respond = lambda _body: Reply(body=body)
    assert message in failure(make(server))


def test_an_unreachable_server_is_a_generator_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    generator = OpenAICompatibleGenerator(
        GeneratorConfig(f"http://127.0.0.1:{port}/v1", MODEL, KEY, 2.0, enabled=True)
    )
    assert "could not reach the copy generator at http://127.0.0.1" in failure(generator)


def test_logs_name_the_server_and_model_but_never_the_key(server: FakeServer) -> None:
    with capture_logs() as logs:
        make(server).generate(REQUEST)
        server.respond = lambda _body: Reply(500, f'{{"error": "{KEY}"}}'.encode())
        failure(make(server))
    assert [entry["event"] for entry in logs] == [
        "copy generator answered",
        "copy generator failed",
    ]
    assert logs[0]["model"] == MODEL
    assert logs[0]["usable"] == 2
    assert KEY not in repr(logs)


def test_the_config_is_checked_and_never_shows_the_key() -> None:
    config = GeneratorConfig("https://api.example.com/v1/", MODEL, KEY, 10, enabled=True)
    assert config.endpoint == "https://api.example.com/v1/chat/completions"
    assert KEY not in repr(config)
    assert KEY not in repr(OpenAICompatibleGenerator(config))
    assert GeneratorConfig(api_key="").api_key is None
    bad: list[tuple[dict[str, Any], str]] = [
        ({"enabled": True, "model": MODEL}, "base_url: an enabled generator needs a base URL"),
        ({"enabled": True, "base_url": "https://x.example"}, "model: an enabled generator"),
        ({"base_url": "ftp://x.example"}, "http or https"),
        ({"base_url": "https://u:p@x.example/v1"}, "must not hold credentials"),
        ({"base_url": "https://x.example/v1?key=1"}, "no query"),
        ({"base_url": "http://x.example/v1", "api_key": KEY}, "only over https"),
        ({"api_key": "sk bad"}, "api_key: an API key is printable"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": 301}, "timeout_s"),
        ({"temperature": 3}, "temperature"),
    ]
    for settings, message in bad:
        with pytest.raises(GeneratorConfigError, match=message) as caught:
            GeneratorConfig(**settings)
        assert KEY not in str(caught.value)
        assert caught.value.status == 422
    # Plain http is fine to a loopback address, or without a key.
    GeneratorConfig("http://localhost:8080/v1", MODEL, KEY, enabled=True)
    GeneratorConfig("http://[::1]:8080/v1", MODEL, KEY, enabled=True)
    GeneratorConfig("http://gpu-box.lan:8000/v1", MODEL, enabled=True)


def test_requests_are_checked() -> None:
    with pytest.raises(ValueError, match="count"):
        CopyRequest(kind="cta", tone="urgent", count=0)
    with pytest.raises(ValueError, match="unknown tone"):
        CopyRequest(kind="cta", tone="angry")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"examples\.0"):
        CopyRequest(kind="cta", tone="urgent", examples=("bad\x00",))


def test_other_backends_plug_in_through_the_protocol(server: FakeServer) -> None:
    class Canned:
        def generate(self, request: CopyRequest) -> list[Candidate]:
            return [Candidate("Begin", request.kind, request.tone, "generator", "pending")]

    backends: list[Generator] = [make(server), Canned()]
    assert all(isinstance(b, Generator) for b in backends)
    assert [len(b.generate(REQUEST)) for b in backends] == [2, 1]

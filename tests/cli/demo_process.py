"""Run ``nexus demo`` as a real subprocess and read what it prints.

The end-to-end tests (``tests/cli/test_demo.py``, ``tests/web/test_browser.py``) exercise the
exact command a newcomer types, so they start the installed ``nexus`` script rather than an
in-process app: packaging, settings from the environment, stdout flushing before the server
blocks, and the uvicorn wiring are all part of what is tested.

Stdout is read by a daemon thread so that a demo that prints nothing (or hangs before
flushing) fails the test at a deadline instead of blocking it forever on ``readline``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

# The console script installed next to the interpreter running pytest (the project's venv).
NEXUS = Path(sys.executable).with_name("nexus")
BANNER_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 60.0  # the spec's bar: a demo answers /readyz within 60 s of starting

URL_RE = re.compile(r"open (?P<url>http://127\.0\.0\.1:\d+)")
SIGN_IN_RE = re.compile(r"^\s+sign in\s+(?P<email>\S+@\S+) / (?P<password>\S+)\s*$")
WORKSPACE_RE = re.compile(r"^\s+workspace\s+(?P<name>.+?) \((?P<id>ws_[0-9A-Za-z]+)\)\s*$")
WRITE_KEY_RE = re.compile(r"^\s+write key\s+(?P<key>nx_pub_\S+)\s*$")
SECRET_KEY_RE = re.compile(r"^\s+secret key\s+(?P<key>nx_sec_\S+)\s*$")
# Rich colours its output and turns the URL into an OSC 8 hyperlink when FORCE_COLOR or a
# similar variable says so; the tests read the text, so both kinds of escape are dropped.
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
# The banner's last line: once it is out, a banner that does not parse never will.
BANNER_END_RE = re.compile(r"^\s+try: ")
CSRF_RE = re.compile(r'name="csrf_token" value="(?P<token>[^"]+)"')


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (free unless someone races us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class DemoInfo:
    """What ``nexus demo`` tells the user to sign in and call the API with."""

    url: str
    email: str
    password: str
    workspace_name: str
    workspace_id: str
    write_key: str
    secret_key: str


def parse_banner(lines: list[str]) -> DemoInfo | None:
    """The demo's credentials once every expected line has been printed, else ``None``."""
    found: dict[str, re.Match[str]] = {}
    patterns = {
        "url": URL_RE,
        "sign_in": SIGN_IN_RE,
        "workspace": WORKSPACE_RE,
        "write_key": WRITE_KEY_RE,
        "secret_key": SECRET_KEY_RE,
    }
    for line in lines:
        for name, pattern in patterns.items():
            if name not in found and (match := pattern.search(line)):
                found[name] = match
    if len(found) < len(patterns):
        return None
    return DemoInfo(
        url=found["url"]["url"],
        email=found["sign_in"]["email"],
        password=found["sign_in"]["password"],
        workspace_name=found["workspace"]["name"],
        workspace_id=found["workspace"]["id"],
        write_key=found["write_key"]["key"],
        secret_key=found["secret_key"]["key"],
    )


class DemoProcess:
    """One ``nexus demo --port N`` subprocess with its own data directory.

    The child gets a hermetic environment: no inherited ``NEXUS_*`` variable (a developer's
    ``NEXUS_DATABASE_URL`` must not point the test at their database) and a working directory
    with no ``.env`` file, which pydantic-settings would otherwise read.
    """

    def __init__(self, data_dir: Path, workdir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        self.stderr_path = workdir / f"demo-{self.port}.stderr.log"
        self.lines: list[str] = []
        self.started_at = 0.0
        self.ready_after_s: float | None = None
        self._lock = threading.Lock()
        self._eof = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> DemoProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
        env["NEXUS_DATA_DIR"] = str(self.data_dir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.stderr_path.open("w") as stderr:
            self.started_at = time.monotonic()
            self._proc = subprocess.Popen(
                [str(NEXUS), "demo", "--port", str(self.port)],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                encoding="utf-8",
            )
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        return self

    def _read_stdout(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._lock:
                self.lines.append(ANSI_RE.sub("", line.rstrip("\n")))
        self._eof.set()

    def stop(self, timeout: float = 20.0) -> int | None:
        """Ctrl-C the demo (as a user would) and wait; kill it if it does not stop in time.

        Returns the exit code after a graceful stop, ``None`` when it had to be killed.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                return None
        if self._reader is not None:
            self._reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def __enter__(self) -> DemoProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- observation ----------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def output(self) -> str:
        """Everything printed so far, stdout then stderr, for assertion messages."""
        with self._lock:
            stdout = "\n".join(self.lines)
        stderr = self.stderr_path.read_text() if self.stderr_path.exists() else ""
        return f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"

    def wait_for_banner(self, timeout: float = BANNER_TIMEOUT_S) -> DemoInfo:
        """Parse the printed URL, login and keys; fail if they do not all appear in time."""
        deadline = time.monotonic() + timeout
        while True:
            # Judge one snapshot, taken after reading the end-of-output flag, so that lines
            # arriving meanwhile can never make a complete banner look truncated.
            ended = self._eof.is_set()
            with self._lock:
                lines = list(self.lines)
            info = parse_banner(lines)
            if info is not None:
                return info
            if any(BANNER_END_RE.search(line) for line in lines):
                raise AssertionError(
                    "nexus demo printed a banner the test cannot parse\n" + self.output()
                )
            if ended:
                raise AssertionError(
                    f"nexus demo exited ({self.returncode}) before printing its credentials\n"
                    + self.output()
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"nexus demo printed no complete banner within {timeout:.0f} s\n"
                    + self.output()
                )
            time.sleep(0.05)

    def wait_ready(self, url: str, timeout: float = READY_TIMEOUT_S) -> float:
        """Poll ``GET /readyz`` until it answers 200; return seconds since the process began."""
        deadline = self.started_at + timeout
        last: str = "no answer yet"
        with httpx.Client(base_url=url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.returncode is not None:
                    raise AssertionError(
                        f"nexus demo exited ({self.returncode}) before it was ready\n"
                        + self.output()
                    )
                try:
                    response = client.get("/readyz")
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code == 200:
                        self.ready_after_s = time.monotonic() - self.started_at
                        return self.ready_after_s
                    last = f"{response.status_code} {response.text[:200]}"
                time.sleep(0.05)
        raise AssertionError(
            f"GET /readyz did not answer 200 within {timeout:.0f} s of start (last: {last})\n"
            + self.output()
        )


@contextmanager
def running_demo(root: Path) -> Iterator[tuple[DemoProcess, DemoInfo, float]]:
    """A demo on a fresh data directory under ``root``, ready to serve; always stopped.

    Yields the process, what it printed, and seconds from start until ``/readyz`` said 200.
    """
    process = DemoProcess(data_dir=root / "data", workdir=root)
    try:
        process.start()
        info = process.wait_for_banner()
        ready_after_s = process.wait_ready(info.url)
        yield process, info, ready_after_s
    finally:
        process.stop()


def http_login(client: httpx.Client, email: str, password: str) -> httpx.Response:
    """Sign in through the real HTML form, CSRF token and cookie included, without following
    the redirect, so the caller can inspect the 303 and its ``Set-Cookie``."""
    page = client.get("/login")
    assert page.status_code == 200, page.text
    match = CSRF_RE.search(page.text)
    assert match is not None, f"no csrf_token input on /login:\n{page.text}"
    return client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": match["token"], "next": "/"},
        follow_redirects=False,
    )

"""A real ``nexus serve`` in a subprocess, on a throwaway data directory.

Benchmarks go through the installed command and real HTTP rather than an in-process test
client, because the figures are meant to include what a deployment pays: uvicorn, the socket,
the middleware stack and the embedded SQLite file on disk. The ingestion and funnel
benchmarks are expected to reuse this.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

BIN = Path(sys.executable).parent
NEXUS = BIN / "nexus"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class ServerError(RuntimeError):
    """The server did not start, answer or stop as expected; carries the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def read_proc_status(pid: int) -> dict[str, str]:
    """``/proc/<pid>/status`` as a dict (empty where there is no procfs)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def kib_to_mib(value: str | None) -> float:
    """``"123456 kB"`` as MiB; NaN when absent."""
    if not value or not value.split()[0].isdigit():
        return float("nan")
    return int(value.split()[0]) / 1024


class NexusServer:
    """``with NexusServer() as server:`` a migrated, empty NEXUS with one workspace.

    The environment is the caller's minus every ``NEXUS_*`` variable and the working directory
    is the temporary one, so neither a developer's settings nor a ``.env`` file in the checkout
    changes what is measured. The server is killed on the way out whatever happened.
    """

    def __init__(self, *, extra_env: dict[str, str] | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="nexus-bench-")
        self.data_dir = Path(self._tmp.name)
        self.log_path = self.data_dir / "server.log"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
        self.env["NEXUS_DATA_DIR"] = str(self.data_dir)
        self.env.update(extra_env or {})
        self.workspace: dict[str, Any] = {}
        self.exit_code: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise ServerError("the server is not running")
        return self._process.pid

    def __enter__(self) -> NexusServer:
        try:
            self.workspace = self._create_workspace()
            self._start()
            self._wait_ready()
        except BaseException:
            self._kill()
            self._tmp.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.stop()
        finally:
            self._kill()
            self._tmp.cleanup()

    def _create_workspace(self) -> dict[str, Any]:
        done = subprocess.run(
            [str(NEXUS), "workspace", "create", "Bench", "--json"],
            env=self.env,
            cwd=self.data_dir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise ServerError(f"`nexus workspace create` failed:\n{done.stderr.strip()}")
        created: dict[str, Any] = json.loads(done.stdout)
        return created

    def _start(self) -> None:
        # The log goes to a file, not a pipe: nobody reads a pipe while the benchmark runs,
        # and a full pipe would stall the server on its access log.
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            [str(NEXUS), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=self.base_url, timeout=5.0) as client:
            while time.monotonic() < deadline:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise self.error(f"the server exited with {self._process.returncode}")
                try:
                    if client.get("/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise self.error(f"/readyz was not 200 within {READY_TIMEOUT_S:.0f} s")

    def proc_status(self) -> dict[str, str]:
        return read_proc_status(self.pid)

    def stop(self) -> int:
        """Ask uvicorn to shut down gracefully (SIGINT, as Ctrl-C) and return its exit code.

        Idempotent, so a benchmark can stop the server itself to report how it stopped.
        """
        if self._process is None:
            raise ServerError("the server is not running")
        if self.exit_code is not None:
            return self.exit_code
        self._process.send_signal(signal.SIGINT)
        try:
            self.exit_code = self._process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise self.error(f"the server did not stop within {STOP_TIMEOUT_S:.0f} s") from exc
        return self.exit_code

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=STOP_TIMEOUT_S)
        if self._log is not None:
            self._log.close()
            self._log = None

    def error(self, message: str, *, lines: int = 20) -> ServerError:
        """A :class:`ServerError` carrying the end of the server's log, which is deleted with
        the data directory and would otherwise be lost with the reason."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        tail = "\n".join(text.splitlines()[-lines:])
        return ServerError(f"{message}\n--- end of the server log ---\n{tail}" if tail else message)

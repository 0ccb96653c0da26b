"""The nexus CLI against a real embedded database, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

NEXUS = [sys.executable, "-m", "nexus"]


def nexus(
    data_dir: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    environment = {**inherited, "NEXUS_DATA_DIR": str(data_dir), **(env or {})}
    return subprocess.run(
        [*NEXUS, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_workspace_create_json_gives_id_and_keys(data_dir: Path) -> None:
    result = nexus(data_dir, "workspace", "create", "Acme", "--json")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["id"].startswith("ws_")
    assert created["write_key"].startswith("nx_pub_")
    assert created["secret_key"].startswith("nx_sec_")
    listed = json.loads(nexus(data_dir, "workspace", "list", "--json").stdout)
    assert [w["id"] for w in listed] == [created["id"]]
    keys = json.loads(nexus(data_dir, "key", "list", "-w", created["id"], "--json").stdout)
    assert {k["kind"] for k in keys} == {"public", "secret"}
    # A secret key is never printed again, only its prefix.
    assert created["secret_key"] not in json.dumps(keys)


def test_user_and_key_lifecycle(data_dir: Path) -> None:
    workspace = json.loads(nexus(data_dir, "workspace", "create", "W", "--json").stdout)["id"]
    made = nexus(
        data_dir,
        "user",
        "create",
        "ana@shop.local",
        "--password-stdin",
        "--workspace",
        workspace,
        "--role",
        "admin",
        "--json",
        stdin="long enough password\n",
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["role"] == "admin"
    key = json.loads(
        nexus(data_dir, "key", "create", "-w", workspace, "--scope", "read", "--json").stdout
    )
    assert key["scopes"] == ["read"]
    revoked = nexus(data_dir, "key", "revoke", key["id"], "-w", workspace)
    assert revoked.returncode == 0
    listed = json.loads(nexus(data_dir, "key", "list", "-w", workspace, "--all", "--json").stdout)
    assert next(k for k in listed if k["id"] == key["id"])["revoked_at"] is not None


def test_errors_are_one_line_and_non_zero(data_dir: Path) -> None:
    assert "No workspace" in _one_line_error(nexus(data_dir, "key", "list", "-w", "ws_x"), 1)
    assert "No such command" in _one_line_error(nexus(data_dir, "bogus"), 2)
    assert "--workspace" in _one_line_error(nexus(data_dir, "key", "create"), 2)
    assert "at least 8" in _one_line_error(
        nexus(data_dir, "user", "create", "a@b.c", "--password-stdin", stdin="short\n"), 2
    )
    nexus(data_dir, "user", "create", "a@b.c", "--password-stdin", stdin="long enough 1\n")
    assert "already exists" in _one_line_error(
        nexus(data_dir, "user", "create", "a@b.c", "--password-stdin", stdin="long enough 1\n"),
        1,
    )
    assert "NEXUS_SECRET_KEY" in _one_line_error(
        nexus(data_dir, "workspace", "list", env={"NEXUS_ENV": "production"}), 1
    )
    assert "NEXUS_PORT" in _one_line_error(
        nexus(data_dir, "workspace", "list", env={"NEXUS_PORT": "abc"}), 2
    )
    unreachable = nexus(
        data_dir,
        "workspace",
        "list",
        env={"NEXUS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
    )
    assert "database" in _one_line_error(unreachable, 1)


def test_migrate_reports_the_revision(data_dir: Path) -> None:
    first = nexus(data_dir, "migrate")
    assert first.returncode == 0, first.stderr
    assert "migrated from empty to" in first.stdout
    again = nexus(data_dir, "migrate")
    assert "already at revision" in again.stdout


def _on_a_busy_port(data_dir: Path, command: str) -> subprocess.CompletedProcess[str]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        return nexus(data_dir, command, "--port", str(taken.getsockname()[1]))


def test_serve_reports_a_busy_port(data_dir: Path) -> None:
    assert "cannot listen" in _one_line_error(_on_a_busy_port(data_dir, "serve"), 1)


def test_demo_on_a_busy_port_changes_nothing(data_dir: Path) -> None:
    """A second demo must not rotate the credentials of the one already serving."""
    result = _on_a_busy_port(data_dir, "demo")
    assert "cannot listen" in _one_line_error(result, 1)
    assert "sign in" not in result.stdout
    listed = nexus(data_dir, "workspace", "list", "--json")
    assert json.loads(listed.stdout) == []

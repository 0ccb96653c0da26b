"""``nexus audit verify``: exit 0 and one line for an intact chain, exit 1 naming the first
bad entry otherwise, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nexus.cli.main import run
from nexus.security import service
from nexus.storage.database import Database
from tests.security.test_audit import WS, append, sql

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(
    database: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    for name in [k for k in os.environ if k.startswith("NEXUS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("NEXUS_DATABASE_URL", database.url)
    monkeypatch.setenv("NEXUS_DATA_DIR", str(tmp_path / "data"))

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            run(["audit", "verify", *args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


def test_an_intact_chain_prints_one_line_and_its_head(cli: Cli, database: Database) -> None:
    entries = append(database, 3)
    code, out, err = cli("--workspace", WS)
    assert (code, err) == (0, "")
    assert out.strip().splitlines() == [f"chain intact: 3 entries (head 3:{entries[-1].hash})"]


def test_without_workspace_every_chain_is_checked(cli: Cli, database: Database) -> None:
    append(database, 2)
    append(database, 1, workspace_id=None)
    code, out, _ = cli()
    assert (code, out.strip()) == (0, "chain intact: 3 entries in 2 chains")


def test_a_tampered_entry_exits_1_naming_it(cli: Cli, database: Database) -> None:
    append(database, 4)
    sql(database, "UPDATE audit_log SET actor = 'mallory' WHERE chain = :c AND seq = 2", c=WS)
    code, out, err = cli()
    assert (code, out) == (1, "")
    assert err.strip().splitlines() == [
        f"error: chain {WS} broken at entry 2: hash mismatch: the entry was altered"
    ]


def test_json_reports_each_chain(cli: Cli, database: Database) -> None:
    append(database, 3)
    sql(database, "DELETE FROM audit_log WHERE chain = :c AND seq = 2", c=WS)
    code, out, _ = cli("--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert report["chains"][WS] == {
        "ok": False,
        "count": 1,
        "first_bad_seq": 2,
        "reason": "entry 2 is missing",
        "head": report["chains"][WS]["head"],
    }


def test_an_anchor_catches_a_truncated_tail(cli: Cli, database: Database) -> None:
    append(database, 3)
    with database.session() as db:
        head = service.verify_log(db, workspace_id=WS).head
    sql(database, "DELETE FROM audit_log WHERE chain = :c AND seq = 3", c=WS)
    assert cli("--workspace", WS)[0] == 0  # the chain alone looks fine
    code, _, err = cli("--workspace", WS, "--anchor", str(head))
    assert code == 1
    assert "broken at entry 3: truncated" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--anchor", "3:abc"), "--anchor checks one chain"),
        (("-w", WS, "--anchor", "x"), "not an anchor"),
    ],
)
def test_bad_anchors_are_usage_errors(cli: Cli, args: tuple[str, ...], message: str) -> None:
    code, _, err = cli(*args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_a_real_process_fails_with_one_line_and_no_traceback(
    database: Database, tmp_path: Path
) -> None:
    append(database, 2)
    sql(database, "UPDATE audit_log SET hash = :h WHERE chain = :c AND seq = 1", c=WS, h="0" * 64)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env |= {"NEXUS_DATABASE_URL": database.url, "NEXUS_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "nexus", "audit", "verify"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: chain {WS} broken at entry 1: hash mismatch: the entry was altered"
    ]

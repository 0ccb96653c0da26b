"""``nexus import events`` and ``nexus export events``.

Most tests call the CLI's entry point in process (the same ``run()`` the ``nexus`` script
calls, with its error handling), which is quick; the crash and the one-line errors of a real
process are checked with subprocesses, as ``test_cli.py`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from nexus.cli.events import EventFileImport, ImportFormat
from nexus.cli.main import run
from nexus.events.duckdb_store import DuckDBEventStore
from nexus.events.store import AppendResult, WorkspaceBatch
from tests.cli.test_cli import _one_line_error, nexus


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.returncode == 0, self.stderr
        return json.loads(self.stdout)

    def one_line_error(self, code: int) -> str:
        assert self.returncode == code, (self.stdout, self.stderr)
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("error: ")
        return lines[0]


Cli = Callable[..., Outcome]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def nexus_env(data_dir: Path) -> dict[str, str]:
    """The environment :func:`nexus` runs commands in, for processes started otherwise."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    return {**inherited, "NEXUS_DATA_DIR": str(data_dir)}


@pytest.fixture
def cli(data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``cli("import", "events", ...)``: the ``nexus`` entry point on ``data_dir``."""
    for name in [k for k in os.environ if k.startswith("NEXUS_")]:
        monkeypatch.delenv(name)

    def invoke(*args: str, data: Path = data_dir) -> Outcome:
        monkeypatch.setenv("NEXUS_DATA_DIR", str(data))
        capsys.readouterr()
        try:
            run(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def workspace(cli: Cli) -> str:
    workspace_id: str = cli("workspace", "create", "Shop", "--json").json()["id"]
    return workspace_id


def _track(index: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": f"anon-{index % 3}",
        "timestamp": f"2026-01-01T10:{index:02d}:00Z",
        "properties": {"sku": f"SKU-{index}", "price": index + 0.5},
        **extra,
    }


def _write_jsonl(path: Path, messages: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in messages))
    return path


def _import(cli: Cli, *args: str, data: Path | None = None) -> dict[str, Any]:
    extra = {"data": data} if data is not None else {}
    summary: dict[str, Any] = cli("import", "events", *args, "--json", **extra).json()
    return summary


def _export(cli: Cli, path: Path, *args: str, data: Path | None = None) -> list[dict[str, Any]]:
    extra = {"data": data} if data is not None else {}
    outcome = cli("export", "events", "--output", str(path), *args, **extra)
    assert outcome.returncode == 0, outcome.stderr
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_jsonl_import_and_export_round_trip(cli: Cli, workspace: str, tmp_path: Path) -> None:
    messages = [
        _track(1, messageId="m-1"),
        _track(2),  # no messageId: the import gives it a deterministic one
        {"type": "page", "anonymousId": "anon-1", "name": "Home", "messageId": "m-3",
         "receivedAt": "2026-01-01T09:00:00.250Z", "timestamp": "2026-01-01T09:00:00Z"},
        {"type": "identify", "userId": "u-1", "anonymousId": "anon-1", "messageId": "m-4",
         "traits": {"plan": "pro"}, "timestamp": "2026-01-01T10:30:00Z"},
    ]  # fmt: skip
    source = _write_jsonl(tmp_path / "in.jsonl", messages)

    summary = _import(cli, str(source))  # the only workspace is the default
    assert summary["workspace_id"] == workspace
    assert (summary["imported"], summary["duplicates"], summary["invalid"]) == (4, 0, 0)
    assert summary["resumed_from_line"] is None

    exported = _export(cli, tmp_path / "out.jsonl", "-w", workspace)
    by_id = {m["messageId"]: m for m in exported}
    assert len(by_id) == 4
    assert by_id["m-1"]["properties"] == {"sku": "SKU-1", "price": 1.5}
    assert by_id["m-3"]["receivedAt"] == "2026-01-01T09:00:00.250Z"  # the message's own
    assert by_id["m-4"]["traits"] == {"plan": "pro"}
    generated = next(m for k, m in by_id.items() if k.startswith("import-"))
    assert generated["properties"]["sku"] == "SKU-2"

    # The export is itself importable: into another data directory it gives the same events.
    other = tmp_path / "other"
    cli("workspace", "create", "Copy", data=other)
    assert _import(cli, str(tmp_path / "out.jsonl"), data=other)["imported"] == 4
    again = _export(cli, tmp_path / "again.jsonl", data=other)
    assert [m["messageId"] for m in again] == [m["messageId"] for m in exported]
    assert [m["timestamp"] for m in again] == [m["timestamp"] for m in exported]


def test_parquet_export_is_readable_with_pyarrow(cli: Cli, workspace: str, tmp_path: Path) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", [_track(i) for i in range(5)])
    source.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())  # a byte order mark is fine
    _import(cli, str(source))
    out = tmp_path / "events.parquet"  # the format follows from the extension
    assert cli("export", "events", "-o", str(out), "--json").json()["events"] == 5
    table = pq.read_table(out)
    assert table.num_rows == 5
    assert {"message_id", "event", "timestamp", "properties"} <= set(table.column_names)
    assert set(table.column("event").to_pylist()) == {"Product Viewed"}


def test_csv_columns_are_read_through_the_mapping(cli: Cli, workspace: str, tmp_path: Path) -> None:
    source = tmp_path / "orders.csv"
    source.write_text(
        "event_name,user,ts,plan,note\n"
        'Signed Up,u-1,2026-02-01T08:00:00Z,pro,"has, a comma"\n'
        'Paid,u-1,2026-02-01T08:05:00Z,pro,"spans\ntwo lines"\n'
        "Paid,u-2,2026-02-02T09:00:00Z,free,x\n",
        encoding="utf-8",
    )
    outcome = cli(
        "import", "events", str(source), "--json",
        "--map", "event_name=event", "--map", "user=userId",
        "--map", "ts=timestamp", "--map", "plan=properties.plan",
    )  # fmt: skip
    assert outcome.json()["imported"] == 3
    assert "ignored CSV columns without a Segment field: note" in outcome.stderr

    exported = _export(cli, tmp_path / "out.jsonl")
    assert [(m["event"], m["userId"], m["properties"]) for m in exported] == [
        ("Signed Up", "u-1", {"plan": "pro"}),
        ("Paid", "u-1", {"plan": "pro"}),
        ("Paid", "u-2", {"plan": "free"}),
    ]
    assert exported[2]["timestamp"] == "2026-02-02T09:00:00.000Z"


def test_csv_with_segment_headers_needs_no_mapping(
    cli: Cli, workspace: str, tmp_path: Path
) -> None:
    source = tmp_path / "events.csv"
    source.write_text(
        "\ufefftype,event,userId,timestamp,properties.plan\n"
        "track,Signed Up,u-1,2026-02-01T08:00:00Z,pro\n"
        ",Paid,u-1,2026-02-01T08:05:00Z,\n",  # no type: a track call
        encoding="utf-8",
    )
    assert _import(cli, str(source))["imported"] == 2
    exported = _export(cli, tmp_path / "out.jsonl")
    assert [m["event"] for m in exported] == ["Signed Up", "Paid"]
    assert exported[0]["properties"] == {"plan": "pro"}
    assert "properties" not in exported[1]


def test_importing_the_same_file_again_inserts_nothing(
    cli: Cli, workspace: str, tmp_path: Path
) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", [_track(i) for i in range(6)])
    assert _import(cli, str(source))["imported"] == 6

    again = cli("import", "events", str(source))
    assert again.returncode == 0, again.stderr
    assert "nothing to import" in again.stdout

    # Read again from the start (or from a copy elsewhere): every event is a duplicate.
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(source.read_bytes())
    reread = _import(cli, str(copy), "--restart")
    assert (reread["imported"], reread["duplicates"]) == (0, 6)
    assert len(_export(cli, tmp_path / "out.jsonl")) == 6


# Dies like a killed process (no cleanup, no rollback handler) as it starts storing batch 3.
_CRASHING_IMPORT = textwrap.dedent(
    """
    import os, sys
    from nexus.events.duckdb_store import DuckDBEventStore
    from nexus.cli.main import run

    original = DuckDBEventStore.append
    calls = []

    def append(self, batches, *, markers=None):
        calls.append(1)
        if len(calls) == 3:
            os._exit(9)
        return original(self, batches, markers=markers)

    DuckDBEventStore.append = append
    run(sys.argv[1:])
    """
)


def test_an_interrupted_import_resumes_where_it_stopped(
    cli: Cli, data_dir: Path, workspace: str, tmp_path: Path
) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", [_track(i) for i in range(10)])
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASHING_IMPORT, "import", "events", str(source),
         "--batch-size", "2"],
        env=nexus_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert crashed.returncode == 9, crashed.stderr

    resumed = _import(cli, str(source), "--batch-size", "2")
    assert resumed["resumed_from_line"] == 5  # two batches of two lines were committed
    assert (resumed["imported"], resumed["duplicates"]) == (6, 0)
    exported = _export(cli, tmp_path / "out.jsonl")
    assert sorted(m["properties"]["sku"] for m in exported) == sorted(f"SKU-{i}" for i in range(10))


def test_invalid_lines_are_reported_and_skipped(cli: Cli, workspace: str, tmp_path: Path) -> None:
    source = tmp_path / "mixed.jsonl"
    source.write_bytes(
        orjson.dumps(_track(1))
        + b"\n{not json\n"
        + orjson.dumps(_track(3))
        + b"\n\n"  # a blank line is not an error
        + orjson.dumps({"type": "track", "userId": "u"})  # no event name
        + b"\n"
        + orjson.dumps(_track(6))
        + b"\n"
    )
    outcome = cli("import", "events", str(source), "--json")
    summary = outcome.json()
    assert (summary["imported"], summary["invalid"]) == (3, 2)
    assert [i["line"] for i in summary["first_invalid"]] == [2, 5]
    assert "line 2: not JSON" in outcome.stderr
    assert "line 5: a track message needs an event name" in outcome.stderr


def test_a_file_without_a_valid_message_fails(cli: Cli, workspace: str, tmp_path: Path) -> None:
    source = tmp_path / "notes.jsonl"
    source.write_text("hello\nworld\n", encoding="utf-8")
    outcome = cli("import", "events", str(source))
    assert outcome.returncode == 1
    assert outcome.stderr.strip().splitlines()[-1].startswith("error: no valid message")


def test_unreadable_files_are_refused_with_one_line(
    cli: Cli, data_dir: Path, workspace: str, tmp_path: Path
) -> None:
    # A real process, as a user sees it.
    missing = nexus(data_dir, "import", "events", str(tmp_path / "nope.jsonl"))
    assert "cannot read" in _one_line_error(missing, 1)

    binary = tmp_path / "image.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert "not UTF-8 text" in cli("import", "events", str(binary)).one_line_error(1)
    gzipped = tmp_path / "events.jsonl.gz"
    gzipped.write_bytes(b"\x1f\x8b\x08\x00rest")
    assert "gzip" in cli("import", "events", str(gzipped)).one_line_error(1)
    csv_file = tmp_path / "e.csv"
    csv_file.write_text("event,userId\nA,u\n", encoding="utf-8")
    no_column = cli("import", "events", str(csv_file), "--map", "user=userId")
    assert "lacks" in no_column.one_line_error(2)


def test_several_workspaces_need_one_chosen(cli: Cli, workspace: str, tmp_path: Path) -> None:
    cli("workspace", "create", "Second")
    source = _write_jsonl(tmp_path / "in.jsonl", [_track(1)])
    assert "--workspace" in cli("import", "events", str(source)).one_line_error(2)
    assert _import(cli, str(source), "-w", workspace)["imported"] == 1


# Holds the event store the way a running server does, until its stdin closes.
_HOLD_STORE = textwrap.dedent(
    """
    import sys
    from nexus.core.settings import Settings
    from nexus.events import service

    store = service.open_store(Settings())
    print("holding", flush=True)
    sys.stdin.read()
    store.close()
    """
)


def test_a_store_held_by_a_running_server_is_a_one_line_error(
    cli: Cli, data_dir: Path, workspace: str, tmp_path: Path
) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", [_track(1)])
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_STORE],
        env=nexus_env(data_dir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        assert "in use" in cli("import", "events", str(source)).one_line_error(1)
        out = tmp_path / "out.jsonl"
        assert "in use" in cli("export", "events", "-o", str(out)).one_line_error(1)
        assert not out.exists()
    finally:
        holder.communicate(timeout=30)
    assert _import(cli, str(source))["imported"] == 1


class _FailingStore(DuckDBEventStore):
    """A store whose ``fail_at``-th append raises, as a full disk would."""

    fail_at = 0
    appends = 0

    def append(
        self, batches: Sequence[WorkspaceBatch], *, markers: dict[str, int] | None = None
    ) -> AppendResult:
        self.appends += 1
        if self.appends == self.fail_at:
            raise OSError("No space left on device")
        return super().append(batches, markers=markers)


def test_a_csv_import_resumes_after_records_that_span_lines(tmp_path: Path) -> None:
    source = tmp_path / "notes.csv"
    rows = [f'Noted,u-{i},"line one\nline two of {i}"\n' for i in range(7)]
    source.write_text("event,userId,properties.note\n" + "".join(rows), encoding="utf-8")
    store = _FailingStore(tmp_path / "events.duckdb")
    store.fail_at = 4
    job = EventFileImport(
        store, workspace_id="ws_1", path=source, fmt=ImportFormat.CSV, batch_size=2
    )
    with source.open("rb") as handle, pytest.raises(OSError, match="No space"):
        job.run(handle)
    assert store.count("ws_1") == 6  # three batches of two records were committed

    store.fail_at = 0
    with source.open("rb") as handle:
        summary = job.run(handle)
    assert summary.resumed_from_line == 14  # header, then 6 records of two lines each
    assert (summary.imported, summary.duplicates, summary.invalid) == (1, 0, 0)
    assert store.count("ws_1") == 7
    notes = [r[12] for r in store.recent("ws_1", limit=10)]
    assert sorted(orjson.loads(n)["note"] for n in notes) == [
        f"line one\nline two of {i}" for i in range(7)
    ]
    store.close()

"""``nexus import events`` and ``nexus export events``: files in and out of the event store.

Import reads Segment messages from JSON lines (one message per line, as ``nexus export events``
writes them and Segment's S3 destination stores them once decompressed) or from CSV, and
appends them straight to the embedded event store, so the server must be stopped (DuckDB has
one writer process); a running server makes the command fail with one line saying so.

An import is resumable and idempotent:

* the file is known by a fingerprint of its size and first 64 KB (not its path: a copy or a
  moved file is the same file); an edited or grown file is a new one;
* every batch is appended together with the position after it (byte offset and line number,
  two store markers keyed by workspace and fingerprint) in one transaction, so a crash or
  Ctrl-C loses nothing committed and the next run of the same command goes on from there;
* a message without ``messageId`` gets ``import-<fingerprint>-<line>``, so reading the file
  again (``--restart``, or a copy imported elsewhere first) stores nothing twice: the store
  deduplicates by message id per workspace.

The event time is the message's own (Segment's rules, :mod:`nexus.events.normalize`);
``receivedAt`` is the message's own when it has one (re-importing an export keeps it) and the
time of the import otherwise. Memory stays bounded by the batch size: the file is streamed and
every batch is stored before the next is read. (Storing on a second thread while the next batch
is parsed was measured slower, by 5-10 %: both halves hold the GIL most of the time.)

CSV columns: a column is imported as the field its ``--map COLUMN=FIELD`` names, or, without
one, under its own name when that is a Segment field (``event``, ``userId``,
``properties.plan`` …), so a file with Segment-named headers needs no mapping. Other columns
are ignored, and named on stderr so that nothing disappears silently (``--map COLUMN=`` ignores
one quietly). Values are text; a row without ``type`` is a ``track`` call.
"""

from __future__ import annotations

import csv
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any, Final

import orjson
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from nexus.cli.output import console, err_console, fail, print_json
from nexus.core.errors import NexusError
from nexus.core.settings import Settings
from nexus.emotion.service import EmotionRuntime, settings_reader
from nexus.events import service as events
from nexus.events.normalize import MAX_EVENT_BYTES, EventRejected, EventRow, normalize, parse_time
from nexus.events.store import EventStore, WorkspaceBatch
from nexus.storage.database import Database
from nexus.workspaces import service as workspaces

import_app = typer.Typer(help="Bring data into NEXUS (the server must be stopped).")
export_app = typer.Typer(help="Write data out of NEXUS (the server must be stopped).")

DEFAULT_BATCH_SIZE: Final = 50_000
FINGERPRINT_BYTES: Final = 64 * 1024
# A line is read at most this far: longer ones are skipped unread (and counted invalid), so
# one huge line cannot exhaust memory. Generous against the 32 KB message limit, which
# applies to the message re-encoded without the line's whitespace.
MAX_LINE_BYTES: Final = 4 * MAX_EVENT_BYTES
INVALID_SHOWN: Final = 10
GZIP_MAGIC: Final = b"\x1f\x8b"

# Segment fields a CSV column may fill: top-level values, and keys inside these objects.
SEGMENT_FIELDS: Final = frozenset(
    {
        "type",
        "event",
        "userId",
        "anonymousId",
        "messageId",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "receivedAt",
        "name",
        "category",
        "groupId",
        "previousId",
    }
)
OBJECT_FIELDS: Final = ("properties", "traits", "context", "integrations")


class ImportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    PARQUET = "parquet"


class ImportUsageError(ValueError):
    """The command line does not fit the file (a --map naming no column, clashing fields)."""


class UnreadableFile(ValueError):
    """The file is not one an import can read at all."""


# --- the file --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What makes two files the same import: size and first 64 KB, never the path."""

    size: int
    fingerprint: str  # sha256 hex

    @classmethod
    def of(cls, handle: IO[bytes]) -> FileIdentity:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(0)
        head = handle.read(FINGERPRINT_BYTES)
        handle.seek(0)
        digest = hashlib.sha256(b"nexus-import-v1\0%d\0" % size + head)
        return cls(size=size, fingerprint=digest.hexdigest())

    def marker(self, workspace_id: str, what: str) -> str:
        return f"import:{workspace_id}:{self.fingerprint[:32]}:{what}"

    @property
    def message_id_prefix(self) -> str:
        return f"import-{self.fingerprint[:24]}-"


def _physical_lines(
    handle: IO[bytes], *, offset: int, line: int
) -> Iterator[tuple[int, int, bytes | None]]:
    """``(line number, offset after the line, its bytes)`` from the handle's position, which
    is ``offset`` after ``line`` lines; ``None`` for a line over :data:`MAX_LINE_BYTES`."""
    readline = handle.readline
    while raw := readline(MAX_LINE_BYTES):
        line += 1
        offset += len(raw)
        if len(raw) == MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while more := readline(MAX_LINE_BYTES):
                offset += len(more)
                if more.endswith(b"\n"):
                    break
            yield line, offset, None
            continue
        yield line, offset, raw


@dataclass(frozen=True, slots=True)
class Invalid:
    """A record that is not a message, with why."""

    detail: str


@dataclass(frozen=True, slots=True)
class Record:
    """One record of the file: ``item`` is a parsed message, :class:`Invalid`, or ``None`` for
    a blank line. ``line`` is where it starts; ``end_offset``/``end_line`` where it ends."""

    line: int
    end_offset: int
    end_line: int
    item: Any


_TOO_LONG = Invalid(f"the line is longer than {MAX_LINE_BYTES // 1024} KB")


def jsonl_records(handle: IO[bytes], *, offset: int, line: int) -> Iterator[Record]:
    loads = orjson.loads
    for number, end, raw in _physical_lines(handle, offset=offset, line=line):
        if raw is None:
            yield Record(number, end, number, _TOO_LONG)
            continue
        text = raw.strip()
        if number == 1:
            text = text.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
        if not text:
            yield Record(number, end, number, None)
            continue
        try:
            yield Record(number, end, number, loads(text))
        except orjson.JSONDecodeError as exc:
            yield Record(
                number, end, number, Invalid(f"not JSON: {exc.msg} at character {exc.pos + 1}")
            )


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """Which cell goes to which Segment field, read from the header and ``--map``."""

    width: int
    fields: tuple[tuple[int, str], ...]  # (cell index, field path)
    ignored: tuple[str, ...]  # columns without a field, to name on stderr
    header_end: int  # byte offset after the header
    header_lines: int


def is_segment_field(path: str) -> bool:
    head, dot, rest = path.partition(".")
    if not dot:
        return path in SEGMENT_FIELDS
    return head in OBJECT_FIELDS and all(rest.split("."))


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """``--map COLUMN=FIELD`` options as {column: field}; an empty FIELD ignores the column."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, target = pair.partition("=")
        column, target = column.strip(), target.strip()
        if not sep or not column:
            raise ImportUsageError(f"--map {pair!r}: write it as COLUMN=FIELD")
        if target and not is_segment_field(target):
            raise ImportUsageError(
                f"--map {pair!r}: {target!r} is not a Segment field; use one of "
                f"{', '.join(sorted(SEGMENT_FIELDS))}, or properties.NAME, traits.NAME, "
                "context.NAME, integrations.NAME"
            )
        if column in mapping:
            raise ImportUsageError(f"--map names column {column!r} twice")
        mapping[column] = target
    return mapping


def _csv_lines(handle: IO[bytes], position: list[int], bad: dict[int, str]) -> Iterator[str]:
    """Decoded lines for :func:`csv.reader`, keeping ``position`` = [offset, line] after the
    last line handed out (the reader takes lines one at a time, only as a record needs them)
    and noting in ``bad`` the lines that could not be used."""
    for number, end, raw in _physical_lines(handle, offset=position[0], line=position[1]):
        position[0], position[1] = end, number
        if raw is None:
            bad[number] = _TOO_LONG.detail
            yield "\n"
            continue
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            bad[number] = "the line is not UTF-8 text"
            yield "\n"


def read_csv_layout(handle: IO[bytes], mapping: dict[str, str]) -> CsvLayout:
    handle.seek(0)
    position = [0, 0]
    bad: dict[int, str] = {}
    reader = csv.reader(_csv_lines(handle, position, bad))
    header: list[str] = []
    for cells in reader:
        if cells:
            header = cells
            break
    if not header or bad:
        raise ImportUsageError("the CSV file has no readable header line")
    header[0] = header[0].removeprefix("\ufeff")
    names = [h.strip() for h in header]
    missing = sorted(set(mapping) - set(names))
    if missing:
        raise ImportUsageError(
            f"--map names {', '.join(map(repr, missing))}, which the CSV header lacks "
            f"(its columns: {', '.join(names)})"
        )
    fields: list[tuple[int, str]] = []
    ignored: list[str] = []
    for index, name in enumerate(names):
        target = mapping.get(name, name if is_segment_field(name) else "")
        if target:
            fields.append((index, target))
        elif name not in mapping:
            ignored.append(name or f"#{index + 1}")
    targets = [t for _, t in fields]
    for target in targets:
        if targets.count(target) > 1:
            raise ImportUsageError(f"two CSV columns give the field {target!r}")
        clash = next((t for t in targets if t.startswith(target + ".")), None)
        if clash is not None:
            raise ImportUsageError(f"the fields {target!r} and {clash!r} cannot both be set")
    if not fields:
        raise ImportUsageError(
            "no CSV column gives a Segment field: name the headers after Segment fields "
            "(event, userId, properties.plan …) or map them with --map COLUMN=FIELD"
        )
    return CsvLayout(
        width=len(header),
        fields=tuple(fields),
        ignored=tuple(ignored),
        header_end=position[0],
        header_lines=position[1],
    )


def csv_records(
    handle: IO[bytes], layout: CsvLayout, *, offset: int, line: int
) -> Iterator[Record]:
    position = [offset, line]
    bad: dict[int, str] = {}
    reader = csv.reader(_csv_lines(handle, position, bad))
    while True:
        first = position[1] + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Record(first, position[0], position[1], Invalid(f"CSV: {exc}"))
            continue
        end_offset, end_line = position
        problem = next((bad.pop(n) for n in range(first, end_line + 1) if n in bad), None)
        if problem is not None:
            bad.clear()
            yield Record(first, end_offset, end_line, Invalid(problem))
        elif not cells:
            yield Record(first, end_offset, end_line, None)
        elif len(cells) != layout.width:
            detail = f"the row has {len(cells)} cells; the header has {layout.width}"
            yield Record(first, end_offset, end_line, Invalid(detail))
        else:
            message = events.messages_from_mapping({f: cells[i] for i, f in layout.fields})
            message.setdefault("type", "track")
            yield Record(first, end_offset, end_line, message)


# --- importing -------------------------------------------------------------------------------


@dataclass
class ImportSummary:
    """What an import did; also its ``--json`` output."""

    workspace_id: str
    file: str
    format: str
    imported: int = 0
    duplicates: int = 0
    invalid: int = 0
    lines_read: int = 0
    resumed_from_line: int | None = None  # the first line this run read, when not the first
    resumed_from_byte: int | None = None
    end_line: int = 0
    complete: bool = False
    seconds: float = 0.0
    first_invalid: list[dict[str, Any]] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return (self.imported + self.duplicates) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class EventFileImport:
    """Import one file into one workspace of ``store`` (see the module docstring).

    ``on_batch(offset, summary)`` runs after each committed batch (progress); ``on_invalid``
    for each of the first :data:`INVALID_SHOWN` invalid records.
    """

    store: EventStore
    workspace_id: str
    path: Path
    fmt: ImportFormat
    mapping: dict[str, str] = field(default_factory=dict)
    batch_size: int = DEFAULT_BATCH_SIZE
    restart: bool = False
    on_batch: Callable[[int, ImportSummary], None] | None = None
    on_invalid: Callable[[int, str], None] | None = None
    # Adds readings (emotion) to each batch before it is stored, as the ingest pipeline does.
    enrich: Callable[[list[WorkspaceBatch]], list[WorkspaceBatch]] | None = None

    def run(self, handle: IO[bytes]) -> ImportSummary:
        started = time.perf_counter()
        summary = ImportSummary(self.workspace_id, str(self.path), self.fmt.value)
        head = handle.read(FINGERPRINT_BYTES)
        if head.startswith(GZIP_MAGIC):
            raise UnreadableFile(f"{self.path} is gzip-compressed: decompress it first (gunzip)")
        if b"\0" in head:  # JSON and CSV text never hold a NUL byte
            raise UnreadableFile(f"{self.path} is not UTF-8 text (it holds NUL bytes)")
        identity = FileIdentity.of(handle)
        keys = (
            identity.marker(self.workspace_id, "offset"),
            identity.marker(self.workspace_id, "line"),
        )
        layout = None
        offset, line = 0, 0
        if self.fmt is ImportFormat.CSV:
            layout = read_csv_layout(handle, self.mapping)
            summary.ignored_columns = list(layout.ignored)
            offset, line = layout.header_end, layout.header_lines
        stored_offset, stored_line = self.store.marker(keys[0]), self.store.marker(keys[1])
        if stored_offset is None or stored_line is None or self.restart:
            stored_offset, stored_line = 0, 0
        if stored_offset > offset:
            offset, line = stored_offset, stored_line
            summary.resumed_from_line = line + 1
            summary.resumed_from_byte = offset
        handle.seek(offset)
        records = (
            csv_records(handle, layout, offset=offset, line=line)
            if layout is not None
            else jsonl_records(handle, offset=offset, line=line)
        )
        end_line = self._store_records(records, summary, identity, keys, (offset, line))
        summary.lines_read = end_line - line
        summary.end_line = end_line
        summary.complete = True
        summary.seconds = time.perf_counter() - started
        return summary

    def _store_records(
        self,
        records: Iterator[Record],
        summary: ImportSummary,
        identity: FileIdentity,
        keys: tuple[str, str],
        position: tuple[int, int],
    ) -> int:
        """Normalize and commit the records in batches; returns the last line read."""
        offset, line = position
        prefix = identity.message_id_prefix
        rows: list[EventRow] = []
        pending = 0
        now = events.now_us()
        for record in records:
            item = record.item
            if isinstance(item, Invalid):
                self._invalid(summary, record.line, item.detail)
            elif item is not None:
                try:
                    rows.append(self._row(item, prefix, record.line, now))
                except EventRejected as exc:
                    self._invalid(summary, record.line, exc.detail)
            offset, line = record.end_offset, record.end_line
            pending += 1
            if pending >= self.batch_size:
                self._commit(summary, rows, keys, offset, line)
                rows, pending, now = [], 0, events.now_us()
        self._commit(summary, rows, keys, offset, line)
        return line

    @staticmethod
    def _row(message: Any, prefix: str, line: int, now: int) -> EventRow:
        received = None
        if isinstance(message, dict):
            if not message.get("messageId"):
                message["messageId"] = f"{prefix}{line}"
            received = parse_time(message.get("receivedAt"), "receivedAt")
        return normalize(message, received_at=now if received is None else received)

    def _invalid(self, summary: ImportSummary, line: int, detail: str) -> None:
        summary.invalid += 1
        if len(summary.first_invalid) < INVALID_SHOWN:
            summary.first_invalid.append({"line": line, "detail": detail})
            if self.on_invalid is not None:
                self.on_invalid(line, detail)

    def _commit(
        self,
        summary: ImportSummary,
        rows: list[EventRow],
        keys: tuple[str, str],
        offset: int,
        line: int,
    ) -> None:
        """Store a batch and the position after it, in one transaction."""
        batches = [WorkspaceBatch(self.workspace_id, rows)] if rows else []
        if batches and self.enrich is not None:
            batches = self.enrich(batches)
        result = self.store.append(batches, markers={keys[0]: offset, keys[1]: line})
        summary.imported += result.inserted
        summary.duplicates += result.duplicates
        if self.on_batch is not None:
            self.on_batch(offset, summary)


# --- commands --------------------------------------------------------------------------------


def _settings() -> Settings:
    from nexus.cli import main as cli  # noqa: PLC0415 - main imports this module

    return cli.load_settings()


def _workspace(settings: Settings, requested: str | None) -> str:
    """The workspace asked for, or the only one there is."""
    from nexus.cli import main as cli  # noqa: PLC0415 - main imports this module

    with cli.database_session(settings) as db:
        if requested is not None:
            return workspaces.get_workspace(db, workspace_id=requested).id
        found = [w.id for w in workspaces.list_workspaces(db, limit=2).items]
    if len(found) == 1:
        return found[0]
    if not found:
        fail("there is no workspace yet: create one with `nexus workspace create NAME`")
    fail("there are several workspaces: choose one with --workspace (`nexus workspace list`)", 2)
    raise AssertionError("unreachable: fail() exits")


def _emotion_enricher(settings: Settings) -> EmotionRuntime:
    """The emotion reader an import uses, with the workspace's text-property settings."""
    database = Database(settings.resolved_database_url)
    if settings.emotion_enrichment == "off":
        # --enrich asked for it explicitly: read with the cascade.
        settings = settings.model_copy(update={"emotion_enrichment": "cascade"})
    try:
        return EmotionRuntime(settings, text_properties_of=settings_reader(database.session))
    except NexusError as exc:
        fail(str(exc))
        raise


def _import_format(path: Path, fmt: ImportFormat | None) -> ImportFormat:
    if fmt is not None:
        return fmt
    return ImportFormat.CSV if path.suffix.lower() == ".csv" else ImportFormat.JSONL


WorkspaceOption = Annotated[
    str | None,
    typer.Option(
        "--workspace", "-w", help="Workspace id (default: the only workspace, if there is one)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@import_app.command("events")
def import_events(
    file: Annotated[Path, typer.Argument(help="Segment messages: JSON lines, or CSV.")],
    workspace: WorkspaceOption = None,
    fmt: Annotated[
        ImportFormat | None,
        typer.Option("--format", help="jsonl or csv (default: from the file extension)."),
    ] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            metavar="COLUMN=FIELD",
            help="CSV: read COLUMN as a Segment field (event, userId, properties.plan …); "
            "repeat for several. Unmapped columns named after Segment fields are read as such, "
            "others ignored; COLUMN= ignores one quietly.",
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Lines per committed batch.")
    ] = DEFAULT_BATCH_SIZE,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="Read the file from the start even if an earlier run got further "
            "(events already stored are still skipped).",
        ),
    ] = False,
    enrich: Annotated[
        bool | None,
        typer.Option(
            "--enrich/--no-enrich",
            help="Read text properties for emotion as ingestion does (default: unless "
            "NEXUS_EMOTION_ENRICHMENT=off).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Import Segment messages from a file; run it again to resume an interrupted import."""
    fmt = _import_format(file, fmt)
    try:
        columns = parse_mapping(mapping or [])
    except ImportUsageError as exc:
        fail(str(exc), 2)
    if columns and fmt is not ImportFormat.CSV:
        fail("--map applies to CSV files only", 2)
    settings = _settings()
    workspace_id = _workspace(settings, workspace)
    try:
        handle = file.open("rb")
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    with handle, events.store_for_cli(settings) as store:
        progress = Progress(
            TextColumn("importing"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[events]:,} events"),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
            disable=not err_console.is_terminal,
        )
        task: TaskID | None = None

        def on_batch(offset: int, summary: ImportSummary) -> None:
            if task is not None:
                progress.update(task, completed=offset, events=summary.imported)

        def on_invalid(line: int, detail: str) -> None:
            progress.console.print(
                f"line {line}: {detail}", markup=False, highlight=False, soft_wrap=True
            )

        enricher = None
        if enrich if enrich is not None else settings.emotion_enrichment != "off":
            enricher = _emotion_enricher(settings).enrich
        job = EventFileImport(
            store,
            workspace_id=workspace_id,
            path=file,
            fmt=fmt,
            mapping=columns,
            batch_size=batch_size,
            restart=restart,
            on_batch=on_batch,
            on_invalid=on_invalid,
            enrich=enricher,
        )
        size = file.stat().st_size
        with progress:
            task = progress.add_task("import", total=size, events=0)
            try:
                summary = job.run(handle)
            except ImportUsageError as exc:
                fail(str(exc), 2)
            except UnreadableFile as exc:
                fail(str(exc))
            except OSError as exc:  # reading the file or writing the store
                fail(
                    f"the import stopped: {exc.strerror or exc}; what was imported so far is "
                    "kept: run the same command again to go on"
                )
            except KeyboardInterrupt:
                fail(
                    "interrupted; what was imported so far is kept: run the same command "
                    "again to go on",
                    130,
                )
    _report(summary, as_json=as_json)
    if summary.imported == 0 and summary.duplicates == 0 and summary.invalid > 0:
        fail(f"no valid message in {file} ({summary.invalid:,} invalid)")


def _say(text: str, *, stderr: bool = False) -> None:
    (err_console if stderr else console).print(text, markup=False, highlight=False, soft_wrap=True)


def _report(summary: ImportSummary, *, as_json: bool) -> None:
    if summary.ignored_columns:
        _say(
            f"ignored CSV columns without a Segment field: {', '.join(summary.ignored_columns)} "
            "(read one with --map COLUMN=properties.NAME, or silence this with --map COLUMN=)",
            stderr=True,
        )
    if summary.invalid > len(summary.first_invalid):
        more = summary.invalid - len(summary.first_invalid)
        _say(f"… and {more:,} more invalid lines", stderr=True)
    if as_json:
        print_json({**asdict(summary), "events_per_second": round(summary.events_per_second)})
        return
    if summary.resumed_from_line is not None and summary.lines_read <= 0:
        _say(
            f"nothing to import: {summary.file} was imported into {summary.workspace_id} "
            "before (--restart reads it again)"
        )
        return
    _say(f"imported {summary.imported:,} events into {summary.workspace_id} from {summary.file}")
    rows = [
        ("duplicates", f"{summary.duplicates:,} (stored before, skipped)"),
        ("invalid", f"{summary.invalid:,}"),
    ]
    if summary.resumed_from_line is not None:
        resumed = f"line {summary.resumed_from_line:,} (byte {summary.resumed_from_byte:,})"
        rows.append(("resumed at", resumed))
    rows.append(("took", f"{summary.seconds:.1f} s ({summary.events_per_second:,.0f} events/s)"))
    for label, value in rows:
        _say(f"  {label:<11}{value}")


@export_app.command("events")
def export_events(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File to write (replaced if it exists).")
    ],
    workspace: WorkspaceOption = None,
    fmt: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format", help="jsonl (Segment messages) or parquet (default: from the extension)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write a workspace's events to a file, oldest first."""
    if fmt is None:
        parquet = output.suffix.lower() in (".parquet", ".pq")
        fmt = ExportFormat.PARQUET if parquet else ExportFormat.JSONL
    if not output.parent.is_dir():
        fail(f"cannot write {output}: the directory {output.parent} does not exist")
    settings = _settings()
    workspace_id = _workspace(settings, workspace)
    # Written aside and renamed into place: a failed export never leaves half a file.
    partial = output.with_name(f".{output.name}.partial")
    try:
        with events.store_for_cli(settings) as store:
            count = store.export(workspace_id, partial, fmt=fmt.value)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    if as_json:
        print_json(
            {
                "workspace_id": workspace_id,
                "file": str(output),
                "format": fmt.value,
                "events": count,
            }
        )
        return
    _say(f"exported {count:,} events of {workspace_id} to {output}")

"""The ingest journal: an append-only, fsync'd log that makes a 2xx mean "durable".

An ingest request is acknowledged only after its events are in the journal and the journal is
fsync'd; the event store is filled from the journal afterwards, off the request path, and
remembers (in the same transaction as the events) how far it has read. After a crash the store
re-reads the journal from that position, so nothing acknowledged is lost, and the store's
deduplication by message id means nothing is stored twice.

Format: segment files ``<base offset, 20 digits>.log`` in one directory; a position is a
global byte offset (segment base + offset in the segment), so positions only grow. A record is
``length (u32 BE) | crc32 (u32 BE) | payload``. A record cut short by a crash (never
acknowledged, since the fsync did not return) fails its length or checksum and is truncated
away when the journal is opened.

Appends from concurrent requests are group-committed: while one ``write + fsync`` runs, the
records that arrive queue up and share the next one, so the fsync rate stays bounded under any
request rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_HEADER = struct.Struct(">II")
SEGMENT_BYTES = 64 * 1024 * 1024
MAX_RECORD_BYTES = 64 * 1024 * 1024


class JournalCorrupt(RuntimeError):
    """A record before the tail of the journal is damaged: the disk, not a crash, did this."""


class JournalBroken(OSError):
    """A write or fsync failed: nothing more is acknowledged until the process restarts."""


@dataclass(frozen=True, slots=True)
class Record:
    position: int  # global offset of the record's header
    end: int  # global offset just after it
    payload: bytes


def _whole_record_at(data: bytes, offset: int) -> bool:
    if offset + _HEADER.size > len(data):
        return False
    length, crc = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    return start + length <= len(data) and bool(zlib.crc32(data[start : start + length]) == crc)


def _segment_name(base: int) -> str:
    return f"{base:020d}.log"


class Journal:
    """One directory of segments. Thread-safe: appends from the event loop (``append``) or
    threads (``append_sync``), reads from the store writer's thread."""

    def __init__(
        self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES, min_position: int = 0
    ) -> None:
        """``min_position``: where the reader already is (the store's marker). A journal that
        was emptied or restored from an old copy starts its next segment there, so new
        records are never placed below what the store believes it has read."""
        self.directory = directory
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # guards the file handle and the offsets
        self._bases = sorted(int(p.stem) for p in directory.glob("*.log") if p.stem.isdigit())
        if not self._bases:
            self._bases = [min_position]
            (directory / _segment_name(min_position)).touch()
        self._recover_tail()
        base = self._bases[-1]
        self._fd = os.open(directory / _segment_name(base), os.O_WRONLY | os.O_APPEND)
        self._end = base + os.fstat(self._fd).st_size
        self._broken: BaseException | None = None
        if self._end < min_position:
            # Everything here is already in the store: continue at the store's position.
            self._end = min_position
            self._roll()
            self.release(min_position)
        self._durable_end = self._end
        # Group commit state (event loop side).
        self._pending: list[tuple[bytes, asyncio.Future[int]]] = []
        self._flushing = False
        self._flush_task: asyncio.Task[None] | None = None
        self._durable = threading.Condition()

    # -- recovery -----------------------------------------------------------------------------

    def _recover_tail(self) -> None:
        """Cut the last segment after its last whole record (a torn, unacknowledged write).

        A bad record that is followed by a good one is not a torn tail but damage to
        acknowledged data: that stops the process instead of silently dropping records.
        """
        base = self._bases[-1]
        path = self.directory / _segment_name(base)
        data = path.read_bytes()
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            if start + length > len(data) or zlib.crc32(data[start : start + length]) != crc:
                if _whole_record_at(data, start + length):
                    raise JournalCorrupt(
                        f"journal record at {base + offset} in {path.name} is damaged and "
                        "acknowledged records follow it; restore the file or move it away"
                    )
                break
            offset = start + length
        if offset != len(data):
            with path.open("r+b") as handle:
                handle.truncate(offset)
                handle.flush()
                os.fsync(handle.fileno())

    # -- writing ------------------------------------------------------------------------------

    @property
    def end(self) -> int:
        """Position after the last durable record."""
        return self._durable_end

    @property
    def start(self) -> int:
        """Position of the oldest record still kept."""
        return self._bases[0]

    def _write(self, payloads: list[bytes]) -> int:
        """Write and fsync records; returns the end position. Caller holds no lock."""
        chunks = []
        for payload in payloads:
            if len(payload) > MAX_RECORD_BYTES:
                raise ValueError(f"journal record of {len(payload)} bytes is too large")
            chunks.append(_HEADER.pack(len(payload), zlib.crc32(payload)))
            chunks.append(payload)
        data = b"".join(chunks)
        with self._lock:
            if self._broken is not None:
                raise JournalBroken(f"the journal failed earlier: {self._broken}")
            try:
                if self._end - self._bases[-1] >= self.segment_bytes:
                    self._roll()
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                os.fsync(self._fd)
            except OSError as exc:
                # After a failed write or fsync the file's state is unknown (the kernel may
                # have dropped dirty pages): cut back to the last durable end and refuse
                # further appends until a restart re-reads the journal from disk.
                self._broken = exc
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._end - self._bases[-1])
                raise JournalBroken(f"the journal cannot be written: {exc}") from exc
            self._end += len(data)
            end = self._end
        with self._durable:
            self._durable_end = end
            self._durable.notify_all()
        return end

    def _roll(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        base = self._end
        path = self.directory / _segment_name(base)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._bases.append(base)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new file's name must survive a crash too
        finally:
            os.close(dir_fd)

    def append_sync(self, payload: bytes) -> int:
        """Append one record and return once it is on disk (for threads and tests)."""
        return self._write([payload])

    async def append(self, payload: bytes) -> int:
        """Append one record; returns (the journal end) once it is fsync'd.

        Concurrent callers share one ``write + fsync`` (group commit), run in a worker thread
        so the event loop keeps serving.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._pending.append((payload, future))
        if not self._flushing:
            self._flushing = True
            self._flush_task = loop.create_task(self._flush_pending())
        return await future

    async def _flush_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    end = await asyncio.to_thread(self._write, [p for p, _ in batch])
                except Exception as exc:  # the disk failed: nobody in this batch is acknowledged
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_result(end)
        finally:
            self._flushing = False

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until the durable end passes ``position`` (the store writer's wake-up)."""
        with self._durable:
            return self._durable.wait_for(lambda: self._durable_end > position, timeout=timeout)

    def wake(self) -> None:
        """Wake a :meth:`wait_for` early (shutdown)."""
        with self._durable:
            self._durable.notify_all()

    # -- reading ------------------------------------------------------------------------------

    def read(self, position: int, *, max_bytes: int) -> Iterator[Record]:
        """Durable records from ``position`` on, stopping after about ``max_bytes``."""
        end = self._durable_end
        position = max(position, self._bases[0])
        read = 0
        while position < end and read < max_bytes:
            base = self._segment_for(position)
            path = self.directory / _segment_name(base)
            with path.open("rb") as handle:
                handle.seek(position - base)
                limit = min(end, self._next_base(base)) - position
                data = handle.read(limit)
            offset = 0
            while offset + _HEADER.size <= len(data) and read < max_bytes:
                length, crc = _HEADER.unpack_from(data, offset)
                start = offset + _HEADER.size
                payload = data[start : start + length]
                if len(payload) != length or zlib.crc32(payload) != crc:
                    raise JournalCorrupt(
                        f"journal record at {position + offset} in {path.name} is damaged"
                    )
                yield Record(position + offset, position + start + length, payload)
                offset = start + length
                read += _HEADER.size + length
            if offset == 0:
                break
            position += offset

    def _segment_for(self, position: int) -> int:
        base = self._bases[0]
        for candidate in self._bases:
            if candidate > position:
                break
            base = candidate
        return base

    def _next_base(self, base: int) -> int:
        index = self._bases.index(base)
        return self._bases[index + 1] if index + 1 < len(self._bases) else self._durable_end

    def release(self, position: int) -> None:
        """Delete segments wholly before ``position`` (already in the event store)."""
        with self._lock:
            while len(self._bases) > 1 and self._bases[1] <= position:
                base = self._bases.pop(0)
                (self.directory / _segment_name(base)).unlink(missing_ok=True)

    def seal(self) -> int:
        """Start a new segment (if the current one holds anything) and return its base, so
        that :meth:`release` can delete every record written so far once it is stored
        (erasure: the journal must not keep a person's events after the store forgot them)."""
        with self._lock:
            if self._end > self._bases[-1]:
                self._roll()
            return self._bases[-1]

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)

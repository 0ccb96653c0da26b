"""The ingest journal: what was appended reads back, in order, across segments and restarts;
a torn tail is cut away, damage elsewhere is reported, and group commit acknowledges all."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from pathlib import Path

import pytest

from nexus.events.journal import Journal, JournalCorrupt, Record

SEGMENT = 256  # bytes: a handful of records per segment


def payloads(n: int, prefix: str = "record") -> list[bytes]:
    """Records of varying sizes (the size decides where segments roll)."""
    return [f"{prefix}-{i}-".encode() + b"x" * (i * 7 % 60) for i in range(n)]


def read_all(journal: Journal, position: int = 0) -> list[Record]:
    return list(journal.read(position, max_bytes=1 << 30))


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "journal"


def test_records_read_back_in_order_across_segment_rolls(directory: Path) -> None:
    journal = Journal(directory, segment_bytes=SEGMENT)
    written = payloads(60)
    ends = [journal.append_sync(p) for p in written]
    records = read_all(journal)
    assert len(segments(directory)) > 5
    assert [r.payload for r in records] == written
    assert [r.end for r in records] == ends
    assert records[-1].end == journal.end


def test_positions_are_contiguous_and_reading_resumes_from_any_of_them(directory: Path) -> None:
    journal = Journal(directory, segment_bytes=SEGMENT)
    written = payloads(40)
    for payload in written:
        journal.append_sync(payload)
    records = read_all(journal)
    assert records[0].position == 0
    assert all(a.end == b.position for a, b in itertools.pairwise(records))
    for index in (1, 13, 39):
        assert [r.payload for r in read_all(journal, records[index].position)] == written[index:]


def test_max_bytes_pages_through_the_journal(directory: Path) -> None:
    journal = Journal(directory, segment_bytes=SEGMENT)
    written = payloads(50)
    for payload in written:
        journal.append_sync(payload)
    seen: list[bytes] = []
    position = 0
    pages = 0
    while position < journal.end:
        page = list(journal.read(position, max_bytes=100))
        assert page, "a read below the end returns at least one record"
        seen.extend(r.payload for r in page)
        position = page[-1].end
        pages += 1
    assert seen == written
    assert pages > 10


def test_a_reopened_journal_keeps_its_records_and_appends_after_them(directory: Path) -> None:
    journal = Journal(directory, segment_bytes=SEGMENT)
    first = payloads(30, "before")
    for payload in first:
        journal.append_sync(payload)
    end = journal.end
    journal.close()

    reopened = Journal(directory, segment_bytes=SEGMENT)
    assert reopened.end == end
    reopened.append_sync(b"after")
    assert [r.payload for r in read_all(reopened)] == [*first, b"after"]


@pytest.mark.parametrize(
    "tail",
    [
        b"\x00\x00",  # part of a header
        b"\x00\x00\x00\x40\x12\x34\x56\x78" + b"half a payload",  # header, payload cut short
        b"\x00\x00\x00\x04\xde\xad\xbe\xefabcd",  # whole record, wrong checksum
        os.urandom(300),  # garbage
    ],
    ids=["partial-header", "partial-payload", "bad-checksum", "garbage"],
)
def test_a_torn_tail_is_truncated_on_open(directory: Path, tail: bytes) -> None:
    journal = Journal(directory, segment_bytes=SEGMENT)
    written = payloads(25)
    for payload in written:
        journal.append_sync(payload)
    end = journal.end
    journal.close()
    last = segments(directory)[-1]
    size = last.stat().st_size
    with last.open("ab") as handle:
        handle.write(tail)

    reopened = Journal(directory, segment_bytes=SEGMENT)
    assert last.stat().st_size == size
    assert reopened.end == end
    reopened.append_sync(b"new")
    assert [r.payload for r in read_all(reopened)] == [*written, b"new"]


def test_a_torn_first_record_leaves_an_empty_journal(directory: Path) -> None:
    Journal(directory).close()
    with segments(directory)[0].open("ab") as handle:
        handle.write(b"\x00\x00\x01\x00\x00\x00\x00\x00" + b"y" * 10)
    journal = Journal(directory)
    assert journal.end == 0
    assert read_all(journal) == []


def test_a_damaged_record_before_the_tail_raises_journal_corrupt(directory: Path) -> None:
    journal = Journal(directory, segment_bytes=SEGMENT)
    for payload in payloads(40):
        journal.append_sync(payload)
    journal.close()
    first = segments(directory)[0]
    data = bytearray(first.read_bytes())
    data[10] ^= 0xFF  # inside the first record's payload
    first.write_bytes(bytes(data))

    reopened = Journal(directory, segment_bytes=SEGMENT)
    with pytest.raises(JournalCorrupt):
        read_all(reopened)


def test_a_damaged_length_before_the_tail_raises_journal_corrupt(directory: Path) -> None:
    journal = Journal(directory, segment_bytes=SEGMENT)
    for payload in payloads(40):
        journal.append_sync(payload)
    journal.close()
    first = segments(directory)[0]
    data = bytearray(first.read_bytes())
    data[0:4] = (10_000).to_bytes(4, "big")
    first.write_bytes(bytes(data))

    reopened = Journal(directory, segment_bytes=SEGMENT)
    with pytest.raises(JournalCorrupt):
        read_all(reopened)


def test_release_deletes_only_wholly_consumed_segments(directory: Path) -> None:
    journal = Journal(directory, segment_bytes=SEGMENT)
    written = payloads(60)
    for payload in written:
        journal.append_sync(payload)
    before = segments(directory)
    bases = [int(p.stem) for p in before]
    # A position inside the fourth segment: the first three are wholly consumed.
    inside = bases[3] + 1
    journal.release(inside)
    assert segments(directory) == before[3:]
    assert journal.start == bases[3]
    kept = read_all(journal)
    assert kept[0].position == bases[3]
    assert [r.payload for r in kept] == written[-len(kept) :]


def test_release_at_a_segment_boundary_deletes_the_segment_before_it(directory: Path) -> None:
    journal = Journal(directory, segment_bytes=SEGMENT)
    for payload in payloads(30):
        journal.append_sync(payload)
    before = segments(directory)
    journal.release(int(before[1].stem))
    assert segments(directory) == before[1:]


def test_release_never_deletes_the_segment_being_written(directory: Path) -> None:
    journal = Journal(directory, segment_bytes=SEGMENT)
    for payload in payloads(30):
        journal.append_sync(payload)
    journal.release(journal.end)
    assert len(segments(directory)) == 1
    journal.append_sync(b"more")
    assert [r.payload for r in read_all(journal, journal.start)][-1] == b"more"


def test_released_segments_stay_gone_after_a_restart(directory: Path) -> None:
    journal = Journal(directory, segment_bytes=SEGMENT)
    written = payloads(30)
    for payload in written:
        journal.append_sync(payload)
    records = read_all(journal)
    journal.release(records[20].position)
    start = journal.start
    journal.close()
    reopened = Journal(directory, segment_bytes=SEGMENT)
    assert reopened.start == start
    assert [r.payload for r in read_all(reopened)] == written[-len(read_all(reopened)) :]


def test_concurrent_async_appends_share_fsyncs_and_are_all_readable(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(directory, segment_bytes=4096)
    fsyncs = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        nonlocal fsyncs
        fsyncs += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    written = payloads(300, "async")

    async def main() -> list[int]:
        return await asyncio.gather(*(journal.append(p) for p in written))

    ends = asyncio.run(main())
    records = read_all(journal)
    assert sorted(r.payload for r in records) == sorted(written)
    by_payload = {r.payload: r.end for r in records}
    # Each append resolves only once its own record is durable.
    assert all(end >= by_payload[p] for p, end in zip(written, ends, strict=True))
    assert max(ends) == journal.end
    assert fsyncs < len(written) / 10


def test_appends_from_threads_interleave_whole_records(directory: Path) -> None:
    journal = Journal(directory, segment_bytes=SEGMENT)
    per_thread = 50

    def writer(name: str) -> None:
        for payload in payloads(per_thread, name):
            journal.append_sync(payload)

    threads = [threading.Thread(target=writer, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = read_all(journal)
    assert len(records) == 4 * per_thread
    for i in range(4):
        mine = [r.payload for r in records if r.payload.startswith(f"t{i}-".encode())]
        assert mine == payloads(per_thread, f"t{i}")


def test_wait_for_wakes_when_a_later_record_is_durable(directory: Path) -> None:
    journal = Journal(directory)
    position = journal.end
    assert not journal.wait_for(position, timeout=0.01)
    timer = threading.Timer(0.05, journal.append_sync, args=(b"late",))
    timer.start()
    try:
        assert journal.wait_for(position, timeout=5.0)
    finally:
        timer.join()

"""What every benchmark shares: its result section, latency statistics, Markdown, the machine.

The machine description lives here rather than in the runner so that a benchmark can never
be reported without it: numbers from different hardware are not comparable, so the header of
``docs/benchmarks.md`` names the CPU, cores, memory, Python, NEXUS version and commit.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Section:
    """One benchmark's result: Markdown for the report and a few lines for the terminal."""

    title: str
    markdown: str
    summary: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Latencies of one series of requests, in milliseconds, and its throughput."""

    count: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else math.nan

    @classmethod
    def from_ns(cls, latencies_ns: Sequence[int], seconds: float) -> LatencyStats:
        ordered = sorted(latencies_ns)
        return cls(
            count=len(ordered),
            seconds=seconds,
            p50_ms=percentile(ordered, 50) / 1e6,
            p99_ms=percentile(ordered, 99) / 1e6,
        )


def percentile(ordered: Sequence[int], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence.

    Nearest rank rather than interpolation: a reported p99 is then a latency some request
    really had, not a value between two of them.
    """
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A GitHub Markdown table; ``align`` holds one of ``l``/``r`` per column (default ``l``)."""
    marks = [":--" if a == "l" else "--:" for a in align.ljust(len(headers), "l")]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float, digits: int = 2) -> str:
    """A figure with thousands separators, or ``n/a`` for a value that could not be measured."""
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


# --- the machine ----------------------------------------------------------------------------


def _proc_field(path: str, name: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        return None
    return None


def cpu_model() -> str:
    return _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown"


def memory_total() -> str:
    value = _proc_field("/proc/meminfo", "MemTotal")  # "24576000 kB"
    if value is None or not value.split()[0].isdigit():
        return "unknown"
    return f"{int(value.split()[0]) / 1024**2:.1f} GiB"


def usable_cores() -> str:
    """Cores in the machine and, when fewer, those this process may run on (containers)."""
    total = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = total
    return str(total) if usable == total else f"{usable} usable of {total}"


def git_commit() -> str:
    """The commit measured, marked ``+dirty`` when the working tree differs from it."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short=12", "HEAD")
    if commit is None:
        return "unavailable (not a git checkout, or no commit yet)"
    status = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}+dirty" if status else commit


def nexus_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nexus")
    except PackageNotFoundError:
        return "unknown"


def machine_rows() -> list[tuple[str, str]]:
    return [
        ("Date (UTC)", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")),
        ("CPU", cpu_model()),
        ("Cores", usable_cores()),
        ("Memory", memory_total()),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("NEXUS", nexus_version()),
        ("Git commit", git_commit()),
    ]

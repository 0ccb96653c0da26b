"""Recall and precision of PII detection over a labelled set, per entity.

Shared by the tests (which hold the detector to a bar) and ``benchmarks/bench_pii.py`` (which
reports the table), so both score the same way.

Scoring is by overlap, per entity type: a finding is a true positive when it overlaps a
labelled span of the same type, and a labelled span is recalled when some finding of its type
overlaps it. Overlap rather than exact offsets, because where an address or a phone number
ends ("+44 (0)20 ...", "Hauptstraße 5, 10115") is a matter of convention, while whether it was
found at all is not. Precision = true-positive findings / findings; recall = recalled spans /
labelled spans. Both are undefined (NaN) when their denominator is zero.

Pure: the labelled set comes in as lines of JSON, never as a path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


class Span(Protocol):
    """Anything with an entity type and character offsets (a finding or a label)."""

    @property
    def entity(self) -> str: ...

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...


@dataclass(frozen=True, slots=True)
class LabelledSpan:
    entity: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class LabelledText:
    """One message and its PII spans."""

    text: str
    spans: tuple[LabelledSpan, ...]


@dataclass(frozen=True, slots=True)
class EntityScore:
    """Detection quality for one entity type over a labelled set."""

    entity: str
    labelled: int
    """Labelled spans of this type."""
    recalled: int
    """Labelled spans overlapped by a finding of this type."""
    found: int
    """Findings of this type."""
    correct: int
    """Findings overlapping a labelled span of this type."""

    @property
    def recall(self) -> float:
        return self.recalled / self.labelled if self.labelled else math.nan

    @property
    def precision(self) -> float:
        return self.correct / self.found if self.found else math.nan


def parse_labelled(lines: Iterable[str]) -> list[LabelledText]:
    """Labelled texts from JSON lines ``{"text": ..., "entities": [{"type", "start", "end"}]}``;
    blank lines are skipped.

    Raises:
        ValueError: a line is not valid JSON or a span lies outside its text.
    """
    samples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        text = row["text"]
        spans = tuple(
            LabelledSpan(str(item["type"]), int(item["start"]), int(item["end"]))
            for item in row.get("entities", ())
        )
        for span in spans:
            if not 0 <= span.start < span.end <= len(text):
                raise ValueError(f"line {number}: span {span} lies outside the text")
        samples.append(LabelledText(text, spans))
    return samples


def _overlaps(a: Span, b: Span) -> bool:
    return a.start < b.end and b.start < a.end


def score(
    samples: Sequence[LabelledText], findings: Sequence[Sequence[Span]]
) -> dict[str, EntityScore]:
    """Per-entity scores of ``findings[i]`` (what a detector found in ``samples[i].text``),
    for every entity that is labelled or found, sorted by name."""
    if len(samples) != len(findings):
        raise ValueError("one list of findings per sample is needed")
    labelled: dict[str, int] = {}
    recalled: dict[str, int] = {}
    found: dict[str, int] = {}
    correct: dict[str, int] = {}
    for sample, found_here in zip(samples, findings, strict=True):
        for span in sample.spans:
            labelled[span.entity] = labelled.get(span.entity, 0) + 1
            if any(f.entity == span.entity and _overlaps(f, span) for f in found_here):
                recalled[span.entity] = recalled.get(span.entity, 0) + 1
        for finding in found_here:
            found[finding.entity] = found.get(finding.entity, 0) + 1
            if any(s.entity == finding.entity and _overlaps(finding, s) for s in sample.spans):
                correct[finding.entity] = correct.get(finding.entity, 0) + 1
    return {
        entity: EntityScore(
            entity,
            labelled.get(entity, 0),
            recalled.get(entity, 0),
            found.get(entity, 0),
            correct.get(entity, 0),
        )
        for entity in sorted({*labelled, *found})
    }


def evaluate(
    detect: Callable[[str], Sequence[Span]], samples: Sequence[LabelledText]
) -> dict[str, EntityScore]:
    """Run ``detect`` (e.g. ``PiiDetector().detect``) over ``samples`` and score it."""
    return score(samples, [detect(sample.text) for sample in samples])

"""Readers for labelled emotion data: GoEmotions TSV, labelled CSV, EmoBank CSV.

Every reader refuses a malformed file with a :class:`~nexus.core.errors.InvalidInput`
naming the file and line, so the CLI can print one line instead of a traceback.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nexus.core.errors import InvalidInput
from nexus.emotion.models.taxonomy import EKMAN, GOEMOTIONS, PLUTCHIK

Taxonomy = Literal["goemotions", "ekman", "plutchik"]
TAXONOMIES: dict[str, tuple[str, ...]] = {
    "goemotions": GOEMOTIONS,
    "ekman": EKMAN,
    "plutchik": PLUTCHIK,
}


@dataclass(frozen=True, slots=True)
class LabelledTexts:
    """Texts with gold label sets, as indices into ``TAXONOMIES[taxonomy]``."""

    texts: list[str]
    labels: list[tuple[int, ...]]
    taxonomy: Taxonomy


@dataclass(frozen=True, slots=True)
class VadTexts:
    """Texts with valence, arousal and dominance ratings on EmoBank's 1-5 scale."""

    texts: list[str]
    vad: list[tuple[float, float, float]]


def _open(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except (UnicodeDecodeError, IsADirectoryError, PermissionError) as exc:
        raise InvalidInput(f"{path}: cannot read ({exc.__class__.__name__})") from None


def read_goemotions_tsv(path: Path) -> LabelledTexts:
    """GoEmotions' own format: ``text<TAB>label ids (comma-separated)<TAB>comment id``."""
    texts: list[str] = []
    labels: list[tuple[int, ...]] = []
    for number, line in enumerate(_open(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise InvalidInput(f"{path}:{number}: expected text<TAB>label ids<TAB>id")
        try:
            ids = tuple(sorted({int(part) for part in fields[1].split(",")}))
        except ValueError:
            raise InvalidInput(f"{path}:{number}: label ids must be integers") from None
        if not ids or min(ids) < 0 or max(ids) >= len(GOEMOTIONS):
            raise InvalidInput(f"{path}:{number}: label ids must be 0..{len(GOEMOTIONS) - 1}")
        texts.append(fields[0])
        labels.append(ids)
    if not texts:
        raise InvalidInput(f"{path}: no labelled rows")
    return LabelledTexts(texts=texts, labels=labels, taxonomy="goemotions")


def detect_taxonomy(names: set[str]) -> Taxonomy:
    """The taxonomy a set of label names belongs to.

    The Ekman names are a subset of both other taxonomies, so a file that uses only them is
    read as Ekman-7; ``trust`` or ``anticipation`` mark Plutchik; anything else GoEmotions.
    """
    if names <= set(EKMAN):
        return "ekman"
    if names <= set(PLUTCHIK):
        return "plutchik"
    if names <= set(GOEMOTIONS):
        return "goemotions"
    unknown = sorted(names - set(GOEMOTIONS) - set(PLUTCHIK))
    raise InvalidInput(f"unknown emotion labels: {', '.join(unknown[:5])}")


def _csv_rows(path: Path, reader: csv.DictReader[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows with their line numbers; a malformed CSV is a clear error, not a traceback."""
    try:
        yield from enumerate(reader, start=2)
    except csv.Error as exc:
        raise InvalidInput(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None


def read_labelled_csv(path: Path, *, taxonomy: Taxonomy | None = None) -> LabelledTexts:
    """A CSV with a ``text`` column and a ``label`` (or ``labels``) column of names.

    Several labels in one cell are separated by commas, semicolons or ``|``.
    """
    lines = _open(path)
    reader = csv.DictReader(lines)
    try:
        fields = [name.strip().lower() for name in reader.fieldnames or []]
    except csv.Error as exc:
        raise InvalidInput(f"{path}: not valid CSV ({exc})") from None
    label_field = next((name for name in ("label", "labels") if name in fields), None)
    if "text" not in fields or label_field is None:
        raise InvalidInput(f"{path}: needs a 'text' column and a 'label' column")
    reader.fieldnames = fields
    texts: list[str] = []
    names: list[list[str]] = []
    for number, row in _csv_rows(path, reader):
        cell = (row.get(label_field) or "").replace(";", ",").replace("|", ",")
        row_names = [part.strip().lower() for part in cell.split(",") if part.strip()]
        if not row_names or row.get("text") is None:
            raise InvalidInput(f"{path}:{number}: a row needs a text and at least one label")
        texts.append(row["text"])
        names.append(row_names)
    if not texts:
        raise InvalidInput(f"{path}: no labelled rows")
    chosen = taxonomy or detect_taxonomy({name for row in names for name in row})
    vocabulary = TAXONOMIES[chosen]
    labels: list[tuple[int, ...]] = []
    for number, row_names in enumerate(names, start=2):
        missing = [name for name in row_names if name not in vocabulary]
        if missing:
            raise InvalidInput(f"{path}:{number}: '{missing[0]}' is not a {chosen} label")
        labels.append(tuple(sorted({vocabulary.index(name) for name in row_names})))
    return LabelledTexts(texts=texts, labels=labels, taxonomy=chosen)


def read_labelled(path: Path, *, taxonomy: Taxonomy | None = None) -> LabelledTexts:
    """A GoEmotions TSV (``.tsv``) or a labelled CSV (anything else)."""
    if path.suffix.lower() == ".tsv":
        return read_goemotions_tsv(path)
    return read_labelled_csv(path, taxonomy=taxonomy)


def read_emobank(path: Path, *, split: str | None = None) -> VadTexts:
    """EmoBank's CSV (``id,split,V,A,D,text``), optionally one split only."""
    reader = csv.DictReader(_open(path))
    try:
        header = set(reader.fieldnames or [])
    except csv.Error as exc:
        raise InvalidInput(f"{path}: not valid CSV ({exc})") from None
    required = {"V", "A", "D", "text"}
    if not required <= header:
        raise InvalidInput(f"{path}: EmoBank CSV needs columns V, A, D and text")
    texts: list[str] = []
    vad: list[tuple[float, float, float]] = []
    for number, row in _csv_rows(path, reader):
        if split is not None and row.get("split") != split:
            continue
        try:
            scores = (float(row["V"]), float(row["A"]), float(row["D"]))
        except (TypeError, ValueError):
            raise InvalidInput(f"{path}:{number}: V, A and D must be numbers") from None
        if not all(math.isfinite(v) for v in scores):
            raise InvalidInput(f"{path}:{number}: V, A and D must be finite numbers")
        texts.append(row["text"] or "")
        vad.append(scores)
    if not texts:
        raise InvalidInput(f"{path}: no rows" + (f" in split '{split}'" if split else ""))
    return VadTexts(texts=texts, vad=vad)

"""``nexus emotion eval``: how well a tier (or the cascade) reads labelled texts.

A GoEmotions file is scored on the 28 labels and on Ekman-7 (gold Ekman sets come from the
authors' grouping); an Ekman-7 file on Ekman-7; a Plutchik-8 file on Plutchik-8, where a
prediction's Plutchik set is the union of the components of its predicted labels. EmoBank
files are scored by Pearson r of valence, arousal and dominance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from nexus.emotion.analyzer import EmotionAnalyzer, Mode
from nexus.emotion.datasets import LabelledTexts, VadTexts
from nexus.emotion.models.metrics import ClassificationReport, classification_report, pearson
from nexus.emotion.models.taxonomy import (
    EKMAN,
    GOEMOTIONS,
    PLUTCHIK,
    PLUTCHIK_WEIGHTS,
    goemotions_to_ekman,
    label_sets_to_matrix,
)
from nexus.emotion.models.vector import EmotionVector


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    mode: Mode
    texts: int
    edge_share: float
    seconds: float
    reports: dict[str, ClassificationReport] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VadReport:
    mode: Mode
    texts: int
    pearson: dict[str, float]


def _matrix(vectors: list[EmotionVector], names: tuple[str, ...], attribute: str) -> np.ndarray:
    return np.asarray([[getattr(v, attribute)[name] for name in names] for v in vectors])


def _sets(vectors: list[EmotionVector], names: tuple[str, ...], attribute: str) -> np.ndarray:
    chosen = [tuple(names.index(n) for n in getattr(v, attribute)) for v in vectors]
    return label_sets_to_matrix(chosen, len(names))


def _read_all(
    analyzer: EmotionAnalyzer, texts: list[str], mode: Mode, batch_size: int = 256
) -> tuple[list[EmotionVector], float]:
    """Every text's vector, in batches, and how many texts the edge tier answered."""
    vectors: list[EmotionVector] = []
    edge_answers = 0.0
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        analysis = analyzer.analyze(chunk, mode=mode)
        vectors.extend(analysis.vectors)
        edge_answers += analysis.edge_share * len(chunk)
    return vectors, edge_answers


def evaluate(
    analyzer: EmotionAnalyzer, data: LabelledTexts, *, mode: Mode, batch_size: int = 256
) -> EvaluationReport:
    started = time.perf_counter()
    vectors, edge_answers = _read_all(analyzer, data.texts, mode, batch_size)
    seconds = time.perf_counter() - started
    reports: dict[str, ClassificationReport] = {}
    ekman_probabilities = _matrix(vectors, EKMAN, "ekman")
    ekman_predicted = _sets(vectors, EKMAN, "ekman_predicted")
    if data.taxonomy == "goemotions":
        gold = label_sets_to_matrix(data.labels, len(GOEMOTIONS))
        reports["goemotions"] = classification_report(
            GOEMOTIONS,
            gold,
            _matrix(vectors, GOEMOTIONS, "labels"),
            _sets(vectors, GOEMOTIONS, "predicted"),
        )
        reports["ekman"] = classification_report(
            EKMAN, goemotions_to_ekman(gold), ekman_probabilities, ekman_predicted
        )
    elif data.taxonomy == "ekman":
        gold = label_sets_to_matrix(data.labels, len(EKMAN))
        reports["ekman"] = classification_report(EKMAN, gold, ekman_probabilities, ekman_predicted)
    else:
        gold = label_sets_to_matrix(data.labels, len(PLUTCHIK))
        predicted_labels = _sets(vectors, GOEMOTIONS, "predicted").astype(np.float64)
        predicted = (predicted_labels @ PLUTCHIK_WEIGHTS) > 0
        reports["plutchik"] = classification_report(
            PLUTCHIK,
            gold,
            _matrix(vectors, PLUTCHIK, "plutchik"),
            np.asarray(predicted, dtype=bool),
        )
    return EvaluationReport(
        mode=mode,
        texts=len(data.texts),
        edge_share=edge_answers / max(1, len(data.texts)),
        seconds=seconds,
        reports=reports,
    )


def evaluate_vad(analyzer: EmotionAnalyzer, data: VadTexts, *, mode: Mode) -> VadReport:
    vectors, _ = _read_all(analyzer, data.texts, mode)
    gold = np.asarray(data.vad, dtype=np.float64)
    predicted = np.asarray([[v.valence, v.arousal, v.dominance] for v in vectors])
    return VadReport(
        mode=mode,
        texts=len(data.texts),
        pearson={
            name: pearson(predicted[:, i], gold[:, i])
            for i, name in enumerate(("valence", "arousal", "dominance"))
        },
    )

"""Multi-label classification and regression metrics, and per-label threshold tuning.

All functions take numpy arrays: ``gold`` and predictions are boolean ``(n, k)`` matrices,
probabilities float ``(n, k)``. F1 of a class with no gold and no predicted positives is 0,
as scikit-learn's ``zero_division=0`` does, so a model cannot score by predicting nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

THRESHOLD_GRID = np.round(np.arange(0.02, 0.96, 0.01), 2)


def f1_per_class(gold: BoolArray, predicted: BoolArray) -> FloatArray:
    true_positive = (gold & predicted).sum(axis=0).astype(np.float64)
    denominator = gold.sum(axis=0) + predicted.sum(axis=0)
    out = np.zeros_like(true_positive)
    np.divide(2 * true_positive, denominator, out=out, where=denominator > 0)
    return np.asarray(out, dtype=np.float64)


def macro_f1(gold: BoolArray, predicted: BoolArray) -> float:
    return float(f1_per_class(gold, predicted).mean())


def predict_sets(probabilities: FloatArray, thresholds: FloatArray) -> BoolArray:
    """Labels at or above their threshold; a row with none gets its most probable label.

    Every GoEmotions text carries at least one label (``neutral`` included), so an empty
    prediction is always wrong; falling back to the arg-max fixes that at no cost.
    """
    predicted = probabilities >= thresholds
    empty = ~predicted.any(axis=1)
    if empty.any():
        rows = np.flatnonzero(empty)
        predicted[rows, probabilities[rows].argmax(axis=1)] = True
    return np.asarray(predicted, dtype=bool)


def tune_thresholds(probabilities: FloatArray, gold: BoolArray) -> FloatArray:
    """Per-class threshold that maximises that class's F1 on held-out (dev) data."""
    thresholds = np.full(probabilities.shape[1], 0.5)
    for column in range(probabilities.shape[1]):
        scores = probabilities[:, column]
        truth = gold[:, column]
        best = -1.0
        for threshold in THRESHOLD_GRID:
            predicted = scores >= threshold
            true_positive = float((predicted & truth).sum())
            denominator = float(predicted.sum() + truth.sum())
            f1 = 2 * true_positive / denominator if denominator else 0.0
            if f1 > best:
                best, thresholds[column] = f1, threshold
    return thresholds


def subset_accuracy(gold: BoolArray, predicted: BoolArray) -> float:
    """Share of texts whose predicted label set equals the gold set exactly."""
    return float((gold == predicted).all(axis=1).mean())


def top1_accuracy(gold: BoolArray, probabilities: FloatArray) -> float:
    """Share of texts whose most probable label is one of the gold labels."""
    top = probabilities.argmax(axis=1)
    return float(gold[np.arange(len(top)), top].mean())


def expected_calibration_error(gold: BoolArray, probabilities: FloatArray, bins: int = 10) -> float:
    """Top-label ECE (Guo et al., ICML 2017, eq. 3) with equal-width confidence bins.

    Confidence is the top label's probability; it is "correct" when that label is gold.
    """
    top = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(top)), top]
    correct = gold[np.arange(len(top)), top].astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for index in range(bins):
        members = which == index
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def pearson(x: FloatArray, y: FloatArray) -> float:
    """Pearson correlation; 0 when either side is constant."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denominator) if denominator else 0.0


@dataclass(frozen=True, slots=True)
class ClassificationReport:
    """What ``nexus emotion eval`` prints for one taxonomy."""

    labels: tuple[str, ...]
    accuracy: float
    top1_accuracy: float
    macro_f1: float
    per_class_f1: tuple[float, ...]
    calibration_error: float
    support: tuple[int, ...]


def classification_report(
    labels: tuple[str, ...], gold: BoolArray, probabilities: FloatArray, predicted: BoolArray
) -> ClassificationReport:
    """Metrics of predicted label sets (and the probabilities behind them) against gold."""
    return ClassificationReport(
        labels=labels,
        accuracy=subset_accuracy(gold, predicted),
        top1_accuracy=top1_accuracy(gold, probabilities),
        macro_f1=macro_f1(gold, predicted),
        per_class_f1=tuple(float(v) for v in f1_per_class(gold, predicted)),
        calibration_error=expected_calibration_error(gold, probabilities),
        support=tuple(int(v) for v in gold.sum(axis=0)),
    )

"""``EmotionVector``: what one text feels like, in the three taxonomies NEXUS speaks.

Both tiers produce the same raw layout per text — 28 GoEmotions logits, 7 Ekman logits,
then valence, arousal and dominance on EmoBank's 1-5 scale — and :func:`vectors_from_scores`
turns it into vectors. In a vector, VAD is rescaled to [-1, 1] (``(x - 3) / 2``) so 0 is
neutral, and the Plutchik-8 probabilities come from the 28 labels by noisy-OR
(:mod:`nexus.emotion.models.taxonomy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from nexus.emotion.models.metrics import predict_sets
from nexus.emotion.models.taxonomy import (
    EKMAN,
    GOEMOTIONS,
    PLUTCHIK,
    VAD,
    plutchik_from_goemotions,
)

Tier = Literal["edge", "server"]
DIMENSIONS: tuple[str, ...] = (*PLUTCHIK, *VAD)
LABELS_END = len(GOEMOTIONS)
EKMAN_END = LABELS_END + len(EKMAN)


def sigmoid(values: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * values)), dtype=np.float64)


def edge_confidence(
    ekman: NDArray[np.float64], thresholds: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Probability that every Ekman-7 decision is right, if the heads are calibrated.

    Each class is decided by its own threshold; the decision is right with probability ``p``
    when ``p`` clears the threshold and ``1 - p`` otherwise. The product over the seven
    classes treats them as independent — crude, but it ranks texts well, which is all the
    cascade router needs.
    """
    right = np.where(ekman >= thresholds, ekman, 1.0 - ekman)
    return np.asarray(np.prod(right, axis=1), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class EmotionVector:
    """Plutchik's 8 emotions + valence, arousal, dominance, with the finer readings.

    ``plutchik`` holds probabilities in [0, 1]; ``valence``/``arousal``/``dominance`` lie in
    [-1, 1]. ``labels`` are the 28 GoEmotions probabilities and ``predicted`` those over their
    tuned thresholds (never empty); ``ekman`` the Ekman-7 probabilities. ``dominant`` is the
    most probable predicted label; ``confidence`` is the tier's estimate that its Ekman-7
    reading is right; ``tier`` says which model produced it.
    """

    plutchik: dict[str, float]
    valence: float
    arousal: float
    dominance: float
    labels: dict[str, float]
    predicted: tuple[str, ...]
    ekman: dict[str, float]
    ekman_predicted: tuple[str, ...]
    dominant: str
    confidence: float
    tier: Tier

    def as_array(self) -> NDArray[np.float64]:
        """The 11 dimensions in :data:`DIMENSIONS` order."""
        return np.asarray(
            [
                *(self.plutchik[name] for name in PLUTCHIK),
                self.valence,
                self.arousal,
                self.dominance,
            ]
        )

    @property
    def ekman_label(self) -> str:
        """The single most probable Ekman-7 class (for breakdowns and transitions)."""
        return max(self.ekman, key=self.ekman.__getitem__)


def _ranked_sets(
    probabilities: NDArray[np.float64], thresholds: NDArray[np.float64]
) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
    """Per row, the labels over their thresholds by falling probability (ties: label order),
    or the single most probable label when none clears its threshold.

    Returns the column order of every row and how many of its leading columns are chosen.
    """
    above = predict_sets(probabilities, thresholds)
    masked = np.where(above, probabilities, -1.0)
    order = np.argsort(-masked, axis=1, kind="stable")
    return order, above.sum(axis=1)


def vectors_from_scores(
    scores: NDArray[np.float64],
    *,
    label_thresholds: NDArray[np.float64],
    ekman_thresholds: NDArray[np.float64],
    tier: Tier,
) -> list[EmotionVector]:
    """Raw tier outputs ``(n, 38)`` to one :class:`EmotionVector` per row.

    The arithmetic runs on whole arrays; the per-row loop only builds the dataclasses, which
    keeps the edge tier's end-to-end rate in the tens of thousands of texts per second.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = sigmoid(scores[:, :LABELS_END])
    ekman = sigmoid(scores[:, LABELS_END:EKMAN_END])
    vad = np.clip((scores[:, EKMAN_END:] - 3.0) / 2.0, -1.0, 1.0)
    plutchik = plutchik_from_goemotions(labels)
    confidence = edge_confidence(ekman, ekman_thresholds)
    label_order, label_count = _ranked_sets(labels, label_thresholds)
    ekman_order, ekman_count = _ranked_sets(ekman, ekman_thresholds)
    label_rows = np.round(labels, 6).tolist()
    ekman_rows = np.round(ekman, 6).tolist()
    plutchik_rows = np.round(plutchik, 6).tolist()
    vad_rows = np.round(vad, 6).tolist()
    confidence_rows = np.round(confidence, 6).tolist()
    label_orders = label_order.tolist()
    ekman_orders = ekman_order.tolist()
    vectors = []
    for row in range(len(scores)):
        predicted = tuple(GOEMOTIONS[i] for i in label_orders[row][: label_count[row]])
        valence, arousal, dominance = vad_rows[row]
        vectors.append(
            EmotionVector(
                plutchik=dict(zip(PLUTCHIK, plutchik_rows[row], strict=True)),
                valence=valence,
                arousal=arousal,
                dominance=dominance,
                labels=dict(zip(GOEMOTIONS, label_rows[row], strict=True)),
                predicted=predicted,
                ekman=dict(zip(EKMAN, ekman_rows[row], strict=True)),
                ekman_predicted=tuple(EKMAN[i] for i in ekman_orders[row][: ekman_count[row]]),
                dominant=predicted[0],
                confidence=confidence_rows[row],
                tier=tier,
            )
        )
    return vectors

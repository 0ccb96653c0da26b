"""The three emotion taxonomies NEXUS speaks and the maps between them.

* **GoEmotions-28** (Demszky et al., ACL 2020): 27 fine-grained emotions plus ``neutral``;
  what both model tiers are trained to predict.
* **Ekman-7**: the authors' grouping of the 27 into Ekman's six basic emotions, plus
  ``neutral`` (``ekman_mapping.json`` shipped with the data set).
* **Plutchik-8** (Plutchik, 1980, *Emotion: A Psychoevolutionary Synthesis*): joy, trust,
  fear, surprise, sadness, disgust, anger, anticipation. A fine-grained label maps either to
  one primary emotion (possibly at another intensity: *admiration* is intense trust,
  *annoyance* mild anger) or to a *dyad*, the blend of two primaries Plutchik names (*love* =
  joy + trust, *remorse* = sadness + disgust). docs/emotion.md tabulates the mapping.

Probabilities are carried from one taxonomy to another with a noisy-OR: an emotion is
present when at least one of the labels that express it is, each contributing with its
weight, ``P(k) = 1 - Π_l (1 - w_lk · p_l)``. Unlike a plain sum this stays a probability.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

GOEMOTIONS: Final[tuple[str, ...]] = (
    "admiration",
    "amusement",
    "anger",
    "annoyance",
    "approval",
    "caring",
    "confusion",
    "curiosity",
    "desire",
    "disappointment",
    "disapproval",
    "disgust",
    "embarrassment",
    "excitement",
    "fear",
    "gratitude",
    "grief",
    "joy",
    "love",
    "nervousness",
    "optimism",
    "pride",
    "realization",
    "relief",
    "remorse",
    "sadness",
    "surprise",
    "neutral",
)
EKMAN: Final[tuple[str, ...]] = (
    "anger",
    "disgust",
    "fear",
    "joy",
    "sadness",
    "surprise",
    "neutral",
)
PLUTCHIK: Final[tuple[str, ...]] = (
    "joy",
    "trust",
    "fear",
    "surprise",
    "sadness",
    "disgust",
    "anger",
    "anticipation",
)
VAD: Final[tuple[str, ...]] = ("valence", "arousal", "dominance")

# The authors' grouping (GoEmotions, ``ekman_mapping.json``); neutral stays neutral.
EKMAN_GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "anger": ("anger", "annoyance", "disapproval"),
    "disgust": ("disgust",),
    "fear": ("fear", "nervousness"),
    "joy": (
        "joy",
        "amusement",
        "approval",
        "excitement",
        "gratitude",
        "love",
        "optimism",
        "relief",
        "pride",
        "admiration",
        "desire",
        "caring",
    ),
    "sadness": ("sadness", "disappointment", "embarrassment", "grief", "remorse"),
    "surprise": ("surprise", "realization", "confusion", "curiosity"),
    "neutral": ("neutral",),
}

# Each fine-grained label's place on Plutchik's wheel. One primary means the label is that
# emotion (at some intensity); two primaries name one of Plutchik's dyads, and the label's
# weight is split evenly between them. ``neutral`` expresses none of the eight.
PLUTCHIK_COMPONENTS: Final[dict[str, tuple[str, ...]]] = {
    "admiration": ("trust",),  # intense trust
    "amusement": ("joy",),
    "anger": ("anger",),
    "annoyance": ("anger",),  # mild anger
    "approval": ("trust",),  # acceptance, mild trust
    "caring": ("trust", "joy"),  # a form of love
    "confusion": ("surprise",),  # distraction, mild surprise
    "curiosity": ("trust", "surprise"),  # dyad: curiosity
    "desire": ("anticipation", "joy"),
    "disappointment": ("surprise", "sadness"),  # dyad: disapproval / disappointment
    "disapproval": ("surprise", "sadness"),  # dyad: disapproval
    "disgust": ("disgust",),
    "embarrassment": ("fear", "disgust"),  # dyad: shame
    "excitement": ("joy", "anticipation"),
    "fear": ("fear",),
    "gratitude": ("joy", "trust"),
    "grief": ("sadness",),  # intense sadness
    "joy": ("joy",),
    "love": ("joy", "trust"),  # dyad: love
    "nervousness": ("anticipation", "fear"),  # dyad: anxiety
    "optimism": ("anticipation", "joy"),  # dyad: optimism
    "pride": ("anger", "joy"),  # dyad: pride
    "realization": ("surprise",),
    "relief": ("joy",),  # serenity
    "remorse": ("sadness", "disgust"),  # dyad: remorse
    "sadness": ("sadness",),
    "surprise": ("surprise",),
    "neutral": (),
}


def _weights(
    target: tuple[str, ...], components: dict[str, tuple[str, ...]]
) -> NDArray[np.float64]:
    matrix = np.zeros((len(GOEMOTIONS), len(target)))
    for row, label in enumerate(GOEMOTIONS):
        parts = components[label]
        for part in parts:
            matrix[row, target.index(part)] = 1.0 / len(parts)
    return matrix


def _ekman_components() -> dict[str, tuple[str, ...]]:
    return {label: (group,) for group, labels in EKMAN_GROUPS.items() for label in labels}


# Rows: GoEmotions labels; columns: the target taxonomy. Rows of PLUTCHIK_WEIGHTS sum to 1
# (0 for neutral); EKMAN_WEIGHTS is a 0/1 membership matrix.
PLUTCHIK_WEIGHTS: Final[NDArray[np.float64]] = _weights(PLUTCHIK, PLUTCHIK_COMPONENTS)
EKMAN_WEIGHTS: Final[NDArray[np.float64]] = _weights(EKMAN, _ekman_components())
EKMAN_OF_LABEL: Final[tuple[int, ...]] = tuple(
    int(np.argmax(EKMAN_WEIGHTS[row])) for row in range(len(GOEMOTIONS))
)


def noisy_or(
    probabilities: NDArray[np.float64], weights: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Carry label probabilities ``(n, 28)`` to another taxonomy ``(n, k)`` by noisy-OR."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    log_absent = np.log1p(-np.clip(probabilities[..., :, None] * weights, 0.0, 1.0 - 1e-12))
    return np.asarray(1.0 - np.exp(log_absent.sum(axis=-2)), dtype=np.float64)


def plutchik_from_goemotions(probabilities: NDArray[np.float64]) -> NDArray[np.float64]:
    return noisy_or(probabilities, PLUTCHIK_WEIGHTS)


def ekman_from_goemotions(probabilities: NDArray[np.float64]) -> NDArray[np.float64]:
    return noisy_or(probabilities, EKMAN_WEIGHTS)


def label_sets_to_matrix(label_sets: list[tuple[int, ...]], width: int) -> NDArray[np.bool_]:
    """Multi-hot ``(n, width)`` matrix of label index tuples."""
    matrix = np.zeros((len(label_sets), width), dtype=bool)
    for row, labels in enumerate(label_sets):
        matrix[row, list(labels)] = True
    return matrix


def goemotions_to_ekman(gold: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Gold 28-label sets ``(n, 28)`` to gold Ekman-7 sets ``(n, 7)``."""
    return np.asarray((gold.astype(np.float64) @ EKMAN_WEIGHTS) > 0, dtype=bool)


def goemotions_to_plutchik(gold: NDArray[np.bool_]) -> NDArray[np.bool_]:
    return np.asarray((gold.astype(np.float64) @ PLUTCHIK_WEIGHTS) > 0, dtype=bool)

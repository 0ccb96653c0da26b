"""The cascade's router: how likely the edge tier is to get a text's Ekman-7 reading wrong.

The edge tier's own confidence ranks texts poorly for the cascade, because macro-F1 weighs the
rare classes (disgust, fear, surprise) as much as joy and neutral: an edge mistake on a rare
class costs far more than one on a common class. The router is a gradient-boosted tree
ensemble over the edge tier's outputs that predicts a *rare-weighted* error: each wrong class
decision counts ``1 / (share of texts with that class)``, and the target is an error weight
above 1.5 times that of the most common class (any mistake on a class other than the two
most common, or on both of those).

It is trained on out-of-fold edge readings of the GoEmotions train split (see
``training/router.py``); here it is plain numpy: every tree is walked for every text at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from nexus.emotion.models.taxonomy import EKMAN, GOEMOTIONS
from nexus.emotion.models.vector import EKMAN_END, LABELS_END, sigmoid

FORMAT: Final = "nexus-cascade-router"
MAX_LENGTH_FEATURE: Final = 300


def _logit(p: NDArray[np.float64]) -> NDArray[np.float64]:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(p / (1 - p)), dtype=np.float64)


def router_features(
    edge_scores: NDArray[np.float64],
    lengths: NDArray[np.int64],
    ekman_thresholds: NDArray[np.float64],
) -> NDArray[np.float64]:
    """The router's inputs per text: Ekman-7 and label probabilities, each Ekman class's
    distance from its threshold (in logits), text length (characters, capped) and the two
    highest Ekman probabilities."""
    ekman = sigmoid(edge_scores[:, LABELS_END:EKMAN_END])
    labels = sigmoid(edge_scores[:, :LABELS_END])
    margin = np.abs(_logit(ekman) - _logit(ekman_thresholds))
    length = np.minimum(lengths, MAX_LENGTH_FEATURE)[:, None] / 100.0
    top = np.sort(ekman, axis=1)[:, -2:]
    return np.hstack([ekman, labels, margin, length, top])


N_FEATURES: Final = 2 * len(EKMAN) + len(GOEMOTIONS) + 1 + 2


@dataclass(frozen=True)
class CascadeRouter:
    """Trees as padded arrays ``(trees, nodes)``; a leaf points to itself."""

    version: str
    baseline: float
    feature: NDArray[np.int64]
    threshold: NDArray[np.float64]
    left: NDArray[np.int64]
    right: NDArray[np.int64]
    value: NDArray[np.float64]
    depth: int
    risk_quantiles: list[float]  # of the risk on dev, at 0 %, 1 %, ..., 100 %

    def risk(self, features: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probability of a rare-weighted edge error, per row of ``features``."""
        trees = np.arange(self.feature.shape[0])[None, :]
        node = np.zeros((features.shape[0], self.feature.shape[0]), dtype=np.int64)
        rows = np.arange(features.shape[0])[:, None]
        for _ in range(self.depth):
            values = features[rows, self.feature[trees, node]]
            node = np.where(
                values <= self.threshold[trees, node],
                self.left[trees, node],
                self.right[trees, node],
            )
        raw = self.baseline + self.value[trees, node].sum(axis=1)
        return sigmoid(raw)

    def risk_threshold(self, edge_share: float) -> float:
        """Risk at or below which ``edge_share`` of dev texts fall: those stay at the edge."""
        if edge_share >= 1.0:
            return float("inf")
        if edge_share <= 0.0:
            return float("-inf")
        grid = np.linspace(0.0, 1.0, len(self.risk_quantiles))
        return float(np.interp(edge_share, grid, self.risk_quantiles))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "baseline": self.baseline,
            "depth": self.depth,
            "feature": self.feature.tolist(),
            "threshold": np.round(self.threshold, 9).tolist(),
            "left": self.left.tolist(),
            "right": self.right.tolist(),
            "value": np.round(self.value, 9).tolist(),
            "risk_quantiles": self.risk_quantiles,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CascadeRouter:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} artifact")
        return cls(
            version=str(data["version"]),
            baseline=float(data["baseline"]),
            feature=np.asarray(data["feature"], dtype=np.int64),
            threshold=np.asarray(data["threshold"], dtype=np.float64),
            left=np.asarray(data["left"], dtype=np.int64),
            right=np.asarray(data["right"], dtype=np.int64),
            value=np.asarray(data["value"], dtype=np.float64),
            depth=int(data["depth"]),
            risk_quantiles=[float(v) for v in data["risk_quantiles"]],
        )

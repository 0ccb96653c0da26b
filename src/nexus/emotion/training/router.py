"""Train the cascade router (see :mod:`nexus.emotion.models.router`).

The router must see the edge tier's readings of texts the edge did *not* learn from, or it
would learn the edge's optimism about its own training data. So the GoEmotions train split
is halved; an edge model trained (with the same recipe) on each half reads the other, and
the router learns from those out-of-fold readings. Its risk quantiles come from the shipped
edge model's readings of dev, so a target edge share maps to a risk threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from nexus.emotion.datasets import LabelledTexts, VadTexts
from nexus.emotion.models.edge import EdgeModel
from nexus.emotion.models.metrics import predict_sets
from nexus.emotion.models.router import CascadeRouter, router_features
from nexus.emotion.models.taxonomy import GOEMOTIONS, goemotions_to_ekman, label_sets_to_matrix
from nexus.emotion.models.vector import EKMAN_END, LABELS_END, sigmoid
from nexus.emotion.training.edge import EdgeTrainingConfig, train_edge

Progress = Callable[[str, int, int], None]
ITERATIONS = 300  # at most: scikit-learn stops early on a 10 % hold-out of the readings
LEARNING_RATE = 0.05


def rare_weighted_errors(
    predicted: NDArray[np.bool_], gold: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    """The router's target: a wrong-decision weight above 1.5x the most common class's."""
    weight = 1.0 / np.maximum(gold.mean(axis=0), 1e-9)
    errors = ((predicted != gold) * weight).sum(axis=1)
    return np.asarray(errors > 1.5 * weight.min(), dtype=bool)


def _lengths(texts: list[str]) -> NDArray[np.int64]:
    return np.asarray([len(t) for t in texts], dtype=np.int64)


def train_router(
    *,
    train: LabelledTexts,
    dev: LabelledTexts,
    vad_train: VadTexts,
    edge: EdgeModel,
    teacher: NDArray[np.float64] | None,
    version: str,
    config: EdgeTrainingConfig | None = None,
    progress: Progress | None = None,
) -> CascadeRouter:
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: PLC0415

    config = config or EdgeTrainingConfig()
    texts, labels = train.texts[: config.limit], train.labels[: config.limit]
    ekman_thresholds = np.asarray(edge.thresholds["ekman"])
    order = np.random.default_rng(config.seed).permutation(len(texts))
    halves = (np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :]))
    scores = np.zeros((len(texts), len(edge.outputs)))
    for fold, (fit, read) in enumerate((halves, halves[::-1])):
        part = LabelledTexts([texts[i] for i in fit], [labels[i] for i in fit], "goemotions")
        model = train_edge(
            train=part,
            dev=dev,
            vad_train=vad_train,
            version="fold",
            config=replace(config, limit=None),
            teacher=None if teacher is None else teacher[fit],
        )
        scores[read] = model.scores([texts[i] for i in read])
        if progress is not None:
            progress("router: out-of-fold edge readings", fold + 1, 2)
    gold = goemotions_to_ekman(label_sets_to_matrix(labels, len(GOEMOTIONS)))
    predicted = predict_sets(sigmoid(scores[:, LABELS_END:EKMAN_END]), ekman_thresholds)
    target = rare_weighted_errors(predicted, gold)
    features = router_features(scores, _lengths(texts), ekman_thresholds)
    classifier = HistGradientBoostingClassifier(
        max_iter=ITERATIONS, learning_rate=LEARNING_RATE, random_state=config.seed
    ).fit(features, target)
    router = _export(classifier, version=version)
    dev_risk = router.risk(
        router_features(
            edge.scores(dev.texts).astype(np.float64), _lengths(dev.texts), ekman_thresholds
        )
    )
    quantiles = [float(v) for v in np.quantile(dev_risk, np.linspace(0, 1, 101))]
    return replace(router, risk_quantiles=quantiles)


def _export(classifier: object, *, version: str) -> CascadeRouter:
    """scikit-learn's fitted trees as padded arrays (leaves and padding point to themselves)."""
    # ``_predictors`` and ``_baseline_prediction`` are scikit-learn internals, pinned by the
    # train extra's lock; tests compare the export with scikit-learn's own predictions.
    predictors = [iteration[0] for iteration in classifier._predictors]  # type: ignore[attr-defined]
    width = max(len(p.nodes) for p in predictors)
    shape = (len(predictors), width)
    feature = np.zeros(shape, dtype=np.int64)
    threshold = np.zeros(shape)
    left = np.tile(np.arange(width), (len(predictors), 1))
    right = left.copy()
    value = np.zeros(shape)
    depth = 0
    for tree, predictor in enumerate(predictors):
        nodes = predictor.nodes
        count = len(nodes)
        inner = ~nodes["is_leaf"].astype(bool)
        feature[tree, :count] = np.where(inner, nodes["feature_idx"], 0)
        threshold[tree, :count] = np.where(inner, nodes["num_threshold"], 0.0)
        left[tree, :count] = np.where(inner, nodes["left"], np.arange(count))
        right[tree, :count] = np.where(inner, nodes["right"], np.arange(count))
        value[tree, :count] = np.where(inner, 0.0, nodes["value"])
        depth = max(depth, int(nodes["depth"].max()))
    baseline = float(np.ravel(classifier._baseline_prediction)[0])  # type: ignore[attr-defined]
    return CascadeRouter(
        version=version,
        baseline=baseline,
        feature=feature,
        threshold=threshold,
        left=left,
        right=right,
        value=value,
        depth=depth,
        risk_quantiles=[],
    )

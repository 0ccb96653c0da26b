"""Train the edge tier: logistic-regression heads and a ridge VAD head on hashed features.

1. Hash unigrams and bigrams of GoEmotions train and EmoBank train into ``2**bits`` buckets.
2. Fit one L2 logistic regression per GoEmotions label and per Ekman group, and one ridge
   regression per VAD dimension, on every bucket.
3. Keep the buckets that matter most (largest absolute weight in any head, ranked within the
   label heads and within the VAD heads), which is what makes the artifact small.
4. Refit every head on the kept buckets only, quantise to int8, and tune each label's
   threshold on the dev split *with the quantised model*, so what ships is what was tuned.

Needs scikit-learn (the ``train`` extra); serving the result needs only numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from nexus.core.errors import ConfigurationError
from nexus.emotion.datasets import LabelledTexts, VadTexts
from nexus.emotion.models.edge import EdgeModel, FeatureHasher
from nexus.emotion.models.metrics import tune_thresholds
from nexus.emotion.models.taxonomy import (
    EKMAN,
    GOEMOTIONS,
    VAD,
    goemotions_to_ekman,
    label_sets_to_matrix,
)
from nexus.emotion.models.vector import edge_confidence, sigmoid

OUTPUTS = (*GOEMOTIONS, *(f"ekman_{name}" for name in EKMAN), *VAD)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class EdgeTrainingConfig:
    bits: int = 20
    label_features: int = 5000
    vad_features: int = 1000
    regularisation: float = 4.0  # logistic regression C
    ridge_alpha: float = 1.0
    distill: float = 1.0  # share of the teacher's probabilities in each target
    seed: int = 20261121
    limit: int | None = None


def _matrix(hasher: FeatureHasher, texts: list[str]) -> object:
    from scipy import sparse  # noqa: PLC0415

    ids, offsets = hasher.batch(texts)
    counts = np.diff(offsets)
    values = np.repeat(1.0 / np.sqrt(np.maximum(counts, 1)), counts)
    return sparse.csr_matrix(
        (values, ids.astype(np.int64), offsets), shape=(len(texts), 1 << hasher.bits)
    )


def _fit_heads(
    features: object,
    targets: NDArray[np.float64],
    vad_features: object,
    vad: NDArray[np.float64],
    config: EdgeTrainingConfig,
    progress: Progress | None,
    stage: str,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Weights ``(columns, heads)`` and biases of every head, labels first, VAD last."""
    from scipy import sparse  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression, Ridge  # noqa: PLC0415

    heads = targets.shape[1] + vad.shape[1]
    columns = features.shape[1]  # type: ignore[attr-defined]
    weights = np.zeros((columns, heads))
    bias = np.zeros(heads)
    # Soft targets (a teacher's probabilities) are fitted as weighted hard ones: each text
    # once as positive with weight p and once as negative with weight 1 - p, which is the
    # same cross-entropy.
    soft = bool(((targets > 0) & (targets < 1)).any())
    doubled = sparse.vstack([features, features], format="csr") if soft else features
    rows = targets.shape[0]
    for head in range(targets.shape[1]):
        column = targets[:, head]
        if column.min() == column.max():
            bias[head] = 10.0 if column[0] >= 0.5 else -10.0
            if progress is not None:
                progress(stage, head + 1, heads)
            continue
        model = LogisticRegression(
            C=config.regularisation, solver="liblinear", max_iter=300, random_state=config.seed
        )
        if soft:
            labels = np.concatenate([np.ones(rows), np.zeros(rows)])
            model.fit(doubled, labels, sample_weight=np.concatenate([column, 1.0 - column]))
        else:
            model.fit(features, column >= 0.5)
        weights[:, head] = model.coef_[0]
        bias[head] = model.intercept_[0]
        if progress is not None:
            progress(stage, head + 1, heads)
    ridge = Ridge(alpha=config.ridge_alpha, solver="sparse_cg", random_state=config.seed).fit(
        vad_features, vad
    )
    weights[:, targets.shape[1] :] = ridge.coef_.T
    bias[targets.shape[1] :] = ridge.intercept_
    if progress is not None:
        progress(stage, heads, heads)
    return weights, bias


def train_edge(
    *,
    train: LabelledTexts,
    dev: LabelledTexts,
    vad_train: VadTexts,
    version: str,
    config: EdgeTrainingConfig = EdgeTrainingConfig(),
    teacher: NDArray[np.float64] | None = None,
    progress: Progress | None = None,
) -> EdgeModel:
    """Train, prune, quantise and tune the edge tier.

    ``teacher`` holds the server tier's probabilities for the training texts, ``(n, 35)``:
    28 labels then 7 Ekman groups. With it, each head learns a blend of the gold labels and
    the teacher's beliefs (``config.distill`` of the latter): knowledge distillation (Hinton
    et al., 2015), which makes the edge agree more with the server, so the cascade loses less
    when it keeps the edge's answer.
    """
    try:
        import sklearn  # noqa: F401, PLC0415
    except ImportError:
        raise ConfigurationError(
            "training the edge tier needs the train extra: pip install 'nexus[train]'"
        ) from None
    texts, labels = train.texts, train.labels
    vad_texts, vad_values = vad_train.texts, vad_train.vad
    if config.limit is not None:
        texts, labels = texts[: config.limit], labels[: config.limit]
        vad_texts, vad_values = vad_texts[: config.limit], vad_values[: config.limit]
    hasher = FeatureHasher(config.bits)
    gold = label_sets_to_matrix(labels, len(GOEMOTIONS))
    targets = np.hstack([gold, goemotions_to_ekman(gold)]).astype(np.float64)
    if teacher is not None:
        if teacher.shape != targets.shape:
            raise ValueError(f"teacher must be {targets.shape}, not {teacher.shape}")
        targets = (1.0 - config.distill) * targets + config.distill * teacher
    vad = np.asarray(vad_values, dtype=np.float64)
    features = _matrix(hasher, texts)
    vad_features = _matrix(hasher, vad_texts)

    weights, _ = _fit_heads(
        features, targets, vad_features, vad, config, progress, "edge: all features"
    )
    label_rank = np.argsort(-np.abs(weights[:, : targets.shape[1]]).max(axis=1))
    vad_weights = np.abs(weights[:, targets.shape[1] :])
    # Each VAD head's weights on its own scale; a head with all-zero weights ranks nothing.
    vad_weights = vad_weights / np.maximum(vad_weights.max(axis=0), 1e-12)
    vad_rank = np.argsort(-vad_weights.max(axis=1))
    kept = np.union1d(label_rank[: config.label_features], vad_rank[: config.vad_features])
    weights, bias = _fit_heads(
        features[:, kept],  # type: ignore[index]
        targets,
        vad_features[:, kept],  # type: ignore[index]
        vad,
        config,
        progress,
        "edge: kept features",
    )
    draft = EdgeModel(
        version=version,
        bits=config.bits,
        features=kept.astype(np.uint32),
        weights=weights.astype(np.float32),
        bias=bias.astype(np.float32),
        outputs=OUTPUTS,
        thresholds={},
        metadata={},
    )
    # Round-trip through the artifact so thresholds are tuned on the int8 weights that ship.
    shipped = EdgeModel.from_json(draft.to_json())
    scores = shipped.scores(dev.texts).astype(np.float64)
    dev_gold = label_sets_to_matrix(dev.labels, len(GOEMOTIONS))
    probabilities = sigmoid(scores[:, : len(GOEMOTIONS)])
    ekman = sigmoid(scores[:, len(GOEMOTIONS) : len(GOEMOTIONS) + len(EKMAN)])
    ekman_thresholds = tune_thresholds(ekman, goemotions_to_ekman(dev_gold))
    confidence = edge_confidence(ekman, ekman_thresholds)
    return EdgeModel(
        version=version,
        bits=config.bits,
        features=shipped.features,
        weights=shipped.weights,
        bias=shipped.bias,
        outputs=OUTPUTS,
        thresholds={
            "goemotions": [float(v) for v in tune_thresholds(probabilities, dev_gold)],
            "ekman": [float(v) for v in ekman_thresholds],
        },
        metadata={
            "features_kept": len(kept),
            "train_texts": len(texts),
            "vad_train_texts": len(vad_texts),
            # Quantiles (0%, 1%, …, 100%) of the edge confidence on dev: the cascade router
            # turns a target edge share into a confidence threshold with them.
            "confidence_quantiles": [
                float(v) for v in np.quantile(confidence, np.linspace(0, 1, 101))
            ],
            "seed": config.seed,
        },
    )

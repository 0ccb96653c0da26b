"""Cohort emotion aggregates with bootstrap intervals, and content resonance.

A dashboard compares cohorts (a funnel step, a traffic source, an experiment arm) by their
mean emotion, and a mean without its uncertainty invites reading noise as signal: 12
visitors and 12,000 visitors must not look equally sure. Emotion readings are bounded and
often skewed, so intervals come from the percentile bootstrap (Efron & Tibshirani, *An
Introduction to the Bootstrap*, 1993, ch. 13) rather than a normal approximation.

:func:`resonance` scores how well a visitor's current emotion matches the emotion a content
variant is designed to evoke, so the experiments domain can prefer variants that fit.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from nexus.emotion.models.taxonomy import EKMAN, PLUTCHIK, VAD

FloatArray = NDArray[np.float64]

StatKind = Literal["mean", "share"]
CohortError = Literal["no_observations", "single_observation"]

# Resamples x rows x columns drawn at once; bounds memory (~16 MB of float64) on big cohorts.
_ELEMENT_BUDGET: Final = 2_000_000
_SHARE_STREAM: Final = 1


@dataclass(frozen=True, slots=True)
class CohortStat:
    """One group's mean of one dimension (``kind="mean"``) or share of one label
    (``kind="share"``), with a percentile-bootstrap interval at ``confidence``.

    ``count`` is the number of finite values (mean) or valid labels (share) used. With no
    values ``mean``, ``lower`` and ``upper`` are None and ``error`` is
    ``"no_observations"``; with one value the interval collapses onto it and ``error`` is
    ``"single_observation"`` — a bootstrap of one point says nothing about spread.
    """

    group: str
    dimension: str
    kind: StatKind
    count: int
    mean: float | None
    lower: float | None
    upper: float | None
    confidence: float
    error: CohortError | None = None


def _group_rng(seed: int, group: str, stream: int) -> np.random.Generator:
    # One stream per (group, purpose): a group's interval depends on the seed and its own
    # data only, not on which other groups were asked for or in what order.
    return np.random.default_rng([seed, zlib.crc32(group.encode()), stream])


def bootstrap_interval(
    values: FloatArray, *, resamples: int, confidence: float, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Percentile-bootstrap interval of each column's mean of finite ``(n, d)`` values, n >= 1.

    Each resample is a row of ``n`` indices drawn with replacement; blocks of resamples are
    drawn as index matrices and averaged at once. The interval is the ``(1 - confidence)/2``
    and ``(1 + confidence)/2`` quantiles of the resampled means (Efron & Tibshirani 1993,
    eq. 13.5).
    """
    n, d = values.shape
    block = max(1, _ELEMENT_BUDGET // (n * d))
    means = np.empty((resamples, d))
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        index = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[index].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(means, [tail, 1.0 - tail], axis=0)
    return np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)


def _column_stats(
    group: str,
    names: Sequence[str],
    kind: StatKind,
    values: FloatArray,
    *,
    resamples: int,
    confidence: float,
    rng: np.random.Generator,
) -> list[CohortStat]:
    """Stats of each column, dropping non-finite entries column by column."""
    finite = np.isfinite(values)
    if finite.all() and len(values) > 1:
        # The common case: every column shares one set of index matrices.
        lower, upper = bootstrap_interval(
            values, resamples=resamples, confidence=confidence, rng=rng
        )
        means = values.mean(axis=0)
        return [
            CohortStat(group, name, kind, len(values), float(m), float(lo), float(hi), confidence)
            for name, m, lo, hi in zip(names, means, lower, upper, strict=True)
        ]
    stats = []
    for column, name in enumerate(names):
        kept = values[finite[:, column], column]
        count = len(kept)
        if count == 0:
            stats.append(
                CohortStat(group, name, kind, 0, None, None, None, confidence, "no_observations")
            )
        elif count == 1:
            point = float(kept[0])
            stats.append(
                CohortStat(
                    group, name, kind, 1, point, point, point, confidence, "single_observation"
                )
            )
        else:
            lo, hi = bootstrap_interval(
                kept[:, None], resamples=resamples, confidence=confidence, rng=rng
            )
            stats.append(
                CohortStat(
                    group,
                    name,
                    kind,
                    count,
                    float(kept.mean()),
                    float(lo[0]),
                    float(hi[0]),
                    confidence,
                )
            )
    return stats


def aggregate(
    groups: Mapping[str, ArrayLike],
    *,
    dimensions: Sequence[str],
    seed: int,
    labels: Mapping[str, ArrayLike] | None = None,
    label_names: Sequence[str] = EKMAN,
    resamples: int = 1000,
    confidence: float = 0.95,
) -> list[CohortStat]:
    """Per group, the mean of each dimension and, if ``labels`` is given, each label's share.

    ``groups`` maps a group key to an ``(n, len(dimensions))`` array of emotion values (a
    1-D array when there is one dimension); non-finite entries are dropped per dimension.
    ``labels`` maps a group key to an ``(n,)`` array of label indices into ``label_names``
    (default Ekman-7); indices outside that range (e.g. ``-1`` for "unknown") are dropped.
    A label's share is the mean of its indicator, so it is bootstrapped exactly like a
    dimension. Stats come back group by group in mapping order — all means first, then all
    shares. ``seed`` (>= 0) makes every interval reproducible.

    Degenerate data (empty groups, single readings) give stats with an ``error`` code;
    only malformed arguments (shapes, ``resamples < 1``, ``confidence`` outside (0, 1))
    raise ``ValueError``.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    names = tuple(dimensions)
    stats: list[CohortStat] = []
    for group, data in groups.items():
        values = np.asarray(data, dtype=np.float64)
        if values.ndim == 1 and len(names) == 1:
            values = values[:, None]
        if values.size == 0:
            values = values.reshape(0, len(names))
        if values.ndim != 2 or values.shape[1] != len(names):
            raise ValueError(
                f"group {group!r}: expected shape (n, {len(names)}), got {values.shape}"
            )
        stats.extend(
            _column_stats(
                group,
                names,
                "mean",
                values,
                resamples=resamples,
                confidence=confidence,
                rng=_group_rng(seed, group, 0),
            )
        )
    for group, data in (labels or {}).items():
        indices = np.asarray(data).ravel()
        if indices.size and not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"group {group!r}: labels must be integer indices")
        indices = indices.astype(np.int64)
        indices = indices[(indices >= 0) & (indices < len(label_names))]
        indicators = np.zeros((len(indices), len(label_names)))
        indicators[np.arange(len(indices)), indices] = 1.0
        stats.extend(
            _column_stats(
                group,
                tuple(label_names),
                "share",
                indicators,
                resamples=resamples,
                confidence=confidence,
                rng=_group_rng(seed, group, _SHARE_STREAM),
            )
        )
    return stats


# --------------------------------------------------------------------------------------------
# Resonance
# --------------------------------------------------------------------------------------------

RESONANCE_DIMENSIONS: Final[tuple[str, ...]] = (*PLUTCHIK, *VAD)
NEUTRAL_RESONANCE: Final = 0.5
_N_PLUTCHIK: Final = len(PLUTCHIK)


def _centred(vector: FloatArray) -> FloatArray:
    # Plutchik probabilities p in [0, 1] become 2p - 1 (0.5, "as likely present as not", is
    # the centre); valence, arousal and dominance already have their neutral point at 0.
    # All 11 dimensions then share the scale [-1, 1] with 0 meaning "neither".
    centred = vector.copy()
    centred[:_N_PLUTCHIK] = 2.0 * np.clip(vector[:_N_PLUTCHIK], 0.0, 1.0) - 1.0
    centred[_N_PLUTCHIK:] = np.clip(vector[_N_PLUTCHIK:], -1.0, 1.0)
    return centred


def resonance(state: ArrayLike, profile: ArrayLike) -> float:
    """How well a visitor's emotion state matches a content variant's intended profile.

    Both are 11-vectors in :data:`RESONANCE_DIMENSIONS` order: Plutchik-8 probabilities in
    [0, 1], then valence, arousal, dominance in [-1, 1]. A NaN in ``profile`` means the
    variant does not care about that dimension; a NaN in ``state`` means it is unknown; such
    dimensions are left out of both vectors. Definition::

        c(x)_j = 2 x_j - 1  for the 8 Plutchik dimensions (values clipped to [0, 1]),
        c(x)_j = x_j        for valence, arousal, dominance (clipped to [-1, 1]),
        resonance = (1 + cos(c(state)_M, c(profile)_M)) / 2,

    over the kept dimensions ``M``. It lies in [0, 1]: 1 when the two point the same way,
    0.5 when unrelated (orthogonal), 0 when opposite (``p -> 1 - p``, ``v -> -v``). Cosine
    compares the *shape* of the emotion, not its intensity, so a mildly joyful visitor
    resonates fully with joyful content. When no dimension is kept, or either centred vector
    is zero (all probabilities 0.5, neutral VAD), there is no direction to compare and the
    result is :data:`NEUTRAL_RESONANCE` (0.5). Shapes other than ``(11,)`` raise ValueError.
    """
    x = np.asarray(state, dtype=np.float64)
    y = np.asarray(profile, dtype=np.float64)
    size = len(RESONANCE_DIMENSIONS)
    if x.shape != (size,) or y.shape != (size,):
        raise ValueError(f"state and profile must have shape ({size},), got {x.shape}, {y.shape}")
    kept = np.isfinite(x) & np.isfinite(y)
    a = _centred(np.where(kept, x, 0.0))[kept]
    b = _centred(np.where(kept, y, 0.0))[kept]
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if not norm > 0:
        return NEUTRAL_RESONANCE
    cosine = min(max(float(a @ b) / norm, -1.0), 1.0)
    return (1.0 + cosine) / 2.0

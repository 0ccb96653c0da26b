"""The trajectory model on the visitor simulator's journeys, read through the edge model.

``test_trajectory.py`` checks the OU Kalman filter on sequences that follow the model
exactly. This file checks it on data it was not built from: the visitors of
:class:`~nexus.experiments.simulation.Simulation`, whose latent emotion is known. For
each visitor we take what they write (the opening chat message, then any chat message,
checkout-form comment or review along the journey), pick the text property the way ingest
enrichment does (the first of :data:`~nexus.emotion.schemas.DEFAULT_TEXT_PROPERTIES`
present as a non-empty string), read it with NEXUS's edge model (``mode="edge"``) and turn
the reading into an :class:`~nexus.emotion.models.trajectory.Observation` as the service
does (time = event timestamp in seconds, label = index of the dominant Ekman-7 class). The
ground truth of a reading is the latent valence/arousal/dominance of the last
:class:`~nexus.experiments.simulation.EmotionPoint` at or before the text was sent: that is
the state whose register the visitor wrote in.

What is checked, and why it could fail:

* :func:`fit_ou` fits these sequences without falling back to defaults, and the fitted
  step length is the simulator's gap between texts in *seconds* (a wrong time unit or a
  broken panel would show here).
* Held-out one-step forecasts (:func:`evaluate_forecasts`, two-fold over visitors) beat
  carrying the previous reading forward on every dimension, and also beat the other naive
  forecast, the fitted population baseline ``mu`` (on dominance: are no worse) — so the
  filter is using the visitor's own history, not just shrinking to the mean.
* The filtered state at a visitor's last reading, and the filter's forecast of each next
  reading, correlate with the *latent* emotion at that moment, and filtering does not lose
  the tracking the raw reading has (correlation within 0.01 of the last raw reading's).

Ingest enrichment defaults to the ``cascade`` mode; the edge tier read here is what
``/v1/decide`` uses by default and what the cascade keeps for most texts, and it needs no
server model (which is slow on CPU and not installed everywhere).

Only about 15% of simulated visitors write more than once (how far they get depends on
the conversion model, how much they write on their chattiness), so 2,000 visitors are
needed for ~2,350 readings and ~170 held-out forecast pairs per fold; generating, reading
and fitting them takes about a second.

Thresholds come from measurements over 40 seeds of the simulator (not only the one used
here), 2,000 visitors each, both folds: filter/carry-forward MSE ratio at most 0.79
(valence), 0.94 (arousal), 0.86 (dominance); filter/population-mean ratio at most 0.88,
0.82, 0.98; correlation of the filtered last state with the latent at least 0.70, 0.36,
0.38; of the forecast with the next latent at least 0.65, 0.36, 0.33; filtered minus raw
correlation never below 0.000. The asserted bounds leave a margin beyond each of these, so
they hold for the simulator, not just for one lucky seed. Dominance is read with little
spread by the edge model (sd ~0.04) and the filter only just beats the population mean
there, so that comparison asserts "no worse" for dominance.

Not asserted, because it does not hold: the fitted half-lives (150 s to days, depending on
the seed) do not recover the simulator's 90 s drift. A visitor's readings are dominated by
the register they write in, which persists for the whole visit, and a pooled OU model with
one shared ``mu`` can only express a persistent per-visitor offset as very slow reversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pytest

from nexus.emotion.analyzer import EmotionAnalyzer
from nexus.emotion.models.taxonomy import EKMAN, VAD
from nexus.emotion.models.trajectory import (
    ForecastEvaluation,
    Observation,
    VADParams,
    evaluate_forecasts,
    fit_ou,
    kalman_filter,
)
from nexus.emotion.schemas import DEFAULT_TEXT_PROPERTIES
from nexus.experiments.simulation import ADAPTATIONS, DIMENSIONS, EmotionPoint, Simulation

SEED = 11
N_VISITORS = 2_000
LATENT_VAD = tuple(DIMENSIONS.index(name) for name in VAD)


@dataclass(frozen=True, slots=True)
class Written:
    """One text a visitor wrote: when, what, and the latent VAD at that moment."""

    visitor: int
    t: float
    text: str
    latent: tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class Visitors:
    """Per-visitor readings (time-ordered) and the latent VAD behind each reading."""

    sequences: list[list[Observation]]
    latents: list[list[tuple[float, float, float]]]

    @property
    def n_readings(self) -> int:
        return sum(len(s) for s in self.sequences)

    def fold(self, parity: int) -> Visitors:
        """Every other visitor: an interleaved split of independent visitors."""
        return Visitors(self.sequences[parity::2], self.latents[parity::2])


def _text_of(properties: dict[str, Any]) -> str | None:
    """The text ingest enrichment reads: the first default text property that is a
    non-empty string (``EmotionRuntime.enrich``)."""
    for name in DEFAULT_TEXT_PROPERTIES:
        value = properties.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _latent_at(emotions: Sequence[EmotionPoint], at: datetime) -> tuple[float, float, float]:
    before = [point for point in emotions if point.at <= at]
    assert before, f"a text at {at} precedes the journey's first emotion point"
    vector = before[-1].vector
    return (vector[LATENT_VAD[0]], vector[LATENT_VAD[1]], vector[LATENT_VAD[2]])


def simulate_written(seed: int, n_visitors: int) -> list[Written]:
    """Every text ``n_visitors`` simulated visitors write, adaptations served in rotation."""
    simulation = Simulation(seed)
    written = []
    for index in range(n_visitors):
        visitor = simulation.visitor(index)
        opening = simulation.opening(visitor)
        journey = simulation.journey(
            visitor, ADAPTATIONS[index % len(ADAPTATIONS)], decided_at=opening.ends_at
        )
        for event in [*opening.events, *journey.events]:
            text = _text_of(event["properties"])
            if text is None:
                continue
            at = datetime.fromisoformat(event["timestamp"])
            written.append(Written(index, at.timestamp(), text, _latent_at(journey.emotions, at)))
    return written


def read_visitors(written: Sequence[Written], analyzer: EmotionAnalyzer) -> Visitors:
    """Read every text with the edge model and group the observations by visitor."""
    vectors = analyzer.analyze([w.text for w in written], mode="edge").vectors
    by_visitor: dict[int, list[tuple[Observation, tuple[float, float, float]]]] = {}
    for item, vector in zip(written, vectors, strict=True):
        ekman = vector.ekman_label
        observation = Observation(
            t=item.t,
            valence=vector.valence,
            arousal=vector.arousal,
            dominance=vector.dominance,
            label=EKMAN.index(ekman) if ekman in EKMAN else EKMAN.index("neutral"),
        )
        by_visitor.setdefault(item.visitor, []).append((observation, item.latent))
    ordered = [sorted(pairs, key=lambda pair: pair[0].t) for _, pairs in sorted(by_visitor.items())]
    return Visitors(
        sequences=[[o for o, _ in pairs] for pairs in ordered],
        latents=[[latent for _, latent in pairs] for pairs in ordered],
    )


@dataclass(frozen=True, slots=True)
class Tracking:
    """One dimension of held-out visitors: one-step forecast errors of the filter and of
    the population mean, and pairs of (estimate, latent) to correlate."""

    filter_mse: float
    mean_mse: float
    filtered_last: list[float]
    raw_last: list[float]
    latent_last: list[float]
    forecast: list[float]
    latent_next: list[float]


def track(visitors: Visitors, params: VADParams, dimension: int) -> Tracking:
    """Filter each visitor's readings of one dimension with ``params``."""
    ou = params.dimensions()[dimension]
    filter_errors: list[float] = []
    mean_errors: list[float] = []
    filtered_last: list[float] = []
    raw_last: list[float] = []
    latent_last: list[float] = []
    forecast: list[float] = []
    latent_next: list[float] = []
    for sequence, latents in zip(visitors.sequences, visitors.latents, strict=True):
        y = np.asarray([o.vad()[dimension] for o in sequence])
        run = kalman_filter([o.t for o in sequence], y, ou)
        predicted = np.asarray(run.predicted_mean)
        filter_errors.extend(((predicted[1:] - y[1:]) ** 2).tolist())
        mean_errors.extend(((ou.mu - y[1:]) ** 2).tolist())
        filtered_last.append(run.filtered_mean[-1])
        raw_last.append(float(y[-1]))
        latent_last.append(latents[-1][dimension])
        forecast.extend(predicted[1:].tolist())
        latent_next.extend(latent[dimension] for latent in latents[1:])
    return Tracking(
        filter_mse=float(np.mean(filter_errors)),
        mean_mse=float(np.mean(mean_errors)),
        filtered_last=filtered_last,
        raw_last=raw_last,
        latent_last=latent_last,
        forecast=forecast,
        latent_next=latent_next,
    )


def correlation(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.corrcoef(np.asarray(a), np.asarray(b))[0, 1])


@dataclass(frozen=True, slots=True)
class Fold:
    """Held-out ``test`` visitors and :func:`evaluate_forecasts` fitted on the others."""

    test: Visitors
    evaluation: ForecastEvaluation


def two_folds(visitors: Visitors) -> list[Fold]:
    return [
        Fold(
            test=visitors.fold(test),
            evaluation=evaluate_forecasts(
                visitors.fold(1 - test).sequences, visitors.fold(test).sequences
            ),
        )
        for test in (1, 0)
    ]


@pytest.fixture(scope="module")
def visitors() -> Visitors:
    return read_visitors(simulate_written(SEED, N_VISITORS), EmotionAnalyzer())


@pytest.fixture(scope="module")
def folds(visitors: Visitors) -> list[Fold]:
    return two_folds(visitors)


# --------------------------------------------------------------------------------------------


def test_simulated_visitors_yield_enough_readings(visitors: Visitors) -> None:
    assert len(visitors.sequences) == N_VISITORS  # everyone writes the opening message
    repeat = sum(len(s) >= 2 for s in visitors.sequences)
    assert repeat >= 200, repeat  # ~15% write again: the pairs the forecasts are judged on
    for sequence in visitors.sequences:
        times = [o.t for o in sequence]
        assert times == sorted(times)
        assert all(-1.0 <= v <= 1.0 for o in sequence for v in o.vad())
        assert all(0 <= o.label < len(EKMAN) for o in sequence)


def test_fit_ou_fits_the_simulated_readings(visitors: Visitors) -> None:
    params = fit_ou(visitors.sequences)
    assert params.error is None
    assert params.n_sequences == N_VISITORS
    assert params.n_observations == visitors.n_readings
    # Texts follow journey steps 20-240 s apart (plus 3-60 s to write): the step length is
    # in seconds, not microseconds or minutes.
    assert 60.0 < params.typical_gap < 300.0, params.typical_gap
    readings = np.asarray([o.vad() for s in visitors.sequences for o in s])
    for d, ou in enumerate(params.dimensions()):
        assert np.isfinite([ou.mu, ou.theta, ou.sigma2, ou.r]).all()
        assert abs(ou.mu - readings[:, d].mean()) < 0.02, (VAD[d], ou.mu)
        # The fitted spread (state plus reading noise) is the readings' spread (measured
        # within 3%).
        assert ou.stationary_variance + ou.r == pytest.approx(readings[:, d].var(), rel=0.1)


def test_filter_forecasts_beat_carrying_the_last_reading_forward(folds: list[Fold]) -> None:
    for fold in folds:
        evaluation = fold.evaluation
        assert evaluation.error is None
        assert evaluation.params.error is None
        assert evaluation.n_forecasts >= 100, evaluation.n_forecasts
        ratios = {
            d.dimension: float("nan") if d.ratio is None else d.ratio for d in evaluation.dimensions
        }
        # Measured (40 seeds, both folds): at most 0.79 / 0.94 / 0.86. (NaN, for a
        # ratio that could not be computed, fails both comparisons.)
        assert ratios["valence"] < 0.9, ratios
        assert all(r < 1.0 for r in ratios.values()), ratios


@pytest.mark.parametrize(("dimension", "below"), [(0, 0.95), (1, 0.95), (2, 1.05)], ids=list(VAD))
def test_filter_forecasts_beat_the_population_mean(
    folds: list[Fold], dimension: int, below: float
) -> None:
    """Measured (40 seeds, both folds): filter/mean MSE at most 0.88 / 0.82 / 0.98."""
    for fold in folds:
        tracking = track(fold.test, fold.evaluation.params, dimension)
        ratio = tracking.filter_mse / tracking.mean_mse
        assert ratio < below, ratio


@pytest.mark.parametrize(("dimension", "at_least"), [(0, 0.6), (1, 0.25), (2, 0.25)], ids=list(VAD))
def test_filtered_state_tracks_the_latent_emotion(
    folds: list[Fold], dimension: int, at_least: float
) -> None:
    for fold in folds:
        tracking = track(fold.test, fold.evaluation.params, dimension)
        filtered = correlation(tracking.filtered_last, tracking.latent_last)
        raw = correlation(tracking.raw_last, tracking.latent_last)
        assert filtered > at_least, (filtered, raw)
        # Filtering keeps the tracking a bare reading has (measured: always a bit better).
        assert filtered >= raw - 0.01, (filtered, raw)


@pytest.mark.parametrize(("dimension", "at_least"), [(0, 0.5), (1, 0.2), (2, 0.2)], ids=list(VAD))
def test_forecasts_track_the_latent_emotion_at_the_next_reading(
    folds: list[Fold], dimension: int, at_least: float
) -> None:
    for fold in folds:
        tracking = track(fold.test, fold.evaluation.params, dimension)
        assert len(tracking.forecast) >= 100
        assert correlation(tracking.forecast, tracking.latent_next) > at_least

"""Experiment results: exposures and metric events from the event store, per-visitor metric
values (:mod:`nexus.experiments.metrics`), and the pure statistics of
:mod:`nexus.experiments.stats` for every variant against control.

For each metric and variant the report carries the fixed-horizon test (two-proportion z for
conversions, Welch otherwise — on CUPED-adjusted values when a pre-exposure covariate
helps), the always-valid sequential interval (safe to peek at), the Bayesian chance to beat
control and expected loss, and a Holm-adjusted p-value across every (metric, variant)
comparison of the experiment. The sample-ratio-mismatch check compares observed exposures
with the configured weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from nexus.core.clock import as_utc, utcnow
from nexus.core.errors import InvalidInput, NotFound
from nexus.events.store import EventStore, PropertyFilter, PropertyPath, PropertyScan
from nexus.experiments import metrics as per_visitor
from nexus.experiments import ope, stats
from nexus.experiments.models import (
    ArmSummary,
    Comparison,
    Experiment,
    ExperimentResults,
    MetricIn,
    MetricResult,
    SampleRatio,
)
from nexus.funnels import service as funnels
from nexus.funnels.models import FunnelDefinition

US = 1_000_000
EXPOSURE_EVENT = "$exposure"
VARIANT = PropertyPath.parse("properties.variant")
EXPERIMENT = PropertyPath.parse("properties.experiment")
# CUPED is used when the covariate removes at least this share of the variance.
MIN_VARIANCE_REDUCTION = 0.0


def _us(moment: datetime) -> int:
    moment = as_utc(moment)
    return int(moment.timestamp()) * US + moment.microsecond


@dataclass(frozen=True, slots=True)
class Scope:
    """Which exposures an analysis reads: an experiment (or a rollout's stage) in a period."""

    workspace_id: str
    experiment: str
    variants: tuple[str, ...]
    start_us: int
    end_us: int
    extra_filters: tuple[PropertyFilter, ...] = ()
    segment_paths: tuple[PropertyPath, ...] = ()


@dataclass(frozen=True, slots=True)
class ExposureSet:
    exposures: per_visitor.Exposures
    segments: dict[str, NDArray[np.bool_]]


def read_exposures(store: EventStore, scope: Scope, segments: tuple[str, ...] = ()) -> ExposureSet:
    rows = store.property_rows(
        PropertyScan(
            workspace_id=scope.workspace_id,
            events=(EXPOSURE_EVENT,),
            start_us=scope.start_us,
            end_us=scope.end_us,
            properties=(VARIANT, *scope.segment_paths),
            filters=(PropertyFilter(EXPERIMENT, "eq", scope.experiment), *scope.extra_filters),
        )
    )
    exposures = per_visitor.first_exposures(rows.person, rows.ts, rows.values[0], scope.variants)
    flags: dict[str, NDArray[np.bool_]] = {}
    for offset, name in enumerate(segments):
        texts = rows.values[1 + offset]
        member_rows = np.asarray([t == "true" for t in texts], dtype=bool)
        members = np.unique(rows.person[member_rows])
        flags[name] = np.isin(exposures.person, members)
    return ExposureSet(exposures, flags)


def metric_values(
    session: Session,
    store: EventStore,
    *,
    scope: Scope,
    exposures: per_visitor.Exposures,
    metric: MetricIn,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Each exposed visitor's metric after exposure, and the same before it (CUPED's
    covariate)."""
    window_us = metric.window_seconds * US
    if metric.kind == "conversion" and metric.funnel_id is not None:
        return _funnel_conversion(session, store, scope=scope, exposures=exposures, metric=metric)
    assert metric.event is not None
    value_path = (
        PropertyPath.parse(metric.property)
        if metric.kind == "sum" and metric.property is not None
        else None
    )
    rows = store.property_rows(
        PropertyScan(
            workspace_id=scope.workspace_id,
            events=(metric.event,),
            start_us=scope.start_us - window_us,
            end_us=scope.end_us,
            properties=(value_path,) if value_path is not None else (),
        )
    )
    values = per_visitor.numbers(rows.values[0]) if value_path is not None else None
    aggregate: per_visitor.Aggregate = (
        "any" if metric.kind == "conversion" else "sum" if metric.kind == "sum" else "count"
    )
    after = per_visitor.window_values(
        exposures, rows.person, rows.ts, window_us=window_us, aggregate=aggregate, values=values
    )
    before = per_visitor.window_values(
        exposures,
        rows.person,
        rows.ts,
        window_us=window_us,
        aggregate=aggregate,
        values=values,
        before=True,
    )
    return after, before


def _funnel_conversion(
    session: Session,
    store: EventStore,
    *,
    scope: Scope,
    exposures: per_visitor.Exposures,
    metric: MetricIn,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Reached step ``metric.step`` of the funnel within its window after exposure: the
    funnel, with the exposure prepended as its first step, through the funnels engine."""
    assert metric.funnel_id is not None
    assert metric.step is not None
    try:
        funnel = funnels.get_funnel(
            session, workspace_id=scope.workspace_id, funnel_id=metric.funnel_id
        )
    except NotFound:
        raise InvalidInput(
            f"Metric {metric.key!r} refers to funnel {metric.funnel_id}, which does not exist."
        ) from None
    definition = funnels.definition_of(funnel)
    if metric.step >= len(definition.steps):
        raise InvalidInput(
            f"Metric {metric.key!r} asks for step {metric.step} of a funnel with "
            f"{len(definition.steps)} steps."
        )
    exposure_step = {
        "event": EXPOSURE_EVENT,
        "filters": [{"property": "properties.experiment", "op": "eq", "value": scope.experiment}],
    }
    steps = [s.model_dump(mode="json") for s in definition.steps[: metric.step + 1]]
    for step in steps:
        step["optional"] = False
    combined = FunnelDefinition.model_validate(
        {
            "steps": [exposure_step, *steps],
            "mode": "ordered",
            "window_seconds": definition.window_seconds,
        }
    )
    window_us = definition.window_seconds * US
    analysis = funnels.analyse(
        store,
        workspace_id=scope.workspace_id,
        definition=combined,
        span=funnels.Period(
            datetime.fromtimestamp(scope.start_us / US, tz=UTC),
            datetime.fromtimestamp(scope.end_us / US, tz=UTC),
        ),
    )
    paths = analysis.paths
    converted = np.zeros(len(exposures))
    if paths.n_persons and len(exposures):
        index = np.minimum(np.searchsorted(exposures.person, paths.person), len(exposures) - 1)
        found = exposures.person[index] == paths.person
        reached = paths.matched[:, -1]
        converted[index[found & reached]] = 1.0
    # CUPED's covariate: did the visitor do the target step's event in the window before.
    target = definition.steps[metric.step]
    rows = store.property_rows(
        PropertyScan(
            workspace_id=scope.workspace_id,
            events=(target.event,),
            start_us=scope.start_us - window_us,
            end_us=scope.end_us,
        )
    )
    before = per_visitor.window_values(
        exposures, rows.person, rows.ts, window_us=window_us, aggregate="any", before=True
    )
    return converted, before


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def compare(
    metric: MetricIn,
    control: tuple[NDArray[np.float64], NDArray[np.float64]],
    treatment: tuple[NDArray[np.float64], NDArray[np.float64]],
    *,
    variant: str,
    alpha: float,
    use_cuped: bool,
    tuning_n: float,
) -> Comparison:
    """One variant against control on one (non-ratio) metric."""
    (y_c, x_c), (y_t, x_t) = control, treatment
    binary = metric.kind == "conversion"
    cuped_used = False
    if binary:
        pc = stats.ProportionStats(n=y_c.size, successes=int(y_c.sum()))
        pt = stats.ProportionStats(n=y_t.size, successes=int(y_t.sum()))
        test = stats.two_proportions(pc, pt, alpha=alpha)
        bayes = stats.bayesian_proportions(pc, pt, alpha=alpha)
        sequential = stats.sequential(pc, pt, alpha=alpha, tuning_n=tuning_n)
    else:
        sc, st = stats.SampleStats.from_values(y_c), stats.SampleStats.from_values(y_t)
        test = stats.welch(sc, st, alpha=alpha)
        bayes = stats.bayesian_means(sc, st, alpha=alpha)
        sequential = stats.sequential(sc, st, alpha=alpha, tuning_n=tuning_n)
    if use_cuped and not binary:
        adjusted = stats.cuped(
            stats.CupedStats.from_values(y_c, x_c),
            stats.CupedStats.from_values(y_t, x_t),
            alpha=alpha,
        )
        if (
            adjusted.error is None
            and adjusted.variance_reduction is not None
            and adjusted.variance_reduction > MIN_VARIANCE_REDUCTION
        ):
            test = adjusted.test
            cuped_used = True
    return _comparison(metric, test, sequential, bayes, variant=variant, cuped=cuped_used)


def _comparison(
    metric: MetricIn,
    test: stats.TestResult,
    sequential: stats.SequentialResult,
    bayes: stats.BayesianResult | None,
    *,
    variant: str,
    cuped: bool,
) -> Comparison:
    absolute = test.absolute
    effect = absolute.value if absolute is not None else None
    worse = effect is not None and (effect < 0 if metric.direction == "increase" else effect > 0)
    seq = sequential.absolute
    chance = bayes.chance_to_beat_control if bayes is not None else None
    if chance is not None and metric.direction == "decrease":
        chance = 1.0 - chance
    loss = None
    if bayes is not None:
        # The loss of shipping the treatment, measured in the metric's good direction.
        loss = (
            bayes.expected_loss_choosing_treatment
            if metric.direction == "increase"
            else bayes.expected_loss_choosing_control
        )
    error = test.error or sequential.error
    return Comparison(
        variant=variant,
        effect=_finite_or_none(effect),
        relative_effect=_finite_or_none(test.relative.value if test.relative else None),
        ci_low=_finite_or_none(absolute.ci_lower if absolute else None),
        ci_high=_finite_or_none(absolute.ci_upper if absolute else None),
        p_value=_finite_or_none(test.p_value),
        adjusted_p_value=None,
        sequential_ci_low=_finite_or_none(seq.ci_lower if seq else None),
        sequential_ci_high=_finite_or_none(seq.ci_upper if seq else None),
        sequential_significant=sequential.significant if sequential.error is None else None,
        chance_to_beat_control=_finite_or_none(chance),
        expected_loss=_finite_or_none(loss),
        cuped=cuped,
        significant=test.significant,
        regression=bool(test.significant and worse),
        error=str(error) if error is not None else None,
    )


def _ratio_comparison(
    metric: MetricIn,
    numerators: tuple[NDArray[np.float64], NDArray[np.float64]],
    denominators: tuple[NDArray[np.float64], NDArray[np.float64]],
    *,
    variant: str,
    alpha: float,
) -> Comparison:
    control = stats.RatioStats.from_values(numerators[0], denominators[0])
    treatment = stats.RatioStats.from_values(numerators[1], denominators[1])
    test = stats.ratio(control, treatment, alpha=alpha)
    empty = stats.SequentialResult(
        control_mean=None,
        treatment_mean=None,
        absolute=None,
        relative=None,
        p_value=None,
        alpha=alpha,
        tuning_n=0.0,
        rho=0.0,
        error=stats.StatsError.INSUFFICIENT_DATA,
    )
    result = _comparison(metric, test, empty, None, variant=variant, cuped=False)
    return result.model_copy(update={"error": str(test.error) if test.error else None})


def _arm(variant: str, values: NDArray[np.float64]) -> ArmSummary:
    n = int(values.size)
    return ArmSummary(
        variant=variant,
        visitors=n,
        mean=float(values.mean()) if n else None,
        variance=float(values.var(ddof=1)) if n > 1 else None,
    )


def _ratio_arm(
    variant: str, numerator: NDArray[np.float64], denominator: NDArray[np.float64]
) -> ArmSummary:
    """A ratio metric's arm: the ratio of sums (what the comparison tests), no variance."""
    total = float(denominator.sum())
    return ArmSummary(
        variant=variant,
        visitors=int(numerator.size),
        mean=float(numerator.sum()) / total if total != 0 else None,
        variance=None,
    )


def _metric_result(
    metric: MetricIn,
    values: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]],
    *,
    variants: tuple[str, ...],
    arms: list[NDArray[np.bool_]],
    control_index: int,
    alpha: float,
    cuped: bool,
    tuning_n: float,
) -> MetricResult:
    """One metric: each arm's summary and every variant against control."""
    control = arms[control_index]
    others = [(arms[i], v) for i, v in enumerate(variants) if i != control_index]
    if metric.kind == "ratio":
        assert metric.numerator is not None
        assert metric.denominator is not None
        num, den = values[metric.numerator][0], values[metric.denominator][0]
        summaries = [_ratio_arm(v, num[a], den[a]) for v, a in zip(variants, arms, strict=True)]
        comparisons = [
            _ratio_comparison(
                metric,
                (num[control], num[arm]),
                (den[control], den[arm]),
                variant=variant,
                alpha=alpha,
            )
            for arm, variant in others
        ]
    else:
        y, x = values[metric.key]
        summaries = [_arm(v, y[a]) for v, a in zip(variants, arms, strict=True)]
        comparisons = [
            compare(
                metric,
                (y[control], x[control]),
                (y[arm], x[arm]),
                variant=variant,
                alpha=alpha,
                use_cuped=cuped,
                tuning_n=tuning_n,
            )
            for arm, variant in others
        ]
    return MetricResult(
        metric=metric.key,
        kind=metric.kind,
        guardrail=metric.guardrail,
        arms=summaries,
        comparisons=comparisons,
    )


def experiment_results(
    session: Session,
    store: EventStore,
    *,
    experiment: Experiment,
    start: datetime | None,
    end: datetime | None,
) -> ExperimentResults:
    document: dict[str, Any] = experiment.document
    end_at = as_utc(end) if end is not None else (experiment.stopped_at or utcnow())
    start_at = (
        as_utc(start)
        if start is not None
        else (experiment.started_at or experiment.created_at or end_at - timedelta(days=30))
    )
    if start_at >= end_at:
        raise InvalidInput("start must be before end.")
    variants = tuple(v["key"] for v in document["variants"])
    control_key = document.get("control") or variants[0]
    control_index = variants.index(control_key)
    alpha = float(document.get("alpha", 0.05))
    scope = Scope(
        workspace_id=experiment.workspace_id,
        experiment=experiment.key,
        variants=variants,
        start_us=_us(start_at),
        end_us=_us(end_at),
    )
    exposure_set = read_exposures(store, scope)
    exposures = exposure_set.exposures
    counts = exposures.counts()
    weights = np.asarray([v["weight"] for v in document["variants"]], dtype=np.float64)
    shares = weights / weights.sum()
    srm = stats.srm(counts, shares.tolist())
    metric_docs = [MetricIn.model_validate(m) for m in document.get("metrics", [])]
    values: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]] = {}
    for metric in metric_docs:
        if metric.kind != "ratio":
            values[metric.key] = metric_values(
                session, store, scope=scope, exposures=exposures, metric=metric
            )
    arms = [exposures.arm == i for i in range(len(variants))]
    # Fixed before the data, as the guarantee requires (tuning on the sample seen would not
    # be always valid); GrowthBook's default.
    tuning_n = float(stats.DEFAULT_TUNING_N)
    results = [
        _metric_result(
            metric,
            values,
            variants=variants,
            arms=arms,
            control_index=control_index,
            alpha=alpha,
            cuped=bool(document.get("cuped", True)),
            tuning_n=tuning_n,
        )
        for metric in metric_docs
    ]
    _adjust(results, alpha)
    return ExperimentResults(
        key=experiment.key,
        status=experiment.status,
        start=start_at,
        end=end_at,
        exposed=len(exposures),
        sample_ratio=SampleRatio(
            observed=dict(zip(variants, counts, strict=True)),
            expected_share=dict(zip(variants, shares.tolist(), strict=True)),
            p_value=_finite_or_none(srm.p_value),
            mismatch=srm.mismatch,
        ),
        metrics=results,
    )


def _adjust(results: list[MetricResult], alpha: float) -> None:
    """Holm's correction across every comparison that has a p-value (in place)."""
    slots = [(r, i) for r in results for i, c in enumerate(r.comparisons) if c.p_value is not None]
    if not slots:
        return
    adjusted = stats.holm([r.comparisons[i].p_value or 0.0 for r, i in slots], alpha=alpha)
    for (result, index), value in zip(slots, adjusted.adjusted_p_values, strict=True):
        result.comparisons[index] = result.comparisons[index].model_copy(
            update={"adjusted_p_value": float(value)}
        )


DECISION_EVENT = "$decision"
_DECISION_PROPERTIES = tuple(
    PropertyPath.parse(f"properties.{name}")
    for name in ("arm", "propensity", "context", "goal", "window_seconds", "policy")
)


def logged_decisions(
    store: EventStore, *, workspace_id: str, start_us: int, end_us: int, policy: str = "adaptation"
) -> list[ope.LoggedDecision]:
    """The adaptation decisions ``decide`` logged in ``[start_us, end_us)``, each with its
    reward: 1 when the visitor did the goal event within the goal window after it.

    Decisions whose window has not closed by ``end_us`` are left out: their reward is not
    known yet.
    """
    rows = store.property_rows(
        PropertyScan(
            workspace_id=workspace_id,
            events=(DECISION_EVENT,),
            start_us=start_us,
            end_us=end_us,
            properties=_DECISION_PROPERTIES,
        )
    )
    arm, propensity, context, goal, window, kind = rows.values
    # In time order, so a policy trained on the first part is scored on later decisions.
    keep = sorted(
        (i for i in range(len(rows)) if kind[i] == policy and arm[i] is not None),
        key=lambda i: int(rows.ts[i]),
    )
    goals = sorted({g for i in keep if (g := goal[i])})
    goal_rows = {
        name: store.property_rows(
            PropertyScan(
                workspace_id=workspace_id,
                events=(name,),
                start_us=start_us,
                end_us=end_us,
            )
        )
        for name in goals
    }
    out: list[ope.LoggedDecision] = []
    for i in keep:
        window_us = int(float(window[i] or 0) * US)
        decided = int(rows.ts[i])
        if decided + window_us > end_us:
            continue
        hits = goal_rows.get(goal[i] or "")
        reward = 0.0
        if hits is not None and len(hits):
            lo = np.searchsorted(hits.person, rows.person[i], side="left")
            hi = np.searchsorted(hits.person, rows.person[i], side="right")
            times = hits.ts[lo:hi]
            reward = float(np.any((times >= decided) & (times < decided + window_us)))
        try:
            vector = np.asarray(orjson.loads(context[i] or "null"), dtype=np.float64)
            p = float(propensity[i] or "nan")
        except (orjson.JSONDecodeError, ValueError, TypeError):
            continue
        out.append(
            ope.LoggedDecision(
                context=vector if vector.ndim == 1 and vector.size else None,
                arm=str(arm[i]),
                reward=reward,
                propensity=p,
            )
        )
    return out

"""Guarded rollouts: when to hold, advance, complete or roll back (pure).

A rollout ramps a variation through stages (1 → 5 → 10 → 25 → 50 → 100 % by default). At
every check each guardrail metric is compared between the visitors who got the variation
and those who got control at the current stage, overall and in every watched segment, with
the always-valid sequential test of :func:`nexus.experiments.stats.sequential` — so checking
as often as we like does not inflate false alarms. A significant change in a guardrail's bad
direction rolls back (the whole rollout, or just the segment where it happened); otherwise a
stage that has seen enough visitors for long enough advances.

The family of tests at one check (guardrails x (overall + segments)) shares ``alpha`` by
Bonferroni, so the chance of any false rollback over the whole rollout stays ≤ ``alpha``
per stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from nexus.experiments.stats import SampleStats, sequential

Action = Literal["hold", "advance", "complete", "rollback", "rollback_segment"]
Direction = Literal["increase", "decrease"]


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    stages: tuple[float, ...]
    min_visitors_per_stage: int
    min_seconds_per_stage: float
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if not self.stages or self.stages[-1] != 100.0:
            raise ValueError("stages must end at 100")
        if any(b <= a for a, b in zip(self.stages, self.stages[1:], strict=False)):
            raise ValueError("stages must rise strictly")


@dataclass(frozen=True, slots=True)
class GuardrailObservation:
    """One guardrail metric over one group of visitors (``segment`` None = everyone)."""

    metric: str
    direction: Direction
    control: SampleStats
    treatment: SampleStats
    segment: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str
    metric: str | None = None
    segment: str | None = None
    next_stage: float | None = None
    effect: float | None = None
    p_value: float | None = None


def is_regression(
    observation: GuardrailObservation, *, alpha: float, tuning_n: float
) -> tuple[bool, float | None, float | None]:
    """Whether the treatment is significantly worse (always-valid test), with the effect
    (treatment - control) and its always-valid p-value."""
    result = sequential(observation.control, observation.treatment, alpha=alpha, tuning_n=tuning_n)
    # A zero control mean only drops the relative estimate; the absolute one still stands.
    if result.absolute is None or result.p_value is None:
        return False, None, None
    effect = result.absolute.value
    harmful = (
        result.absolute.ci_upper < 0
        if observation.direction == "increase"
        else result.absolute.ci_lower > 0
    )
    return bool(result.significant and harmful), effect, result.p_value


def judge(
    plan: RolloutPlan,
    *,
    stage: float,
    stage_age_seconds: float,
    observations: Sequence[GuardrailObservation],
    treated_visitors: int,
    rolled_back_segments: frozenset[str] = frozenset(),
) -> Verdict:
    """The next step of a running rollout at ``stage``.

    The overall observations (``segment`` None) cover the visitors in no watched segment;
    a regression there rolls everything back. A regression inside a segment rolls back that
    segment only. Otherwise the stage ends once ``treated_visitors`` (visitors who got the
    variation at this stage) reach ``min_visitors_per_stage`` and ``min_seconds_per_stage``
    have passed.
    """
    live = [o for o in observations if o.segment is None or o.segment not in rolled_back_segments]
    family = max(1, len(live))
    alpha = plan.alpha / family
    tuning_n = max(2.0 * plan.min_visitors_per_stage, 100.0)
    ordered = sorted(live, key=lambda o: o.segment is not None)
    for observation in ordered:
        regressed, effect, p_value = is_regression(observation, alpha=alpha, tuning_n=tuning_n)
        if not regressed:
            continue
        where = "overall" if observation.segment is None else f"in segment {observation.segment!r}"
        reason = (
            f"guardrail {observation.metric!r} regressed {where} at {stage:g}%: "
            f"treatment - control = {effect:+.4g} (always-valid p = {p_value:.3g}, "
            f"alpha {alpha:.3g})"
        )
        return Verdict(
            action="rollback" if observation.segment is None else "rollback_segment",
            reason=reason,
            metric=observation.metric,
            segment=observation.segment,
            effect=effect,
            p_value=p_value,
        )
    if treated_visitors < plan.min_visitors_per_stage:
        return Verdict("hold", f"{treated_visitors} of {plan.min_visitors_per_stage} visitors seen")
    if stage_age_seconds < plan.min_seconds_per_stage:
        return Verdict(
            "hold", f"stage has run {stage_age_seconds:.0f}s of {plan.min_seconds_per_stage:.0f}s"
        )
    later = [s for s in plan.stages if s > stage]
    if not later:
        return Verdict("complete", "the last stage is done", next_stage=100.0)
    target = later[0]
    if target >= 100.0:
        return Verdict("complete", f"guardrails held at {stage:g}%; serving 100%", next_stage=100.0)
    return Verdict("advance", f"guardrails held at {stage:g}%", next_stage=target)

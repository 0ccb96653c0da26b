"""Guarded rollouts as stored objects: start one on a flag, check its guardrails, ramp it,
complete it or roll it back (all of a rollout, or one segment).

Guardrails are judged among the visitors of no watched segment (a regression there rolls
everything back) and within each watched segment (a regression there rolls back only that
segment, by a rule serving control to it ahead of the rollout's rule).

The flag itself carries the rollout: a rule with id ``rollout`` at the end of its rules
serves ``variation`` to ``stage`` % of the visitors who reach it and ``control`` to the
rest; ``decide`` logs an ``$exposure`` (experiment ``rollout:<id>``, the stage, the
segments the visitor is in) for every visitor that rule serves. A check reads those
exposures and the guardrail metrics, asks :func:`nexus.experiments.rollouts.judge`, and
applies the verdict to the flag through the flag service, so every ramp and rollback lands
in the flag's audit trail. A rollback also reaches ``notify`` (an event and the workspace's
webhook).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus.core.clock import as_utc, utcnow
from nexus.core.errors import Conflict, InvalidInput, NotFound
from nexus.core.ids import new_id
from nexus.core.logging import get_logger
from nexus.events.store import EventStore, PropertyFilter, PropertyPath
from nexus.experiments import analysis, rollouts, service
from nexus.experiments.decisions import ROLLOUT_RULE
from nexus.experiments.models import Flag, MetricIn, Rollout, RolloutCreate, RolloutRead
from nexus.experiments.stats import SampleStats
from nexus.security.service import append_entry
from nexus.storage.pagination import Page, paginate

log = get_logger("nexus.experiments.guard")
GUARD_ACTOR = "guarded-rollout"
ROLLED_BACK_RULE = ROLLOUT_RULE + "-rolled-back"
Notify = Callable[[str, dict[str, Any]], None]


def _now_iso() -> str:
    return utcnow().isoformat()


def _split(stage: float, variation: str, control: str) -> list[dict[str, Any]]:
    return [
        {"variation": variation, "weight": stage},
        {"variation": control, "weight": round(100.0 - stage, 9)},
    ]


def _without_rule(document: dict[str, Any], rule_id: str) -> list[dict[str, Any]]:
    return [r for r in document.get("rules", []) if r.get("id") != rule_id]


def create_rollout(
    session: Session, *, workspace_id: str, flag_key: str, data: RolloutCreate, actor: str
) -> Rollout:
    flag = service.get_flag(session, workspace_id=workspace_id, key=flag_key)
    document = flag.document
    variations = {v["key"] for v in document["variations"]}
    control = data.control or document["off_variation"]
    for name, value in (("variation", data.variation), ("control", control)):
        if value not in variations:
            raise InvalidInput(f"Flag {flag_key!r} has no variation {value!r} ({name}).")
    if control == data.variation:
        raise InvalidInput("The rolled-out variation and control must differ.")
    if not document.get("enabled", True):
        raise Conflict(f"Flag {flag_key!r} is switched off; switch it on before a rollout.")
    running = session.scalar(
        select(Rollout).where(
            Rollout.workspace_id == workspace_id,
            Rollout.flag_key == flag_key,
            Rollout.status == "running",
        )
    )
    if running is not None:
        raise Conflict(f"Flag {flag_key!r} already has a running rollout ({running.id}).")
    keys = [m.key for m in data.guardrails]
    if len(set(keys)) != len(keys):
        raise InvalidInput("Guardrail keys must be unique.")
    segment_keys = [s.key for s in data.segments]
    if len(set(segment_keys)) != len(segment_keys):
        raise InvalidInput("Segment keys must be unique.")
    stage = float(data.stages[0])
    rollout_id = new_id("rol")
    plan = {
        "variation": data.variation,
        "control": control,
        "stages": [float(s) for s in data.stages],
        "stage": stage,
        "stage_started_at": _now_iso(),
        "min_visitors_per_stage": data.min_visitors_per_stage,
        "min_seconds_per_stage": data.min_seconds_per_stage,
        "guardrails": [m.model_dump(mode="json") for m in data.guardrails],
        "segments": [s.model_dump(mode="json") for s in data.segments],
        "rolled_back_segments": [],
        "alpha": data.alpha,
        "history": [
            {"at": _now_iso(), "action": "started", "stage": stage, "detail": data.comment}
        ],
    }
    # A new rollout replaces what an earlier one left (its rolled-back rule).
    rules = [
        r for r in document.get("rules", []) if r.get("id") not in (ROLLOUT_RULE, ROLLED_BACK_RULE)
    ]
    rules.append(
        {
            "id": ROLLOUT_RULE,
            "clauses": [],
            "serve": {"rollout": _split(stage, data.variation, control)},
        }
    )
    service.set_flag_document(
        session,
        flag=flag,
        document={**document, "rules": rules},
        actor=actor,
        action="rollout_started",
        comment=f"rollout {rollout_id}: {data.variation} at {stage:g}%. {data.comment}".strip(),
    )
    rollout = Rollout(
        id=rollout_id,
        workspace_id=workspace_id,
        flag_key=flag_key,
        status="running",
        document=plan,
    )
    session.add(rollout)
    session.flush()
    _audit(session, rollout, actor=actor, action="rollout.created", reason=data.comment)
    return rollout


def _audit(session: Session, rollout: Rollout, *, actor: str, action: str, reason: str) -> None:
    """The rollout's step in the workspace's audit chain, beside the flag's own entry."""
    append_entry(
        session,
        workspace_id=rollout.workspace_id,
        actor=actor,
        action=action,
        target=rollout.id,
        details={
            "flag": rollout.flag_key,
            "variation": rollout.document["variation"],
            "stage": rollout.document["stage"],
            "status": rollout.status,
            "reason": reason,
        },
    )


def get_rollout(session: Session, *, workspace_id: str, rollout_id: str) -> Rollout:
    rollout = session.get(Rollout, rollout_id)
    if rollout is None or rollout.workspace_id != workspace_id:
        raise NotFound(f"No rollout {rollout_id}.")
    return rollout


def list_rollouts(
    session: Session, *, workspace_id: str, cursor: str | None, limit: int
) -> Page[Rollout]:
    stmt = select(Rollout).where(Rollout.workspace_id == workspace_id)
    return paginate(session, stmt, key=Rollout.id, cursor=cursor, limit=limit)


def running_rollouts(session: Session) -> list[Rollout]:
    """Every running rollout of every workspace (the background monitor's work list)."""
    return list(session.scalars(select(Rollout).where(Rollout.status == "running")))


def rollout_read(rollout: Rollout) -> RolloutRead:
    return RolloutRead.model_validate(
        {
            **rollout.document,
            "id": rollout.id,
            "flag_key": rollout.flag_key,
            "status": rollout.status,
            "created_at": rollout.created_at,
            "updated_at": rollout.updated_at,
        }
    )


def _observations(
    session: Session, store: EventStore, rollout: Rollout
) -> tuple[list[rollouts.GuardrailObservation], int]:
    """Each guardrail among the visitors of no watched segment (``segment`` None) and within
    each watched segment still rolled out, and how many visitors got the variation."""
    plan = rollout.document
    variation, control = plan["variation"], plan["control"]
    stage_started = datetime.fromisoformat(plan["stage_started_at"])
    segments = tuple(s["key"] for s in plan["segments"])
    scope = analysis.Scope(
        workspace_id=rollout.workspace_id,
        experiment=f"rollout:{rollout.id}",
        variants=(control, variation),
        start_us=analysis._us(stage_started) - 1_000_000,
        end_us=analysis._us(utcnow()) + 1_000_000,
        extra_filters=(
            PropertyFilter(PropertyPath.parse("properties.stage"), "eq", float(plan["stage"])),
        ),
        segment_paths=tuple(PropertyPath.parse(f"properties.segments.{s}") for s in segments),
    )
    exposure_set = analysis.read_exposures(store, scope, segments)
    exposures = exposure_set.exposures
    out: list[rollouts.GuardrailObservation] = []
    is_control = exposures.arm == 0
    in_no_segment = np.ones(len(exposures), dtype=bool)
    for name in segments:
        in_no_segment &= ~exposure_set.segments[name]
    live = [name for name in segments if name not in plan["rolled_back_segments"]]
    groups: list[tuple[str | None, NDArray[np.bool_]]] = [(None, in_no_segment)]
    groups += [(name, exposure_set.segments[name]) for name in live]
    for raw in plan["guardrails"]:
        metric = MetricIn.model_validate(raw)
        values, _ = analysis.metric_values(
            session, store, scope=scope, exposures=exposures, metric=metric
        )
        for segment, in_group in groups:
            out.append(
                rollouts.GuardrailObservation(
                    metric=metric.key,
                    direction=metric.direction,
                    control=SampleStats.from_values(values[in_group & is_control]),
                    treatment=SampleStats.from_values(values[in_group & ~is_control]),
                    segment=segment,
                )
            )
    return out, int((~is_control).sum())


def check_rollout(
    session: Session,
    store: EventStore,
    *,
    workspace_id: str,
    rollout_id: str,
    notify: Notify | None = None,
) -> Rollout:
    """Judge the rollout's current stage and act on the verdict."""
    rollout = get_rollout(session, workspace_id=workspace_id, rollout_id=rollout_id)
    if rollout.status != "running":
        return rollout
    plan = rollout.document
    stage = float(plan["stage"])
    age = (utcnow() - as_utc(datetime.fromisoformat(plan["stage_started_at"]))).total_seconds()
    observations, treated = _observations(session, store, rollout)
    verdict = rollouts.judge(
        rollouts.RolloutPlan(
            stages=tuple(float(s) for s in plan["stages"]),
            min_visitors_per_stage=int(plan["min_visitors_per_stage"]),
            min_seconds_per_stage=float(plan["min_seconds_per_stage"]),
            alpha=float(plan["alpha"]),
        ),
        stage=stage,
        stage_age_seconds=age,
        observations=observations,
        treated_visitors=treated,
        rolled_back_segments=frozenset(plan["rolled_back_segments"]),
    )
    if verdict.action == "hold":
        return rollout
    if verdict.action == "rollback":
        return rollback(
            session,
            workspace_id=workspace_id,
            rollout_id=rollout_id,
            reason=verdict.reason,
            actor=GUARD_ACTOR,
            notify=notify,
            metric=verdict.metric,
        )
    if verdict.action == "rollback_segment":
        assert verdict.segment is not None
        return _rollback_segment(session, rollout, verdict, notify)
    assert verdict.next_stage is not None
    return _advance(session, rollout, verdict)


def _flag_of(session: Session, rollout: Rollout) -> Flag:
    return service.get_flag(session, workspace_id=rollout.workspace_id, key=rollout.flag_key)


def _record(rollout: Rollout, action: str, detail: str, **changes: Any) -> None:
    plan = dict(rollout.document)
    plan.update(changes)
    plan["history"] = [
        *plan["history"],
        {"at": _now_iso(), "action": action, "stage": plan["stage"], "detail": detail},
    ]
    rollout.document = plan
    rollout.updated_at = utcnow()


def _advance(session: Session, rollout: Rollout, verdict: rollouts.Verdict) -> Rollout:
    plan = rollout.document
    flag = _flag_of(session, rollout)
    target = float(verdict.next_stage or 100.0)
    rules = _without_rule(flag.document, ROLLOUT_RULE)
    if verdict.action == "complete":
        document = {
            **flag.document,
            "rules": rules,
            "fallthrough": {"variation": plan["variation"]},
        }
        action, status = "rollout_completed", "completed"
    else:
        rules.append(
            {
                "id": ROLLOUT_RULE,
                "clauses": [],
                "serve": {"rollout": _split(target, plan["variation"], plan["control"])},
            }
        )
        document = {**flag.document, "rules": rules}
        action, status = "rollout_advanced", "running"
    service.set_flag_document(
        session,
        flag=flag,
        document=document,
        actor=GUARD_ACTOR,
        action=action,
        comment=f"rollout {rollout.id}: {verdict.reason}",
    )
    _record(
        rollout,
        "completed" if status == "completed" else "advanced",
        verdict.reason,
        stage=target,
        stage_started_at=_now_iso(),
    )
    rollout.status = status
    session.flush()
    _audit(
        session,
        rollout,
        actor=GUARD_ACTOR,
        action="rollout.completed" if status == "completed" else "rollout.advanced",
        reason=verdict.reason,
    )
    log.info("rollout advanced", rollout=rollout.id, flag=rollout.flag_key, stage=target)
    return rollout


def rollback(
    session: Session,
    *,
    workspace_id: str,
    rollout_id: str,
    reason: str,
    actor: str,
    notify: Notify | None = None,
    metric: str | None = None,
) -> Rollout:
    """Serve control to everyone the rollout reached, and say why."""
    rollout = get_rollout(session, workspace_id=workspace_id, rollout_id=rollout_id)
    if rollout.status != "running":
        raise Conflict(f"Rollout {rollout_id} is {rollout.status}, not running.")
    plan = rollout.document
    flag = _flag_of(session, rollout)
    rules = _without_rule(flag.document, ROLLOUT_RULE)
    rules.append(
        {
            "id": ROLLOUT_RULE + "-rolled-back",
            "clauses": [],
            "serve": {"variation": plan["control"]},
        }
    )
    rules = [r for i, r in enumerate(rules) if r["id"] not in {x["id"] for x in rules[:i]}]
    service.set_flag_document(
        session,
        flag=flag,
        document={**flag.document, "rules": rules},
        actor=actor,
        action="rollout_rolled_back",
        comment=f"rollout {rollout.id}: {reason}",
    )
    _record(rollout, "rolled_back", reason)
    rollout.status = "rolled_back"
    session.flush()
    _audit(session, rollout, actor=actor, action="rollout.rolled_back", reason=reason)
    log.warning("rollout rolled back", rollout=rollout.id, flag=rollout.flag_key, reason=reason)
    if notify is not None:
        notify(
            workspace_id,
            _notice(rollout, reason=reason, metric=metric, segment=None),
        )
    return rollout


def _rollback_segment(
    session: Session, rollout: Rollout, verdict: rollouts.Verdict, notify: Notify | None
) -> Rollout:
    plan = rollout.document
    segment = next(s for s in plan["segments"] if s["key"] == verdict.segment)
    flag = _flag_of(session, rollout)
    rule = {
        "id": f"rollback-{segment['key']}",
        "clauses": segment["clauses"],
        "serve": {"variation": plan["control"]},
    }
    others = [r for r in flag.document.get("rules", []) if r.get("id") != rule["id"]]
    position = next((i for i, r in enumerate(others) if r.get("id") == ROLLOUT_RULE), len(others))
    rules = [*others[:position], rule, *others[position:]]
    service.set_flag_document(
        session,
        flag=flag,
        document={**flag.document, "rules": rules},
        actor=GUARD_ACTOR,
        action="rollout_segment_rolled_back",
        comment=f"rollout {rollout.id}: {verdict.reason}",
    )
    _record(
        rollout,
        "segment_rolled_back",
        verdict.reason,
        rolled_back_segments=[*plan["rolled_back_segments"], segment["key"]],
    )
    session.flush()
    _audit(
        session,
        rollout,
        actor=GUARD_ACTOR,
        action="rollout.segment_rolled_back",
        reason=f"segment {segment['key']}: {verdict.reason}",
    )
    if notify is not None:
        notify(
            rollout.workspace_id,
            _notice(rollout, reason=verdict.reason, metric=verdict.metric, segment=segment["key"]),
        )
    return rollout


def _notice(
    rollout: Rollout, *, reason: str, metric: str | None, segment: str | None
) -> dict[str, Any]:
    return {
        "type": "rollout.rolled_back" if segment is None else "rollout.segment_rolled_back",
        "rollout_id": rollout.id,
        "flag": rollout.flag_key,
        "variation": rollout.document["variation"],
        "control": rollout.document["control"],
        "stage": rollout.document["stage"],
        "metric": metric,
        "segment": segment,
        "reason": reason,
        "at": _now_iso(),
    }

"""The decision engine's stored objects: flags (with their audit trail), experiments, UI
adaptations, decision settings, bandit states and rollouts.

Keyword-only functions over a SQLAlchemy session, as in every domain. What ``decide`` does
per request lives in :mod:`nexus.experiments.decisions`, the analysis of results in
:mod:`nexus.experiments.analysis` and guarded rollouts in :mod:`nexus.experiments.guard`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus.core.clock import utcnow
from nexus.core.errors import Conflict, FieldError, InvalidInput, NotFound
from nexus.core.ids import new_id
from nexus.experiments import flags as evaluator
from nexus.experiments.decisions import ADAPTATION_POLICY, Snapshot
from nexus.experiments.models import (
    Adaptation,
    AdaptationBody,
    AdaptationCreate,
    AdaptationRead,
    BanditState,
    DecisionSettings,
    DecisionSettingsBody,
    DecisionSettingsRead,
    Experiment,
    ExperimentBody,
    ExperimentCreate,
    ExperimentRead,
    ExperimentUpdate,
    Flag,
    FlagBody,
    FlagChange,
    FlagCreate,
    FlagRead,
    FlagUpdate,
    Rollout,
)
from nexus.security.service import append_entry
from nexus.storage.pagination import Page, paginate
from nexus.workspaces.models import Principal

LAYER_EPSILON = 1e-9


KeyedModel = TypeVar("KeyedModel", Flag, Experiment, Adaptation)


def _by_key(
    session: Session, model: type[KeyedModel], workspace_id: str, key: str
) -> KeyedModel | None:
    """A workspace's flag, experiment or adaptation by its key."""
    return session.scalar(select(model).where(model.workspace_id == workspace_id, model.key == key))


def _page(
    session: Session, model: type[KeyedModel], workspace_id: str, cursor: str | None, limit: int
) -> Page[KeyedModel]:
    stmt = select(model).where(model.workspace_id == workspace_id)
    return paginate(session, stmt, key=model.key, cursor=cursor, limit=limit)


def actor_of(principal: Principal) -> str:
    """Who to name in the audit trail: the user, else the key."""
    return principal.user_id or principal.key_id or principal.kind.value


def _changed(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    """The names of the fields that differ between two documents (values stay out of the
    audit log: the flag's own trail keeps them)."""
    old, new = before or {}, after or {}
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def _audit(
    session: Session,
    *,
    workspace_id: str,
    actor: str,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
) -> None:
    append_entry(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action=action,
        target=target,
        details=details,
    )


def _invalid(message: str, *loc: str | int) -> InvalidInput:
    return InvalidInput(message, errors=[FieldError(("body", *loc), message)])


def _validation_problem(what: str, exc: ValidationError) -> InvalidInput:
    return InvalidInput(
        f"The changed {what} is not valid: " + "; ".join(str(e["msg"]) for e in exc.errors()),
        errors=[
            FieldError(("body", *(p if isinstance(p, int) else str(p) for p in e["loc"])), e["msg"])
            for e in exc.errors()
        ],
    )


# --- flags ----------------------------------------------------------------------------------


def flag_document(key: str, body: FlagBody, *, version: int) -> dict[str, Any]:
    """The evaluator's form of a flag (the contract SDKs and OFREP evaluate)."""
    document = body.model_dump(
        mode="json", exclude={"name", "description", "comment", "key"}, exclude_none=True
    )
    # Variation values may be JSON null; everything else None is simply unset.
    document["variations"] = [v.model_dump(mode="json") for v in body.variations]
    document["key"] = key
    document["salt"] = body.salt or key
    document["version"] = version
    return document


def _checked(document: dict[str, Any]) -> evaluator.Flag:
    try:
        return evaluator.parse_flag(document)
    except evaluator.FlagDefinitionError as exc:
        raise _invalid(str(exc)) from None


def _check_prerequisites(session: Session, workspace_id: str, changed: evaluator.Flag) -> None:
    """Prerequisites must name existing flags and variations, and never form a cycle."""
    flags = {f.key: evaluator.parse_flag(f.document) for f in _all_flags(session, workspace_id)}
    flags[changed.key] = changed
    try:
        evaluator.check_prerequisites(flags.values())
    except evaluator.FlagDefinitionError as exc:
        raise _invalid(str(exc), "prerequisites") from None


def _all_flags(session: Session, workspace_id: str) -> list[Flag]:
    return list(session.scalars(select(Flag).where(Flag.workspace_id == workspace_id)))


def _record(
    session: Session,
    flag: Flag | None,
    *,
    workspace_id: str,
    flag_key: str,
    action: str,
    actor: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    comment: str = "",
) -> None:
    session.add(
        FlagChange(
            id=new_id("fch"),
            workspace_id=workspace_id,
            flag_key=flag_key,
            action=action,
            actor=actor,
            version=flag.version if flag is not None else 0,
            before=before,
            after=after,
            comment=comment,
            at=utcnow(),
        )
    )
    # The same change, in the workspace's tamper-evident chain ("flag.updated" …).
    _audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action=f"flag.{action}",
        target=flag_key,
        details={
            "version": flag.version if flag is not None else 0,
            "changed": _changed(before, after),
        },
    )


def _audit_view(flag: Flag) -> dict[str, Any]:
    return {**flag.document, "name": flag.name, "description": flag.description}


def create_flag(session: Session, *, workspace_id: str, data: FlagCreate, actor: str) -> Flag:
    if get_flag_or_none(session, workspace_id=workspace_id, key=data.key) is not None:
        raise Conflict(f"A flag with key {data.key!r} already exists.")
    document = flag_document(data.key, data, version=1)
    parsed = _checked(document)
    _check_prerequisites(session, workspace_id, parsed)
    flag = Flag(
        id=new_id("flg"),
        workspace_id=workspace_id,
        key=data.key,
        name=data.name or data.key,
        description=data.description,
        document=document,
        version=1,
    )
    session.add(flag)
    session.flush()
    _record(
        session,
        flag,
        workspace_id=workspace_id,
        flag_key=flag.key,
        action="created",
        actor=actor,
        before=None,
        after=_audit_view(flag),
        comment=data.comment,
    )
    session.flush()
    return flag


def get_flag_or_none(session: Session, *, workspace_id: str, key: str) -> Flag | None:
    return _by_key(session, Flag, workspace_id, key)


def get_flag(session: Session, *, workspace_id: str, key: str) -> Flag:
    flag = get_flag_or_none(session, workspace_id=workspace_id, key=key)
    if flag is None:
        raise NotFound(f"No flag {key!r}.")
    return flag


def list_flags(
    session: Session, *, workspace_id: str, cursor: str | None = None, limit: int = 50
) -> Page[Flag]:
    return _page(session, Flag, workspace_id, cursor, limit)


def update_flag(
    session: Session,
    *,
    workspace_id: str,
    key: str,
    data: FlagUpdate,
    actor: str,
    action: str = "updated",
) -> Flag:
    flag = get_flag(session, workspace_id=workspace_id, key=key)
    changes = data.model_dump(exclude_unset=True, mode="json")
    comment = changes.pop("comment", "")
    name = changes.pop("name", None)
    description = changes.pop("description", None)
    before = _audit_view(flag)
    if changes:
        current = {k: v for k, v in flag.document.items() if k not in ("key", "version")}
        try:
            body = FlagBody.model_validate({**current, **changes})
        except ValidationError as exc:
            raise _validation_problem("flag", exc) from None
        document = flag_document(key, body, version=flag.version + 1)
        parsed = _checked(document)
        _check_prerequisites(session, workspace_id, parsed)
        flag.document = document
    if name is not None:
        flag.name = name
    if description is not None:
        flag.description = description
    flag.version += 1
    flag.document = {**flag.document, "version": flag.version}
    flag.updated_at = utcnow()
    session.flush()
    _record(
        session,
        flag,
        workspace_id=workspace_id,
        flag_key=key,
        action=action,
        actor=actor,
        before=before,
        after=_audit_view(flag),
        comment=comment,
    )
    session.flush()
    return flag


def set_flag_document(
    session: Session,
    *,
    flag: Flag,
    document: dict[str, Any],
    actor: str,
    action: str,
    comment: str,
) -> Flag:
    """Replace a flag's evaluator document (rollouts ramp and roll back through this)."""
    before = _audit_view(flag)
    flag.version += 1
    document = {**document, "version": flag.version}
    _checked(document)
    flag.document = document
    flag.updated_at = utcnow()
    session.flush()
    _record(
        session,
        flag,
        workspace_id=flag.workspace_id,
        flag_key=flag.key,
        action=action,
        actor=actor,
        before=before,
        after=_audit_view(flag),
        comment=comment,
    )
    session.flush()
    return flag


def delete_flag(session: Session, *, workspace_id: str, key: str, actor: str) -> None:
    flag = get_flag(session, workspace_id=workspace_id, key=key)
    dependants = [
        f.key
        for f in _all_flags(session, workspace_id)
        if any(p.get("flag") == key for p in f.document.get("prerequisites", []))
    ]
    if dependants:
        raise Conflict(
            f"Flags {', '.join(sorted(dependants))} have {key!r} as a prerequisite; "
            "change them first."
        )
    _record(
        session,
        flag,
        workspace_id=workspace_id,
        flag_key=key,
        action="deleted",
        actor=actor,
        before=_audit_view(flag),
        after=None,
    )
    session.delete(flag)
    session.flush()


def flag_changes(
    session: Session, *, workspace_id: str, key: str, cursor: str | None, limit: int
) -> Page[FlagChange]:
    stmt = select(FlagChange).where(
        FlagChange.workspace_id == workspace_id, FlagChange.flag_key == key
    )
    page = paginate(session, stmt, key=FlagChange.id, cursor=cursor, limit=limit)
    if not page.items and cursor is None:
        # A deleted flag keeps its trail; a flag that never existed here has none.
        raise NotFound(f"No flag {key!r} and no changes to one.")
    return page


def flag_read(flag: Flag) -> FlagRead:
    return FlagRead.model_validate(
        {
            **flag.document,
            "id": flag.id,
            "key": flag.key,
            "name": flag.name,
            "description": flag.description,
            "version": flag.version,
            "created_at": flag.created_at,
            "updated_at": flag.updated_at,
        }
    )


def content_tag(content: bytes) -> str:
    """A short digest of ``content``, for ETags."""
    return hashlib.blake2b(content, digest_size=12).hexdigest()


def flag_definitions(session: Session, *, workspace_id: str) -> tuple[list[dict[str, Any]], str]:
    """Every flag's evaluator document and a version (an ETag) that changes with any of them."""
    documents = [f.document for f in sorted(_all_flags(session, workspace_id), key=lambda f: f.key)]
    return documents, content_tag(orjson.dumps(documents))


# --- experiments ----------------------------------------------------------------------------


def _check_experiment(body: ExperimentBody) -> None:
    variants = [v.key for v in body.variants]
    if len(set(variants)) != len(variants):
        raise _invalid("Variant keys must be unique.", "variants")
    if body.control is not None and body.control not in variants:
        raise _invalid(f"Control {body.control!r} is not one of the variants.", "control")
    metrics = [m.key for m in body.metrics]
    if len(set(metrics)) != len(metrics):
        raise _invalid("Metric keys must be unique.", "metrics")
    for index, metric in enumerate(body.metrics):
        if metric.kind == "ratio":
            for part in (metric.numerator, metric.denominator):
                if part not in metrics or part == metric.key:
                    raise _invalid(
                        f"Ratio metric {metric.key!r} refers to {part!r}, which is not another "
                        "metric of this experiment.",
                        "metrics",
                        index,
                    )
                if next(m for m in body.metrics if m.key == part).kind == "ratio":
                    raise _invalid("A ratio's parts cannot be ratios themselves.", "metrics", index)
    if body.primary_metric is not None and body.primary_metric not in metrics:
        raise _invalid(f"Primary metric {body.primary_metric!r} is not defined.", "primary_metric")
    try:
        evaluator.parse_clauses([c.model_dump(mode="json") for c in body.targeting])
    except evaluator.FlagDefinitionError as exc:
        raise _invalid(str(exc), "targeting") from None


def create_experiment(
    session: Session, *, workspace_id: str, data: ExperimentCreate, actor: str = "system"
) -> Experiment:
    _check_experiment(data)
    if _by_key(session, Experiment, workspace_id, data.key) is not None:
        raise Conflict(f"An experiment with key {data.key!r} already exists.")
    experiment = Experiment(
        id=new_id("exp"),
        workspace_id=workspace_id,
        key=data.key,
        status="draft",
        document={**data.model_dump(mode="json", exclude={"key"}), "layer_range": None},
    )
    session.add(experiment)
    session.flush()
    _audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="experiment.created",
        target=data.key,
        details={"id": experiment.id},
    )
    return experiment


def get_experiment(session: Session, *, workspace_id: str, key: str) -> Experiment:
    experiment = _by_key(session, Experiment, workspace_id, key)
    if experiment is None:
        raise NotFound(f"No experiment {key!r}.")
    return experiment


def list_experiments(
    session: Session, *, workspace_id: str, cursor: str | None = None, limit: int = 50
) -> Page[Experiment]:
    return _page(session, Experiment, workspace_id, cursor, limit)


def running_experiments(session: Session, *, workspace_id: str) -> list[Experiment]:
    return list(
        session.scalars(
            select(Experiment).where(
                Experiment.workspace_id == workspace_id, Experiment.status == "running"
            )
        )
    )


def update_experiment(
    session: Session,
    *,
    workspace_id: str,
    key: str,
    data: ExperimentUpdate,
    actor: str = "system",
) -> Experiment:
    experiment = get_experiment(session, workspace_id=workspace_id, key=key)
    changes = data.model_dump(exclude_unset=True, mode="json")
    if experiment.status == "running" and {"variants", "layer", "traffic"} & changes.keys():
        raise Conflict(
            "Variants, layer and traffic of a running experiment are fixed: changing them "
            "would move visitors between arms. Stop it and start a new one."
        )
    current = {k: v for k, v in experiment.document.items() if k != "layer_range"}
    try:
        body = ExperimentBody.model_validate({**current, **changes})
    except ValidationError as exc:
        raise _validation_problem("experiment", exc) from None
    _check_experiment(body)
    experiment.document = {
        **body.model_dump(mode="json"),
        "layer_range": experiment.document.get("layer_range"),
    }
    experiment.updated_at = utcnow()
    session.flush()
    _audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="experiment.updated",
        target=key,
        details={"changed": sorted(changes)},
    )
    return experiment


def start_experiment(
    session: Session, *, workspace_id: str, key: str, actor: str = "system"
) -> Experiment:
    """Run the experiment: claim a free slice of its layer's hash space."""
    experiment = get_experiment(session, workspace_id=workspace_id, key=key)
    if experiment.status == "running":
        return experiment
    if experiment.status == "stopped":
        raise Conflict("A stopped experiment cannot restart; create a new one.")
    layer = experiment.document["layer"]
    width = experiment.document["traffic"] / 100.0
    taken = sorted(
        tuple(e.document["layer_range"])
        for e in running_experiments(session, workspace_id=workspace_id)
        if e.document["layer"] == layer and e.document.get("layer_range")
    )
    start = _free_slot(taken, width)
    if start is None:
        free = 1.0 - sum(b - a for a, b in taken)
        raise Conflict(
            f"Layer {layer!r} has {free * 100:.1f}% of its traffic free; this experiment needs "
            f"{width * 100:.1f}%. Lower its traffic or use another layer."
        )
    experiment.document = {**experiment.document, "layer_range": [start, min(1.0, start + width)]}
    experiment.status = "running"
    experiment.started_at = utcnow()
    experiment.updated_at = experiment.started_at
    session.flush()
    _audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="experiment.started",
        target=key,
        details={"layer": layer, "layer_range": experiment.document["layer_range"]},
    )
    return experiment


def _free_slot(taken: Sequence[tuple[float, float]], width: float) -> float | None:
    """The start of the first gap of at least ``width`` in [0, 1) between ``taken`` slices."""
    cursor = 0.0
    for start, end in taken:
        if start - cursor >= width - LAYER_EPSILON:
            return cursor
        cursor = max(cursor, end)
    return cursor if 1.0 - cursor >= width - LAYER_EPSILON else None


def stop_experiment(
    session: Session, *, workspace_id: str, key: str, actor: str = "system"
) -> Experiment:
    experiment = get_experiment(session, workspace_id=workspace_id, key=key)
    if experiment.status != "running":
        raise Conflict(f"Experiment {key!r} is {experiment.status}, not running.")
    experiment.status = "stopped"
    experiment.stopped_at = utcnow()
    experiment.updated_at = experiment.stopped_at
    session.flush()
    _audit(session, workspace_id=workspace_id, actor=actor, action="experiment.stopped", target=key)
    return experiment


def delete_experiment(
    session: Session, *, workspace_id: str, key: str, actor: str = "system"
) -> None:
    experiment = get_experiment(session, workspace_id=workspace_id, key=key)
    status = experiment.status
    session.delete(experiment)
    session.flush()
    _audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="experiment.deleted",
        target=key,
        details={"status": status},
    )


def experiment_read(experiment: Experiment) -> ExperimentRead:
    return ExperimentRead.model_validate(
        {
            **experiment.document,
            "id": experiment.id,
            "key": experiment.key,
            "status": experiment.status,
            "started_at": experiment.started_at,
            "stopped_at": experiment.stopped_at,
            "created_at": experiment.created_at,
            "updated_at": experiment.updated_at,
        }
    )


# --- adaptations ----------------------------------------------------------------------------


def create_adaptation(
    session: Session, *, workspace_id: str, data: AdaptationCreate, actor: str = "system"
) -> Adaptation:
    if _by_key(session, Adaptation, workspace_id, data.key) is not None:
        raise Conflict(f"An adaptation with key {data.key!r} already exists.")
    _check_trigger(data)
    adaptation = Adaptation(
        id=new_id("uia"),
        workspace_id=workspace_id,
        key=data.key,
        document=data.model_dump(mode="json", exclude={"key"}, by_alias=True),
    )
    session.add(adaptation)
    session.flush()
    _audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="adaptation.created",
        target=data.key,
        details={"id": adaptation.id},
    )
    return adaptation


def _check_trigger(data: AdaptationBody) -> None:
    try:
        evaluator.parse_clauses([c.model_dump(mode="json") for c in data.when], where="when")
    except evaluator.FlagDefinitionError as exc:
        raise _invalid(str(exc), "when") from None


def get_adaptation(session: Session, *, workspace_id: str, key: str) -> Adaptation:
    adaptation = _by_key(session, Adaptation, workspace_id, key)
    if adaptation is None:
        raise NotFound(f"No UI adaptation {key!r}.")
    return adaptation


def list_adaptations(
    session: Session, *, workspace_id: str, cursor: str | None = None, limit: int = 50
) -> Page[Adaptation]:
    return _page(session, Adaptation, workspace_id, cursor, limit)


def all_adaptations(session: Session, *, workspace_id: str) -> list[Adaptation]:
    return list(
        session.scalars(
            select(Adaptation)
            .where(Adaptation.workspace_id == workspace_id)
            .order_by(Adaptation.key)
        )
    )


def replace_adaptation(
    session: Session,
    *,
    workspace_id: str,
    key: str,
    data: AdaptationBody,
    actor: str = "system",
) -> Adaptation:
    adaptation = get_adaptation(session, workspace_id=workspace_id, key=key)
    _check_trigger(data)
    before = adaptation.document
    adaptation.document = data.model_dump(mode="json", by_alias=True)
    adaptation.updated_at = utcnow()
    session.flush()
    _audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="adaptation.replaced",
        target=key,
        details={"changed": _changed(before, adaptation.document)},
    )
    return adaptation


def delete_adaptation(
    session: Session, *, workspace_id: str, key: str, actor: str = "system"
) -> None:
    session.delete(get_adaptation(session, workspace_id=workspace_id, key=key))
    session.flush()
    _audit(session, workspace_id=workspace_id, actor=actor, action="adaptation.deleted", target=key)


def adaptation_read(adaptation: Adaptation) -> AdaptationRead:
    return AdaptationRead.model_validate(
        {
            **adaptation.document,
            "id": adaptation.id,
            "key": adaptation.key,
            "created_at": adaptation.created_at,
            "updated_at": adaptation.updated_at,
        }
    )


# --- decision settings and bandit states ----------------------------------------------------


def get_decision_settings(session: Session, *, workspace_id: str) -> DecisionSettingsRead:
    row = session.get(DecisionSettings, workspace_id)
    if row is None:
        return DecisionSettingsRead(**DecisionSettingsBody().model_dump(), updated_at=None)
    document = dict(row.document)
    # Settings stored before repeats were refused: each attribute once, in order.
    document["context_attributes"] = list(dict.fromkeys(document.get("context_attributes", [])))
    return DecisionSettingsRead(**document, updated_at=row.updated_at)


def put_decision_settings(
    session: Session,
    *,
    workspace_id: str,
    data: DecisionSettingsBody,
    actor: str = "system",
) -> DecisionSettingsRead:
    row = session.get(DecisionSettings, workspace_id)
    document = data.model_dump(mode="json")
    before = None if row is None else row.document
    if row is None:
        row = DecisionSettings(workspace_id=workspace_id, document=document, updated_at=utcnow())
        session.add(row)
    else:
        row.document = document
        row.updated_at = utcnow()
    session.flush()
    _audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="decision_settings.updated",
        target=workspace_id,
        details={"changed": _changed(before, document)},
    )
    document = dict(row.document)
    # Settings stored before repeats were refused: each attribute once, in order.
    document["context_attributes"] = list(dict.fromkeys(document.get("context_attributes", [])))
    return DecisionSettingsRead(**document, updated_at=row.updated_at)


def load_bandit_state(session: Session, *, workspace_id: str, name: str) -> dict[str, Any] | None:
    row = session.get(BanditState, (workspace_id, name))
    return None if row is None else row.state


def save_bandit_state(
    session: Session, *, workspace_id: str, name: str, state: dict[str, Any]
) -> None:
    row = session.get(BanditState, (workspace_id, name))
    if row is None:
        session.add(
            BanditState(workspace_id=workspace_id, name=name, state=state, updated_at=utcnow())
        )
    else:
        row.state = state
        row.updated_at = utcnow()
    session.flush()


def reset_bandit_state(session: Session, *, workspace_id: str, name: str) -> None:
    row = session.get(BanditState, (workspace_id, name))
    if row is not None:
        session.delete(row)
        session.flush()


def model_dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def load_snapshot(session: Session, *, workspace_id: str) -> Snapshot:
    """What ``decide`` compiles for a workspace: flags, running experiments, adaptations,
    settings, running rollouts and the saved adaptation policy."""
    return Snapshot(
        flags=[f.document for f in _all_flags(session, workspace_id)],
        experiments=[
            (e.key, {**e.document, "id": e.id})
            for e in running_experiments(session, workspace_id=workspace_id)
            if e.document.get("layer_range")
        ],
        adaptations={
            a.key: a.document for a in all_adaptations(session, workspace_id=workspace_id)
        },
        settings=get_decision_settings(session, workspace_id=workspace_id),
        rollouts=[
            {**r.document, "id": r.id, "flag_key": r.flag_key}
            for r in session.scalars(
                select(Rollout).where(
                    Rollout.workspace_id == workspace_id, Rollout.status == "running"
                )
            )
        ],
        policy_state=load_bandit_state(session, workspace_id=workspace_id, name=ADAPTATION_POLICY),
    )

"""Evolution campaigns: create, read, steer (pause, resume, stop, pin, approve copy, promote,
roll back) and step them; the activity feed.

A campaign's search state is the :class:`~nexus.evolution.search.Evolution` of its design
space, saved as JSON in ``campaigns.state``. Servers choose designs from the state they last
loaded (:mod:`nexus.evolution.runtime`); :func:`step` -- run by the background worker, the
**asynchronous campaign mode** -- recounts each design's visitors and conversions from the
stored ``$exposure`` and goal events (so fitness is real conversion, the same in every
process and after a restart), breeds the next generation when one has had its traffic,
moves to the identification phase after the last generation, and promotes the identified
champion through a guarded rollout when the campaign says so. Every step that changes what
visitors see is written to the activity feed and the workspace's audit chain.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus.core.clock import utcnow
from nexus.core.errors import Conflict, InvalidInput, NotFound
from nexus.core.ids import new_id
from nexus.events.store import EventStore, PropertyFilter, PropertyPath, PropertyScan
from nexus.evolution.copy import Kind, PhraseLibrary, Tone, tones_for
from nexus.evolution.copy import generate as generate_copy
from nexus.evolution.design import SEGMENTS, Applied, GeneSpec, apply, space_of
from nexus.evolution.generator import CopyRequest, Generator, GeneratorDisabled
from nexus.evolution.genome import Design, DesignSpace, GenomeError
from nexus.evolution.models import (
    ACTIVE,
    SERVING,
    Activity,
    ActivityRead,
    Ancestor,
    Campaign,
    CampaignCreate,
    CampaignRead,
    CandidatesRequest,
    ChampionRead,
    CopyCandidate,
    DesignRead,
    GenerationRead,
    Interval,
    PinRequest,
    PromoteRequest,
    SearchSettings,
)
from nexus.evolution.search import ALL, Evolution, Generation, Settings
from nexus.experiments import analysis, guard
from nexus.experiments import service as experiments_service
from nexus.experiments.metrics import first_exposures
from nexus.experiments.models import FlagCreate, MetricIn, RolloutCreate, ServeIn, VariationIn
from nexus.pages import service as pages_service
from nexus.pages.blocks import Page
from nexus.security.service import append_entry
from nexus.storage.pagination import Page as ResultPage
from nexus.storage.pagination import paginate

EXPERIMENT_PREFIX = "evolution:"
ROUND = PropertyPath.parse("properties.round")
SEGMENT = PropertyPath.parse("properties.segment")
US = 1_000_000
Notify = Callable[[str, dict[str, Any]], None]


def experiment_of(campaign_id: str) -> str:
    """The ``$exposure`` experiment name of a campaign's designs."""
    return EXPERIMENT_PREFIX + campaign_id


# --- loading ----------------------------------------------------------------------------------


@dataclass
class Loaded:
    """A campaign with what its page and document make of it."""

    campaign: Campaign
    page: Page
    genes: list[GeneSpec]
    space: DesignSpace
    settings: SearchSettings
    evolution: Evolution

    def applied(self, design: Design) -> Applied:
        return apply(self.genes, self.space, self.page, design)


def _page(session: Session, workspace_id: str, funnel: str, step: str) -> Page:
    hosted = pages_service.get(session, workspace_id=workspace_id, slug=funnel)
    found = pages_service.step_page(hosted, step)
    if found is None:
        raise NotFound(f"Hosted funnel {funnel!r} has no step {step!r}.")
    return found[1]


def genes_of(document: dict[str, Any]) -> list[GeneSpec]:
    """The campaign's genes, approved copy candidates appended to their gene's values (at
    the end, so every design found so far keeps its meaning)."""
    genes = [GeneSpec.model_validate(g) for g in document["genes"]]
    extra: dict[str, list[str]] = {}
    for raw in document.get("candidates", []):
        if raw["status"] == "approved":
            extra.setdefault(raw["gene"], []).append(raw["text"])
    out = []
    for gene in genes:
        added = [t for t in extra.get(gene.name, []) if t not in gene.values]
        out.append(gene.model_copy(update={"values": [*gene.values, *added]}) if added else gene)
    return out


def search_settings(settings: SearchSettings) -> Settings:
    return Settings(
        population=settings.population,
        elite=settings.elite,
        visitors_per_generation=settings.visitors_per_generation,
        mutation_rate=settings.mutation_rate,
        segments=SEGMENTS if settings.segmented else (),
        generations=settings.generations,
        identify_top=settings.identification_candidates,
        identify_visitors=settings.identification_visitors,
    )


def _space(genes: list[GeneSpec], page: Page, document: dict[str, Any]) -> DesignSpace:
    try:
        return space_of(genes, page, exclusions=document.get("exclusions", []))
    except GenomeError as error:
        raise InvalidInput(str(error)) from None


def load(session: Session, campaign: Campaign) -> Loaded:
    page = _page(session, campaign.workspace_id, campaign.funnel, campaign.step)
    return loaded_from(campaign, page)


def loaded_from(campaign: Campaign, page: Page) -> Loaded:
    document = campaign.document
    genes = genes_of(document)
    space = _space(genes, page, document)
    settings = SearchSettings.model_validate(document["settings"])
    core = search_settings(settings)
    if campaign.state is None:
        evolution = Evolution(space, core, seed=campaign.seed)
    else:
        evolution = Evolution.from_state(space, core, campaign.state)
    return Loaded(campaign, page, genes, space, settings, evolution)


def _save(loaded: Loaded) -> None:
    loaded.campaign.state = loaded.evolution.to_state()
    loaded.campaign.updated_at = utcnow()


# --- activity and audit -------------------------------------------------------------------------


def record(
    session: Session,
    *,
    workspace_id: str,
    campaign: str | None,
    kind: str,
    message: str,
    actor: str,
    details: dict[str, Any] | None = None,
) -> Activity:
    """An activity-feed entry, and the same action in the workspace's audit chain."""
    entry = Activity(
        id=new_id("act"),
        workspace_id=workspace_id,
        campaign=campaign,
        kind=kind,
        message=message,
        details=details or {},
    )
    session.add(entry)
    append_entry(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action=f"evolution.{kind}",
        target=campaign or "",
        details={"message": message, **(details or {})},
    )
    session.flush()
    return entry


def list_activity(
    session: Session,
    *,
    workspace_id: str,
    campaign: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> ResultPage[Activity]:
    stmt = select(Activity).where(Activity.workspace_id == workspace_id)
    if campaign is not None:
        stmt = stmt.where(Activity.campaign == campaign)
    return paginate(session, stmt, key=Activity.id, cursor=cursor, limit=limit, descending=True)


def activity_read(entry: Activity) -> ActivityRead:
    return ActivityRead(
        id=entry.id,
        campaign=entry.campaign,
        kind=entry.kind,
        message=entry.message,
        details=entry.details,
        created_at=entry.created_at,
    )


# --- campaigns ------------------------------------------------------------------------------


def get(session: Session, *, workspace_id: str, key: str) -> Campaign:
    campaign = session.scalar(
        select(Campaign).where(Campaign.workspace_id == workspace_id, Campaign.key == key)
    )
    if campaign is None:
        raise NotFound(f"No evolution campaign {key!r}.")
    return campaign


def list_all(
    session: Session, *, workspace_id: str, cursor: str | None = None, limit: int = 50
) -> ResultPage[Campaign]:
    stmt = select(Campaign).where(Campaign.workspace_id == workspace_id)
    return paginate(session, stmt, key=Campaign.id, cursor=cursor, limit=limit)


def serving(session: Session, *, workspace_id: str, funnel: str, step: str) -> Campaign | None:
    """The campaign that decides this step's design, if any."""
    return session.scalar(
        select(Campaign).where(
            Campaign.workspace_id == workspace_id,
            Campaign.funnel == funnel,
            Campaign.step == step,
            Campaign.status.in_(SERVING),
        )
    )


def running(session: Session) -> list[Campaign]:
    """Every campaign the worker steps: searching, identifying or promoting."""
    return list(
        session.scalars(select(Campaign).where(Campaign.status.in_((*ACTIVE, "promoting"))))
    )


def create(session: Session, *, workspace_id: str, data: CampaignCreate, actor: str) -> Campaign:
    if (
        session.scalar(
            select(Campaign.id).where(
                Campaign.workspace_id == workspace_id, Campaign.key == data.key
            )
        )
        is not None
    ):
        raise Conflict(f"An evolution campaign {data.key!r} already exists.")
    busy = session.scalar(
        select(Campaign).where(
            Campaign.workspace_id == workspace_id,
            Campaign.funnel == data.funnel,
            Campaign.step == data.step,
            Campaign.status.not_in(("stopped", "rolled_back")),
        )
    )
    if busy is not None:
        raise Conflict(
            f"Campaign {busy.key!r} already evolves {data.funnel}/{data.step}; stop it first."
        )
    page = _page(session, workspace_id, data.funnel, data.step)
    document = data.model_dump(mode="json", exclude={"key", "funnel", "step", "seed"})
    document["candidates"] = []
    genes = genes_of(document)
    space = _space(genes, page, document)
    if space.size < 2:
        raise InvalidInput("The genes allow a single design: there is nothing to evolve.")
    seed = data.seed if data.seed is not None else secrets.randbelow(2**31)
    campaign = Campaign(
        id=new_id("evo"),
        workspace_id=workspace_id,
        key=data.key,
        funnel=data.funnel,
        step=data.step,
        status="running",
        document=document,
        seed=seed,
    )
    loaded = Loaded(
        campaign,
        page,
        genes,
        space,
        data.settings,
        Evolution(space, search_settings(data.settings), seed=seed),
    )
    _save(loaded)
    session.add(campaign)
    session.flush()
    record(
        session,
        workspace_id=workspace_id,
        campaign=data.key,
        kind="started",
        message=(
            f"Evolution of {data.funnel}/{data.step} started: {len(genes)} genes, "
            f"{space.size:,} designs, {data.settings.population} per generation."
        ),
        actor=actor,
        details={"designs": space.size, "seed": seed},
    )
    return campaign


def _design_read(
    loaded: Loaded, generation: Generation, design: Design, segment: str = ALL
) -> DesignRead:
    """A design in a generation: that generation's visitors and conversions with their
    Wilson interval, and the posterior mean conversion over everything known."""
    arm = generation.arm(segment, design)
    low, high = arm.interval()
    parents = generation.parents.get(design, ())
    return DesignRead(
        key=DesignSpace.key(design),
        values=loaded.space.describe(design),
        visitors=arm.trials,
        conversions=arm.conversions,
        conversion=round(loaded.evolution.fitness(segment, design), 6),
        interval=Interval(low=round(low, 6), high=round(high, 6)),
        parents=[DesignSpace.key(p) for p in parents if p != design],
        elite=parents == (design,) and generation.number > 0,
    )


def generations(loaded: Loaded, segment: str = ALL) -> list[GenerationRead]:
    """Every generation with its designs' fitness (the genealogy)."""
    evolution = loaded.evolution
    out = []
    for generation in evolution.history:
        ranked = evolution.ranking(segment, generation)
        designs = [_design_read(loaded, generation, d, segment) for d in ranked]
        out.append(
            GenerationRead(
                number=generation.number,
                phase=generation.phase,
                visitors=generation.visitors,
                designs=designs,
                best=designs[0] if generation.visitors else None,
            )
        )
    return out


def champions(loaded: Loaded) -> list[ChampionRead]:
    """Each segment's champion (everyone's first) with its evidence over every generation
    and its probability of being the best of the designs it is compared with."""
    evolution = loaded.evolution
    out = []
    for key in evolution.keys:
        champion = evolution.champion(key)
        pooled = champion.pooled
        low, high = pooled.interval()
        design = champion.design
        out.append(
            ChampionRead(
                segment=key,
                design=DesignRead(
                    key=DesignSpace.key(design),
                    values=loaded.space.describe(design),
                    visitors=pooled.trials,
                    conversions=pooled.conversions,
                    conversion=round(champion.mean, 6),
                    interval=Interval(low=round(low, 6), high=round(high, 6)),
                ),
                probability_best=round(champion.probability_best, 4),
                lineage=[
                    Ancestor(
                        generation=number,
                        design=DesignSpace.key(ancestor),
                        values=loaded.space.describe(ancestor),
                        parents=[DesignSpace.key(p) for p in parents],
                    )
                    for number, ancestor, parents in evolution.lineage(design)
                ],
            )
        )
    return out


def read(loaded: Loaded) -> CampaignRead:
    campaign, evolution = loaded.campaign, loaded.evolution
    document = campaign.document
    return CampaignRead.model_validate(
        {
            "id": campaign.id,
            "key": campaign.key,
            "funnel": campaign.funnel,
            "step": campaign.step,
            "status": campaign.status,
            "phase": evolution.phase,
            "generation": evolution.current.number,
            "generations": loaded.settings.generations,
            "space_size": loaded.space.size,
            "visitors": sum(g.visitors for g in evolution.history),
            "champions": champions(loaded),
            "genes": loaded.genes,
            "settings": loaded.settings,
            "promotion": document["promotion"],
            "flag_key": campaign.flag_key,
            "rollout_id": campaign.rollout_id,
            "candidates": document.get("candidates", []),
            "created_at": campaign.created_at,
            "updated_at": campaign.updated_at,
        }
    )


# --- steering ---------------------------------------------------------------------------------


def _transition(
    session: Session,
    campaign: Campaign,
    *,
    to: str,
    allowed: tuple[str, ...],
    actor: str,
    kind: str,
    message: str,
    comment: str = "",
) -> Campaign:
    if campaign.status not in allowed:
        raise Conflict(f"Campaign {campaign.key!r} is {campaign.status}; it cannot be {kind}.")
    before = campaign.status
    campaign.status = to
    campaign.updated_at = utcnow()
    record(
        session,
        workspace_id=campaign.workspace_id,
        campaign=campaign.key,
        kind=kind,
        message=message + (f" {comment}" if comment else ""),
        actor=actor,
        details={"from": before, "to": to},
    )
    return campaign


def pause(session: Session, campaign: Campaign, *, actor: str, comment: str = "") -> Campaign:
    campaign.document = {**campaign.document, "paused_from": campaign.status}
    return _transition(
        session,
        campaign,
        to="paused",
        allowed=(*ACTIVE, "identified"),
        actor=actor,
        kind="paused",
        message=f"Evolution of {campaign.funnel}/{campaign.step} paused by {actor}; "
        "visitors see the page as it is.",
        comment=comment,
    )


def resume(session: Session, campaign: Campaign, *, actor: str, comment: str = "") -> Campaign:
    back = str(campaign.document.get("paused_from", "running"))
    return _transition(
        session,
        campaign,
        to=back,
        allowed=("paused",),
        actor=actor,
        kind="resumed",
        message=f"Evolution of {campaign.funnel}/{campaign.step} resumed by {actor}.",
        comment=comment,
    )


def stop(session: Session, campaign: Campaign, *, actor: str, comment: str = "") -> Campaign:
    if campaign.status == "promoting" and campaign.rollout_id:
        guard.rollback(
            session,
            workspace_id=campaign.workspace_id,
            rollout_id=campaign.rollout_id,
            actor=actor,
            reason=f"evolution campaign {campaign.key} stopped",
        )
    return _transition(
        session,
        campaign,
        to="stopped",
        allowed=("running", "identifying", "identified", "paused", "promoting", "rolled_back"),
        actor=actor,
        kind="stopped",
        message=f"Evolution of {campaign.funnel}/{campaign.step} stopped by {actor}.",
        comment=comment,
    )


def pin(session: Session, campaign: Campaign, data: PinRequest, *, actor: str) -> Loaded:
    """Pin a gene to one value (every design of the current generation takes it) or unpin."""
    if campaign.status in ("promoting", "promoted", "stopped"):
        raise Conflict(f"Campaign {campaign.key!r} is {campaign.status}; genes are settled.")
    loaded = load(session, campaign)
    genes = list(campaign.document["genes"])
    index = next((i for i, g in enumerate(genes) if g["name"] == data.gene), None)
    if index is None:
        raise NotFound(f"Campaign {campaign.key!r} has no gene {data.gene!r}.")
    values = next(g.values for g in loaded.space.genes if g.name == data.gene)
    if data.value is not None and data.value not in values:
        raise InvalidInput(f"Gene {data.gene!r} has no value {data.value!r}.")
    genes[index] = {**genes[index], "pinned": data.value}
    document = {**campaign.document, "genes": genes}
    page = loaded.page
    new_space = _space(genes_of(document), page, document)
    evolution = loaded.evolution
    gene_index = [g.name for g in new_space.genes].index(data.gene)
    if data.value is not None:
        value_index = values.index(data.value)
        current = evolution.current
        kept: list[Design] = []
        for design in current.designs:
            moved = (*design[:gene_index], value_index, *design[gene_index + 1 :])
            if new_space.valid(moved) and moved not in kept:
                kept.append(moved)
        while len(kept) < 2 and len(kept) < new_space.size:
            fresh = new_space.random(evolution.rng)
            if fresh not in kept:
                kept.append(fresh)
        current.designs = kept
        current.parents = {d: current.parents.get(d, ()) for d in kept}
    campaign.document = document
    loaded = loaded_from_state(campaign, page, evolution.to_state())
    _save(loaded)
    what = f"pinned to {data.value!r}" if data.value is not None else "unpinned"
    record(
        session,
        workspace_id=campaign.workspace_id,
        campaign=campaign.key,
        kind="pinned",
        message=f"Gene {data.gene!r} {what} by {actor}."
        + (f" {data.comment}" if data.comment else ""),
        actor=actor,
        details={"gene": data.gene, "value": data.value},
    )
    return loaded


def loaded_from_state(campaign: Campaign, page: Page, state: dict[str, Any]) -> Loaded:
    campaign.state = state
    return loaded_from(campaign, page)


def _copy_kind(gene: dict[str, Any], page: Page) -> Kind:
    """What kind of copy a copy gene holds: a headline, a call to action, or body text."""
    block = next(b for b in page.blocks if b.id == gene["target"]["block"])
    if block.kind == "headline":
        return "headline"
    if block.kind == "cta" or gene["target"]["field"] in ("label", "submit_label", "cta_label"):
        return "cta"
    return "body"


def _tone(data: CandidatesRequest) -> Tone:
    if data.tone is not None:
        return data.tone
    if data.segment is not None:
        return tones_for(data.segment)[0]
    raise InvalidInput("Say which tone to write in (tone) or for which segment (segment).")


def propose(
    session: Session,
    campaign: Campaign,
    data: CandidatesRequest,
    *,
    actor: str,
    generator: Generator | None = None,
    require_approval: bool = True,
) -> list[CopyCandidate]:
    """New values for a copy gene. ``person``: the texts given, approved as they are (the
    person is the approver). ``grammar``: ``count`` texts the campaign's phrase library
    makes in the tone, approved (they are built from approved phrases). ``generator``:
    texts the deployment's copy generator writes, pending approval unless
    ``require_approval`` is off. Approved texts are tried from the next generation on."""
    gene = next((g for g in campaign.document["genes"] if g["name"] == data.gene), None)
    if gene is None:
        raise NotFound(f"Campaign {campaign.key!r} has no gene {data.gene!r}.")
    if gene["target"]["kind"] != "copy":
        raise InvalidInput(f"Gene {data.gene!r} is not a copy gene.")
    if data.source == "person":
        if not data.texts:
            raise InvalidInput("Give the texts to propose.")
        return add_candidates(session, campaign, data, actor=actor, source="person", approved=True)
    if data.texts:
        raise InvalidInput(f"{data.source} candidates are written for you: give no texts.")
    page = _page(session, campaign.workspace_id, campaign.funnel, campaign.step)
    kind, tone = _copy_kind(gene, page), _tone(data)
    if data.source == "grammar":
        phrases = campaign.document.get("phrases")
        if not phrases:
            raise Conflict(f"Campaign {campaign.key!r} has no phrase library to write from.")
        library = PhraseLibrary.from_dict(phrases)
        rng = random.Random(f"{campaign.seed}:{len(campaign.document.get('candidates', []))}")  # noqa: S311
        made = generate_copy(library, kind, tone, count=data.count, rng=rng)
        texts = [c.text for c in made]
        approved = True
    else:
        if generator is None:
            raise GeneratorDisabled(
                "No copy generator is configured (NEXUS_COPY_GENERATOR_URL); "
                "use the phrase grammar or write the texts."
            )
        request = CopyRequest(
            kind=kind,
            tone=tone,
            count=data.count,
            product=campaign.document.get("product", ""),
            examples=tuple(gene["values"][:5]),
        )
        made = generator.generate(request)
        texts = [c.text for c in made]
        approved = not require_approval
    if not texts:
        raise Conflict(f"No new {tone} {kind} copy could be written; add phrases or templates.")
    request_texts = data.model_copy(update={"texts": texts, "tone": tone})
    return add_candidates(
        session, campaign, request_texts, actor=actor, source=data.source, approved=approved
    )


def add_candidates(
    session: Session,
    campaign: Campaign,
    data: CandidatesRequest,
    *,
    actor: str,
    source: str,
    approved: bool = False,
) -> list[CopyCandidate]:
    """Offer new texts for a copy gene; unless ``approved`` they wait for approval."""
    gene = next((g for g in campaign.document["genes"] if g["name"] == data.gene), None)
    if gene is None:
        raise NotFound(f"Campaign {campaign.key!r} has no gene {data.gene!r}.")
    if gene["target"]["kind"] != "copy":
        raise InvalidInput(f"Gene {data.gene!r} is not a copy gene.")
    page = _page(session, campaign.workspace_id, campaign.funnel, campaign.step)
    existing = campaign.document.get("candidates", [])
    known = {c["text"] for c in existing if c["gene"] == data.gene} | set(gene["values"])
    added: list[CopyCandidate] = []
    for text in data.texts:
        if text in known:
            continue
        probe = GeneSpec.model_validate({**gene, "values": [text], "pinned": None})
        try:
            space_of([probe], page)
        except GenomeError as error:
            raise InvalidInput(str(error)) from None
        known.add(text)
        added.append(
            CopyCandidate(
                id=new_id("cpy"),
                gene=data.gene,
                text=text,
                tone=data.tone,
                source=source,
                status="approved" if approved else "pending",
            )
        )
    if added:
        campaign.document = {
            **campaign.document,
            "candidates": [*existing, *(c.model_dump(mode="json") for c in added)],
        }
        record(
            session,
            workspace_id=campaign.workspace_id,
            campaign=campaign.key,
            kind="copy_proposed",
            message=f"{len(added)} copy candidate(s) for {data.gene!r} "
            + ("added by " + actor + "." if approved else "await approval."),
            actor=actor,
            details={"gene": data.gene, "candidates": [c.id for c in added]},
        )
    return added


def decide_candidate(
    session: Session, campaign: Campaign, candidate_id: str, *, approve: bool, actor: str
) -> CopyCandidate:
    candidates = [dict(c) for c in campaign.document.get("candidates", [])]
    found = next((c for c in candidates if c["id"] == candidate_id), None)
    if found is None:
        raise NotFound(f"Campaign {campaign.key!r} has no candidate {candidate_id!r}.")
    if found["status"] != "pending":
        raise Conflict(f"Candidate {candidate_id} is already {found['status']}.")
    found["status"] = "approved" if approve else "rejected"
    campaign.document = {**campaign.document, "candidates": candidates}
    campaign.updated_at = utcnow()
    verb = "approved" if approve else "rejected"
    record(
        session,
        workspace_id=campaign.workspace_id,
        campaign=campaign.key,
        kind=f"copy_{verb}",
        message=f"Copy for {found['gene']!r} {verb} by {actor}: {found['text'][:80]!r}.",
        actor=actor,
        details={"candidate": candidate_id, "gene": found["gene"]},
    )
    return CopyCandidate.model_validate(found)


# --- promotion ----------------------------------------------------------------------------------


def flag_key_of(campaign: Campaign) -> str:
    return f"evolution-{campaign.key}"[:100]


def promote(session: Session, campaign: Campaign, data: PromoteRequest, *, actor: str) -> Campaign:
    """Start the guarded rollout of the champion (or of ``data.design``): a flag whose
    ``champion`` variation serves the design, ramped by stages while the goal conversion is
    watched; a regression rolls it back by itself."""
    if campaign.status not in ("running", "identifying", "identified", "paused", "rolled_back"):
        raise Conflict(f"Campaign {campaign.key!r} is {campaign.status}; it cannot be promoted.")
    loaded = load(session, campaign)
    if data.design is not None:
        try:
            design = tuple(int(x) for x in data.design.removeprefix("d-").split("-"))
            loaded.space.check(design)
        except (ValueError, GenomeError):
            raise InvalidInput(f"{data.design!r} is not a design of this campaign.") from None
        if not any(design in g.designs for g in loaded.evolution.history):
            raise InvalidInput(f"Design {data.design} was never measured by this campaign.")
    else:
        design, arm = loaded.evolution.best()
        if arm.trials == 0:
            raise Conflict("No design has been measured yet: there is no champion to promote.")
    hosted = pages_service.get(session, workspace_id=campaign.workspace_id, slug=campaign.funnel)
    goal = pages_service.body_of(hosted).goal_event
    if goal is None:
        raise Conflict("The hosted funnel has no goal event to guard the rollout with.")
    key = flag_key_of(campaign)
    design_key = DesignSpace.key(design)
    variations = [
        VariationIn(key="control", value="page"),
        VariationIn(key="champion", value=design_key),
    ]
    flag = experiments_service.get_flag_or_none(
        session, workspace_id=campaign.workspace_id, key=key
    )
    if flag is None:
        experiments_service.create_flag(
            session,
            workspace_id=campaign.workspace_id,
            data=FlagCreate(
                key=key,
                name=f"Evolution {campaign.key}",
                kind="multivariate",
                variations=variations,
                off_variation="control",
                fallthrough=ServeIn(variation="control"),
                description=f"Promotes evolution campaign {campaign.key}'s champion.",
            ),
            actor=actor,
        )
    else:
        experiments_service.set_flag_document(
            session,
            flag=flag,
            document={
                **flag.document,
                "variations": [v.model_dump(mode="json") for v in variations],
                "enabled": True,
            },
            actor=actor,
            action="updated",
            comment=f"evolution campaign {campaign.key}: promoting {design_key}",
        )
    promotion = campaign.document["promotion"]
    rollout = guard.create_rollout(
        session,
        workspace_id=campaign.workspace_id,
        flag_key=key,
        data=RolloutCreate(
            variation="champion",
            control="control",
            stages=promotion["stages"],
            min_visitors_per_stage=promotion["min_visitors_per_stage"],
            guardrails=[
                MetricIn(
                    key="goal",
                    kind="conversion",
                    event=goal,
                    guardrail=True,
                    window_seconds=campaign.document["settings"]["goal_window_seconds"],
                )
            ],
            comment=f"evolution campaign {campaign.key}: {design_key}",
        ),
        actor=actor,
    )
    campaign.flag_key = key
    campaign.rollout_id = rollout.id
    # With fitness per emotional segment, each segment is promoted its own champion.
    segments = {
        segment: list(loaded.evolution.champion(segment).design)
        for segment in loaded.evolution.settings.segments
        if data.design is None
    }
    campaign.document = {
        **campaign.document,
        "promoted_design": list(design),
        "promoted_segments": segments,
    }
    _transition(
        session,
        campaign,
        to="promoting",
        allowed=(campaign.status,),
        actor=actor,
        kind="promoting",
        message=(
            f"Design {design_key} ({_describe(loaded.space, design)}) is being rolled out "
            f"to {campaign.funnel}/{campaign.step} in stages {promotion['stages']} %, guarded "
            f"by {goal!r} conversion (rollout {rollout.id})."
        ),
        comment=data.comment,
    )
    return campaign


def _describe(space: DesignSpace, design: Design) -> str:
    return ", ".join(f"{k}={v[:30]}" for k, v in space.describe(design).items())


def rollback(session: Session, campaign: Campaign, *, actor: str, comment: str = "") -> Campaign:
    """Roll the promoted champion back: every visitor sees the page as it was."""
    if campaign.status not in ("promoting", "promoted") or campaign.rollout_id is None:
        raise Conflict(f"Campaign {campaign.key!r} is {campaign.status}; nothing to roll back.")
    rollout = guard.get_rollout(
        session, workspace_id=campaign.workspace_id, rollout_id=campaign.rollout_id
    )
    if rollout.status == "running":
        guard.rollback(
            session,
            workspace_id=campaign.workspace_id,
            rollout_id=rollout.id,
            actor=actor,
            reason=comment or f"evolution campaign {campaign.key} rolled back",
        )
    elif campaign.flag_key:
        flag = experiments_service.get_flag(
            session, workspace_id=campaign.workspace_id, key=campaign.flag_key
        )
        experiments_service.set_flag_document(
            session,
            flag=flag,
            document={**flag.document, "enabled": False},
            actor=actor,
            action="updated",
            comment=f"evolution campaign {campaign.key} rolled back",
        )
    return _transition(
        session,
        campaign,
        to="rolled_back",
        allowed=("promoting", "promoted"),
        actor=actor,
        kind="rolled_back",
        message=f"The champion of {campaign.funnel}/{campaign.step} was rolled back by {actor}.",
        comment=comment,
    )


def promoted_design(campaign: Campaign) -> Design | None:
    raw = campaign.document.get("promoted_design")
    return tuple(int(x) for x in raw) if raw else None


# --- the asynchronous step ----------------------------------------------------------------------


def _counts(
    session: Session, store: EventStore, loaded: Loaded, round_name: str, designs: list[Design]
) -> dict[tuple[str, Design], tuple[int, int]]:
    """Per (segment, design): visitors first exposed to it in this round, and how many of
    them did the goal event within the window after exposure."""
    campaign = loaded.campaign
    hosted = pages_service.get(session, workspace_id=campaign.workspace_id, slug=campaign.funnel)
    goal = pages_service.body_of(hosted).goal_event
    keys = tuple(DesignSpace.key(d) for d in designs)
    start_us = int(campaign.created_at.timestamp() * US) - US
    end_us = int(utcnow().timestamp() * US) + US
    rows = store.property_rows(
        PropertyScan(
            workspace_id=campaign.workspace_id,
            events=(analysis.EXPOSURE_EVENT,),
            start_us=start_us,
            end_us=end_us,
            properties=(analysis.VARIANT, SEGMENT),
            filters=(
                PropertyFilter(analysis.EXPERIMENT, "eq", experiment_of(campaign.id)),
                PropertyFilter(ROUND, "eq", round_name),
            ),
        )
    )
    exposures = first_exposures(rows.person, rows.ts, rows.values[0], keys)
    if len(exposures) == 0:
        return {}
    if goal is not None:
        scope = analysis.Scope(
            workspace_id=campaign.workspace_id,
            experiment=experiment_of(campaign.id),
            variants=keys,
            start_us=start_us,
            end_us=end_us,
        )
        metric = MetricIn(
            key="goal",
            kind="conversion",
            event=goal,
            window_seconds=loaded.settings.goal_window_seconds,
        )
        after, _before = analysis.metric_values(
            session, store, scope=scope, exposures=exposures, metric=metric
        )
        converted = after > 0
    else:
        converted = np.zeros(len(exposures), dtype=bool)
    out: dict[tuple[str, Design], tuple[int, int]] = {}
    segmented = bool(loaded.evolution.settings.segments)
    if segmented:
        # The segment of a visitor's first exposure row of the round.
        people, first_rows = np.unique(rows.person, return_index=True)
        segment_of = {
            int(p): rows.values[1][i] or "neutral" for p, i in zip(people, first_rows, strict=True)
        }
    for index, design in enumerate(designs):
        mask = exposures.arm == index
        out[(ALL, design)] = (int(mask.sum()), int((converted & mask).sum()))
        if segmented:
            persons = exposures.person[mask]
            hits = converted[mask]
            for segment in loaded.evolution.settings.segments:
                chosen = np.fromiter(
                    (segment_of.get(int(p)) == segment for p in persons),
                    dtype=bool,
                    count=persons.size,
                )
                out[(segment, design)] = (int(chosen.sum()), int((hits & chosen).sum()))
    return out


def round_name(evolution: Evolution) -> str:
    """The ``round`` property of the exposures served now: ``g<N>``, the generation (the
    identification phase is a generation of its own)."""
    return f"g{evolution.current.number}"


def _notify(notify: Notify | None, campaign: Campaign) -> None:
    if notify is not None:
        notify(
            campaign.workspace_id,
            {
                "type": "evolution",
                "campaign": campaign.key,
                "funnel": campaign.funnel,
                "step": campaign.step,
                "status": campaign.status,
            },
        )


def step(
    session: Session,
    store: EventStore,
    campaign: Campaign,
    *,
    notify: Notify | None = None,
) -> bool:
    """One asynchronous pass of a campaign: recount the current generation's fitness from
    stored events, and breed, identify or finish when it has had its visitors. Returns
    whether what visitors are served changed."""
    if campaign.status == "promoting":
        return _follow_rollout(session, campaign, notify=notify)
    if campaign.status not in ACTIVE:
        return False
    loaded = load(session, campaign)
    evolution = loaded.evolution
    if evolution.phase == "done":
        return False
    current = evolution.current
    counts = _counts(session, store, loaded, round_name(evolution), list(current.designs))
    for (segment, design), (trials, conversions) in counts.items():
        evolution.set_counts(current.number, segment, design, trials, conversions)
    changed = False
    if evolution.generation_done():
        changed = True
        done = evolution.current
        best = evolution.ranking(ALL, done)[0]
        arm = done.arm(ALL, best)
        low, high = arm.interval()
        evolution.advance()
        phase: str = evolution.phase  # advancing may end the search
        if phase == "done":
            campaign.status = "identified"
            what = "the champion is identified"
        elif evolution.current.phase == "identify":
            campaign.status = "identifying"
            what = f"the best {len(evolution.current.designs)} designs are now told apart"
        else:
            what = f"generation {evolution.current.number + 1} bred"
        label = "Identification" if done.phase == "identify" else f"Generation {done.number + 1}"
        record(
            session,
            workspace_id=campaign.workspace_id,
            campaign=campaign.key,
            kind="generation",
            message=(
                f"{label} of {campaign.funnel}/{campaign.step} measured on "
                f"{done.visitors:,} visitors: best {DesignSpace.key(best)} converted "
                f"{arm.conversions}/{arm.trials} (95 % interval {low:.1%} to {high:.1%}); {what}."
            ),
            actor="evolution",
            details={
                "generation": done.number,
                "phase": done.phase,
                "best": DesignSpace.key(best),
                "visitors": arm.trials,
                "conversions": arm.conversions,
                "interval": [round(low, 6), round(high, 6)],
            },
        )
    if changed and campaign.status == "identified":
        champion = evolution.champion(ALL)
        low, high = champion.pooled.interval()
        record(
            session,
            workspace_id=campaign.workspace_id,
            campaign=campaign.key,
            kind="identified",
            message=(
                f"Champion of {campaign.funnel}/{campaign.step}: "
                f"{DesignSpace.key(champion.design)} ({_describe(loaded.space, champion.design)})"
                f", conversion {champion.mean:.1%} (95 % interval {low:.1%} to {high:.1%}), "
                f"probability best {champion.probability_best:.0%}."
            ),
            actor="evolution",
            details={
                "design": DesignSpace.key(champion.design),
                "probability_best": champion.probability_best,
            },
        )
    _save(loaded)
    if changed and campaign.status == "identified" and campaign.document["promotion"]["automatic"]:
        promote(session, campaign, PromoteRequest(), actor="evolution")
    if changed:
        _notify(notify, campaign)
    return changed


def _follow_rollout(session: Session, campaign: Campaign, *, notify: Notify | None) -> bool:
    if campaign.rollout_id is None:
        return False
    rollout = guard.get_rollout(
        session, workspace_id=campaign.workspace_id, rollout_id=campaign.rollout_id
    )
    if rollout.status == "completed":
        campaign.status = "promoted"
        message = f"The champion of {campaign.funnel}/{campaign.step} passed every stage: promoted."
    elif rollout.status == "rolled_back":
        campaign.status = "rolled_back"
        message = (
            f"The champion of {campaign.funnel}/{campaign.step} was rolled back by its "
            "guardrails; visitors see the page as it was."
        )
    else:
        return False
    campaign.updated_at = utcnow()
    record(
        session,
        workspace_id=campaign.workspace_id,
        campaign=campaign.key,
        kind=campaign.status,
        message=message,
        actor="evolution",
        details={"rollout": rollout.id},
    )
    _notify(notify, campaign)
    return True

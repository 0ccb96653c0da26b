"""``nexus evolve start|status|stop|pause|resume|promote``: evolution campaigns from the
command line.

Commands act on the metadata database, as the API does; a running server serves the change
within seconds (its campaign cache lives :data:`nexus.evolution.runtime.TTL_SECONDS`), and
its worker keeps stepping the campaign. ``start`` reads a campaign document (the body of
``POST /v1/evolution/campaigns``) from a JSON file, or ``-`` for stdin.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from nexus.cli.funnels import JsonOption, WorkspaceOption, _database, _workspace
from nexus.cli.output import console, fail, print_json, print_table
from nexus.core.errors import NexusError
from nexus.core.settings import Settings

if TYPE_CHECKING:
    from nexus.evolution.models import CampaignCreate, CampaignRead

evolve_app = typer.Typer(
    help="Evolution campaigns: evolve a hosted step page on live traffic.", no_args_is_help=True
)
KeyArgument = Annotated[str, typer.Argument(help="The campaign's key.")]
CommentOption = Annotated[str, typer.Option(help="Why; kept in the activity feed and audit.")]
ACTOR = "cli"


def _read_document(path: str) -> CampaignCreate:
    from nexus.evolution.models import CampaignCreate  # noqa: PLC0415 - the CLI starts fast

    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", 2)
    try:
        return CampaignCreate.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        fail(f"{path} is not JSON: {exc.msg} (line {exc.lineno})", 2)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "document"
        fail(f"invalid campaign: {where}: {error['msg']}", 2)
    raise AssertionError("unreachable")


def _show(read: CampaignRead) -> None:
    console.print(
        f"[bold]{read.key}[/bold] evolves {read.funnel}/{read.step}: {read.status}, "
        f"phase {read.phase}, generation {read.generation + 1} of {read.generations}, "
        f"{read.space_size:,} designs, {read.visitors:,} visitors measured"
    )
    rows = []
    for champion in read.champions:
        design = champion.design
        rows.append(
            (
                champion.segment,
                design.key,
                ", ".join(f"{k}={v[:24]}" for k, v in design.values.items()),
                design.visitors,
                f"{design.conversion:.2%}",
                f"{design.interval.low:.2%} to {design.interval.high:.2%}",
                "" if champion.probability_best is None else f"{champion.probability_best:.0%}",
            )
        )
    print_table(
        "Champions",
        ["segment", "design", "genes", "visitors", "conversion", "95 % interval", "P(best)"],
        rows,
    )


@evolve_app.command("start")
def evolve_start(
    document: Annotated[str, typer.Argument(help="Campaign JSON file, or - for stdin.")],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a campaign from a JSON document (key, funnel, step, genes, settings …)."""
    data = _read_document(document)
    from nexus.evolution import service  # noqa: PLC0415 - the CLI starts fast

    database = _database(Settings())
    try:
        workspace_id = _workspace(database, workspace)
        with database.session() as db:
            campaign = service.create(db, workspace_id=workspace_id, data=data, actor=ACTOR)
            read = service.read(service.load(db, campaign))
    except NexusError as exc:
        fail(exc.detail)
    finally:
        database.dispose()
    if as_json:
        print_json(read.model_dump(mode="json"))
        return
    console.print(f"started {read.key} ({read.id}) with seed {campaign.seed}")
    _show(read)


@evolve_app.command("status")
def evolve_status(
    key: Annotated[str | None, typer.Argument(help="One campaign (default: all).")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Campaigns with their phase and champions."""
    from nexus.evolution import service  # noqa: PLC0415 - the CLI starts fast

    database = _database(Settings())
    try:
        workspace_id = _workspace(database, workspace)
        with database.session() as db:
            if key is not None:
                reads = [
                    service.read(
                        service.load(db, service.get(db, workspace_id=workspace_id, key=key))
                    )
                ]
            else:
                page = service.list_all(db, workspace_id=workspace_id, limit=200)
                reads = [service.read(service.load(db, c)) for c in page.items]
    except NexusError as exc:
        fail(exc.detail)
    finally:
        database.dispose()
    if as_json:
        print_json([r.model_dump(mode="json") for r in reads])
        return
    if key is not None:
        _show(reads[0])
        return
    print_table(
        "Evolution campaigns",
        ["key", "page", "status", "phase", "generation", "visitors", "champion", "conversion"],
        [
            (
                r.key,
                f"{r.funnel}/{r.step}",
                r.status,
                r.phase,
                r.generation + 1,
                r.visitors,
                r.champions[0].design.key,
                f"{r.champions[0].design.conversion:.2%}",
            )
            for r in reads
        ],
    )


def _act(key: str, workspace: str | None, action: str, comment: str, as_json: bool) -> None:
    from nexus.evolution import service  # noqa: PLC0415 - the CLI starts fast

    database = _database(Settings())
    try:
        workspace_id = _workspace(database, workspace)
        with database.session() as db:
            campaign = service.get(db, workspace_id=workspace_id, key=key)
            if action == "stop":
                service.stop(db, campaign, actor=ACTOR, comment=comment)
            elif action == "pause":
                service.pause(db, campaign, actor=ACTOR, comment=comment)
            elif action == "resume":
                service.resume(db, campaign, actor=ACTOR, comment=comment)
            else:
                from nexus.evolution.models import PromoteRequest  # noqa: PLC0415

                service.promote(db, campaign, PromoteRequest(comment=comment), actor=ACTOR)
            read = service.read(service.load(db, campaign))
    except NexusError as exc:
        fail(exc.detail)
    finally:
        database.dispose()
    if as_json:
        print_json(read.model_dump(mode="json"))
    else:
        console.print(f"{read.key}: {read.status}")


@evolve_app.command("stop")
def evolve_stop(
    key: KeyArgument,
    comment: CommentOption = "",
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop a campaign for good (a running promotion is rolled back)."""
    _act(key, workspace, "stop", comment, as_json)


@evolve_app.command("pause")
def evolve_pause(
    key: KeyArgument,
    comment: CommentOption = "",
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pause a campaign: visitors see the page as it is."""
    _act(key, workspace, "pause", comment, as_json)


@evolve_app.command("resume")
def evolve_resume(
    key: KeyArgument,
    comment: CommentOption = "",
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resume a paused campaign."""
    _act(key, workspace, "resume", comment, as_json)


@evolve_app.command("promote")
def evolve_promote(
    key: KeyArgument,
    comment: CommentOption = "",
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Promote the champion through a guarded rollout."""
    _act(key, workspace, "promote", comment, as_json)

"""``nexus funnel list`` and ``nexus funnel report``: funnels from the command line.

A report reads the embedded event store directly, which a running server holds (DuckDB has one
writer process); with ``--url`` and ``--key`` (or ``NEXUS_URL`` / ``NEXUS_API_KEY``) the same
report comes from a running server over its API instead.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from nexus.cli.output import console, fail, print_json, print_table
from nexus.core.settings import Settings
from nexus.events import service as events
from nexus.funnels import service
from nexus.funnels.models import FunnelDefinition, FunnelReport, FunnelResult
from nexus.storage import migrate
from nexus.storage.database import Database
from nexus.workspaces import service as workspaces

funnel_app = typer.Typer(help="Funnels: list saved ones, report on them.", no_args_is_help=True)

WorkspaceOption = Annotated[
    str | None,
    typer.Option("--workspace", "-w", help="Workspace id (default: the only workspace)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
UrlOption = Annotated[
    str | None,
    typer.Option(envvar="NEXUS_URL", help="Ask this running server instead of the local store."),
]
KeyOption = Annotated[
    str | None, typer.Option(envvar="NEXUS_API_KEY", help="Secret key for --url.")
]


def _database(settings: Settings) -> Database:
    if settings.is_embedded_database:
        migrate.upgrade(settings.resolved_database_url)
    return Database(settings.resolved_database_url)


def _workspace(database: Database, workspace_id: str | None) -> str:
    if workspace_id is not None:
        return workspace_id
    with database.session() as db:
        page = workspaces.list_workspaces(db, limit=2)
    if len(page.items) != 1:
        fail("there is more than one workspace (or none): choose one with --workspace", 2)
    return page.items[0].id


@funnel_app.command("list")
def funnel_list(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Saved funnels of a workspace."""
    database = _database(Settings())
    try:
        workspace_id = _workspace(database, workspace)
        with database.session() as db:
            page = service.list_funnels(db, workspace_id=workspace_id, limit=200)
            rows = [
                (f.id, f.name, len(f.definition["steps"]), f.definition["mode"]) for f in page.items
            ]
    finally:
        database.dispose()
    if as_json:
        print_json([{"id": i, "name": n, "steps": s, "mode": m} for i, n, s, m in rows])
        return
    print_table("Funnels", ["id", "name", "steps", "mode"], rows)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@funnel_app.command("report")
def funnel_report(
    funnel_id: Annotated[
        str | None, typer.Argument(help="A saved funnel's id; or give --step instead.")
    ] = None,
    step: Annotated[
        list[str] | None, typer.Option("--step", help="Event name of an ad-hoc step (repeat).")
    ] = None,
    window: Annotated[
        int, typer.Option(min=1, help="Conversion window of --step funnels, in seconds.")
    ] = 14 * 86_400,
    workspace: WorkspaceOption = None,
    start: Annotated[
        datetime | None, typer.Option("--from", help="Period start (default 30 days ago).")
    ] = None,
    end: Annotated[datetime | None, typer.Option("--to", help="Period end (default now).")] = None,
    breakdown: Annotated[str | None, typer.Option(help="Property to break down by.")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print a funnel's steps, conversion and time to convert."""
    if (funnel_id is None) == (not step):
        fail("give a saved funnel's id or at least two --step events, not both", 2)
    adhoc = None
    if step:
        try:
            adhoc = FunnelDefinition.model_validate(
                {"steps": [{"event": e} for e in step], "window_seconds": window}
            )
        except ValidationError as exc:
            fail(f"invalid funnel: {exc.errors()[0]['msg']}", 2)
    if url is not None:
        report = _remote_report(url, key, funnel_id, adhoc, start, end, breakdown)
    else:
        report = _local_report(funnel_id, adhoc, workspace, start, end, breakdown)
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    _print_report(report)


def _local_report(
    funnel_id: str | None,
    adhoc: FunnelDefinition | None,
    workspace: str | None,
    start: datetime | None,
    end: datetime | None,
    breakdown: str | None,
) -> FunnelReport:
    settings = Settings()
    database = _database(settings)
    try:
        workspace_id = _workspace(database, workspace)
        if adhoc is None:
            assert funnel_id is not None
            with database.session() as db:
                definition = service.definition_of(
                    service.get_funnel(db, workspace_id=workspace_id, funnel_id=funnel_id)
                )
        else:
            definition = adhoc
    finally:
        database.dispose()
    with events.store_for_cli(settings) as store:
        return service.report(
            store,
            workspace_id=workspace_id,
            definition=definition,
            span=service.period(start, end),
            breakdown=breakdown,
            identity=settings.identity_merge,
        )


def _remote_report(
    url: str,
    key: str | None,
    funnel_id: str | None,
    adhoc: FunnelDefinition | None,
    start: datetime | None,
    end: datetime | None,
    breakdown: str | None,
) -> FunnelReport:
    if not key:
        fail("--url needs --key (or NEXUS_API_KEY): a secret key with the read permission", 2)
    params = {k: v for k, v in (("breakdown", breakdown),) if v}
    base = url.rstrip("/")
    if adhoc is None:
        params.update({k: v for k, v in (("start", _iso(start)), ("end", _iso(end))) if v})
        target = f"{base}/v1/funnels/{urllib.parse.quote(funnel_id or '')}/report"
        body = None
    else:
        target = f"{base}/v1/funnels/query"
        query = {**adhoc.model_dump(mode="json"), "start": _iso(start), "end": _iso(end)}
        body = json.dumps(query).encode()
    if params:
        target += "?" + urllib.parse.urlencode(params)
    request = urllib.request.Request(  # noqa: S310 - the user names the server
        target,
        data=body,
        method="POST" if body else "GET",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
            document: Any = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except ValueError:
            detail = exc.reason
        fail(f"the server answered {exc.code}: {detail}")
    except (urllib.error.URLError, OSError) as exc:
        fail(f"cannot reach {url}: {getattr(exc, 'reason', exc)}")
    return FunnelReport.model_validate(document)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86_400:.1f}d"


def _print_result(title: str, result: FunnelResult) -> None:
    print_table(
        title,
        ["#", "step", "persons", "from start", "from previous", "dropped", "median time"],
        [
            (
                s.index + 1,
                (s.label or s.event) + (" (optional)" if s.optional else ""),
                s.count,
                f"{s.conversion_from_start:.1%}",
                f"{s.conversion_from_previous:.1%}",
                s.dropped,
                _duration(s.median_seconds_from_start),
            )
            for s in result.steps
        ],
    )
    ttc = result.time_to_convert
    console.print(
        f"converted {ttc.converted} of {result.entered}; time to convert: median "
        f"{_duration(ttc.median_seconds)}, p90 {_duration(ttc.p90_seconds)}",
        markup=False,
    )


def _print_report(report: FunnelReport) -> None:
    period = f"{report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC"
    _print_result(f"Funnel ({report.mode}), {period}", report)
    for group in report.breakdown:
        value = "(none)" if group.value is None else group.value
        _print_result(f"{report.breakdown_property} = {value}", group)

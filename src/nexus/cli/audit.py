"""``nexus audit verify``: check that the audit chains are intact.

Prints one line: ``chain intact: N entries`` and the head to record as an anchor (exit 0),
or the first bad entry and why (exit 1). A chain alone cannot show that its newest entries
were deleted; pass the head printed by an earlier run as ``--anchor`` to catch that.
"""

from __future__ import annotations

from typing import Annotated

import typer

from nexus.cli.output import console, fail, print_json
from nexus.core.settings import Settings
from nexus.security import service as audit
from nexus.security.audit import GLOBAL_CHAIN, Anchor, VerifyResult
from nexus.storage import migrate
from nexus.storage.database import Database

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


def _verify_all(
    settings: Settings, workspace: str | None, anchor: Anchor | None
) -> dict[str, VerifyResult]:
    url = settings.resolved_database_url
    if settings.is_embedded_database:
        migrate.upgrade(url)
    database = Database(url)
    try:
        with database.session() as db:
            chains = audit.list_chains(db) if workspace is None else [workspace]
            return {
                chain: audit.verify_log(
                    db, workspace_id=None if chain == GLOBAL_CHAIN else chain, anchor=anchor
                )
                for chain in chains
            }
    finally:
        database.dispose()


@audit_app.command("verify")
def verify(
    workspace: Annotated[
        str | None,
        typer.Option(
            "--workspace",
            "-w",
            help=f"One chain: a workspace id or {GLOBAL_CHAIN!r} (default: all).",
        ),
    ] = None,
    anchor: Annotated[
        str | None,
        typer.Option(help="SEQ:HASH printed by an earlier verify; needs --workspace."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Walk the audit chains and report the first altered, missing or moved entry."""
    parsed: Anchor | None = None
    if anchor is not None:
        if workspace is None:
            fail("--anchor checks one chain: choose it with --workspace", 2)
        try:
            parsed = Anchor.parse(anchor)
        except ValueError as exc:
            fail(str(exc), 2)
    results = _verify_all(Settings(), workspace, parsed)
    broken = {chain: r for chain, r in results.items() if not r.ok}
    if as_json:
        print_json(
            {
                "ok": not broken,
                "chains": {
                    chain: {
                        "ok": r.ok,
                        "count": r.count,
                        "first_bad_seq": r.first_bad_seq,
                        "reason": r.reason,
                        "head": None if r.head is None else str(r.head),
                    }
                    for chain, r in results.items()
                },
            }
        )
        if broken:
            raise SystemExit(1)
        return
    if broken:
        chain, result = next(iter(broken.items()))
        fail(f"chain {chain} broken at entry {result.first_bad_seq}: {result.reason}")
    total = sum(r.count for r in results.values())
    if len(results) == 1:
        head = next(iter(results.values())).head
        where = f" (head {head})" if head is not None else ""
    else:
        where = f" in {len(results)} chains"
    console.print(
        f"chain intact: {total} entries{where}", markup=False, highlight=False, soft_wrap=True
    )

"""``nexus``: serve, demo, migrate, and administer workspaces, users and keys.

Every error a user can cause ends the command with one line on stderr and a non-zero exit
code (1 for a refused operation, 2 for wrong usage), never a traceback.
"""

from __future__ import annotations

import getpass
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from nexus import __version__
from nexus.cli.audit import audit_app
from nexus.cli.emotion import emotion_app
from nexus.cli.events import export_app, import_app
from nexus.cli.evolve import evolve_app
from nexus.cli.experiments import experiment_app
from nexus.cli.funnels import funnel_app
from nexus.cli.output import console, fail, print_json, print_table
from nexus.cli.simulate import simulate
from nexus.core.errors import NexusError
from nexus.core.settings import Settings
from nexus.storage import migrate as migrations
from nexus.storage.database import Database
from nexus.workspaces import service
from nexus.workspaces.models import KeyKind, Permission, Role, Workspace

app = typer.Typer(
    name="nexus",
    help="NEXUS: emotion-aware, self-optimising sales funnels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
workspace_app = typer.Typer(help="Workspaces (tenants).", no_args_is_help=True)
user_app = typer.Typer(help="Dashboard users.", no_args_is_help=True)
key_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(workspace_app, name="workspace")
app.add_typer(user_app, name="user")
app.add_typer(key_app, name="key")
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")
app.add_typer(funnel_app, name="funnel")
app.add_typer(emotion_app, name="emotion")
app.add_typer(experiment_app, name="experiment")
app.add_typer(audit_app, name="audit")
app.add_typer(evolve_app, name="evolve")
app.command("simulate")(simulate)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
HostOption = Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")]
PortOption = Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default 8000).")]
WorkspaceOption = Annotated[str, typer.Option("--workspace", "-w", help="Workspace id.")]


def load_settings() -> Settings:
    return Settings()


@contextmanager
def database_session(settings: Settings, *, migrate_embedded: bool = True) -> Iterator[Session]:
    """A committed-on-success session; the embedded database is migrated first."""
    if migrate_embedded and settings.is_embedded_database:
        migrations.upgrade(settings.resolved_database_url)
    database = Database(settings.resolved_database_url)
    try:
        with database.session() as session:
            yield session
    finally:
        database.dispose()


# --- serving --------------------------------------------------------------------------------


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def _serve(settings: Settings) -> None:
    import uvicorn  # noqa: PLC0415 - only serving needs it

    from nexus.api.app import create_app  # noqa: PLC0415 - keeps admin commands quick

    _check_port_free(settings.host, settings.port)
    uvicorn.run(
        create_app(settings, freeze_gc=True),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        server_header=False,
    )


@app.command()
def serve(host: HostOption = None, port: PortOption = None) -> None:
    """Run the API and dashboard (migrating the embedded database first)."""
    settings = load_settings()
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings.model_copy(update=overrides)
    if settings.is_embedded_database:
        migrations.upgrade(settings.resolved_database_url)
    _serve(settings)


DEMO_EMAIL = "demo@nexus.local"
DEMO_WORKSPACE = "Demo Shop"


@app.command()
def demo(
    host: HostOption = None,
    port: PortOption = None,
    traffic: Annotated[
        bool, typer.Option(help="Send a few live visitors' events every 2 s.")
    ] = True,
) -> None:
    """Serve NEXUS with a demo workspace (a week of shop traffic, a funnel, live visitors),
    and print its URL, login and keys."""
    import secrets  # noqa: PLC0415

    from nexus.cli import demo_data  # noqa: PLC0415

    settings = load_settings()
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings.model_copy(update=overrides)
    # Before touching any credential: a second demo on a busy port must not rotate the
    # password and key of the one already running.
    _check_port_free(settings.host, settings.port)
    password = secrets.token_urlsafe(12)
    with database_session(settings) as db:
        user = service.get_user_by_email(db, email=DEMO_EMAIL)
        if user is None:
            user = service.create_user(db, email=DEMO_EMAIL, password=password, name="Demo")
        else:
            service.set_password(db, user_id=user.id, password=password)
        roles = service.roles_of(db, user_id=user.id)
        owned = [ws for ws, role in roles.items() if role is Role.OWNER]
        if owned:
            workspace = service.get_workspace(db, workspace_id=min(owned))
        else:
            workspace = service.create_workspace(db, name=DEMO_WORKSPACE, owner_id=user.id)
        # A fresh secret key each run (the old ones are revoked): a secret shows only once.
        for key in service.list_api_keys(db, workspace_id=workspace.id, limit=200).items:
            if key.kind == KeyKind.SECRET and key.name == "demo":
                service.revoke_api_key(db, workspace_id=workspace.id, key_id=key.id)
        _key, secret = service.create_api_key(
            db, workspace_id=workspace.id, name="demo", kind=KeyKind.SECRET
        )
        write_key = service.public_write_key(db, workspace_id=workspace.id)
        seeded = demo_data.seed(settings, db, workspace_id=workspace.id)
        demo_data.seed_decisions(db, workspace_id=workspace.id)
        first_page = demo_data.seed_pages(db, workspace_id=workspace.id)
    display_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
    url = f"http://{display_host}:{settings.port}"
    console.print(f"\n[bold]NEXUS {__version__} demo[/bold] — open [link={url}]{url}[/link]\n")
    console.print(f"  sign in    {DEMO_EMAIL} / {password}", markup=False, highlight=False)
    console.print(f"  workspace  {workspace.name} ({workspace.id})", markup=False)
    console.print(f"  write key  {write_key}", markup=False, highlight=False)
    console.print(f"  secret key {secret}", markup=False, highlight=False)
    if seeded:
        console.print(f"  history    {seeded} demo events of the last 7 days", markup=False)
    console.print(f"  hosted     {url}{first_page}", markup=False, soft_wrap=True)
    console.print(
        f"\n  try: curl -H 'Authorization: Bearer {secret}' {url}/v1/me\n",
        markup=False,
        soft_wrap=True,
    )
    console.print(
        f"  funnels    {url}/funnels    live events {url}/events\n", markup=False, soft_wrap=True
    )
    console.print(
        f"  decide     curl -u {write_key}: -H 'Content-Type: application/json' "
        f"""-d '{{"visitor_id": "v1", "text": "This is taking forever!"}}' {url}/v1/decide\n""",
        markup=False,
        soft_wrap=True,
    )
    sys.stdout.flush()
    if traffic and write_key:
        demo_data.LiveTraffic(url, write_key).start()
        demo_data.SimulatedVisitors(url, write_key).start()
        demo_data.HostedVisitors(url, write_key, first_page).start()
    _serve(settings)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (Alembic migrations)."""
    settings = load_settings()
    url = settings.resolved_database_url
    before = migrations.current_revision(url)
    migrations.upgrade(url)
    after = migrations.current_revision(url)
    if before == after:
        console.print(f"database already at revision {after}")
    else:
        console.print(f"database migrated from {before or 'empty'} to {after}")


# --- workspaces -----------------------------------------------------------------------------


@workspace_app.command("create")
def workspace_create(
    name: Annotated[str, typer.Argument(help="Workspace name.")],
    owner: Annotated[
        str | None, typer.Option(help="E-mail of an existing user to make owner.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a workspace with its public write key and a secret key."""
    name = name.strip()
    if not name or len(name) > 200:
        fail("the workspace name must have 1 to 200 characters", 2)
    with database_session(load_settings()) as db:
        owner_id = None
        if owner is not None:
            user = service.get_user_by_email(db, email=owner)
            if user is None:
                fail(f"no user with e-mail {owner}; create it with `nexus user create`")
            assert user is not None
            owner_id = user.id
        workspace = service.create_workspace(db, name=name, owner_id=owner_id)
        _key, secret = service.create_api_key(
            db, workspace_id=workspace.id, name="cli", kind=KeyKind.SECRET
        )
        write_key = service.public_write_key(db, workspace_id=workspace.id)
    if as_json:
        print_json(
            {
                "id": workspace.id,
                "name": workspace.name,
                "write_key": write_key,
                "secret_key": secret,
            }
        )
        return
    console.print(f"created workspace {workspace.name} ({workspace.id})", markup=False)
    console.print(f"  write key  {write_key}", markup=False, highlight=False)
    console.print(f"  secret key {secret}   (shown once: store it now)", markup=False)


@workspace_app.command("list")
def workspace_list(as_json: JsonOption = False) -> None:
    """List every workspace."""
    with database_session(load_settings()) as db:
        items: list[Workspace] = []
        cursor: str | None = None
        while True:
            page = service.list_workspaces(db, cursor=cursor, limit=200)
            items.extend(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    if as_json:
        print_json(
            [{"id": w.id, "name": w.name, "created_at": w.created_at.isoformat()} for w in items]
        )
        return
    print_table(
        "Workspaces",
        ["id", "name", "created"],
        [(w.id, w.name, w.created_at.strftime("%Y-%m-%d %H:%M")) for w in items],
    )


# --- users ----------------------------------------------------------------------------------


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        fail("no terminal to ask for a password: pass --password-stdin", 2)
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        fail("the passwords do not match", 2)
    return first


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Argument(help="The user's e-mail, used to sign in.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    workspace: Annotated[
        str | None, typer.Option("--workspace", "-w", help="Add to this workspace.")
    ] = None,
    role: Annotated[Role, typer.Option(help="Role in --workspace.")] = Role.ANALYST,
    as_json: JsonOption = False,
) -> None:
    """Create a dashboard user (and optionally add them to a workspace)."""
    from nexus.workspaces.models import UserCreate  # noqa: PLC0415

    password = _read_password(password_stdin)
    try:
        body = UserCreate(email=email, password=password, name=name)
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"{'.'.join(map(str, first['loc']))}: {first['msg']}", 2)
    with database_session(load_settings()) as db:
        user = service.create_user(db, email=body.email, password=body.password, name=body.name)
        if workspace is not None:
            service.get_workspace(db, workspace_id=workspace)
            service.add_member(db, workspace_id=workspace, email=user.email, role=role, actor=None)
    if as_json:
        print_json({"id": user.id, "email": user.email, "workspace": workspace, "role": role})
        return
    where = f" as {role.value} of {workspace}" if workspace else ""
    console.print(f"created user {user.email} ({user.id}){where}", markup=False)


# --- keys -----------------------------------------------------------------------------------


@key_app.command("create")
def key_create(
    workspace: WorkspaceOption,
    name: Annotated[str, typer.Option(help="What the key is for.")] = "cli",
    kind: Annotated[KeyKind, typer.Option(help="secret (admin API) or public (write key).")] = (
        KeyKind.SECRET
    ),
    scope: Annotated[
        list[Permission] | None,
        typer.Option(help="Scope of a secret key; repeat for several (default: all)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key; a secret key's token is printed this once only."""
    with database_session(load_settings()) as db:
        service.get_workspace(db, workspace_id=workspace)
        key, token = service.create_api_key(
            db, workspace_id=workspace, name=name, kind=kind, scopes=scope
        )
    if as_json:
        print_json({"id": key.id, "kind": key.kind, "scopes": key.scopes, "token": token})
        return
    console.print(f"created {key.kind} key {key.id} ({', '.join(key.scopes)})", markup=False)
    console.print(f"  {token}", markup=False, highlight=False)


@key_app.command("list")
def key_list(
    workspace: WorkspaceOption,
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List a workspace's API keys (secret keys by prefix only)."""
    with database_session(load_settings()) as db:
        service.get_workspace(db, workspace_id=workspace)
        keys = service.list_api_keys(
            db, workspace_id=workspace, include_revoked=include_revoked, limit=200
        ).items

    def shown(k: object) -> str:
        return getattr(k, "public_token", None) or f"{getattr(k, 'prefix', '')}…"

    if as_json:
        print_json(
            [
                {
                    "id": k.id,
                    "name": k.name,
                    "kind": k.kind,
                    "key": shown(k),
                    "scopes": k.scopes,
                    "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                }
                for k in keys
            ]
        )
        return
    print_table(
        "API keys",
        ["id", "name", "kind", "key", "scopes", "revoked"],
        [(k.id, k.name, k.kind, shown(k), ",".join(k.scopes), k.revoked_at or "") for k in keys],
    )


@key_app.command("revoke")
def key_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_…).")],
    workspace: WorkspaceOption,
) -> None:
    """Revoke an API key; it stops working at once."""
    with database_session(load_settings()) as db:
        key = service.revoke_api_key(db, workspace_id=workspace, key_id=key_id)
    console.print(f"revoked {key.id} ({key.name})", markup=False)


@app.command()
def version() -> None:
    """Print the NEXUS version."""
    console.print(__version__)


def run(argv: list[str] | None = None) -> None:
    """Entry point of the ``nexus`` script: errors become one line and an exit code."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="nexus", standalone_mode=False)
    except typer.TyperException as exc:
        # Typer's usage errors (it vendors click); the public base class is all we rely on.
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            sys.stdout.write(ctx.get_help() + "\n")
            raise SystemExit(0) from None
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        fail(f"{exc.format_message()}{hint}", exc.exit_code or 1)
    except typer.Abort:
        fail("aborted", 130)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except NexusError as exc:
        fail(exc.detail)
    except ValidationError as exc:
        # Settings from the environment that do not parse.
        first = exc.errors()[0]
        loc = ".".join(map(str, first["loc"])) or "settings"
        fail(f"invalid setting NEXUS_{loc.upper()}: {first['msg']}", 2)
    except OperationalError as exc:
        fail(f"cannot reach the database: {str(exc.orig).strip().splitlines()[0]}")
    except SQLAlchemyError as exc:
        fail(f"database error: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    except OSError as exc:
        fail(str(exc))

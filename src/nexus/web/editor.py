"""The dashboard's editor of hosted funnels, their pages and UI adaptations, with a live preview.

Routes under ``/pages``: the list of hosted funnels and adaptations, a funnel's settings and
steps, the page editor, the adaptation editor, and the preview they show. Every route needs a
dashboard session; reading needs the ``read`` permission, every change ``write``, and every
form post the session's CSRF token. Changes go through the pages and experiments services, so
each is audited under the signed-in user, and the caches that serve pages and decisions are
told at once.

The forms work without JavaScript (``editor_forms`` reads and checks them): structural changes
(add, move or remove a block, a variant, a tone, a list item) post the form and come back as
the same editor with the change applied and nothing saved; *Save* validates the whole page
with :class:`nexus.pages.blocks.Page`. A form that does not validate comes back as it was
sent, each problem next to its field. ``static/editor.js`` adds the live preview: it posts the
same form to ``POST /pages/preview`` into the preview frame as the marketer types.

The preview is the hosted page's own renderer (``nexus.pages.render``, without the SDK), in a
sandboxed same-origin frame: its answers carry their own CSP and ``X-Frame-Options:
SAMEORIGIN`` (the dashboard's pages may not be framed at all).

``/pages/preview`` and ``/pages/adaptations`` belong to the editor: funnels with the slug
``preview`` or ``adaptations`` are edited through the API.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import escape
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from nexus.core.errors import Conflict, NexusError, NotFound, PermissionDenied
from nexus.emotion.models.taxonomy import GOEMOTIONS
from nexus.experiments import service as experiments_service
from nexus.experiments.models import KEY_PATTERN, AdaptationCreate, AdaptationRead
from nexus.pages import render
from nexus.pages import service as pages_service
from nexus.pages.blocks import MAX_BLOCKS, MAX_VARIANTS, Page
from nexus.pages.models import MAX_STEPS, HostedFunnelBody, HostedFunnelCreate, HostedFunnelRead
from nexus.pages.runtime import PagesRuntime
from nexus.pages.views import csp
from nexus.web.editor_forms import (
    HEX_COLOUR,
    KIND_LABELS,
    SLUG,
    AdaptationForm,
    EditorState,
    Problem,
    apply_op,
    document_from_state,
    get,
    kind_specs,
    message_of,
    pretty,
    read_submission,
    state_from_document,
    text_of,
    tone_names,
)
from nexus.web.routes import CurrentDashboard, Dashboard, _error_page, _render
from nexus.workspaces.deps import DbSession, check_csrf
from nexus.workspaces.service import actor_name

router = APIRouter(include_in_schema=False)

RESERVED_SLUGS = frozenset({"adaptations", "preview"})
MAX_FORM_FIELDS = 20_000  # a page of 50 blocks, 8 variants and their tones has many fields
MAX_FUNNELS = 200
BLANK_ROWS = 2
_KEY = re.compile(KEY_PATTERN)


# --- shared helpers of the routes -----------------------------------------------------------


async def _read_form(request: Request) -> FormData:
    """The posted form, with room for a page's many fields (the body size limit still
    holds)."""
    return await request.form(max_fields=MAX_FORM_FIELDS, max_files=0)


PostedForm = Annotated[FormData, Depends(_read_form)]


def _workspace(dashboard: Dashboard) -> str:
    if dashboard.current is None:
        raise NotFound("Choose a workspace first (the switcher at the top).")
    return dashboard.current.id


def _for_writers(dashboard: Dashboard, form: FormData, what: str) -> str:
    """CSRF, a workspace, and the write permission, checked in that order."""
    check_csrf(dashboard.session, get(form, "csrf_token"))
    workspace_id = _workspace(dashboard)
    if not dashboard.can("write"):
        role = dashboard.principal.role.value if dashboard.principal.role else "none"
        raise PermissionDenied(f"{what} needs the 'write' permission; your role here is {role}.")
    return workspace_id


def _pages(request: Request) -> PagesRuntime:
    pages: PagesRuntime = request.app.state.pages
    return pages


def _refused(request: Request, db: Session, exc: NexusError) -> HTMLResponse:
    db.rollback()
    return _error_page(request, exc)


def _valid_slug(slug: str) -> str:
    if not SLUG.match(slug):
        raise NotFound(f"No hosted funnel or step {slug!r}.")
    return slug


def _funnel(db: Session, workspace_id: str, slug: str) -> HostedFunnelRead:
    funnel = pages_service.get(db, workspace_id=workspace_id, slug=_valid_slug(slug))
    return pages_service.read(funnel)


def _step_of(funnel: HostedFunnelRead, step: str) -> tuple[int, Page]:
    for index, candidate in enumerate(funnel.steps):
        if candidate.slug == step:
            return index, candidate.page
    raise NotFound(f"Hosted funnel {funnel.slug!r} has no step {step!r}.")


def page_hash(page: Page) -> str:
    """What the editor was opened on, to notice a save by someone else in the meantime."""
    return hashlib.sha256(page.model_dump_json().encode()).hexdigest()[:20]


def starter_page(title: str, step: str) -> Page:
    """A new step's page: a headline and a call to action, to be edited."""
    return Page.model_validate(
        {
            "title": title,
            "blocks": [
                {
                    "id": "headline",
                    "kind": "headline",
                    "variants": [{"key": "a", "content": {"text": title}}],
                },
                {
                    "id": "cta",
                    "kind": "cta",
                    "variants": [
                        {"key": "a", "content": {"label": "Get started", "href": f"./{step}"}}
                    ],
                },
            ],
        }
    )


def _adaptations(db: Session, workspace_id: str) -> list[AdaptationRead]:
    return [
        experiments_service.adaptation_read(a)
        for a in experiments_service.all_adaptations(db, workspace_id=workspace_id)
    ]


def _errors_by_field(problems: Iterable[Problem]) -> dict[str, str]:
    out: dict[str, str] = {}
    for problem in problems:
        if problem.field:
            out[problem.field] = (
                f"{out[problem.field]} {problem.message}"
                if problem.field in out
                else problem.message
            )
    return out


def _status_of(problems: list[Problem]) -> int:
    return 422 if problems else 200


# --- preview ---------------------------------------------------------------------------------


def _json_script(value: Any) -> str:
    raw = orjson.dumps(value).decode()
    return raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _echo(document: Any, problems: list[Problem]) -> str:
    """What the editor's script reads back from the preview frame: the document the form
    described (for the JSON textarea) and its problems (to show next to the fields)."""
    payload = {
        "document": document,
        "problems": [{"field": p.field, "where": p.where, "message": p.message} for p in problems],
    }
    return (
        f'<script type="application/json" id="nexus-editor-echo">{_json_script(payload)}</script>'
    )


def _preview_response(html: str, nonce: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={
            "Content-Security-Policy": csp(nonce),
            "X-Frame-Options": "SAMEORIGIN",
            "Cache-Control": "no-store",
        },
    )


def _preview_problems(
    problems: list[Problem], document: Any = None, status_code: int = 422
) -> HTMLResponse:
    items = "".join(
        f"<li><strong>{escape(p.where)}</strong>: {escape(p.message)}</li>" for p in problems
    )
    many = len(problems)
    heading = "This page cannot be shown yet" if status_code == 422 else "No preview"
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{heading}</title>"
        '<link rel="stylesheet" href="/static/hosted.css"></head><body>'
        f'<main class="page" data-testid="preview-problems"><h1>{heading}</h1>'
        f"<p>{many} problem{'s' if many != 1 else ''} to fix:</p><ul>{items}</ul></main>"
        f"{_echo(document, problems)}</body></html>"
    )
    return _preview_response(html, secrets.token_urlsafe(16), status_code)


def _render_preview(
    *,
    funnel: HostedFunnelRead,
    workspace_id: str,
    index: int,
    page: Page,
    variant: str | None,
    adaptation: dict[str, Any] | None,
    echo_document: Any = None,
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    html = render.render(
        page=page,
        title_suffix=funnel.name,
        variant=variant,
        adaptation=adaptation,
        bootstrap={"preview": True},
        nonce=nonce,
        base_path=f"/f/{workspace_id}/{funnel.slug}/",
        step_index=index,
        step_count=len(funnel.steps),
        preview=True,
    )
    head, _, tail = html.rpartition("</body>")
    return _preview_response(f"{head}{_echo(echo_document, [])}</body>{tail}", nonce)


def _preview_adaptation(choice: str, adaptations: list[AdaptationRead]) -> dict[str, Any] | None:
    """The adaptation a preview is shown in: ``a:<key>`` a saved one (tone and tokens),
    ``t:<tone>`` only a tone's copy, else none."""
    kind, _, value = choice.partition(":")
    if kind == "a":
        found = next((a for a in adaptations if a.key == value), None)
        if found is not None:
            return {"key": found.key, "tone": found.tone, "tokens": found.tokens}
    if kind == "t" and SLUG.match(value):
        return {"key": None, "tone": value, "tokens": {}}
    return None


def _variant_choice(text: str) -> str | None:
    return text if SLUG.match(text) else None


@router.post("/pages/preview")
def preview(
    request: Request, dashboard: CurrentDashboard, db: DbSession, form: PostedForm
) -> Response:
    """The page the posted editor form describes (or a saved page in the posted adaptation),
    rendered as a visitor would see it, without the SDK: nothing is saved or tracked."""
    try:
        check_csrf(dashboard.session, get(form, "csrf_token"))
        workspace_id = _workspace(dashboard)
    except NexusError as exc:
        return _preview_problems([Problem(None, exc.title, exc.detail)], status_code=exc.status)
    try:
        if get(form, "mode") == "adaptation":
            return _preview_of_adaptation(db, workspace_id, form)
        funnel = _funnel(db, workspace_id, get(form, "slug"))
        index, _saved = _step_of(funnel, get(form, "step"))
    except NexusError as exc:
        return _preview_problems([Problem(None, exc.title, exc.detail)], status_code=exc.status)
    submission = read_submission(form, get(form, "op"))
    if submission.page is None:
        return _preview_problems(submission.problems, submission.document)
    adaptations = _adaptations(db, workspace_id)
    return _render_preview(
        funnel=funnel,
        workspace_id=workspace_id,
        index=index,
        page=submission.page,
        variant=_variant_choice(get(form, "preview_variant")),
        adaptation=_preview_adaptation(get(form, "preview_adaptation"), adaptations),
        echo_document=submission.document,
    )


def _preview_of_adaptation(db: Session, workspace_id: str, form: FormData) -> Response:
    ref = get(form, "preview_page")
    slug, _, step = ref.partition("/")
    funnel = _funnel(db, workspace_id, slug)
    index, page = _step_of(funnel, _valid_slug(step))
    adaptation_form = AdaptationForm.from_form(form)
    body, problems = adaptation_form.body()
    if body is None:
        return _preview_problems(problems)
    return _render_preview(
        funnel=funnel,
        workspace_id=workspace_id,
        index=index,
        page=page,
        variant=None,
        adaptation={"key": adaptation_form.key or None, "tone": body.tone, "tokens": body.tokens},
    )


def _token_rows(form: AdaptationForm, blank: int) -> list[dict[str, Any]]:
    """The token rows, with the colour each picker shows and whether hosted pages apply the
    token before the first byte (``render.css_tokens`` keeps only safe names and values)."""
    rows: list[dict[str, Any]] = []
    for name, value in [*form.tokens, *([("", "")] * blank)]:
        colour = value if HEX_COLOUR.match(value) else "#000000"
        if len(colour) == 4:
            colour = "#" + "".join(c * 2 for c in colour[1:])
        applied = bool(render.css_tokens({name: value})) if name else True
        rows.append({"name": name, "value": value, "colour": colour.lower(), "applied": applied})
    return rows


def _trigger_summary(adaptation: AdaptationRead) -> str:
    if not adaptation.when:
        return "no trigger: for everyone else"
    parts: list[str] = []
    for clause in adaptation.when:
        value = clause.value
        shown = ", ".join(map(str, value)) if isinstance(value, list) else text_of(value)
        parts.append(f"{clause.attribute} {clause.op} {shown}".strip())
    return "; ".join(parts)


def _step_choices(db: Session, workspace_id: str) -> list[tuple[str, str]]:
    choices: list[tuple[str, str]] = []
    for funnel in pages_service.list_all(db, workspace_id=workspace_id, limit=MAX_FUNNELS).items:
        read = pages_service.read(funnel)
        for step in read.steps:
            choices.append((f"{read.slug}/{step.slug}", f"{read.name}: {step.page.title}"))
    return choices


def _adaptation_page(
    request: Request,
    dashboard: Dashboard,
    db: Session,
    form: AdaptationForm,
    *,
    problems: list[Problem] | None = None,
    notice: str | None = None,
    status_code: int = 200,
    preview_page: str = "",
    blank_rows: int = BLANK_ROWS,
) -> HTMLResponse:
    workspace_id = _workspace(dashboard)
    problems = problems or []
    choices = _step_choices(db, workspace_id)
    chosen = preview_page if preview_page in {c for c, _ in choices} else ""
    chosen = chosen or (choices[0][0] if choices else "")
    return _render(
        request,
        "adaptation.html",
        status_code=status_code,
        d=dashboard,
        page="pages",
        form=form,
        token_rows=_token_rows(form, blank_rows),
        copy_rows=[*form.copy, *([("", "")] * blank_rows)],
        emotions=GOEMOTIONS,
        problems=problems,
        errors=_errors_by_field(problems),
        notice=notice,
        can_write=dashboard.can("write"),
        step_choices=choices,
        preview_page=chosen,
        tones=_known_tones(db, workspace_id),
    )


def _known_tones(db: Session, workspace_id: str) -> list[str]:
    return sorted({a.tone for a in _adaptations(db, workspace_id)} | {"calm", "reassuring"})


def _valid_key(key: str) -> str:
    if not _KEY.match(key):
        raise NotFound(f"No UI adaptation {key!r}.")
    return key


@router.post("/pages/adaptations")
def create_adaptation(
    request: Request, dashboard: CurrentDashboard, db: DbSession, form: PostedForm
) -> Response:
    try:
        workspace_id = _for_writers(dashboard, form, "Creating an adaptation")
    except NexusError as exc:
        return _refused(request, db, exc)
    key, name, tone = get(form, "key"), get(form, "name"), get(form, "tone") or "neutral"
    problems: list[Problem] = []
    try:
        data = AdaptationCreate.model_validate(
            {"key": key, "tone": tone, **({"name": name} if name else {})}
        )
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            target = f"new_adaptation_{loc[0]}" if loc else None
            problems.append(Problem(target, "New adaptation", message_of(error)))
        data = None
    if data is not None:
        try:
            experiments_service.create_adaptation(
                db, workspace_id=workspace_id, data=data, actor=actor_name(dashboard.principal)
            )
        except Conflict as exc:
            db.rollback()
            problems.append(Problem("new_adaptation_key", "New adaptation", exc.detail))
        except NexusError as exc:
            return _refused(request, db, exc)
    if problems:
        return _list_page(
            request,
            dashboard,
            db,
            problems=problems,
            adaptation_input={"key": key, "name": name, "tone": tone},
            status_code=422,
        )
    request.app.state.decisions.invalidate(workspace_id)
    return RedirectResponse(f"/pages/adaptations/{quote(key)}?created=1", status_code=303)


@router.get("/pages/adaptations/{key}")
def adaptation_editor(
    request: Request,
    dashboard: CurrentDashboard,
    db: DbSession,
    key: str,
    created: str = "",
    saved: str = "",
) -> HTMLResponse:
    try:
        workspace_id = _workspace(dashboard)
        adaptation = experiments_service.get_adaptation(
            db, workspace_id=workspace_id, key=_valid_key(key)
        )
    except NexusError as exc:
        return _error_page(request, exc)
    notice = "Created." if created else "Saved." if saved else None
    form = AdaptationForm.from_read(experiments_service.adaptation_read(adaptation))
    return _adaptation_page(request, dashboard, db, form, notice=notice)


@router.post("/pages/adaptations/{key}")
def save_adaptation(
    request: Request, dashboard: CurrentDashboard, db: DbSession, key: str, form: PostedForm
) -> Response:
    try:
        workspace_id = _for_writers(dashboard, form, "Changing an adaptation")
        experiments_service.get_adaptation(db, workspace_id=workspace_id, key=_valid_key(key))
    except NexusError as exc:
        return _refused(request, db, exc)
    state = AdaptationForm.from_form(form)
    state.key = key
    op = get(form, "op")
    if op == "more-rows":
        return _adaptation_page(
            request,
            dashboard,
            db,
            state,
            preview_page=get(form, "preview_page"),
            blank_rows=BLANK_ROWS + 3,
        )
    body, problems = state.body()
    if body is None:
        return _adaptation_page(
            request,
            dashboard,
            db,
            state,
            problems=problems,
            status_code=422,
            preview_page=get(form, "preview_page"),
        )
    try:
        experiments_service.replace_adaptation(
            db,
            workspace_id=workspace_id,
            key=key,
            data=body,
            actor=actor_name(dashboard.principal),
        )
    except NexusError as exc:
        db.rollback()
        problems = [Problem("other_when" if exc.errors else None, exc.title, exc.detail)]
        return _adaptation_page(
            request, dashboard, db, state, problems=problems, status_code=exc.status
        )
    request.app.state.decisions.invalidate(workspace_id)
    return RedirectResponse(f"/pages/adaptations/{quote(key)}?saved=1", status_code=303)


@router.post("/pages/adaptations/{key}/delete")
def delete_adaptation(
    request: Request, dashboard: CurrentDashboard, db: DbSession, key: str, form: PostedForm
) -> Response:
    try:
        workspace_id = _for_writers(dashboard, form, "Deleting an adaptation")
        experiments_service.delete_adaptation(
            db,
            workspace_id=workspace_id,
            key=_valid_key(key),
            actor=actor_name(dashboard.principal),
        )
    except NexusError as exc:
        return _refused(request, db, exc)
    request.app.state.decisions.invalidate(workspace_id)
    return RedirectResponse(f"/pages?deleted={quote(key)}", status_code=303)


# --- the list of hosted funnels and adaptations ----------------------------------------------


def _list_page(
    request: Request,
    dashboard: Dashboard,
    db: Session,
    *,
    problems: list[Problem] | None = None,
    funnel_input: dict[str, str] | None = None,
    adaptation_input: dict[str, str] | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    funnels: list[HostedFunnelRead] = []
    adaptations: list[AdaptationRead] = []
    more = False
    if dashboard.current is not None:
        result = pages_service.list_all(db, workspace_id=dashboard.current.id, limit=MAX_FUNNELS)
        funnels = [pages_service.read(f) for f in result.items]
        more = result.next_cursor is not None
        adaptations = _adaptations(db, dashboard.current.id)
    problems = problems or []
    return _render(
        request,
        "pages.html",
        status_code=status_code,
        d=dashboard,
        page="pages",
        funnels=funnels,
        more=more,
        adaptations=adaptations,
        trigger=_trigger_summary,
        problems=problems,
        errors=_errors_by_field(problems),
        funnel_input=funnel_input or {"name": "", "slug": "", "step": "landing"},
        adaptation_input=adaptation_input or {"key": "", "name": "", "tone": ""},
        notice=notice,
        can_write=dashboard.can("write"),
        reserved=RESERVED_SLUGS,
        tones=_known_tones(db, dashboard.current.id) if dashboard.current else [],
    )


@router.get("/pages")
def pages_list(
    request: Request, dashboard: CurrentDashboard, db: DbSession, deleted: str = ""
) -> HTMLResponse:
    """Hosted funnels with their steps, and the UI adaptations."""
    notice = f"Deleted {deleted}." if deleted and _KEY.match(deleted) else None
    return _list_page(request, dashboard, db, notice=notice)


_NEW_FUNNEL_FIELDS = {
    "name": ("new_funnel_name", "Name"),
    "slug": ("new_funnel_slug", "Slug"),
    "steps": ("new_funnel_step", "First step's slug"),
}


@router.post("/pages")
def create_funnel(
    request: Request, dashboard: CurrentDashboard, db: DbSession, form: PostedForm
) -> Response:
    """A new hosted funnel with one step, whose page starts as a headline and a call to
    action; the editor opens on it."""
    try:
        workspace_id = _for_writers(dashboard, form, "Creating a funnel")
    except NexusError as exc:
        return _refused(request, db, exc)
    name, slug, step = get(form, "name"), get(form, "slug"), get(form, "step") or "landing"
    typed = {"name": name, "slug": slug, "step": step}
    problems: list[Problem] = []
    if slug in RESERVED_SLUGS:
        message = "This address is taken by the editor's own pages."
        problems.append(Problem("new_funnel_slug", "Slug", message))
    data: HostedFunnelCreate | None = None
    if not problems:
        try:
            page = starter_page(name, step if SLUG.match(step) else "landing")
        except ValidationError:  # a name the funnel refuses too: it says why below
            page = starter_page("Untitled", "landing")
        try:
            data = HostedFunnelCreate.model_validate(
                {"name": name, "slug": slug, "steps": [{"slug": step, "page": page}]}
            )
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                head = str(error["loc"][0]) if error["loc"] else ""
                target, label = _NEW_FUNNEL_FIELDS.get(head, _NEW_FUNNEL_FIELDS["steps"])
                problems.append(Problem(target, label, message_of(error)))
    if data is not None:
        try:
            pages_service.create(
                db, workspace_id=workspace_id, data=data, actor=actor_name(dashboard.principal)
            )
        except Conflict as exc:
            db.rollback()
            problems.append(Problem("new_funnel_slug", "Slug", exc.detail))
        except NexusError as exc:
            return _refused(request, db, exc)
    if problems:
        return _list_page(
            request, dashboard, db, problems=problems, funnel_input=typed, status_code=422
        )
    _pages(request).invalidate(workspace_id, slug)
    return RedirectResponse(f"/pages/{slug}/{step}?created=1", status_code=303)


# --- one funnel: name, goal, steps -------------------------------------------------------------


def _funnel_page(
    request: Request,
    dashboard: Dashboard,
    funnel: HostedFunnelRead,
    *,
    problems: list[Problem] | None = None,
    settings_input: dict[str, str] | None = None,
    step_input: str = "",
    notice: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    problems = problems or []
    return _render(
        request,
        "page_funnel.html",
        status_code=status_code,
        d=dashboard,
        page="pages",
        funnel=funnel,
        problems=problems,
        errors=_errors_by_field(problems),
        settings_input=settings_input
        or {"name": funnel.name, "goal_event": funnel.goal_event or ""},
        step_input=step_input,
        notice=notice,
        can_write=dashboard.can("write"),
        max_steps=MAX_STEPS,
    )


@router.get("/pages/{slug}")
def funnel_page(
    request: Request, dashboard: CurrentDashboard, db: DbSession, slug: str, saved: str = ""
) -> HTMLResponse:
    try:
        funnel = _funnel(db, _workspace(dashboard), slug)
    except NexusError as exc:
        return _error_page(request, exc)
    return _funnel_page(request, dashboard, funnel, notice="Saved." if saved else None)


@dataclass(slots=True)
class _FunnelChange:
    """One form of the funnel page, posted: what it changes, and what to show again when it
    cannot (the problems, the typed settings or step)."""

    db: Session
    workspace_id: str
    funnel: HostedFunnelRead
    form: FormData
    actor: str
    problems: list[Problem] = field(default_factory=list)
    settings_input: dict[str, str] | None = None
    step_input: str = ""

    def replace(self, body: HostedFunnelBody) -> None:
        pages_service.replace(
            self.db,
            workspace_id=self.workspace_id,
            slug=self.funnel.slug,
            data=body,
            actor=self.actor,
        )

    def settings(self) -> None:
        typed = {"name": get(self.form, "name"), "goal_event": get(self.form, "goal_event")}
        self.settings_input = typed
        try:
            body = HostedFunnelBody.model_validate(
                {
                    "name": typed["name"],
                    "goal_event": typed["goal_event"] or None,
                    "steps": [s.model_dump() for s in self.funnel.steps],
                }
            )
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                loc = tuple(error["loc"])
                target = str(loc[0]) if loc and loc[0] in ("name", "goal_event") else None
                self.problems.append(Problem(target, "Settings", message_of(error)))
            return
        self.replace(body)

    def add_step(self) -> None:
        step = self.step_input = get(self.form, "step")
        position = get(self.form, "position")
        if not SLUG.match(step):
            message = "Use lower-case letters, digits, - and _ (it is part of the address)."
            self.problems.append(Problem("new_step", "New step", message))
        elif any(s.slug == step for s in self.funnel.steps):
            self.problems.append(Problem("new_step", "New step", "This funnel has that step."))
        else:
            pages_service.put_step(
                self.db,
                workspace_id=self.workspace_id,
                slug=self.funnel.slug,
                step=step,
                page=starter_page(step.replace("-", " ").replace("_", " ").capitalize(), step),
                position=int(position) if position.isdigit() else None,
                actor=self.actor,
            )

    def move_step(self) -> None:
        order = [s.slug for s in self.funnel.steps]
        step = get(self.form, "step")
        if step not in order:
            raise NotFound(f"Hosted funnel {self.funnel.slug!r} has no step {step!r}.")
        i = order.index(step)
        to = i - 1 if get(self.form, "direction") == "up" else i + 1
        if 0 <= to < len(order):
            steps = list(self.funnel.steps)
            steps[i], steps[to] = steps[to], steps[i]
            funnel = self.funnel
            self.replace(
                HostedFunnelBody(name=funnel.name, goal_event=funnel.goal_event, steps=steps)
            )

    def delete_step(self) -> None:
        pages_service.delete_step(
            self.db,
            workspace_id=self.workspace_id,
            slug=self.funnel.slug,
            step=get(self.form, "step"),
            actor=self.actor,
        )


_FUNNEL_CHANGES: dict[str, Callable[[_FunnelChange], None]] = {
    "settings": _FunnelChange.settings,
    "add-step": _FunnelChange.add_step,
    "move-step": _FunnelChange.move_step,
    "delete-step": _FunnelChange.delete_step,
}


@router.post("/pages/{slug}")
def change_funnel(
    request: Request, dashboard: CurrentDashboard, db: DbSession, slug: str, form: PostedForm
) -> Response:
    """The funnel page's forms, told apart by ``action``: ``settings``, ``add-step``,
    ``move-step``, ``delete-step`` and ``delete``."""
    try:
        workspace_id = _for_writers(dashboard, form, "Changing a funnel")
        funnel = _funnel(db, workspace_id, slug)
    except NexusError as exc:
        return _refused(request, db, exc)
    action = get(form, "action")
    actor = actor_name(dashboard.principal)
    if action == "delete":
        if get(form, "confirm") != slug:
            message = f"Type {slug} to confirm deleting the funnel."
            problems = [Problem("confirm", "Delete", message)]
            return _funnel_page(request, dashboard, funnel, problems=problems, status_code=422)
        pages_service.delete(db, workspace_id=workspace_id, slug=slug, actor=actor)
        _pages(request).invalidate(workspace_id, slug)
        return RedirectResponse(f"/pages?deleted={quote(slug)}", status_code=303)
    change = _FunnelChange(db, workspace_id, funnel, form, actor)
    handler = _FUNNEL_CHANGES.get(action)
    try:
        if handler is None:
            raise NotFound(f"The funnel page has no form {action!r}.")
        handler(change)
    except (Conflict, NotFound) as exc:
        db.rollback()
        change.problems.append(Problem(None, exc.title, exc.detail))
    except NexusError as exc:
        return _refused(request, db, exc)
    if change.problems:
        return _funnel_page(
            request,
            dashboard,
            _funnel(db, workspace_id, slug),
            problems=change.problems,
            settings_input=change.settings_input,
            step_input=change.step_input,
            status_code=422,
        )
    _pages(request).invalidate(workspace_id, slug)
    return RedirectResponse(f"/pages/{slug}?saved=1", status_code=303)


# --- the page editor ----------------------------------------------------------------------------


def _preview_choices(
    state: EditorState, adaptations: list[AdaptationRead]
) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The preview's selectors: variant keys used on the page, and the adaptations (a saved
    one: its tone and tokens) and bare tones (copy only) it can be shown in."""
    keys: list[str] = []
    tones: list[str] = []
    for block in state.blocks:
        for variant in block.variants:
            if variant.key and variant.key not in keys:
                keys.append(variant.key)
            tones.extend(t.name for t in variant.tones if t.name and t.name not in tones)
        tones.extend(n for n in tone_names(block.only_tones) if n not in tones)
    options = [
        (f"a:{a.key}", f"{a.name or a.key} (tone {a.tone}, tokens)", a.tone) for a in adaptations
    ]
    covered = {a.tone for a in adaptations}
    options.extend((f"t:{t}", f"Tone {t} (copy only)", t) for t in tones if t not in covered)
    return keys, options


def _editor_page(
    request: Request,
    dashboard: Dashboard,
    db: Session,
    funnel: HostedFunnelRead,
    step: str,
    state: EditorState,
    *,
    json_text: str,
    base: str,
    source: str = "fields",
    problems: list[Problem] | None = None,
    notice: str | None = None,
    focus: str | None = None,
    dirty: bool = False,
    status_code: int = 200,
    preview_variant: str = "",
    preview_adaptation: str = "",
) -> HTMLResponse:
    workspace_id = _workspace(dashboard)
    index, _saved = _step_of(funnel, step)
    adaptations = _adaptations(db, workspace_id)
    variant_keys, adaptation_options = _preview_choices(state, adaptations)
    problems = problems or []
    return _render(
        request,
        "page_editor.html",
        status_code=status_code,
        d=dashboard,
        page="pages",
        funnel=funnel,
        step=step,
        step_index=index,
        state=state,
        specs=kind_specs(),
        kinds=KIND_LABELS,
        json_text=json_text,
        base=base,
        source=source,
        problems=problems,
        errors=_errors_by_field(problems),
        notice=notice,
        focus=focus,
        dirty=dirty,
        can_write=dashboard.can("write"),
        variant_keys=variant_keys,
        adaptation_options=adaptation_options,
        preview_variant=preview_variant,
        preview_adaptation=preview_adaptation,
        live_url=pages_service.page_url(workspace_id, funnel.slug, step),
        value=text_of,
        lines="\n".join,
        max_blocks=MAX_BLOCKS,
        max_variants=MAX_VARIANTS,
    )


@router.get("/pages/{slug}/{step}")
def page_editor(
    request: Request,
    dashboard: CurrentDashboard,
    db: DbSession,
    slug: str,
    step: str,
    saved: str = "",
    created: str = "",
) -> HTMLResponse:
    """The page editor: the step's blocks as forms on the left, the live preview on the
    right (below, on a phone)."""
    try:
        funnel = _funnel(db, _workspace(dashboard), slug)
        _index, page = _step_of(funnel, _valid_slug(step))
    except NexusError as exc:
        return _error_page(request, exc)
    document = page.model_dump(mode="json", exclude_none=True)
    notice = "Saved." if saved else "Funnel created: edit its first page." if created else None
    return _editor_page(
        request,
        dashboard,
        db,
        funnel,
        step,
        state_from_document(document),
        json_text=pretty(document),
        base=page_hash(page),
        notice=notice,
    )


@router.post("/pages/{slug}/{step}")
def save_page(
    request: Request,
    dashboard: CurrentDashboard,
    db: DbSession,
    slug: str,
    step: str,
    form: PostedForm,
) -> Response:
    """Save the page (``op=save`` or ``save-json``), or apply one of the form's structural
    buttons and show the editor again with nothing saved."""
    try:
        workspace_id = _for_writers(dashboard, form, "Editing a page")
        funnel = _funnel(db, workspace_id, slug)
        _index, stored = _step_of(funnel, _valid_slug(step))
    except NexusError as exc:
        return _refused(request, db, exc)
    op = get(form, "op") or "save"
    submission = read_submission(form, op)
    choices = {
        "preview_variant": get(form, "preview_variant"),
        "preview_adaptation": get(form, "preview_adaptation"),
    }
    base = get(form, "base")
    if op == "apply-json":
        # The JSON becomes the fields (as far as they can show it), its problems next to them;
        # the text stays as typed. JSON that does not parse leaves everything as it was.
        parsed = submission.document is not None
        return _editor_page(
            request,
            dashboard,
            db,
            funnel,
            step,
            submission.state,
            json_text=submission.json_text,
            base=base,
            source="fields" if parsed else "json",
            problems=submission.problems,
            status_code=_status_of(submission.problems),
            dirty=True,
            focus=None if parsed else "f-document_json",
            notice="Not saved yet: save to publish the changes." if parsed else None,
            **choices,
        )
    if op not in ("save", "save-json"):
        state = submission.state
        focus, problems = apply_op(state, op)
        document, _ = document_from_state(state)
        return _editor_page(
            request,
            dashboard,
            db,
            funnel,
            step,
            state,
            json_text=pretty(document),
            base=base,
            problems=problems,
            focus=focus,
            dirty=True,
            notice="Not saved yet: save to publish the changes.",
            status_code=_status_of(problems),
            **choices,
        )
    problems = list(submission.problems)
    if not problems and base and base != page_hash(stored):
        problems.append(
            Problem(
                None,
                "Page",
                "Someone saved this page after you opened it. Your version is kept here: "
                "save again to replace theirs, or open the page anew to see it.",
            )
        )
        base = page_hash(stored)
    if submission.page is None or problems:
        return _editor_page(
            request,
            dashboard,
            db,
            funnel,
            step,
            submission.state,
            json_text=submission.json_text,
            base=base,
            source="json" if submission.from_json else "fields",
            problems=problems,
            dirty=True,
            status_code=409 if submission.page is not None else 422,
            **choices,
        )
    try:
        pages_service.put_step(
            db,
            workspace_id=workspace_id,
            slug=slug,
            step=step,
            page=submission.page,
            actor=actor_name(dashboard.principal),
        )
    except NexusError as exc:
        return _refused(request, db, exc)
    _pages(request).invalidate(workspace_id, slug)
    return RedirectResponse(f"/pages/{slug}/{step}?saved=1", status_code=303)


@router.get("/pages/{slug}/{step}/preview")
def saved_preview(
    request: Request,
    dashboard: CurrentDashboard,
    db: DbSession,
    slug: str,
    step: str,
    variant: str = "",
    adaptation: str = "",
) -> Response:
    """The saved page as a visitor would see it in a variant and adaptation (the preview
    frame's first content, and what members who cannot edit see)."""
    try:
        workspace_id = _workspace(dashboard)
        funnel = _funnel(db, workspace_id, slug)
        index, page = _step_of(funnel, _valid_slug(step))
    except NexusError as exc:
        return _preview_problems([Problem(None, exc.title, exc.detail)], status_code=exc.status)
    return _render_preview(
        funnel=funnel,
        workspace_id=workspace_id,
        index=index,
        page=page,
        variant=_variant_choice(variant),
        adaptation=_preview_adaptation(adaptation, _adaptations(db, workspace_id)),
        echo_document=page.model_dump(mode="json", exclude_none=True),
    )

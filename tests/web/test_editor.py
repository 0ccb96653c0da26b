"""The dashboard's funnel page editor and adaptation editor, through the ASGI app.

The forms are driven as a browser without JavaScript would drive them: each test reads the
fields of the rendered form (:class:`FormReader`), changes what a marketer would change, and
posts them back, so a template and its route cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
import re
from html import unescape
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nexus.pages.blocks import CONTENT, Page
from nexus.security.models import AuditLogEntry
from nexus.storage.database import Database
from nexus.web import editor_forms
from nexus.web.editor_forms import EditorState, apply_op, check, specs_of, state_from_document
from nexus.workspaces.models import Role
from tests.conftest import World, bearer, login

Fields = dict[str, Any]


class FormReader(HTMLParser):
    """What a browser posts from one form: named inputs (checked boxes only), the chosen
    option of each select, textareas; no buttons, nothing inside a disabled fieldset, nothing
    that belongs to another form."""

    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.inside = False
        self.fields: list[tuple[str, str]] = []
        self.disabled: list[bool] = []
        self.select: str | None = None
        self.chosen: str | None = None
        self.first: str | None = None
        self.textarea: str | None = None
        self.text: list[str] = []

    def _off(self) -> bool:
        return any(self.disabled)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = self.inside or a.get("id") == self.form_id
            return
        if not self.inside:
            return
        if tag == "fieldset":
            self.disabled.append("disabled" in a)
            return
        name = a.get("name")
        if not name or self._off() or "form" in a:
            if tag == "option" and self.select is not None:
                self._option(a)
            return
        if tag == "input":
            kind = a.get("type", "text")
            if kind in ("submit", "button", "image", "reset", "file"):
                return
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            self.fields.append((name, a.get("value", "on")))
        elif tag == "select":
            self.select, self.chosen, self.first = name, None, None
        elif tag == "textarea":
            self.textarea, self.text = name, []

    def _option(self, a: dict[str, str]) -> None:
        value = a.get("value", "")
        if self.first is None:
            self.first = value
        if "selected" in a:
            self.chosen = value

    def handle_endtag(self, tag: str) -> None:
        if not self.inside:
            return
        if tag == "form":
            self.inside = False
        elif tag == "fieldset" and self.disabled:
            self.disabled.pop()
        elif tag == "select" and self.select is not None:
            self.fields.append(
                (self.select, self.chosen if self.chosen is not None else self.first or "")
            )
            self.select = None
        elif tag == "textarea" and self.textarea is not None:
            self.fields.append((self.textarea, "".join(self.text)))
            self.textarea = None

    def handle_data(self, data: str) -> None:
        if self.textarea is not None:
            self.text.append(data)


def read_form(html: str, form_id: str) -> Fields:
    reader = FormReader(form_id)
    reader.feed(html)
    assert reader.fields, f"no form #{form_id} with fields"
    out: Fields = {}
    for name, value in reader.fields:
        if name in out:
            out[name] = [*out[name], value] if isinstance(out[name], list) else [out[name], value]
        else:
            out[name] = value
    return out


def textarea(html: str, name: str) -> str:
    match = re.search(rf'<textarea[^>]*name="{re.escape(name)}"[^>]*>(.*?)</textarea>', html, re.S)
    assert match is not None, f"no textarea {name}"
    return unescape(match[1])


def _writer(client: TestClient, world: World) -> str:
    return login(client, world.a.members[Role.ANALYST].email)


def _create_funnel(
    client: TestClient, csrf: str, slug: str = "spring", step: str = "landing"
) -> str:
    response = client.post(
        "/pages",
        data={"csrf_token": csrf, "name": "Spring offer", "slug": slug, "step": step},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


def _post(client: TestClient, url: str, fields: Fields, **changes: Any) -> Any:
    return client.post(url, data={**fields, **changes}, follow_redirects=False)


def _stored(client: TestClient, world: World, slug: str = "spring") -> dict[str, Any]:
    response = client.get(f"/v1/hosted-funnels/{slug}", headers=bearer(world.a.secret_key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _two_variant_page(client: TestClient, url: str) -> Fields:
    """Through the form's own buttons: a headline block with variants a and b, and a calm
    tone of variant a; returns the form as last shown (not saved yet)."""
    fields = read_form(client.get(url).text, "editor")
    added = _post(
        client, url, fields, op="block-add", new_block_kind="headline", new_block_id="hero"
    )
    assert added.status_code == 200, added.text
    fields = read_form(added.text, "editor")
    assert fields["blocks-2-id"] == "hero"
    assert fields["blocks-2-variants-0-content-text"] == "Your headline"
    fields["blocks-2-variants-0-content-text"] = "Grow more this spring"
    with_b = _post(client, url, fields, op="variant-add:2", **{"blocks-2-new_variant": "b"})
    fields = read_form(with_b.text, "editor")
    assert fields["blocks-2-variants-1-key"] == "b"
    # variant b starts as a copy of the variant shown
    assert fields["blocks-2-variants-1-content-text"] == "Grow more this spring"
    fields["blocks-2-variants-1-content-text"] = "Your garden, twice as green"
    with_tone = _post(client, url, fields, op="tone-add:2:0")
    fields = read_form(with_tone.text, "editor")
    fields["blocks-2-variants-0-tones-0-name"] = "calm"
    fields["blocks-2-variants-0-tones-0-content-text"] = "Take your time: spring lasts"
    return fields


# --- the list, creating a funnel --------------------------------------------------------------


def test_pages_need_a_session(client: TestClient, world: World) -> None:
    response = client.get("/pages/spring/landing", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")


def test_creating_a_funnel_from_the_form_opens_its_first_page(
    client: TestClient, world: World
) -> None:
    csrf = _writer(client, world)
    assert "New funnel" in client.get("/pages").text
    location = _create_funnel(client, csrf)
    assert location == "/pages/spring/landing?created=1"

    editor = client.get(location)
    assert editor.status_code == 200
    assert '<iframe name="preview" title="Preview"' in editor.text
    assert "Funnel created" in editor.text
    stored = _stored(client, world)
    assert stored["name"] == "Spring offer"
    page = stored["steps"][0]["page"]
    assert [b["kind"] for b in page["blocks"]] == ["headline", "cta"]
    assert page["blocks"][0]["variants"][0]["content"]["text"] == "Spring offer"
    listing = client.get("/pages").text
    assert 'href="/pages/spring/landing"' in listing
    assert f'href="/f/{world.a.id}/spring/landing"' in listing
    assert "/funnels#funnel-" in listing  # the funnel report of its analytics funnel


def test_a_funnel_form_with_problems_keeps_what_was_typed(client: TestClient, world: World) -> None:
    csrf = _writer(client, world)
    _create_funnel(client, csrf)
    again = client.post(
        "/pages", data={"csrf_token": csrf, "name": "Again", "slug": "spring", "step": "Bad Step"}
    )
    assert again.status_code == 422
    assert 'value="Again"' in again.text
    assert 'value="Bad Step"' in again.text
    assert 'data-testid="error-new_funnel_step"' in again.text

    taken = client.post(
        "/pages", data={"csrf_token": csrf, "name": "Again", "slug": "spring", "step": "a"}
    )
    assert taken.status_code == 422
    assert 'data-testid="error-new_funnel_slug"' in taken.text
    reserved = client.post(
        "/pages", data={"csrf_token": csrf, "name": "X", "slug": "preview", "step": "a"}
    )
    assert reserved.status_code == 422
    assert "taken by the editor" in reserved.text


# --- the page editor ----------------------------------------------------------------------------


def test_a_page_with_two_headline_variants_and_a_calm_tone_is_saved_and_served(
    client: TestClient, world: World
) -> None:
    csrf = _writer(client, world)
    url = _create_funnel(client, csrf).split("?")[0]
    fields = _two_variant_page(client, url)

    saved = _post(client, url, fields, op="save")
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == f"{url}?saved=1"
    assert "Saved." in client.get(saved.headers["location"]).text

    hero = _stored(client, world)["steps"][0]["page"]["blocks"][2]
    assert hero["id"] == "hero"
    assert [(v["key"], v["content"]["text"]) for v in hero["variants"]] == [
        ("a", "Grow more this spring"),
        ("b", "Your garden, twice as green"),
    ]
    assert hero["variants"][0]["tones"] == {"calm": {"text": "Take your time: spring lasts"}}
    live = client.get(f"/f/{world.a.id}/spring/landing")
    assert live.status_code == 200
    # no experiment on the page: every visitor sees the first variant
    assert "Grow more this spring" in live.text
    assert "twice as green" not in live.text


def test_saves_are_audited_under_the_user(
    client: TestClient, world: World, database: Database
) -> None:
    csrf = _writer(client, world)
    url = _create_funnel(client, csrf).split("?")[0]
    fields = read_form(client.get(url).text, "editor")
    assert _post(client, url, fields, op="save", title="Renamed").status_code == 303
    analyst = world.a.members[Role.ANALYST].user_id
    with database.session() as db:
        entries = db.scalars(
            select(AuditLogEntry).where(
                AuditLogEntry.chain == world.a.id, AuditLogEntry.action.like("page_funnel.%")
            )
        ).all()
    actions = {(e.action, e.actor) for e in entries}
    assert ("page_funnel.created", analyst) in actions
    assert ("page_funnel.step_replaced", analyst) in actions


def test_structural_buttons_change_the_form_without_saving(
    client: TestClient, world: World
) -> None:
    csrf = _writer(client, world)
    url = _create_funnel(client, csrf).split("?")[0]
    fields = read_form(client.get(url).text, "editor")
    moved = _post(client, url, fields, op="block-down:0")
    assert moved.status_code == 200
    assert 'data-focus="block-up-1"' in moved.text
    fields = read_form(moved.text, "editor")
    assert (fields["blocks-0-kind"], fields["blocks-1-kind"]) == ("cta", "headline")
    assert "Not saved yet" in moved.text

    faq = _post(client, url, fields, op="block-add", new_block_kind="faq", new_block_id="")
    fields = read_form(faq.text, "editor")
    assert fields["blocks-2-id"] == "faq"
    more = _post(client, url, fields, op="item-add:blocks-2-variants-0-content-items")
    fields = read_form(more.text, "editor")
    assert fields["blocks-2-variants-0-content-items-n"] == "2"
    fields["blocks-2-variants-0-content-items-1-question"] = "Shipping?"
    fields["blocks-2-variants-0-content-items-1-answer"] = "Free over 50 EUR."
    deleted = _post(client, url, fields, op="block-delete:0")
    fields = read_form(deleted.text, "editor")
    assert fields["blocks-n"] == "2"
    # the stored page is still the starter page
    stored = _stored(client, world)["steps"][0]["page"]
    assert [b["kind"] for b in stored["blocks"]] == ["headline", "cta"]

    assert _post(client, url, fields, op="save").status_code == 303
    stored = _stored(client, world)["steps"][0]["page"]
    assert [b["kind"] for b in stored["blocks"]] == ["headline", "faq"]
    assert stored["blocks"][1]["variants"][0]["content"]["items"][1] == {
        "question": "Shipping?",
        "answer": "Free over 50 EUR.",
    }


def test_an_invalid_page_answers_422_with_the_errors_at_their_fields(
    client: TestClient, world: World
) -> None:
    csrf = _writer(client, world)
    url = _create_funnel(client, csrf).split("?")[0]
    fields = read_form(client.get(url).text, "editor")
    fields["blocks-1-variants-0-content-href"] = "javascript:alert(1)"
    fields["blocks-0-variants-0-content-text"] = ""
    response = _post(client, url, fields, op="save")
    assert response.status_code == 422
    assert 'data-testid="error-blocks-1-variants-0-content-href"' in response.text
    assert "must be a path on this site" in response.text
    assert 'data-testid="error-blocks-0-variants-0-content-text"' in response.text
    # what was typed is shown again, so nothing is lost
    assert read_form(response.text, "editor")["blocks-1-variants-0-content-href"] == (
        "javascript:alert(1)"
    )
    stored = _stored(client, world)["steps"][0]["page"]
    assert stored["blocks"][1]["variants"][0]["content"]["href"] == "./landing"


def test_an_invalid_json_document_keeps_the_submitted_text(
    client: TestClient, world: World
) -> None:
    csrf = _writer(client, world)
    url = _create_funnel(client, csrf).split("?")[0]
    fields = read_form(client.get(url).text, "editor")
    document = json.loads(fields["document_json"])
    document["blocks"][1]["variants"][0]["tones"] = {"calm": {"href": "ftp://x"}}
    submitted = json.dumps(document, indent=1) + "\n  "
    response = _post(client, url, fields, op="save-json", document_json=submitted)
    assert response.status_code == 422
    assert textarea(response.text, "document_json") == submitted
    assert 'data-testid="error-blocks-1-variants-0-tones-0-content-href"' in response.text

    broken = '{"title": "x", '
    response = _post(client, url, fields, op="save-json", document_json=broken)
    assert response.status_code == 422
    assert textarea(response.text, "document_json") == broken
    assert "Not valid JSON" in response.text


def test_a_valid_json_document_is_saved(client: TestClient, world: World) -> None:
    csrf = _writer(client, world)
    url = _create_funnel(client, csrf).split("?")[0]
    fields = read_form(client.get(url).text, "editor")
    document = {
        "title": "From JSON",
        "experiment": "spring-test",
        "blocks": [
            {
                "id": "h",
                "kind": "headline",
                "variants": [
                    {"key": "control", "content": {"text": "One"}},
                    {"key": "bold", "content": {"text": "Two"}},
                ],
            }
        ],
    }
    response = _post(client, url, fields, op="save-json", document_json=json.dumps(document))
    assert response.status_code == 303
    page = Page.model_validate(_stored(client, world)["steps"][0]["page"])
    assert page.experiment == "spring-test"
    assert [v.key for v in page.blocks[0].variants] == ["control", "bold"]
    # and the fields show it
    fields = read_form(client.get(url).text, "editor")
    assert fields["blocks-0-variants-1-content-text"] == "Two"


def test_applying_json_fills_the_fields_without_saving(client: TestClient, world: World) -> None:
    csrf = _writer(client, world)
    url = _create_funnel(client, csrf).split("?")[0]
    fields = read_form(client.get(url).text, "editor")
    document = json.loads(fields["document_json"])
    document["blocks"].append(
        {"id": "q", "kind": "faq", "variants": [{"key": "a", "content": {"items": []}}]}
    )
    text = json.dumps(document)
    applied = _post(client, url, fields, op="apply-json", document_json=text)
    assert applied.status_code == 422  # an FAQ needs a question: said at its field
    assert 'data-testid="error-blocks-2-variants-0-content-items"' in applied.text
    assert textarea(applied.text, "document_json") == text
    shown = read_form(applied.text, "editor")
    assert (shown["blocks-2-kind"], shown["source"]) == ("faq", "fields")
    assert len(_stored(client, world)["steps"][0]["page"]["blocks"]) == 2

    broken = _post(client, url, fields, op="apply-json", document_json="{")
    assert broken.status_code == 422
    assert read_form(broken.text, "editor")["source"] == "json"
    assert textarea(broken.text, "document_json") == "{"


def test_a_save_after_someone_elses_asks_before_replacing(client: TestClient, world: World) -> None:
    csrf = _writer(client, world)
    url = _create_funnel(client, csrf).split("?")[0]
    mine = read_form(client.get(url).text, "editor")
    theirs = read_form(client.get(url).text, "editor")
    assert _post(client, url, theirs, op="save", title="Theirs").status_code == 303
    conflict = _post(client, url, mine, op="save", title="Mine")
    assert conflict.status_code == 409
    assert "Someone saved this page after you opened it" in conflict.text
    assert _stored(client, world)["steps"][0]["page"]["title"] == "Theirs"
    again = read_form(conflict.text, "editor")
    assert again["title"] == "Mine"
    assert _post(client, url, again, op="save").status_code == 303
    assert _stored(client, world)["steps"][0]["page"]["title"] == "Mine"


def test_a_viewer_sees_no_save_controls_and_is_refused(client: TestClient, world: World) -> None:
    csrf = _writer(client, world)
    url = _create_funnel(client, csrf).split("?")[0]
    fields = read_form(client.get(url).text, "editor")

    viewer_csrf = login(client, world.a.members[Role.VIEWER].email)
    page = client.get(url)
    assert page.status_code == 200
    assert 'data-testid="save"' not in page.text
    assert 'value="block-add"' not in page.text
    assert 'data-testid="read-only"' in page.text
    assert "New funnel" not in client.get("/pages").text

    refused = _post(client, url, fields, op="save", title="Viewer's", csrf_token=viewer_csrf)
    assert refused.status_code == 403
    create = client.post(
        "/pages", data={"csrf_token": viewer_csrf, "name": "V", "slug": "v", "step": "a"}
    )
    assert create.status_code == 403
    assert _stored(client, world)["steps"][0]["page"]["title"] == "Spring offer"
    # members who cannot edit still see the saved page's preview
    preview = client.get(f"{url}/preview")
    assert preview.status_code == 200
    assert "Spring offer" in preview.text


def test_a_post_without_the_csrf_token_is_refused(client: TestClient, world: World) -> None:
    csrf = _writer(client, world)
    url = _create_funnel(client, csrf).split("?")[0]
    fields = read_form(client.get(url).text, "editor")
    del fields["csrf_token"]
    assert _post(client, url, fields, op="save", title="Forged").status_code == 403
    assert (
        _post(client, url, fields, op="save", title="Forged", csrf_token="x" * 40).status_code
        == 403
    )
    assert _stored(client, world)["steps"][0]["page"]["title"] == "Spring offer"
    funnel = client.post("/pages", data={"name": "F", "slug": "forged", "step": "a"})
    assert funnel.status_code == 403
    preview = client.post("/pages/preview", data=fields)
    assert preview.status_code == 403


def test_another_workspace_cannot_reach_the_funnel(client: TestClient, world: World) -> None:
    csrf = _writer(client, world)
    url = _create_funnel(client, csrf).split("?")[0]
    fields = read_form(client.get(url).text, "editor")
    other = login(client, world.b.members[Role.OWNER].email)
    assert client.get(url).status_code == 404
    assert _post(client, url, fields, op="save", csrf_token=other).status_code == 404
    preview = client.post("/pages/preview", data={**fields, "csrf_token": other})
    assert preview.status_code == 404


# --- the preview ----------------------------------------------------------------------------------


def test_the_preview_renders_the_unsaved_form_framable_by_the_dashboard_only(
    client: TestClient, world: World
) -> None:
    csrf = _writer(client, world)
    url = _create_funnel(client, csrf).split("?")[0]
    fields = _two_variant_page(client, url)
    response = client.post("/pages/preview", data={**fields, "op": "preview"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    policy = response.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce is not None
    assert "frame-ancestors 'self'" in policy
    assert "Grow more this spring" in response.text
    assert "/sdk/nexus.js" not in response.text  # nothing is tracked from a preview
    echo = re.search(r'id="nexus-editor-echo">(.*?)</script>', response.text)
    assert echo is not None
    assert json.loads(echo[1])["problems"] == []

    variant_b = client.post("/pages/preview", data={**fields, "preview_variant": "b"})
    assert "twice as green" in variant_b.text
    calm = client.post("/pages/preview", data={**fields, "preview_adaptation": "t:calm"})
    assert "Take your time: spring lasts" in calm.text
    # nothing was saved
    assert len(_stored(client, world)["steps"][0]["page"]["blocks"]) == 2


def test_the_preview_of_an_invalid_page_lists_its_problems(
    client: TestClient, world: World
) -> None:
    csrf = _writer(client, world)
    url = _create_funnel(client, csrf).split("?")[0]
    fields = read_form(client.get(url).text, "editor")
    response = client.post(
        "/pages/preview", data={**fields, "blocks-1-variants-0-content-label": ""}
    )
    assert response.status_code == 422
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    assert 'data-testid="preview-problems"' in response.text
    assert "at least 1 character" in response.text
    echo = re.search(r'id="nexus-editor-echo">(.*?)</script>', response.text)
    assert echo is not None
    problems = json.loads(echo[1])["problems"]
    assert [p["field"] for p in problems] == ["blocks-1-variants-0-content-label"]

    junk = client.post(
        "/pages/preview", data={**fields, "source": "json", "document_json": "[1, 2"}
    )
    assert junk.status_code == 422
    assert "Not valid JSON" in junk.text


def test_a_saved_adaptation_shows_its_tokens_in_the_preview(
    client: TestClient, world: World
) -> None:
    csrf = _writer(client, world)
    url = _create_funnel(client, csrf).split("?")[0]
    created = client.post(
        "/v1/adaptations",
        headers=bearer(world.a.secret_key),
        json={"key": "calm", "tone": "calm", "tokens": {"--nexus-accent": "#23665a"}},
    )
    assert created.status_code == 201
    fields = read_form(client.get(url).text, "editor")
    preview = client.post("/pages/preview", data={**fields, "preview_adaptation": "a:calm"})
    assert preview.status_code == 200
    assert "--nexus-accent:#23665a" in preview.text
    nonce = re.search(r"'nonce-([^']+)'", preview.headers["content-security-policy"])
    assert nonce is not None
    assert f'<style nonce="{nonce[1]}">' in preview.text


# --- the funnel page --------------------------------------------------------------------------


def test_the_funnel_page_renames_adds_moves_and_removes_steps(
    client: TestClient, world: World
) -> None:
    csrf = _writer(client, world)
    _create_funnel(client, csrf)

    def act(action: str, **data: str) -> Any:
        return client.post(
            "/pages/spring",
            data={"csrf_token": csrf, "action": action, **data},
            follow_redirects=False,
        )

    assert act("settings", name="Spring sale", goal_event="Order Completed").status_code == 303
    assert act("add-step", step="checkout").status_code == 303
    assert act("add-step", step="offer", position="1").status_code == 303
    assert [s["slug"] for s in _stored(client, world)["steps"]] == ["landing", "offer", "checkout"]
    assert act("move-step", step="checkout", direction="up").status_code == 303
    assert [s["slug"] for s in _stored(client, world)["steps"]] == ["landing", "checkout", "offer"]
    assert act("delete-step", step="offer").status_code == 303
    stored = _stored(client, world)
    assert stored["name"] == "Spring sale"
    assert [s["slug"] for s in stored["steps"]] == ["landing", "checkout"]
    page = client.get("/pages/spring").text
    assert "Spring sale" in page
    assert 'href="/pages/spring/checkout"' in page

    duplicate = act("add-step", step="checkout")
    assert duplicate.status_code == 422
    assert 'data-testid="error-new_step"' in duplicate.text
    bad_name = act("settings", name="", goal_event="")
    assert bad_name.status_code == 422
    assert 'data-testid="error-name"' in bad_name.text
    assert act("delete", confirm="nope").status_code == 422
    assert act("delete", confirm="spring").status_code == 303
    gone = client.get("/v1/hosted-funnels/spring", headers=bearer(world.a.secret_key))
    assert gone.status_code == 404
    assert client.get(f"/f/{world.a.id}/spring/landing").status_code == 404


# --- adaptations ------------------------------------------------------------------------------


def test_an_adaptation_is_created_edited_with_a_trigger_and_deleted(
    client: TestClient, world: World
) -> None:
    csrf = _writer(client, world)
    _create_funnel(client, csrf)
    created = client.post(
        "/pages/adaptations",
        data={"csrf_token": csrf, "key": "soothe", "name": "Soothe", "tone": "calm"},
        follow_redirects=False,
    )
    assert created.status_code == 303
    url = "/pages/adaptations/soothe"
    assert created.headers["location"] == f"{url}?created=1"
    page = client.get(url)
    assert page.status_code == 200
    assert '<iframe name="preview" title="Preview"' in page.text
    fields = read_form(page.text, "adaptation")
    fields.update(
        {
            "emotion": ["confusion", "fear"],
            "valence_below": "-0.2",
            "token-0-name": "--nexus-accent",
            "token-0-value": "#23665a",
            "copy-0-slot": "headline",
            "copy-0-text": "Take your time",
        }
    )
    saved = _post(client, url, fields, op="save")
    assert saved.status_code == 303, saved.text

    api = client.get("/v1/adaptations/soothe", headers=bearer(world.a.secret_key)).json()
    assert api["tone"] == "calm"
    assert api["tokens"] == {"--nexus-accent": "#23665a"}
    assert api["copy"] == {"headline": "Take your time"}
    assert api["when"] == [
        {"attribute": "emotion.dominant", "op": "in", "value": ["confusion", "fear"]},
        {"attribute": "emotion.valence", "op": "lt", "value": -0.2},
    ]
    # the form shows the trigger as it was set
    again = read_form(client.get(url).text, "adaptation")
    assert again["emotion"] == ["confusion", "fear"]
    assert again["valence_below"] == "-0.2"

    # a colour picker moved without the script: its colour is the value
    moved = {**again, "token-0-colour": "#112233"}
    assert _post(client, url, moved, op="save").status_code == 303
    api = client.get("/v1/adaptations/soothe", headers=bearer(world.a.secret_key)).json()
    assert api["tokens"] == {"--nexus-accent": "#112233"}

    deleted = client.post(f"{url}/delete", data={"csrf_token": csrf}, follow_redirects=False)
    assert deleted.status_code == 303
    gone = client.get("/v1/adaptations/soothe", headers=bearer(world.a.secret_key))
    assert gone.status_code == 404


def test_an_adaptation_form_with_problems_keeps_its_input(client: TestClient, world: World) -> None:
    csrf = _writer(client, world)
    client.post("/pages/adaptations", data={"csrf_token": csrf, "key": "soothe", "tone": "calm"})
    url = "/pages/adaptations/soothe"
    fields = read_form(client.get(url).text, "adaptation")
    fields.update(
        {"valence_below": "3", "other_when": "[{", "token-0-name": "", "token-0-value": "#fff"}
    )
    response = _post(client, url, fields, op="save")
    assert response.status_code == 422
    for key in ("valence_below", "other_when", "token-0-name"):
        assert f'data-testid="error-{key}"' in response.text
    kept = read_form(response.text, "adaptation")
    assert (kept["valence_below"], kept["other_when"], kept["token-0-value"]) == ("3", "[{", "#fff")

    viewer = login(client, world.a.members[Role.VIEWER].email)
    assert client.get(url).status_code == 200
    assert 'data-testid="save"' not in client.get(url).text
    refused = _post(client, url, {**fields, "csrf_token": viewer}, op="save")
    assert refused.status_code == 403
    assert client.post(f"{url}/delete", data={"csrf_token": viewer}).status_code == 403


def test_an_adaptation_preview_shows_its_tokens_and_tone(client: TestClient, world: World) -> None:
    csrf = _writer(client, world)
    url = _create_funnel(client, csrf).split("?")[0]
    fields = _two_variant_page(client, url)
    assert _post(client, url, fields, op="save").status_code == 303
    client.post("/pages/adaptations", data={"csrf_token": csrf, "key": "soothe", "tone": "plain"})
    form = read_form(client.get("/pages/adaptations/soothe").text, "adaptation")
    assert form["preview_page"] == "spring/landing"
    preview = client.post(
        "/pages/preview",
        data={**form, "tone": "calm", "token-0-name": "--nexus-bg", "token-0-value": "#eef6f3"},
    )
    assert preview.status_code == 200
    assert "--nexus-bg:#eef6f3" in preview.text
    assert "Take your time: spring lasts" in preview.text


# --- the forms' pure core -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(CONTENT))
def test_every_block_kind_has_form_fields(kind: str) -> None:
    specs = specs_of(CONTENT[kind])
    assert [s.name for s in specs] == list(CONTENT[kind].model_fields)
    starter = editor_forms.STARTERS[kind]
    if kind != "image":  # an image starts without its address and text alternative
        CONTENT[kind].model_validate(starter)


def test_field_widgets_follow_the_content_models() -> None:
    widgets = {s.name: s.widget for s in specs_of(CONTENT["image"])}
    assert widgets == {"src": "text", "alt": "text", "width": "number", "height": "number"}
    form_fields = {s.name: s for s in specs_of(CONTENT["form"])}
    assert form_fields["fields"].widget == "group"
    item = {s.name: s for s in form_fields["fields"].items}
    assert item["type"].widget == "select"
    assert item["type"].options == ("text", "email", "tel", "textarea", "checkbox")
    assert item["required"].widget == "checkbox"
    plan = {s.name: s for s in specs_of(CONTENT["price_table"])[0].items}
    assert plan["features"].widget == "lines"
    assert plan["price"].minimum == 0
    assert {s.name: s.widget for s in specs_of(CONTENT["body"])} == {"text": "textarea"}
    assert "https://" in {s.name: s for s in specs_of(CONTENT["cta"])}["href"].help


def test_a_document_survives_the_form_unchanged() -> None:
    from nexus.pages.samples import demo_funnel

    for step in demo_funnel()["steps"]:
        page = Page.model_validate(step["page"])
        state = state_from_document(page.model_dump(mode="json"))
        document, problems = editor_forms.document_from_state(state)
        assert problems == []
        again, found = check(document)
        assert found == []
        assert again == page


def test_problems_are_placed_at_their_fields() -> None:
    document = {
        "title": "",
        "blocks": [
            {"id": "a", "kind": "headline", "variants": [{"key": "x", "content": {"text": "t"}}]},
            {
                "id": "a",
                "kind": "price_table",
                "variants": [
                    {"key": "x", "content": {"plans": [{"name": "P", "price": -1}]}},
                    {
                        "key": "x",
                        "content": {"plans": [{"name": "P", "price": 1}]},
                        "tones": {"Calm!": {}},
                    },
                ],
            },
        ],
    }
    page, problems = check(document)
    assert page is None
    fields = {p.field for p in problems}
    assert "title" in fields
    assert "blocks-1-id" in fields  # the second block of id "a"
    assert "blocks-1-variants-0-content-plans-0-price" in fields
    assert "blocks-1-variants-1-key" in fields
    assert "blocks-1-variants-1-tones-0-name" in fields


def test_buttons_move_copy_and_remove() -> None:
    state = EditorState(title="t")
    assert apply_op(state, "block-add")[1] == []
    state.new_block_kind = "headline"
    assert apply_op(state, "block-add") == ("f-blocks-1-id", [])
    assert [b.id for b in state.blocks] == ["headline", "headline-2"]
    state.blocks[0].new_variant = "Not A Key"
    focus, problems = apply_op(state, "variant-add:0")
    assert (focus, problems[0].field) == ("f-blocks-0-new_variant", "blocks-0-new_variant")
    state.blocks[0].new_variant = "b"
    apply_op(state, "variant-add:0")
    assert [v.key for v in state.blocks[0].variants] == ["a", "b"]
    assert apply_op(state, "block-up:1") == ("block-down-0", [])
    assert [b.id for b in state.blocks] == ["headline-2", "headline"]
    assert apply_op(state, "variant-remove:0:0")[1][0].message.startswith("A block keeps")
    assert apply_op(state, "nonsense:1") == (None, [])
    assert apply_op(state, "block-delete:7") == (None, [])

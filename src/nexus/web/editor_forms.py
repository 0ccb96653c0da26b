"""The forms of the page and adaptation editors: fields, reading them, checking them.

A page is edited as a form whose fields come from the block kinds' content models
(:data:`nexus.pages.blocks.CONTENT`): strings become text inputs, numbers number inputs,
booleans checkboxes, literals selects, lists of text a textarea with one per line, and lists
of models (form fields, price plans, FAQ items) repeated groups of their own fields. A new
block kind or content field reaches the editor without touching it.

What the form shows is an :class:`EditorState`: the page document with lists where the
document has maps (a variant's tones), and what was typed where it does not parse, so that a
form that does not validate comes back exactly as it was sent. :func:`document_from_state`
turns it into a page document; :func:`check` validates that with
:class:`nexus.pages.blocks.Page` and places every error at its form field.

No I/O here: the routes (``nexus.web.editor``) read the posted form and store the result.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from starlette.datastructures import FormData

from nexus.emotion.models.taxonomy import GOEMOTIONS
from nexus.experiments.models import AdaptationBody, AdaptationRead
from nexus.pages import blocks
from nexus.pages.blocks import CONTENT, MAX_BLOCKS, MAX_TONES, MAX_VARIANTS, Page

MAX_ITEMS = 50  # list items (form fields, plans, questions) read per list
MAX_TOKENS = 200
MAX_COPY = 200
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
HEX_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}){1,2}$")
_SEPARATORS = re.compile(r"[\s,]+")
_URL_HELP = "A path on this site (/…), ./step for another step of this funnel, or https://…"
_LABELS = {
    "href": "Link",
    "src": "Image address",
    "alt": "Text alternative",
    "cta_label": "Button label",
    "submit_label": "Button label",
    "goal_event": "Goal event",
}
KIND_LABELS = {
    "headline": "Headline",
    "body": "Text",
    "image": "Image",
    "cta": "Call to action",
    "form": "Form",
    "chat": "Chat",
    "testimonial": "Testimonial",
    "price_table": "Price table",
    "faq": "FAQ",
}
# What a new block starts with: enough for the preview to show it at once (an image needs
# its address and text alternative first).
STARTERS: dict[str, dict[str, Any]] = {
    "headline": {"text": "Your headline"},
    "body": {"text": "Say what the visitor gets."},
    "image": {"src": "", "alt": ""},
    "cta": {"label": "Continue", "href": "/"},
    "form": {
        "fields": [{"name": "email", "label": "E-mail", "type": "email", "required": True}],
        "submit_label": "Send",
    },
    "chat": {"label": "Questions? Ask us anything"},
    "testimonial": {"quote": "What a customer said.", "author": "Their name"},
    "price_table": {"plans": [{"name": "Basic", "price": 10, "features": ["What it includes"]}]},
    "faq": {"items": [{"question": "A question visitors ask?", "answer": "Its answer."}]},
}
DOMINANT_ATTRIBUTE = "emotion.dominant"
VALENCE_ATTRIBUTE = "emotion.valence"


# --- form fields derived from the content models -------------------------------------------

Widget = Literal["text", "textarea", "number", "checkbox", "select", "lines", "group"]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One form field of a block kind's content, derived from its pydantic field."""

    name: str
    label: str
    widget: Widget
    required: bool
    default: Any = None
    help: str = ""
    integer: bool = False
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    options: tuple[str, ...] = ()
    min_items: int = 0
    max_items: int | None = None
    items: tuple[FieldSpec, ...] = ()


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The type inside ``X | None`` and ``Annotated[X, …]``, and the constraints found there."""
    metadata: list[Any] = []
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        annotation = args[0]  # the content models have no other unions
    if get_origin(annotation) is Annotated:
        base, *extra = get_args(annotation)
        for item in extra:
            metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        annotation = base
    return annotation, metadata


def _bounds(metadata: Iterable[Any]) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            bounds["minimum"] = float(item.ge)  # type: ignore[arg-type] # numbers in these models
        elif isinstance(item, annotated_types.Le):
            bounds["maximum"] = float(item.le)  # type: ignore[arg-type] # numbers in these models
        elif isinstance(item, annotated_types.MinLen):
            bounds["min_length"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            bounds["max_length"] = item.max_length
    return bounds


def _url_fields(model: type[BaseModel]) -> set[str]:
    """The fields the page model checks as links (its own URL rule)."""
    found: set[str] = set()
    for decorator in model.__pydantic_decorators__.field_validators.values():
        if decorator.func is blocks._check_url:
            found.update(decorator.info.fields)
    return found


def _spec(kind: Any, bounds: dict[str, Any], common: dict[str, Any], where: str) -> FieldSpec:
    if get_origin(kind) is Literal:
        return FieldSpec(widget="select", options=tuple(map(str, get_args(kind))), **common)
    if kind is bool:
        return FieldSpec(widget="checkbox", **common)
    if kind in (int, float):
        return FieldSpec(
            widget="number",
            integer=kind is int,
            minimum=bounds.get("minimum"),
            maximum=bounds.get("maximum"),
            **common,
        )
    if kind is str:
        longest = bounds.get("max_length")
        widget: Widget = "textarea" if longest is not None and longest > 2000 else "text"
        return FieldSpec(widget=widget, max_length=longest, **common)
    if get_origin(kind) is list:
        item, item_metadata = _unwrap(get_args(kind)[0])
        limits = {"min_items": bounds.get("min_length", 0), "max_items": bounds.get("max_length")}
        if isinstance(item, type) and issubclass(item, BaseModel):
            return FieldSpec(widget="group", items=specs_of(item), **limits, **common)
        longest = _bounds(item_metadata).get("max_length")
        return FieldSpec(widget="lines", max_length=longest, **limits, **common)
    raise TypeError(f"{where}: the editor has no form field for {kind!r}")


@cache
def specs_of(model: type[BaseModel]) -> tuple[FieldSpec, ...]:
    """The form fields of a content model, in its fields' order."""
    out: list[FieldSpec] = []
    urls = _url_fields(model)
    for name, info in model.model_fields.items():
        kind, inner = _unwrap(info.annotation)
        required = info.is_required()
        common: dict[str, Any] = {
            "name": name,
            "label": _LABELS.get(name, name.replace("_", " ").capitalize()),
            "required": required,
            "default": None if required else info.get_default(call_default_factory=True),
            "help": info.description or (_URL_HELP if name in urls else ""),
        }
        out.append(
            _spec(kind, _bounds([*info.metadata, *inner]), common, f"{model.__name__}.{name}")
        )
    return tuple(out)


def kind_specs() -> dict[str, tuple[FieldSpec, ...]]:
    return {kind: specs_of(model) for kind, model in CONTENT.items()}


def _specs(kind: str) -> tuple[FieldSpec, ...]:
    return specs_of(CONTENT[kind]) if kind in CONTENT else ()


# --- the editor's state: what the form shows, from a document or from a posted form ---------


@dataclass(slots=True)
class ToneState:
    name: str
    values: dict[str, Any]


@dataclass(slots=True)
class VariantState:
    key: str
    values: dict[str, Any]
    tones: list[ToneState] = field(default_factory=list)


@dataclass(slots=True)
class BlockState:
    id: str
    kind: str
    variants: list[VariantState]
    only_tones: str = ""
    selected: int = 0  # the variant tab shown
    new_variant: str = ""  # what was typed as a new variant's key


@dataclass(slots=True)
class EditorState:
    """The page as the form shows it: lists where the document has maps (tones), and what
    was typed where it does not parse yet."""

    title: str = ""
    experiment: str = ""
    blocks: list[BlockState] = field(default_factory=list)
    new_block_kind: str = "headline"
    new_block_id: str = ""


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong with a posted form: the form field it belongs to (``None``: the form
    as a whole), where that is in words, and what is wrong."""

    field: str | None
    where: str
    message: str


def text_of(value: Any) -> str:
    """A value as a form field shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def pretty(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


def _values_from(content: Any, specs: Iterable[FieldSpec], *, override: bool) -> dict[str, Any]:
    """A content document (or a tone's override of one) as form values."""
    source = content if isinstance(content, dict) else {}
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.name not in source:
            if not override:
                out[spec.name] = [] if spec.widget in ("group", "lines") else None
            continue
        value = source[spec.name]
        if spec.widget == "group" and not override:
            items = value if isinstance(value, list) else []
            out[spec.name] = [_values_from(item, spec.items, override=False) for item in items]
        elif spec.widget == "group":  # a tone's whole list: edited as JSON
            out[spec.name] = pretty(value)
        elif spec.widget == "lines":
            out[spec.name] = list(map(text_of, value)) if isinstance(value, list) else [value]
        else:
            out[spec.name] = value
    return out


def _variant_from(raw: Any, specs: tuple[FieldSpec, ...]) -> VariantState:
    variant = raw if isinstance(raw, dict) else {}
    tones = variant.get("tones")
    return VariantState(
        key=text_of(variant.get("key")),
        values=_values_from(variant.get("content"), specs, override=False),
        tones=[
            ToneState(name=str(name), values=_values_from(override, specs, override=True))
            for name, override in (tones.items() if isinstance(tones, dict) else [])
        ],
    )


def state_from_document(document: Any) -> EditorState:
    """The form of a page document, as far as it can be read (the JSON textarea keeps the
    rest: an unknown kind, a variant that is not an object)."""
    raw = document if isinstance(document, dict) else {}
    state = EditorState(title=text_of(raw.get("title")), experiment=text_of(raw.get("experiment")))
    raw_blocks = raw.get("blocks")
    for raw_block in raw_blocks if isinstance(raw_blocks, list) else []:
        block = raw_block if isinstance(raw_block, dict) else {}
        kind = text_of(block.get("kind"))
        variants = block.get("variants")
        only = block.get("only_tones")
        state.blocks.append(
            BlockState(
                id=text_of(block.get("id")),
                kind=kind,
                variants=[
                    _variant_from(v, _specs(kind))
                    for v in (variants if isinstance(variants, list) else [])
                ],
                only_tones=", ".join(map(text_of, only)) if isinstance(only, list) else "",
            )
        )
    return state


def get(form: FormData, key: str) -> str:
    """A posted text field, trimmed ("" when absent or a file)."""
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def count(form: FormData, key: str, limit: int) -> int:
    text = get(form, key)
    return min(int(text), limit) if text.isdigit() else 0


def _values_from_form(
    form: FormData, prefix: str, specs: Iterable[FieldSpec], *, override: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in specs:
        key = f"{prefix}-{spec.name}"
        if spec.widget == "group" and not override:
            out[spec.name] = [
                _values_from_form(form, f"{key}-{i}", spec.items, override=False)
                for i in range(count(form, f"{key}-n", MAX_ITEMS))
            ]
        elif spec.widget == "checkbox" and not override:
            out[spec.name] = key in form
        elif spec.widget == "lines":
            lines = [line.strip() for line in get(form, key).splitlines() if line.strip()]
            if lines or not override:
                out[spec.name] = lines
        elif spec.widget == "checkbox":  # a tone's yes / no / as in the variant
            if get(form, key) in ("true", "false"):
                out[spec.name] = get(form, key) == "true"
        elif get(form, key) or not override:
            out[spec.name] = get(form, key)
    return out


def _variant_from_form(form: FormData, vp: str, specs: tuple[FieldSpec, ...]) -> VariantState:
    return VariantState(
        key=get(form, f"{vp}-key"),
        values=_values_from_form(form, f"{vp}-content", specs, override=False),
        tones=[
            ToneState(
                name=get(form, f"{vp}-tones-{t}-name"),
                values=_values_from_form(form, f"{vp}-tones-{t}-content", specs, override=True),
            )
            for t in range(count(form, f"{vp}-tones-n", MAX_TONES))
        ],
    )


def state_from_form(form: FormData) -> EditorState:
    """The editor form as posted. Field names follow the document: ``blocks-0-id``,
    ``blocks-0-variants-1-content-text``, ``blocks-0-variants-1-tones-0-name``; list lengths
    travel as ``…-n``."""
    state = EditorState(
        title=get(form, "title"),
        experiment=get(form, "experiment"),
        new_block_kind=get(form, "new_block_kind") or "headline",
        new_block_id=get(form, "new_block_id"),
    )
    for i in range(count(form, "blocks-n", MAX_BLOCKS)):
        bp = f"blocks-{i}"
        kind = get(form, f"{bp}-kind")
        variants = [
            _variant_from_form(form, f"{bp}-variants-{j}", _specs(kind))
            for j in range(count(form, f"{bp}-variants-n", MAX_VARIANTS))
        ]
        state.blocks.append(
            BlockState(
                id=get(form, f"{bp}-id"),
                kind=kind,
                variants=variants,
                only_tones=get(form, f"{bp}-only_tones"),
                selected=count(form, f"{bp}-selected", max(len(variants) - 1, 0)),
                new_variant=get(form, f"{bp}-new_variant"),
            )
        )
    return state


# --- from the form to a page document -------------------------------------------------------


def _number(text: Any, integer: bool) -> Any:
    """A number field's value: the number, or the text as typed (the page model then says
    what is wrong with it)."""
    if not isinstance(text, str):
        return text
    try:
        return int(text) if integer else float(text)
    except ValueError:
        return text


@dataclass(slots=True)
class _Place:
    prefix: str
    where: str
    problems: list[Problem]


def _override_document(
    values: Mapping[str, Any], specs: Iterable[FieldSpec], place: _Place
) -> dict[str, Any]:
    """A tone's overrides: only the fields filled in."""
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.name not in values:
            continue
        value = values[spec.name]
        if spec.widget == "group" and isinstance(value, str):
            try:
                out[spec.name] = json.loads(value)
            except json.JSONDecodeError as exc:
                message = f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
                key = f"{place.prefix}-{spec.name}"
                place.problems.append(Problem(key, f"{place.where}, {spec.label}", message))
        else:
            out[spec.name] = _number(value, spec.integer) if spec.widget == "number" else value
    return out


def _content_document(values: Mapping[str, Any], specs: Iterable[FieldSpec]) -> dict[str, Any]:
    """A variant's content: empty optional fields are left out (their defaults apply), empty
    required ones stay, for the page model to name."""
    out: dict[str, Any] = {}
    for spec in specs:
        value = values.get(spec.name)
        if spec.widget == "group":
            items = [_content_document(item, spec.items) for item in value or []]
            if items or spec.required:
                out[spec.name] = items
        elif value in ("", None, []):
            if spec.required:
                out[spec.name] = [] if spec.widget == "lines" else ""
        elif not (spec.widget == "checkbox" and value == spec.default):
            out[spec.name] = _number(value, spec.integer) if spec.widget == "number" else value
    return out


def tone_names(text: str) -> list[str]:
    return [name for name in _SEPARATORS.split(text) if name]


def _where_block(i: int, block_id: str) -> str:
    return f"Block {i + 1} “{block_id}”" if block_id else f"Block {i + 1}"


def _where_variant(i: int, block_id: str, key: str) -> str:
    return f"{_where_block(i, block_id)}, variant “{key}”"


def _variant_document(i: int, j: int, block: BlockState, problems: list[Problem]) -> dict[str, Any]:
    variant = block.variants[j]
    vp = f"blocks-{i}-variants-{j}"
    where = _where_variant(i, block.id, variant.key)
    specs = _specs(block.kind)
    tones: dict[str, Any] = {}
    for t, tone in enumerate(variant.tones):
        place = _Place(f"{vp}-tones-{t}-content", f"{where}, tone “{tone.name}”", problems)
        override = _override_document(tone.values, specs, place)
        if not tone.name and not override:
            continue  # an empty tone: nothing to keep
        if tone.name in tones:
            problems.append(
                Problem(
                    f"{vp}-tones-{t}-name", place.where, "This variant has two tones of this name."
                )
            )
            continue
        tones[tone.name] = override
    out: dict[str, Any] = {"key": variant.key, "content": _content_document(variant.values, specs)}
    if tones:
        out["tones"] = tones
    return out


def document_from_state(state: EditorState) -> tuple[dict[str, Any], list[Problem]]:
    """The page document the form describes (not yet validated), and what could not even be
    put into one: a tone's list that is not JSON, two tones of one variant with one name."""
    problems: list[Problem] = []
    document: dict[str, Any] = {"title": state.title}
    if state.experiment:
        document["experiment"] = state.experiment
    document["blocks"] = []
    for i, block in enumerate(state.blocks):
        out: dict[str, Any] = {
            "id": block.id,
            "kind": block.kind,
            "variants": [
                _variant_document(i, j, block, problems) for j in range(len(block.variants))
            ],
        }
        if tone_names(block.only_tones):
            out["only_tones"] = tone_names(block.only_tones)
        document["blocks"].append(out)
    return document, problems


# --- validation: the page model's errors, next to the fields they are about ----------------


def message_of(error: Mapping[str, Any]) -> str:
    return str(error.get("msg", "Invalid value")).removeprefix("Value error, ")


def _locate(prefix: str, specs: Iterable[FieldSpec], loc: tuple[Any, ...]) -> tuple[str, str]:
    """The form field and its label for an error at ``loc`` inside a content document."""
    spec = next((s for s in specs if loc and s.name == loc[0]), None)
    if spec is None:
        return prefix, f"“{loc[0]}”" if loc else "content"
    key = f"{prefix}-{spec.name}"
    if spec.widget == "group" and len(loc) >= 3 and isinstance(loc[1], int):
        inner_key, inner_label = _locate(f"{key}-{loc[1]}", spec.items, loc[2:])
        return inner_key, f"{spec.label} {loc[1] + 1}, {inner_label}"
    return key, spec.label


def _variant_problems(
    vp: str, where: str, model: type[BaseModel], variant: Mapping[str, Any]
) -> list[Problem]:
    """A variant's content and each of its tones, checked against the kind's model."""
    problems: list[Problem] = []
    content = variant.get("content")
    if not isinstance(content, dict):
        return problems
    specs = specs_of(model)
    try:
        model.model_validate(content)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            key, label = _locate(f"{vp}-content", specs, tuple(error["loc"]))
            problems.append(Problem(key, f"{where}, {label}", message_of(error)))
    tones = variant.get("tones")
    for t, (name, override) in enumerate(tones.items() if isinstance(tones, dict) else []):
        if not isinstance(override, dict):
            continue
        try:
            model.model_validate({**content, **override})
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                loc = tuple(error["loc"])
                if loc and loc[0] in override:  # else the variant's own: reported above
                    key, label = _locate(f"{vp}-tones-{t}-content", specs, loc)
                    problems.append(
                        Problem(key, f"{where}, tone “{name}”, {label}", message_of(error))
                    )
    return problems


def _fine_problems(document: Mapping[str, Any]) -> list[Problem]:
    """Problems named at their fields: repeated block ids and variant keys, and each
    variant's content (the page model names only the first per block, in words)."""
    problems: list[Problem] = []
    raw_blocks = document.get("blocks")
    ids: set[str] = set()
    for i, block in enumerate(raw_blocks if isinstance(raw_blocks, list) else []):
        if not isinstance(block, dict):
            continue
        block_id = text_of(block.get("id"))
        if block_id and block_id in ids:
            message = "Another block of this page has this id."
            problems.append(Problem(f"blocks-{i}-id", _where_block(i, block_id), message))
        ids.add(block_id)
        model = CONTENT.get(text_of(block.get("kind")))
        variants = block.get("variants")
        keys: set[str] = set()
        for j, variant in enumerate(variants if isinstance(variants, list) else []):
            if not isinstance(variant, dict):
                continue
            key = text_of(variant.get("key"))
            where = _where_variant(i, block_id, key)
            vp = f"blocks-{i}-variants-{j}"
            if key and key in keys:
                message = "Another variant of this block has this key."
                problems.append(Problem(f"{vp}-key", where, message))
            keys.add(key)
            if model is not None:
                problems.extend(_variant_problems(vp, where, model, variant))
    return problems


def _tone_index(document: Mapping[str, Any], i: int, j: int, name: Any) -> int | None:
    try:
        return list(document["blocks"][i]["variants"][j]["tones"]).index(name)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _variant_problem(
    document: Mapping[str, Any], loc: tuple[Any, ...], where: str, message: str
) -> Problem:
    """An error of the page model inside ``blocks.i.variants.j``."""
    i, j = loc[1], loc[3]
    vp = f"blocks-{i}-variants-{j}"
    if len(loc) >= 5 and loc[4] == "key":
        return Problem(f"{vp}-key", where, message)
    if len(loc) >= 7 and loc[4] == "tones" and loc[-1] == "[key]":
        t = _tone_index(document, i, j, loc[5])
        if t is not None:
            return Problem(f"{vp}-tones-{t}-name", f"{where}, tone “{loc[5]}”", message)
    return Problem(vp, where, message)


def _block_problem(
    document: Mapping[str, Any], loc: tuple[Any, ...], error: Mapping[str, Any], covered: set[str]
) -> Problem | None:
    """An error of the page model inside ``blocks.i`` (its own check of a variant's content
    reports the content's error at ``blocks.i.<field>``)."""
    message = message_of(error)
    raw_blocks = document.get("blocks")
    block = raw_blocks[loc[1]] if isinstance(raw_blocks, list) else {}
    bp = f"blocks-{loc[1]}"
    where = _where_block(loc[1], text_of(block.get("id")) if isinstance(block, dict) else "")
    finer = any(k.startswith(bp + "-") for k in covered)
    if finer and (len(loc) == 2 or loc[2] not in blocks.Block.model_fields):
        return None  # the block's own check (content, unique keys), said field by field
    if len(loc) > 2 and loc[2] in ("id", "kind", "only_tones"):
        return Problem(f"{bp}-{loc[2]}", where, message)
    if len(loc) > 3 and loc[2] == "variants" and isinstance(loc[3], int):
        return _variant_problem(document, loc, where, message)
    return Problem(bp, where, message)


def _page_problem(
    document: Mapping[str, Any], error: Mapping[str, Any], covered: set[str]
) -> Problem | None:
    """Where the page model's error belongs in the form, or ``None`` when a finer problem
    already says it (a block's content, a repeated id)."""
    loc = tuple(error["loc"])
    message = message_of(error)
    if not loc:  # the page's own check: unique block ids
        return None if any(k.endswith("-id") for k in covered) else Problem(None, "Page", message)
    if loc[0] in ("title", "experiment"):
        return Problem(str(loc[0]), str(loc[0]).capitalize(), message)
    if loc[0] == "blocks" and len(loc) >= 2 and isinstance(loc[1], int):
        return _block_problem(document, loc, error, covered)
    return Problem(None, "Blocks" if loc[0] == "blocks" else "Page", message)


def check(document: Any) -> tuple[Page | None, list[Problem]]:
    """The page, or every problem with the document, each placed at its form field."""
    if not isinstance(document, dict):
        return None, [Problem(None, "Page", "The page must be a JSON object.")]
    try:
        return Page.model_validate(document), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    problems = _fine_problems(document)
    covered = {p.field for p in problems if p.field}
    for error in errors:
        problem = _page_problem(document, error, covered)
        if problem is not None and problem not in problems:
            problems.append(problem)
    return None, problems


def parse_json(text: str, key: str, where: str) -> tuple[Any, list[Problem]]:
    try:
        return json.loads(text), []
    except json.JSONDecodeError as exc:
        message = f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        return None, [Problem(key, where, message)]


@dataclass(slots=True)
class Submission:
    """A posted page editor form, read: the state to show again, the document it describes,
    what is wrong with it, and whether it came from the JSON textarea."""

    state: EditorState
    document: Any
    problems: list[Problem]
    page: Page | None
    from_json: bool
    json_text: str


def read_submission(form: FormData, op: str) -> Submission:
    """The page a posted editor form describes: from its fields, or from the *Advanced*
    JSON when that is what was edited last (``source=json``) or the button says so."""
    posted = form.get("document_json")
    json_text = posted if isinstance(posted, str) else ""
    if op.endswith("-json") or get(form, "source") == "json":
        document, problems = parse_json(json_text, "document_json", "The page as JSON")
        if problems:
            return Submission(state_from_form(form), None, problems, None, True, json_text)
        page, problems = check(document)
        return Submission(state_from_document(document), document, problems, page, True, json_text)
    state = state_from_form(form)
    document, problems = document_from_state(state)
    page, found = check(document)
    problems.extend(p for p in found if p not in problems)
    return Submission(
        state, document, problems, None if problems else page, False, pretty(document)
    )


# --- structural changes made by the form's buttons ------------------------------------------

Change = tuple[str | None, list[Problem]]  # the element to focus next, and why not


def _new_id(state: EditorState, kind: str) -> str:
    taken = {b.id for b in state.blocks}
    base = kind.replace("_", "-")
    if base not in taken:
        return base
    return next(f"{base}-{n}" for n in range(2, MAX_BLOCKS + 3) if f"{base}-{n}" not in taken)


def _blank(specs: Iterable[FieldSpec]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.widget in ("group", "lines"):
            out[spec.name] = []
        elif spec.widget in ("checkbox", "select"):
            out[spec.name] = spec.default
        else:
            out[spec.name] = None
    return out


def _ints(args: list[str], n: int) -> list[int] | None:
    numbers = [int(a) for a in args if a.isdigit()]
    return numbers if len(numbers) == n else None


def _block_add(state: EditorState, args: list[str]) -> Change:
    kind = state.new_block_kind
    if kind not in CONTENT:
        return "f-new_block_kind", [Problem("new_block_kind", "Add a block", "Choose a kind.")]
    if len(state.blocks) >= MAX_BLOCKS:
        message = f"A page has at most {MAX_BLOCKS} blocks."
        return "f-new_block_kind", [Problem("new_block_kind", "Add a block", message)]
    block_id = state.new_block_id or _new_id(state, kind)
    if not SLUG.match(block_id) or block_id in {b.id for b in state.blocks}:
        message = "Use an id no other block has, of lower-case letters, digits, - and _."
        return "f-new_block_id", [Problem("new_block_id", "Add a block", message)]
    starter = _values_from(STARTERS.get(kind, {}), _specs(kind), override=False)
    state.blocks.append(BlockState(block_id, kind, [VariantState("a", starter)]))
    state.new_block_id = ""
    return f"f-blocks-{len(state.blocks) - 1}-id", []


def _block_move(state: EditorState, args: list[str], step: int) -> Change:
    at = _ints(args, 1)
    if at is None or at[0] >= len(state.blocks):
        return None, []
    i, to = at[0], at[0] + step
    if 0 <= to < len(state.blocks):
        state.blocks[i], state.blocks[to] = state.blocks[to], state.blocks[i]
        i = to
    # Focus follows the block; at an end, where its button is disabled, the other one.
    first, last = i == 0, i == len(state.blocks) - 1
    button = "up" if (step < 0 and not first) or (step > 0 and last) else "down"
    return f"block-{button}-{i}", []


def _block_delete(state: EditorState, args: list[str]) -> Change:
    at = _ints(args, 1)
    if at is None or at[0] >= len(state.blocks):
        return None, []
    del state.blocks[at[0]]
    return ("f-blocks-0-id" if state.blocks else "f-new_block_kind"), []


def _variant_add(state: EditorState, args: list[str]) -> Change:
    at = _ints(args, 1)
    if at is None or at[0] >= len(state.blocks):
        return None, []
    i = at[0]
    block = state.blocks[i]
    key, field_key = block.new_variant, f"blocks-{i}-new_variant"
    message = ""
    if not SLUG.match(key) or key in {v.key for v in block.variants}:
        message = "Use a key no other variant of this block has (the experiment's variant)."
    elif len(block.variants) >= MAX_VARIANTS:
        message = f"A block has at most {MAX_VARIANTS} variants."
    if message:
        return f"f-{field_key}", [Problem(field_key, _where_block(i, block.id), message)]
    if block.variants:  # a copy of the variant shown, to change what differs
        shown = block.variants[min(block.selected, len(block.variants) - 1)]
        values: dict[str, Any] = json.loads(json.dumps(shown.values))
    else:
        values = _values_from(STARTERS.get(block.kind, {}), _specs(block.kind), override=False)
    block.variants.append(VariantState(key, values))
    block.selected = len(block.variants) - 1
    block.new_variant = ""
    return f"f-blocks-{i}-variants-{block.selected}-key", []


def _variant_remove(state: EditorState, args: list[str]) -> Change:
    at = _ints(args, 2)
    if at is None or at[0] >= len(state.blocks) or at[1] >= len(state.blocks[at[0]].variants):
        return None, []
    i, j = at
    block = state.blocks[i]
    if len(block.variants) == 1:
        message = "A block keeps at least one variant: delete the block instead."
        return None, [Problem(f"blocks-{i}", _where_block(i, block.id), message)]
    del block.variants[j]
    block.selected = min(block.selected, len(block.variants) - 1)
    return f"tab-{i}-{block.selected}", []


def _tone_add(state: EditorState, args: list[str]) -> Change:
    at = _ints(args, 2)
    if at is None or at[0] >= len(state.blocks) or at[1] >= len(state.blocks[at[0]].variants):
        return None, []
    i, j = at
    tones = state.blocks[i].variants[j].tones
    state.blocks[i].selected = j
    if len(tones) < MAX_TONES:
        tones.append(ToneState("", {}))
    return f"f-blocks-{i}-variants-{j}-tones-{len(tones) - 1}-name", []


def _tone_remove(state: EditorState, args: list[str]) -> Change:
    at = _ints(args, 3)
    if at is None or at[0] >= len(state.blocks) or at[1] >= len(state.blocks[at[0]].variants):
        return None, []
    i, j, t = at
    tones = state.blocks[i].variants[j].tones
    if t < len(tones):
        del tones[t]
    state.blocks[i].selected = j
    return f"tone-add-{i}-{j}", []


def _group_at(state: EditorState, key: str) -> tuple[list[Any], FieldSpec] | None:
    """A repeated group's items by its form key (``blocks-0-variants-1-content-plans``;
    a group inside a group item goes on ``-0-<field>``)."""
    match = re.fullmatch(r"blocks-(\d+)-variants-(\d+)-content-([a-z0-9_-]+)", key)
    if match is None:
        return None
    i, j, path = int(match[1]), int(match[2]), match[3].split("-")
    if i >= len(state.blocks) or j >= len(state.blocks[i].variants):
        return None
    values: Any = state.blocks[i].variants[j].values
    specs = _specs(state.blocks[i].kind)
    while path:
        name = path.pop(0)
        spec = next((s for s in specs if s.name == name and s.widget == "group"), None)
        if spec is None or not isinstance(values, dict):
            return None
        items = values.get(name)
        if not isinstance(items, list):
            items = values[name] = []
        if not path:
            return items, spec
        index = path.pop(0)
        if not index.isdigit() or int(index) >= len(items) or not path:
            return None
        values, specs = items[int(index)], spec.items
    return None


def _item_add(state: EditorState, args: list[str]) -> Change:
    found = _group_at(state, args[0]) if args else None
    if found is None:
        return None, []
    items, spec = found
    if spec.max_items is None or len(items) < spec.max_items:
        items.append(_blank(spec.items))
    return f"f-{args[0]}-{len(items) - 1}", []


def _item_remove(state: EditorState, args: list[str]) -> Change:
    found = _group_at(state, args[0]) if len(args) == 2 else None
    if found is None or not args[1].isdigit():
        return None, []
    items = found[0]
    if int(args[1]) < len(items):
        del items[int(args[1])]
    return f"item-add-{args[0]}", []


_CHANGES: dict[str, Callable[[EditorState, list[str]], Change]] = {
    "block-add": _block_add,
    "block-up": lambda state, args: _block_move(state, args, -1),
    "block-down": lambda state, args: _block_move(state, args, 1),
    "block-delete": _block_delete,
    "variant-add": _variant_add,
    "variant-remove": _variant_remove,
    "tone-add": _tone_add,
    "tone-remove": _tone_remove,
    "item-add": _item_add,
    "item-remove": _item_remove,
}


def apply_op(state: EditorState, op: str) -> Change:
    """Change ``state`` as the button ``op`` (``block-up:2``, ``item-add:<group key>`` …)
    asks; returns the id of the element to focus next and, when the change cannot be made,
    why. An unknown button changes nothing."""
    name, _, arg = op.partition(":")
    change = _CHANGES.get(name)
    return change(state, arg.split(":") if arg else []) if change else (None, [])


# --- adaptations ------------------------------------------------------------------------------


def _is_emotion_clause(clause: Mapping[str, Any]) -> bool:
    value = clause.get("value")
    return (
        clause.get("attribute") == DOMINANT_ATTRIBUTE
        and clause.get("op") == "in"
        and isinstance(value, list)
        and all(isinstance(v, str) and v in GOEMOTIONS for v in value)
    )


def _is_valence_clause(clause: Mapping[str, Any]) -> bool:
    value = clause.get("value")
    return (
        clause.get("attribute") == VALENCE_ATTRIBUTE
        and clause.get("op") == "lt"
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    )


@dataclass(slots=True)
class AdaptationForm:
    """An adaptation as its form shows it: token and copy rows, the emotion trigger as
    checkboxes and a number (``emotion.dominant in [...]``, ``emotion.valence lt x``), and
    the clauses the simple form cannot show kept as JSON."""

    key: str = ""
    name: str = ""
    tone: str = "neutral"
    tokens: list[tuple[str, str]] = field(default_factory=list)
    copy: list[tuple[str, str]] = field(default_factory=list)
    emotions: list[str] = field(default_factory=list)
    valence_below: str = ""
    other_when: str = ""
    emotion_profile: str = ""

    @classmethod
    def from_read(cls, adaptation: AdaptationRead) -> AdaptationForm:
        form = cls(
            key=adaptation.key,
            name=adaptation.name or "",
            tone=adaptation.tone,
            tokens=[(k, text_of(v)) for k, v in adaptation.tokens.items()],
            copy=list(adaptation.copy_text.items()),
            emotion_profile=pretty(adaptation.emotion_profile)
            if adaptation.emotion_profile
            else "",
        )
        other: list[dict[str, Any]] = []
        for clause in (c.model_dump(mode="json") for c in adaptation.when):
            if not form.emotions and _is_emotion_clause(clause):
                form.emotions = list(clause["value"])
            elif not form.valence_below and _is_valence_clause(clause):
                form.valence_below = text_of(clause["value"])
            else:
                other.append(clause)
        form.other_when = pretty(other) if other else ""
        return form

    @classmethod
    def from_form(cls, form: FormData) -> AdaptationForm:
        """The posted form. A colour picker that moved while its value did not (no script
        kept them in step) sets the value."""
        tokens: list[tuple[str, str]] = []
        for i in range(count(form, "tokens-n", MAX_TOKENS + 20)):
            name, value = get(form, f"token-{i}-name"), get(form, f"token-{i}-value")
            colour = get(form, f"token-{i}-colour")
            if HEX_COLOUR.match(colour) and colour != get(form, f"token-{i}-colour_was"):
                value = colour
            if name or value:
                tokens.append((name, value))
        copy = [
            (get(form, f"copy-{i}-slot"), get(form, f"copy-{i}-text"))
            for i in range(count(form, "copy-n", MAX_COPY + 20))
        ]
        return cls(
            key=get(form, "key"),
            name=get(form, "name"),
            tone=get(form, "tone"),
            tokens=tokens,
            copy=[(slot, text) for slot, text in copy if slot or text],
            emotions=[e for e in form.getlist("emotion") if isinstance(e, str) and e in GOEMOTIONS],
            valence_below=get(form, "valence_below"),
            other_when=get(form, "other_when"),
            emotion_profile=get(form, "emotion_profile"),
        )

    def _when(self, problems: list[Problem]) -> list[Any]:
        clauses: list[Any] = []
        if self.emotions:
            clauses.append({"attribute": DOMINANT_ATTRIBUTE, "op": "in", "value": self.emotions})
        if self.valence_below:
            try:
                valence = float(self.valence_below)
            except ValueError:
                valence = float("nan")
            if not -1 <= valence <= 1:
                message = "A number from -1 (very negative) to 1 (very positive)."
                problems.append(Problem("valence_below", "Trigger, valence", message))
            clauses.append({"attribute": VALENCE_ATTRIBUTE, "op": "lt", "value": valence})
        if self.other_when:
            other, found = parse_json(self.other_when, "other_when", "Trigger, other clauses")
            if not found and not isinstance(other, list):
                message = "A JSON list of clauses, [{…}, …]."
                found = [Problem("other_when", "Trigger, other clauses", message)]
            problems.extend(found)
            clauses.extend(other if isinstance(other, list) else [])
        return clauses

    def document(self, problems: list[Problem]) -> dict[str, Any]:
        """The adaptation as ``PUT /v1/adaptations/{key}`` takes it."""
        tokens: dict[str, str] = {}
        for i, (name, value) in enumerate(self.tokens):
            if not name or name in tokens:
                message = "Name this token." if not name else "Another token has this name."
                problems.append(Problem(f"token-{i}-name", "Design tokens", message))
            tokens[name] = value
        copy: dict[str, str] = {}
        for i, (slot, text) in enumerate(self.copy):
            if not slot or slot in copy:
                message = "Name this slot." if not slot else "Another row has this slot."
                problems.append(Problem(f"copy-{i}-slot", "Copy", message))
            copy[slot] = text
        document: dict[str, Any] = {
            "tone": self.tone,
            "tokens": tokens,
            "copy": copy,
            "when": self._when(problems),
        }
        if self.name:
            document["name"] = self.name
        if self.emotion_profile:
            profile, found = parse_json(self.emotion_profile, "emotion_profile", "Emotion profile")
            problems.extend(found)
            document["emotion_profile"] = profile
        return document

    def body(self) -> tuple[AdaptationBody | None, list[Problem]]:
        """The validated adaptation, or the problems with the form."""
        problems: list[Problem] = []
        document = self.document(problems)
        try:
            body = AdaptationBody.model_validate(document)
        except ValidationError as exc:
            problems.extend(self._problem(e) for e in exc.errors(include_url=False))
            return None, problems
        return (None if problems else body), problems

    def _problem(self, error: Mapping[str, Any]) -> Problem:
        loc = tuple(error["loc"])
        message = message_of(error)
        head = loc[0] if loc else None
        if head in ("name", "tone", "emotion_profile"):
            return Problem(str(head), str(head).replace("_", " ").capitalize(), message)
        if head == "when":
            simple = [
                k
                for k, on in (("emotion", self.emotions), ("valence_below", self.valence_below))
                if on
            ]
            index = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else len(simple)
            return Problem(
                simple[index] if index < len(simple) else "other_when", "Trigger", message
            )
        rows = {"tokens": (self.tokens, "token-{}-value"), "copy": (self.copy, "copy-{}-text")}
        if head in rows and len(loc) > 1:
            names = [name for name, _ in rows[str(head)][0]]
            if loc[1] in names:
                key = rows[str(head)][1].format(names.index(str(loc[1])))
                return Problem(key, "Design tokens" if head == "tokens" else "Copy", message)
        return Problem(None, "Adaptation", message)

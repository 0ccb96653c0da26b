"""Copy variation without a hosted model: a phrase grammar with tones (pure core).

Evolution needs fresh candidates for a page's words -- headlines, body lines, calls to action
-- and a workspace must be able to trust every word a visitor may see. So candidates are
built only from the workspace's **approved phrases**: a :class:`PhraseLibrary` holds phrases
per **slot** (``headline.opener``, ``cta.verb``, ``reassurance`` ...) and **templates** per
copy kind that put slots together (``"{opener} {benefit}"``). Phrases and templates carry
**tones** (:data:`TONES`); a phrase with no tones is tone-neutral and fits every tone.

:func:`generate` draws distinct texts in one tone from the grammar, seeded and deterministic;
:func:`tones_for` ranks the tones for a visitor's emotion (an 11-dimension vector or an
emotional segment's name), so a frustrated segment gets empathetic, reassuring copy and an
excited one urgent, playful copy. docs/evolution-copy.md describes the library format and
the rule.

Nothing here does I/O; :mod:`nexus.evolution.generator` adds an optional model-backed
generator whose candidates are held for approval.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from random import Random
from typing import Any, Final, Literal, Protocol, TypeGuard, get_args, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from nexus.core.errors import FieldError, InvalidInput

Tone = Literal["reassuring", "urgent", "playful", "formal", "empathetic"]
Kind = Literal["headline", "body", "cta"]
Source = Literal["grammar", "generator"]
Status = Literal["approved", "pending", "rejected"]

TONES: Final[tuple[Tone, ...]] = get_args(Tone)
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
SOURCES: Final[tuple[Source, ...]] = get_args(Source)
STATUSES: Final[tuple[Status, ...]] = get_args(Status)

# A headline is a page ``Line`` (nexus.pages.blocks: at most 200 characters); a call to action
# must fit a button; a body line is a sentence or two of a ``Text`` block.
MAX_LENGTH: Final[Mapping[Kind, int]] = {"headline": 200, "body": 500, "cta": 40}
MAX_PHRASE_LENGTH: Final = 200
MAX_SLOTS: Final = 200
MAX_PHRASES_PER_SLOT: Final = 500
MAX_TEMPLATES_PER_KIND: Final = 100
MAX_PLACEHOLDERS: Final = 8
MAX_COUNT: Final = 100
# Grammars with at most this many tone-eligible expansions are enumerated exactly; bigger
# ones are sampled (each tone-eligible expansion has a positive chance).
ENUMERATION_LIMIT: Final = 5000
_SAMPLE_TRIES_PER_CANDIDATE: Final = 30

_SLOT_NAME = r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*"
_SLOT = re.compile(rf"^{_SLOT_NAME}$")
_PLACEHOLDER = re.compile(rf"\{{({_SLOT_NAME})\}}")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.;:!?…])")
# Characters no copy may hold: C0/C1 controls, line and paragraph separators, and the
# bidirectional overrides and isolates that make displayed text differ from stored text.
_BIDI_CONTROLS: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e") | frozenset(
    "\u2066\u2067\u2068\u2069"
)


class CopyError(InvalidInput, ValueError):
    """An invalid phrase library, template, candidate or emotion; ``errors`` locates it
    (the API answers 422)."""

    @classmethod
    def at(cls, loc: Sequence[str | int], message: str) -> CopyError:
        where = ".".join(str(part) for part in loc)
        detail = f"{where}: {message}" if where else message
        return cls(detail=detail, errors=[FieldError(loc=tuple(loc), message=message)])


def _forbidden_character(text: str) -> str | None:
    for char in text:
        if char in _BIDI_CONTROLS or unicodedata.category(char) in {"Cc", "Zl", "Zp"}:
            return f"U+{ord(char):04X}"
    return None


def check_text(text: object, *, limit: int, loc: Sequence[str | int] = ()) -> str:
    """``text`` with surrounding whitespace removed, or :class:`CopyError` when it is empty,
    longer than ``limit`` characters or holds a control character."""
    if not isinstance(text, str):
        raise CopyError.at(loc, "must be a string")
    stripped = text.strip()
    if not stripped:
        raise CopyError.at(loc, "must not be empty")
    if len(stripped) > limit:
        raise CopyError.at(loc, f"is {len(stripped)} characters, more than {limit}")
    bad = _forbidden_character(stripped)
    if bad is not None:
        raise CopyError.at(loc, f"holds a control character ({bad})")
    return stripped


def check_copy(text: str, kind: Kind, *, loc: Sequence[str | int] = ()) -> str:
    """``text`` checked as copy of ``kind`` (length at most :data:`MAX_LENGTH` ``[kind]``)."""
    return check_text(text, limit=MAX_LENGTH[_kind(kind, loc)], loc=loc)


def _is_tone(value: object) -> TypeGuard[Tone]:
    return isinstance(value, str) and value in TONES


def _tone(value: object, loc: Sequence[str | int] = ()) -> Tone:
    if not _is_tone(value):
        raise CopyError.at(loc, f"unknown tone {value!r}; tones are {', '.join(TONES)}")
    return value


def _is_kind(value: object) -> TypeGuard[Kind]:
    return isinstance(value, str) and value in KINDS


def _kind(value: object, loc: Sequence[str | int] = ()) -> Kind:
    if not _is_kind(value):
        raise CopyError.at(loc, f"unknown copy kind {value!r}; kinds are {', '.join(KINDS)}")
    return value


def _tones(values: Iterable[object], loc: Sequence[str | int]) -> tuple[Tone, ...]:
    """Known tones, deduplicated, in :data:`TONES` order (never a set: iteration order must
    not depend on string hashing, or seeded draws would differ between processes)."""
    given = {_tone(value, [*loc, i]) for i, value in enumerate(values)}
    return tuple(tone for tone in TONES if tone in given)


# --- the grammar ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Phrase:
    """An approved phrase; no ``tones`` means tone-neutral (fits every tone)."""

    text: str
    tones: tuple[Tone, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", check_text(self.text, limit=MAX_PHRASE_LENGTH))
        object.__setattr__(self, "tones", _tones(self.tones, ["tones"]))

    def fits(self, tone: Tone) -> bool:
        return not self.tones or tone in self.tones

    def carries(self, tone: Tone) -> bool:
        return tone in self.tones


@dataclass(frozen=True, slots=True)
class Template:
    """A production of the grammar: text with ``{slot}`` placeholders.

    A placeholder names a slot either in full (``{cta.verb}``) or by its last part within the
    copy kind (in a ``cta`` template ``{verb}`` is ``cta.verb`` if the library has it, else the
    shared slot ``verb``). Templates carry tones as phrases do.
    """

    text: str
    tones: tuple[Tone, ...] = ()

    def __post_init__(self) -> None:
        text = check_text(self.text, limit=MAX_LENGTH["body"])
        leftover = _PLACEHOLDER.sub("", text)
        if "{" in leftover or "}" in leftover:
            raise CopyError(
                f"template {text!r} has a brace that is not a {{slot}} placeholder"
                " (slot names are lower case letters, digits, _ and .)"
            )
        if len(self.placeholders_of(text)) > MAX_PLACEHOLDERS:
            raise CopyError(f"template {text!r} has more than {MAX_PLACEHOLDERS} placeholders")
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "tones", _tones(self.tones, ["tones"]))

    @staticmethod
    def placeholders_of(text: str) -> list[str]:
        return _PLACEHOLDER.findall(text)

    @property
    def placeholders(self) -> list[str]:
        return self.placeholders_of(self.text)

    def fits(self, tone: Tone) -> bool:
        return not self.tones or tone in self.tones


def _entry(value: object, loc: Sequence[str | int], *, limit: int) -> tuple[str, tuple[Tone, ...]]:
    """The text and tones of a phrase or template in JSON form: a string, or an object with
    ``text`` and ``tones``."""
    if isinstance(value, str):
        value = {"text": value}
    if not isinstance(value, Mapping):
        raise CopyError.at(loc, "must be a string or an object with text and tones")
    unknown = set(value) - {"text", "tones"}
    if unknown:
        raise CopyError.at(loc, f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    tones = value.get("tones", ())
    if isinstance(tones, str) or not isinstance(tones, Sequence):
        raise CopyError.at([*loc, "tones"], "must be a list of tones")
    text = check_text(value.get("text"), limit=limit, loc=[*loc, "text"])
    return text, _tones(tones, [*loc, "tones"])


def _phrase(value: object, loc: Sequence[str | int]) -> Phrase:
    if isinstance(value, Phrase):
        return value
    text, tones = _entry(value, loc, limit=MAX_PHRASE_LENGTH)
    return Phrase(text=text, tones=tones)


def _template(value: object, loc: Sequence[str | int]) -> Template:
    if isinstance(value, Template):
        return value
    text, tones = _entry(value, loc, limit=MAX_LENGTH["body"])
    try:
        return Template(text=text, tones=tones)
    except CopyError as error:
        raise CopyError.at(loc, error.detail) from None


def _check_slot(name: object, phrases: Sequence[Phrase]) -> None:
    if not isinstance(name, str) or not _SLOT.match(name):
        raise CopyError.at(
            ["slots", str(name)],
            "a slot name is lower case letters, digits and _, parts joined by dots",
        )
    if not phrases:
        raise CopyError.at(["slots", name], "a slot needs at least one phrase")
    if len(phrases) > MAX_PHRASES_PER_SLOT:
        raise CopyError.at(["slots", name], f"more than {MAX_PHRASES_PER_SLOT} phrases")
    seen: set[str] = set()
    for i, phrase in enumerate(phrases):
        if not isinstance(phrase, Phrase):
            raise CopyError.at(["slots", name, i], "must be a Phrase")
        key = phrase.text.casefold()
        if key in seen:
            raise CopyError.at(["slots", name, i], f"repeats the phrase {phrase.text!r}")
        seen.add(key)


@dataclass(frozen=True)
class PhraseLibrary:
    """A workspace's approved phrases per slot and templates per copy kind.

    Build one with :meth:`from_dict` (the JSON format of docs/evolution-copy.md); every
    template must resolve each placeholder to a slot with at least one phrase.
    """

    slots: Mapping[str, tuple[Phrase, ...]]
    templates: Mapping[Kind, tuple[Template, ...]]
    _resolved: dict[tuple[Kind, int], tuple[str, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.slots or not any(self.templates.values()):
            raise CopyError(
                "the phrase library is empty: it needs slots with phrases and templates"
            )
        if len(self.slots) > MAX_SLOTS:
            raise CopyError.at(["slots"], f"more than {MAX_SLOTS} slots")
        for name, phrases in self.slots.items():
            _check_slot(name, phrases)
        resolved: dict[tuple[Kind, int], tuple[str, ...]] = {}
        for kind, templates in self.templates.items():
            _kind(kind, ["templates", str(kind)])
            if len(templates) > MAX_TEMPLATES_PER_KIND:
                raise CopyError.at(
                    ["templates", kind], f"more than {MAX_TEMPLATES_PER_KIND} templates"
                )
            for i, template in enumerate(templates):
                if not isinstance(template, Template):
                    raise CopyError.at(["templates", kind, i], "must be a Template")
                resolved[kind, i] = tuple(
                    self._resolve(kind, name, ["templates", kind, i])
                    for name in template.placeholders
                )
        object.__setattr__(self, "_resolved", resolved)

    def _resolve(self, kind: Kind, name: str, loc: Sequence[str | int]) -> str:
        for candidate in (f"{kind}.{name}", name):
            if candidate in self.slots:
                return candidate
        raise CopyError.at(
            loc,
            f"unknown slot {{{name}}}: the library has neither {kind}.{name} nor {name}",
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhraseLibrary:
        """Build and validate a library from its JSON form::

        {"slots": {"headline.opener": ["Meet", {"text": "Relax:", "tones": ["reassuring"]}]},
         "templates": {"headline": ["{opener} {benefit}"]}}
        """
        if not isinstance(data, Mapping):
            raise CopyError("a phrase library is a JSON object with slots and templates")
        unknown = set(data) - {"slots", "templates"}
        if unknown:
            raise CopyError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
        raw_slots = data.get("slots") or {}
        raw_templates = data.get("templates") or {}
        if not isinstance(raw_slots, Mapping) or not isinstance(raw_templates, Mapping):
            raise CopyError("slots and templates are JSON objects")
        slots: dict[str, tuple[Phrase, ...]] = {}
        for name, phrases in raw_slots.items():
            if isinstance(phrases, str) or not isinstance(phrases, Sequence):
                raise CopyError.at(["slots", str(name)], "must be a list of phrases")
            slots[name] = tuple(_phrase(p, ["slots", name, i]) for i, p in enumerate(phrases))
        templates: dict[Kind, tuple[Template, ...]] = {}
        for kind, items in raw_templates.items():
            checked = _kind(kind, ["templates", str(kind)])
            if isinstance(items, str) or not isinstance(items, Sequence):
                raise CopyError.at(["templates", checked], "must be a list of templates")
            templates[checked] = tuple(
                _template(t, ["templates", checked, i]) for i, t in enumerate(items)
            )
        return cls(slots=slots, templates=templates)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form :meth:`from_dict` reads (tone-neutral phrases as plain strings)."""

        def item(entry: Phrase | Template) -> str | dict[str, Any]:
            return {"text": entry.text, "tones": list(entry.tones)} if entry.tones else entry.text

        return {
            "slots": {name: [item(p) for p in phrases] for name, phrases in self.slots.items()},
            "templates": {
                kind: [item(t) for t in templates] for kind, templates in self.templates.items()
            },
        }

    def slots_of(self, kind: Kind, index: int) -> tuple[str, ...]:
        """The slot each placeholder of template ``index`` of ``kind`` resolves to."""
        return self._resolved[kind, index]


# --- candidates -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """One candidate text for a page, and where it stands.

    Grammar candidates are made of approved phrases only, so they start ``approved``;
    generator candidates start ``pending`` unless the workspace turned approval off.
    """

    text: str
    kind: Kind
    tone: Tone
    source: Source = "grammar"
    status: Status = "approved"

    def __post_init__(self) -> None:
        kind = _kind(self.kind, ["kind"])
        _tone(self.tone, ["tone"])
        if self.source not in SOURCES:
            raise CopyError.at(["source"], f"unknown source {self.source!r}")
        if self.status not in STATUSES:
            raise CopyError.at(["status"], f"unknown status {self.status!r}")
        object.__setattr__(self, "text", check_copy(self.text, kind, loc=["text"]))

    def with_status(self, status: Status) -> Candidate:
        """This candidate approved or rejected by a person."""
        return replace(self, status=status)


def _render(template: Template, phrases: Sequence[Phrase]) -> str:
    values = iter(phrases)
    text = _PLACEHOLDER.sub(lambda _match: next(values).text, template.text)
    text = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join(text.split()))
    return text[:1].upper() + text[1:]


@dataclass(frozen=True, slots=True)
class _Production:
    template: Template
    choices: tuple[tuple[Phrase, ...], ...]  # the tone-fitting phrases of each placeholder

    def size(self) -> int:
        return math.prod(len(c) for c in self.choices)

    def can_carry(self, tone: Tone) -> bool:
        return tone in self.template.tones or any(
            p.carries(tone) for choices in self.choices for p in choices
        )


def _productions(library: PhraseLibrary, kind: Kind, tone: Tone) -> list[_Production]:
    productions = []
    for i, template in enumerate(library.templates.get(kind, ())):
        if not template.fits(tone):
            continue
        choices = tuple(
            tuple(p for p in library.slots[slot] if p.fits(tone))
            for slot in library.slots_of(kind, i)
        )
        if all(choices):
            productions.append(_Production(template, choices))
    return productions


def _toned(template: Template, phrases: Sequence[Phrase], tone: Tone) -> bool:
    return tone in template.tones or any(p.carries(tone) for p in phrases)


def _enumerate(productions: Sequence[_Production]) -> Iterator[tuple[Template, tuple[Phrase, ...]]]:
    for production in productions:
        for phrases in itertools.product(*production.choices):
            yield production.template, phrases


def _sample(
    production: _Production, tone: Tone, rng: Random, *, force_tone: bool
) -> tuple[Phrase, ...]:
    """One expansion; with ``force_tone`` and an untoned template, one placeholder that can
    carry the tone is drawn from its toned phrases, so the candidate is in the tone."""
    forced = -1
    if force_tone and tone not in production.template.tones:
        able = [i for i, c in enumerate(production.choices) if any(p.carries(tone) for p in c)]
        if able:
            forced = rng.choice(able)
    return tuple(
        rng.choice([p for p in choices if p.carries(tone)] if i == forced else choices)
        for i, choices in enumerate(production.choices)
    )


def _draw(
    productions: Sequence[_Production],
    tone: Tone,
    rng: Random,
    offer: Callable[[Template, Sequence[Phrase]], None],
    *,
    force_tone: bool,
    until: Callable[[], bool],
    tries: int,
) -> None:
    """Offer random expansions (productions weighted by size, so each expansion is about
    equally likely) until ``until()`` or a bounded number of draws."""
    if not productions:
        return
    weights = [p.size() for p in productions]
    for _ in range(tries):
        if until():
            return
        production = rng.choices(productions, weights=weights)[0]
        offer(production.template, _sample(production, tone, rng, force_tone=force_tone))


def generate(
    library: PhraseLibrary,
    kind: Kind,
    tone: Tone,
    *,
    count: int,
    rng: Random,
    allow_neutral: bool = False,
) -> list[Candidate]:
    """Up to ``count`` distinct candidates of ``kind`` in ``tone`` from the library's grammar.

    Only templates and phrases that fit the tone (carry it, or carry no tone) are used, and
    each candidate carries the tone in its template or at least one phrase -- an all-neutral
    text says nothing in particular. With ``allow_neutral``, all-neutral texts fill up when
    the toned ones run out. Texts are whitespace-normalised, start with a capital, differ
    ignoring case, use no phrase twice and fit :data:`MAX_LENGTH` ``[kind]``. Fewer than
    ``count`` come back when the grammar has fewer; the result depends only on the library,
    the arguments and the state of ``rng``.

    >>> lib = PhraseLibrary.from_dict({
    ...     "slots": {"cta.verb": ["start", {"text": "grab", "tones": ["urgent"]}],
    ...               "cta.object": ["my trial", {"text": "it now", "tones": ["urgent"]}]},
    ...     "templates": {"cta": ["{verb} {object}"]}})
    >>> sorted(c.text for c in generate(lib, "cta", "urgent", count=5, rng=Random(1)))
    ['Grab it now', 'Grab my trial', 'Start it now']
    """
    kind = _kind(kind, ["kind"])
    tone = _tone(tone, ["tone"])
    if not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
        raise CopyError.at(["count"], f"must be an integer from 0 to {MAX_COUNT}")
    if count == 0:
        return []
    limit = MAX_LENGTH[kind]
    productions = _productions(library, kind, tone)
    toned: dict[str, str] = {}  # casefolded text -> text, in draw order
    neutral: dict[str, str] = {}

    def offer(template: Template, phrases: Sequence[Phrase]) -> None:
        if len({p.text.casefold() for p in phrases}) < len(phrases):
            return  # the same phrase twice ("fast and fast")
        text = _render(template, phrases)
        if len(text) > limit:
            return
        key = text.casefold()
        if key in toned or key in neutral:
            return
        (toned if _toned(template, phrases, tone) else neutral)[key] = text

    if sum(p.size() for p in productions) <= ENUMERATION_LIMIT:
        for template, phrases in _enumerate(productions):
            offer(template, phrases)
        texts = rng.sample(list(toned.values()), min(count, len(toned)))
        if allow_neutral and len(texts) < count:
            texts += rng.sample(list(neutral.values()), min(count - len(texts), len(neutral)))
    else:
        tries = _SAMPLE_TRIES_PER_CANDIDATE * count
        capable = [p for p in productions if p.can_carry(tone)]
        _draw(
            capable,
            tone,
            rng,
            offer,
            force_tone=True,
            until=lambda: len(toned) >= count,
            tries=tries,
        )
        if allow_neutral and len(toned) < count:
            _draw(
                productions,
                tone,
                rng,
                offer,
                force_tone=False,
                until=lambda: len(toned) + len(neutral) >= count,
                tries=tries,
            )
        texts = [*toned.values(), *neutral.values()][:count]
    return [Candidate(text=text, kind=kind, tone=tone) for text in texts]


# --- emotion -> tone ---------------------------------------------------------------------------

# Plutchik-8 in [0, 1], then valence, arousal, dominance in [-1, 1]: the order of
# nexus.emotion.models.vector.DIMENSIONS (copied: a pure core of evolution imports no domain).
DIMENSIONS: Final[tuple[str, ...]] = (
    "joy",
    "trust",
    "fear",
    "surprise",
    "sadness",
    "disgust",
    "anger",
    "anticipation",
    "valence",
    "arousal",
    "dominance",
)
_PLUTCHIK_END: Final = 8

# The emotion -> tone rule: each tone's score is a weighted sum of the 11 dimensions plus a
# bias, and tones rank by score (ties in TONES order). The weights are set by hand, not
# learned, to encode copywriting practice: fear and doubt call for reassurance (risk
# removed, guarantees); sadness, anger and disgust for empathy (the problem acknowledged
# first); positive, aroused anticipation for urgency; joy and surprise for play; and a calm,
# trusting or weak reading for a formal register, which the bias makes the default.
# Distress (fear, sadness, disgust, anger) counts against urgent and playful copy: pressing
# or joking with an upset visitor backfires.
#                     joy  trust  fear  surpr sadn  disg  anger antic  val   arous  dom   bias
_RULE: Final[Mapping[Tone, tuple[float, ...]]] = {
    "reassuring": (0.0, 0.0, 1.0, 0.0, 0.3, 0.3, 0.4, 0.0, -0.3, 0.0, -0.3, 0.0),
    "urgent": (0.4, 0.0, -0.5, 0.0, -0.5, -0.5, -0.5, 0.6, 0.3, 0.4, 0.0, 0.0),
    "playful": (0.8, 0.0, -0.5, 0.4, -0.5, -0.5, -0.5, 0.0, 0.4, 0.2, 0.0, 0.0),
    "formal": (0.0, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.2, 0.0, 0.3),
    "empathetic": (0.0, 0.0, 0.4, 0.0, 1.0, 0.5, 0.6, 0.0, -0.3, 0.0, 0.0, 0.0),
}

# The emotional segments' typical readings, in DIMENSIONS order; they match the archetypes of
# nexus.experiments.simulation (PROFILES, and SETTLED for neutral), which a test checks.
SEGMENT_PROFILES: Final[Mapping[str, tuple[float, ...]]] = {
    "frustrated": (0.05, 0.10, 0.15, 0.20, 0.25, 0.35, 0.80, 0.15, -0.60, 0.60, 0.30),
    "anxious": (0.05, 0.10, 0.80, 0.25, 0.30, 0.10, 0.15, 0.55, -0.40, 0.50, -0.50),
    "excited": (0.85, 0.45, 0.05, 0.40, 0.03, 0.03, 0.05, 0.75, 0.75, 0.70, 0.40),
    "curious": (0.20, 0.45, 0.05, 0.50, 0.05, 0.05, 0.05, 0.40, 0.15, 0.20, 0.10),
    "sad": (0.05, 0.15, 0.20, 0.15, 0.80, 0.15, 0.10, 0.10, -0.60, -0.40, -0.40),
    "neutral": (0.15, 0.30, 0.05, 0.10, 0.05, 0.05, 0.05, 0.20, 0.10, 0.0, 0.1),
}


@runtime_checkable
class SupportsEmotionArray(Protocol):
    """Anything that gives the 11 dimensions in order (``EmotionVector`` does)."""

    def as_array(self) -> NDArray[np.float64]: ...


Emotion = str | Mapping[str, float] | Sequence[float] | NDArray[np.float64] | SupportsEmotionArray


def _emotion_array(emotion: Emotion) -> NDArray[np.float64]:
    if isinstance(emotion, str):
        profile = SEGMENT_PROFILES.get(emotion.strip().lower())
        if profile is None:
            raise CopyError.at(
                ["emotion"],
                f"unknown emotional segment {emotion!r}; segments are "
                + ", ".join(SEGMENT_PROFILES),
            )
        return np.asarray(profile, dtype=np.float64)
    if isinstance(emotion, SupportsEmotionArray):
        emotion = emotion.as_array()
    if isinstance(emotion, Mapping):
        unknown = set(emotion) - set(DIMENSIONS)
        if unknown:
            raise CopyError.at(
                ["emotion"], f"unknown dimension(s): {', '.join(sorted(map(str, unknown)))}"
            )
        # A missing dimension reads as absent (0): {"fear": 0.9} is a fearful visitor.
        emotion = [float(emotion.get(name, 0.0)) for name in DIMENSIONS]
    try:
        values = np.asarray(emotion, dtype=np.float64)
    except (TypeError, ValueError):
        raise CopyError.at(["emotion"], "must be 11 numbers") from None
    if values.shape != (len(DIMENSIONS),):
        raise CopyError.at(
            ["emotion"], f"must be {len(DIMENSIONS)} numbers ({', '.join(DIMENSIONS)})"
        )
    if not np.all(np.isfinite(values)):
        raise CopyError.at(["emotion"], "must be finite numbers")
    if np.any(values[:_PLUTCHIK_END] < 0.0) or np.any(values[:_PLUTCHIK_END] > 1.0):
        raise CopyError.at(["emotion"], "Plutchik emotions lie in [0, 1]")
    if np.any(np.abs(values[_PLUTCHIK_END:]) > 1.0):
        raise CopyError.at(["emotion"], "valence, arousal and dominance lie in [-1, 1]")
    return values


def tone_scores(emotion: Emotion) -> dict[Tone, float]:
    """Each tone's score under the documented rule (higher fits the emotion better)."""
    values = np.append(_emotion_array(emotion), 1.0)  # the bias column
    return {tone: round(float(np.dot(_RULE[tone], values)), 9) for tone in TONES}


def tones_for(emotion: Emotion) -> tuple[Tone, ...]:
    """All tones, best fit first, for an emotion: an 11-dimension vector (sequence, array,
    ``{dimension: value}`` or an ``EmotionVector``) or an emotional segment's name.

    >>> tones_for("frustrated")[:2], tones_for("excited")[:2], tones_for("neutral")[0]
    (('empathetic', 'reassuring'), ('urgent', 'playful'), 'formal')
    """
    scores = tone_scores(emotion)
    return tuple(sorted(TONES, key=lambda tone: (-scores[tone], TONES.index(tone))))

"""PII detection and redaction for event properties: policy, prefilter, detector, redactor.

Why: visitors type email addresses, phone numbers, card numbers and addresses into chat boxes
and forms, and SDKs send them along as event properties. Whatever the workspace's policy says
must happen to them (mask, hash, encrypt, drop, keep) has to happen at ingest, before an event
is stored, so this runs on the request path for every string property.

Three parts:

* :class:`PiiPolicy` says what to find and what to do with it: a default action per entity,
  overrides per property path (``properties.email``, ``traits.*_phone``, ``context.ip``),
  custom patterns, the enabled entities. It validates itself at construction and raises
  :class:`PiiPolicyError` (a ``ValueError`` and a 422 :class:`~nexus.core.errors.InvalidInput`)
  naming the offending field.
* :class:`PiiDetector` finds entities in a string with presidio's analyzer over pattern
  recognizers only (:mod:`nexus.privacy.pii_recognizers`): no spaCy model, no network. A
  prefilter of compiled regular expressions first asks whether the string could hold any
  enabled entity at all (an ``@``, seven or more digits, an IBAN's country code and check
  digits, an IP address's shape, a street word and a number, a custom pattern); most event
  properties (``/pricing``, ``Signup Clicked``) fail it and never reach presidio. Analyzers
  are cached per configuration.
* :class:`PiiRedactor` applies the policy to a string (:meth:`PiiRedactor.redact_text`) or a
  whole event (:meth:`PiiRedactor.redact_event`), returning a redacted copy and counts per
  entity and per action. Substitution is presidio-anonymizer's.

Person names need a named-entity model and are an optional extra: pass
``nlp_engine=spacy_ner_engine()`` (from :mod:`nexus.privacy.pii_recognizers`) to the detector
and enable ``PERSON``; without an installed spaCy model that raises an error naming what to
install.

Pure: strings and dicts in, strings and dicts out; no file, network or database I/O. Hash keys
and encryption belong to the caller: hashing takes a per-workspace key, encryption a callback,
and neither key is ever seen by presidio.

>>> redactor = PiiRedactor(PiiPolicy())
>>> redactor.redact_text("mail me at Ada@Example.com").text
'mail me at <EMAIL_ADDRESS>'
>>> redactor.redact_text("Signup Clicked").findings
()
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from nexus.core.errors import FieldError, InvalidInput

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngine
    from presidio_anonymizer import AnonymizerEngine
    from presidio_anonymizer.entities import OperatorConfig

__all__ = [
    "BUILTIN_ENTITIES",
    "DEFAULT_SECTIONS",
    "NER_ENTITIES",
    "CustomPattern",
    "EventRedaction",
    "Finding",
    "PiiAction",
    "PiiDetector",
    "PiiPolicy",
    "PiiPolicyError",
    "PiiRedactor",
    "Redaction",
    "TextRedaction",
]

BUILTIN_ENTITIES: tuple[str, ...] = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "STREET_ADDRESS",
)
"""Entities found by pattern recognizers, enabled unless a policy says otherwise."""

NER_ENTITIES: tuple[str, ...] = ("PERSON",)
"""Entities that need a named-entity model (the optional extra); never enabled by default."""

DEFAULT_SECTIONS: tuple[str, ...] = ("properties", "traits", "context")
"""Top-level event keys scanned by default. Identity and envelope keys (``messageId``,
``anonymousId``, ``userId``, ``timestamp``, ``event`` ...) are not: identity is handled by
identity stitching, and the envelope carries no free text."""

DEFAULT_SCORE_THRESHOLD = 0.4
"""Findings scoring below this are ignored (see the recognizers for how scores are set)."""

CANONICAL_KEY = "nexus_canonical"
"""Key in a presidio result's ``recognition_metadata`` where a recognizer may put the value's
canonical form (E.164 for phone numbers), so one number written two ways hashes one way."""

_CUSTOM_NAME = re.compile(r"[A-Z][A-Z0-9_]{1,63}")
_MIN_HASH_KEY_BYTES = 16
_HASH_HEX_CHARS = 16
_MIN_SCANNED_INT_DIGITS = 7


class PiiAction(StrEnum):
    """What happens to a finding."""

    DROP = "drop"
    """Remove the whole value: the property from its object, the element from its list."""
    MASK = "mask"
    """Replace the finding with ``<ENTITY>``."""
    HASH = "hash"
    """Replace the finding with ``<ENTITY:hmac:16 hex>``, a keyed hash (HMAC-SHA256 under the
    workspace's key) of its canonical form: equal values hash equally within a workspace, and
    without the key a hash can neither be reversed nor matched across workspaces."""
    ENCRYPT = "encrypt"
    """Replace the finding with what the caller's ``encrypt(entity, value)`` returns."""
    KEEP = "keep"
    """Leave the finding as it is (it is still counted)."""


class PiiPolicyError(InvalidInput, ValueError):
    """An invalid PII policy; ``errors`` names each offending field (the API answers 422)."""

    @classmethod
    def at(cls, where: str, message: str) -> PiiPolicyError:
        loc: tuple[str | int, ...] = tuple(
            int(part) if part.isdigit() else part for part in where.split(".")
        )
        return cls(detail=f"{where}: {message}", errors=[FieldError(loc=loc, message=message)])

    @property
    def field(self) -> str:
        """The dotted path of the first offending field, e.g. ``custom_patterns.0.regex``."""
        return ".".join(str(part) for part in self.errors[0].loc) if self.errors else ""


@dataclass(frozen=True, slots=True)
class CustomPattern:
    """A workspace's own entity: ``name`` (``ORDER_REF``, upper case) found by ``regex``.

    The regex is Python's ``re`` syntax, case sensitive unless it says ``(?i)``; it must not
    match the empty string. ``score`` is the confidence of a match (at least the detector's
    threshold, 0.4, for matches to count).
    """

    name: str
    regex: str
    score: float = 0.85

    def __post_init__(self) -> None:
        self.compile()

    def compile(self, where: str = "custom_patterns") -> re.Pattern[str]:
        if not isinstance(self.name, str) or not _CUSTOM_NAME.fullmatch(self.name):
            raise PiiPolicyError.at(
                f"{where}.name",
                f"{self.name!r} is not a valid entity name: use 2-64 upper-case letters, "
                "digits or underscores, starting with a letter",
            )
        if self.name in BUILTIN_ENTITIES or self.name in NER_ENTITIES:
            raise PiiPolicyError.at(
                f"{where}.name", f"{self.name!r} is a built-in entity and cannot be redefined"
            )
        try:
            compiled = re.compile(self.regex)
        except (re.error, TypeError) as exc:
            raise PiiPolicyError.at(
                f"{where}.regex", f"invalid regular expression {self.regex!r}: {exc}"
            ) from exc
        if compiled.fullmatch(""):
            raise PiiPolicyError.at(f"{where}.regex", f"{self.regex!r} matches the empty string")
        if isinstance(self.score, bool) or not isinstance(self.score, int | float):
            raise PiiPolicyError.at(f"{where}.score", "must be a number")
        if not DEFAULT_SCORE_THRESHOLD <= self.score <= 1.0:
            raise PiiPolicyError.at(
                f"{where}.score", f"must be between {DEFAULT_SCORE_THRESHOLD} and 1"
            )
        return compiled


PropertyOverride = PiiAction | Mapping[str, PiiAction]
"""One action for every entity found in a property, or actions for some entities (the rest
fall back to the entity's default)."""


@dataclass(frozen=True, slots=True)
class _PropertyRule:
    pattern: str
    regex: re.Pattern[str]
    action: PiiAction | None
    per_entity: Mapping[str, PiiAction]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches within one path segment, ``**`` across segments."""
    parts = re.split(r"(\*\*|\*)", pattern)
    body = "".join(
        ".*" if part == "**" else "[^.]*" if part == "*" else re.escape(part) for part in parts
    )
    return re.compile(body)


def _action(value: object, where: str) -> PiiAction:
    try:
        return PiiAction(str(value))
    except ValueError:
        known = ", ".join(action.value for action in PiiAction)
        raise PiiPolicyError.at(
            where, f"unknown action {value!r}; expected one of {known}"
        ) from None


@dataclass(frozen=True, slots=True)
class PiiPolicy:
    """A workspace's PII policy.

    ``entity_actions`` sets an action per entity (others get ``default_action``, mask unless
    set). ``property_actions`` overrides per property path: an exact path (``traits.email``)
    wins over globs, globs apply in the order given; ``*`` matches within one segment
    (``properties.*_email``), ``**`` across segments (``properties.**``); list elements
    share their list's path. ``entities`` limits what is looked for (default: every built-in
    pattern entity plus the custom patterns). Actions may be given as their string values.

    Raises:
        PiiPolicyError: a field is invalid: an unknown entity or action, a bad regex, a
            custom pattern that redefines a built-in entity.
    """

    default_action: PiiAction = PiiAction.MASK
    entity_actions: Mapping[str, PiiAction] = field(default_factory=dict)
    property_actions: Mapping[str, PropertyOverride] = field(default_factory=dict)
    custom_patterns: tuple[CustomPattern, ...] = ()
    entities: frozenset[str] | None = None
    _rules: tuple[_PropertyRule, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "default_action", _action(self.default_action, "default_action"))
        patterns = tuple(self.custom_patterns)
        names: set[str] = set()
        for index, pattern in enumerate(patterns):
            if not isinstance(pattern, CustomPattern):
                raise PiiPolicyError.at(f"custom_patterns.{index}", "must be a CustomPattern")
            pattern.compile(f"custom_patterns.{index}")
            if pattern.name in names:
                raise PiiPolicyError.at(
                    f"custom_patterns.{index}.name", f"{pattern.name!r} is defined twice"
                )
            names.add(pattern.name)
        object.__setattr__(self, "custom_patterns", patterns)
        known = {*BUILTIN_ENTITIES, *NER_ENTITIES, *names}

        def entity(name: object, where: str) -> str:
            if not isinstance(name, str) or name not in known:
                raise PiiPolicyError.at(
                    where, f"unknown entity {name!r}; expected one of {', '.join(sorted(known))}"
                )
            return name

        if self.entities is not None:
            if isinstance(self.entities, str):
                raise PiiPolicyError.at("entities", "must be a collection of entity names")
            enabled = frozenset(entity(name, "entities") for name in self.entities)
            object.__setattr__(self, "entities", enabled)
        object.__setattr__(
            self,
            "entity_actions",
            {
                entity(name, f"entity_actions.{name}"): _action(value, f"entity_actions.{name}")
                for name, value in dict(self.entity_actions).items()
            },
        )
        rules: list[_PropertyRule] = []
        overrides: dict[str, PropertyOverride] = {}
        for path, override in dict(self.property_actions).items():
            where = f"property_actions.{path}"
            if not isinstance(path, str) or not path or path.strip(".") != path:
                raise PiiPolicyError.at("property_actions", f"invalid property path {path!r}")
            if isinstance(override, Mapping):
                per_entity = {
                    entity(name, where): _action(value, f"{where}.{name}")
                    for name, value in override.items()
                }
                overrides[path] = per_entity
                rules.append(_PropertyRule(path, _glob_regex(path), None, per_entity))
            else:
                action = _action(override, where)
                overrides[path] = action
                rules.append(_PropertyRule(path, _glob_regex(path), action, {}))
        object.__setattr__(self, "property_actions", overrides)
        # Exact paths first, then globs in the order given.
        rules.sort(key=lambda rule: "*" in rule.pattern)
        object.__setattr__(self, "_rules", tuple(rules))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PiiPolicy:
        """A policy from JSON-shaped data (what the API receives), e.g.::

        {"default_action": "mask",
         "entity_actions": {"EMAIL_ADDRESS": "hash"},
         "property_actions": {"context.ip": "hash", "properties.*_note": {"PHONE_NUMBER": "drop"}},
         "custom_patterns": [{"name": "ORDER_REF", "regex": "ORD-\\\\d{6}", "score": 0.9}],
         "entities": ["EMAIL_ADDRESS", "PHONE_NUMBER", "ORDER_REF"]}
        """
        allowed = {
            "default_action",
            "entity_actions",
            "property_actions",
            "custom_patterns",
            "entities",
        }
        for key in data:
            if key not in allowed:
                raise PiiPolicyError.at(str(key), "unknown field")
        patterns: list[CustomPattern] = []
        for index, raw in enumerate(data.get("custom_patterns") or ()):
            where = f"custom_patterns.{index}"
            if not isinstance(raw, Mapping):
                raise PiiPolicyError.at(where, "must be an object with name, regex and score")
            unknown = set(raw) - {"name", "regex", "score"}
            if unknown:
                raise PiiPolicyError.at(f"{where}.{sorted(unknown)[0]}", "unknown field")
            if "name" not in raw or "regex" not in raw:
                missing = "name" if "name" not in raw else "regex"
                raise PiiPolicyError.at(f"{where}.{missing}", "is required")
            try:
                patterns.append(CustomPattern(raw["name"], raw["regex"], raw.get("score", 0.85)))
            except PiiPolicyError as exc:
                raise PiiPolicyError.at(
                    exc.field.replace("custom_patterns", where, 1), exc.errors[0].message
                ) from None
        for key in ("entity_actions", "property_actions"):
            if not isinstance(data.get(key) or {}, Mapping):
                raise PiiPolicyError.at(key, "must be an object")
        entities = data.get("entities")
        return cls(
            default_action=data.get("default_action", PiiAction.MASK),
            entity_actions=data.get("entity_actions") or {},
            property_actions=data.get("property_actions") or {},
            custom_patterns=tuple(patterns),
            entities=None if entities is None else frozenset(entities),
        )

    @property
    def enabled_entities(self) -> frozenset[str]:
        """What the detector looks for."""
        if self.entities is not None:
            return self.entities
        return frozenset(BUILTIN_ENTITIES) | {pattern.name for pattern in self.custom_patterns}

    def action_for(self, entity: str, path: str = "") -> PiiAction:
        """The action for ``entity`` found at property ``path`` (``""`` for a bare string)."""
        if path:
            for rule in self._rules:
                if rule.regex.fullmatch(path):
                    if rule.action is not None:
                        return rule.action
                    if entity in rule.per_entity:
                        return rule.per_entity[entity]
                    break
        return self.entity_actions.get(entity, self.default_action)

    @property
    def actions_used(self) -> frozenset[PiiAction]:
        """Every action the policy can take, to check the redactor has what they need."""
        used = {self.default_action, *self.entity_actions.values()}
        for rule in self._rules:
            if rule.action is not None:
                used.add(rule.action)
            used.update(rule.per_entity.values())
        return frozenset(used)


# --- detection ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One entity found in a string: ``text[start:end]`` is ``value``."""

    entity: str
    start: int
    end: int
    score: float
    value: str
    canonical: str
    """The value in the form that is hashed: lower-case emails, E.164 phone numbers, card
    numbers and IBANs without separators, compressed IP addresses."""


# Street vocabulary, shared with the street recognizer so that the prefilter can never reject
# what the recognizer would find.
STREET_SUFFIXES_EN: tuple[str, ...] = (
    "street", "st", "avenue", "ave", "road", "rd", "lane", "ln", "boulevard", "blvd", "drive",
    "dr", "way", "court", "ct", "place", "pl", "terrace", "ter", "close", "crescent", "cres",
    "parkway", "pkwy", "square", "sq", "highway", "hwy", "circle", "cir", "grove", "gardens",
    "mews",
)  # fmt: skip
"""The word that ends an English street name: ``221B Baker Street``, ``350 5th Ave``."""
STREET_TYPES_FR: tuple[str, ...] = (
    "rue", "avenue", "av", "boulevard", "bd", "quai", "allée", "allee", "chemin", "impasse",
    "place", "route", "cours", "passage",
)  # fmt: skip
"""The word that starts a French street name: ``12 rue de la Paix``."""
STREET_PARTS_EU: tuple[str, ...] = (
    "straße", "strasse", "str", "weg", "gasse", "platz", "allee", "damm", "ufer", "chaussee",
    "steig", "straat", "laan", "gracht", "plein", "kade", "singel", "dijk", "steeg",
)  # fmt: skip
"""German and Dutch street words, usually the end of one word: ``Hauptstraße 5``,
``Keizersgracht 123``, also on their own: ``Berliner Straße 12``, ``Laan van Meerdervoort 5``."""
STREET_PREFIXES_DE: tuple[str, ...] = ("Am", "An", "Im", "In", "Auf", "Zum", "Zur", "Unter")
"""German street names without a street word: ``Am Rosengarten 3``, ``Unter den Linden 77``."""

_STREET_WORDS_AFTER_NUMBER = frozenset({*STREET_SUFFIXES_EN, *STREET_TYPES_FR})
_STREET_PARTS_IN_TEXT = tuple(part + "." if part == "str" else part for part in STREET_PARTS_EU)
_STREET_PREFIXES_IN_TEXT = tuple(prefix + " " for prefix in STREET_PREFIXES_DE)
# Literal alternations: one scan each instead of one substring test per word.
_STREET_PARTS_RE = re.compile("|".join(map(re.escape, (*_STREET_PARTS_IN_TEXT, " ring "))))
_STREET_PREFIXES_RE = re.compile("|".join(map(re.escape, _STREET_PREFIXES_IN_TEXT)))
# A number and the few words after it: where an English or French street word must be.
_AFTER_NUMBER = re.compile(r"\d\w*(?:[,.]?\s+[^\W\d_][\w'\-]*){1,5}")
_MARKS = re.compile(r"[\d@:]")
_DIGIT = re.compile(r"\d")
_LETTERS = re.compile(r"[^\W\d_]+")
_IBAN_SHAPE = re.compile(r"[A-Z]{2}\d\d")
_IPV6_SHAPE = re.compile(r":[0-9A-Fa-f]{0,4}:")
# Digit-led shapes, one alternation after a common \d so the scan skips non-digits quickly.
_DIGIT_SHAPES: dict[str, str] = {
    "PHONE_NUMBER": r"(?:[\s\-./()]{0,3}\d){6}",  # seven digits, separated or not
    "CREDIT_CARD": r"(?:[\s\-]?\d){11}",  # twelve digits
    "IP_ADDRESS": r"\d{0,2}\.\d{1,3}\.\d{1,3}\.\d",  # a dotted quad
}


def _could_be_street(text: str) -> bool:
    """A house number and a street word (or a German street prefix) in ``text``: substring
    tests for the German and Dutch forms, a word-set test only on the words after a number
    for the English and French ones (regular-expression alternations of every street word
    cost far more on long strings)."""
    # Every form has whitespace between the number and the words (JSON text escapes a
    # newline, so only a real space or tab counts there): most short values stop here.
    if (" " not in text and "\n" not in text and "\t" not in text) or not _DIGIT.search(text):
        return False
    if _STREET_PARTS_RE.search(text.lower()) or _STREET_PREFIXES_RE.search(text):
        return True
    return any(
        not _STREET_WORDS_AFTER_NUMBER.isdisjoint(_LETTERS.findall(window.group().lower()))
        for window in _AFTER_NUMBER.finditer(text)
    )


class PiiDetector:
    """Finds PII entities in strings, with presidio over pattern recognizers.

    ``entities`` are the entities to look for (default: the built-in pattern entities and
    the custom patterns), ``custom_patterns`` the workspace's own, ``phone_regions`` the
    regions whose national phone formats are accepted. ``nlp_engine`` is the optional NER
    hook: a presidio ``NlpEngine`` (e.g. ``pii_recognizers.spacy_ner_engine()``) that also
    finds ``PERSON``; without one, ``PERSON`` cannot be enabled.

    ``scanned`` counts strings given to :meth:`detect`, ``analyzed`` those that passed the
    prefilter and went to presidio.
    """

    def __init__(
        self,
        *,
        entities: Iterable[str] | None = None,
        custom_patterns: Iterable[CustomPattern] = (),
        phone_regions: Iterable[str] | None = None,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        nlp_engine: NlpEngine | None = None,
    ) -> None:
        self.custom_patterns = tuple(custom_patterns)
        compiled = {
            pattern.name: pattern.compile(f"custom_patterns.{index}")
            for index, pattern in enumerate(self.custom_patterns)
        }
        known = {*BUILTIN_ENTITIES, *NER_ENTITIES, *compiled}
        self.entities = (
            frozenset(BUILTIN_ENTITIES) | set(compiled) if entities is None else frozenset(entities)
        )
        unknown = sorted(self.entities - known)
        if unknown:
            raise PiiPolicyError.at("entities", f"unknown entity {unknown[0]!r}")
        if nlp_engine is None and self.entities & set(NER_ENTITIES):
            raise PiiPolicyError.at(
                "entities",
                "PERSON needs a named-entity model: pass nlp_engine="
                "nexus.privacy.pii_recognizers.spacy_ner_engine() (needs an installed spaCy "
                "model such as en_core_web_sm), or leave PERSON out",
            )
        self.phone_regions = None if phone_regions is None else tuple(phone_regions)
        self.score_threshold = score_threshold
        self.nlp_engine = nlp_engine
        # The prefilter: cheap checks that together pass every string the enabled
        # recognizers could match (a superset, never an exact test).
        shapes = [shape for name, shape in _DIGIT_SHAPES.items() if name in self.entities]
        self._digit_shapes = re.compile(rf"\d(?:{'|'.join(shapes)})") if shapes else None
        self._email = "EMAIL_ADDRESS" in self.entities
        self._iban = "IBAN_CODE" in self.entities
        self._ipv6 = "IP_ADDRESS" in self.entities
        self._street = "STREET_ADDRESS" in self.entities
        self._builtin = bool(self.entities & set(BUILTIN_ENTITIES))
        # Custom patterns are their own prefilter.
        self._custom_prefilters = [compiled[name] for name in compiled if name in self.entities]
        # A named-entity model has no cheap shape to screen for: every string goes to it.
        self._always = nlp_engine is not None and bool(self.entities & set(NER_ENTITIES))
        self._analyzer: AnalyzerEngine | None = None
        self.scanned = 0
        self.analyzed = 0

    @classmethod
    def for_policy(
        cls,
        policy: PiiPolicy,
        *,
        nlp_engine: NlpEngine | None = None,
        phone_regions: Iterable[str] | None = None,
    ) -> PiiDetector:
        """The detector a policy needs: its enabled entities and custom patterns."""
        return cls(
            entities=policy.enabled_entities,
            custom_patterns=policy.custom_patterns,
            phone_regions=phone_regions,
            nlp_engine=nlp_engine,
        )

    def could_contain(self, text: str) -> bool:
        """Whether ``text`` might hold an enabled entity; ``False`` is certain, ``True`` is a
        maybe that :meth:`detect` settles. Built-in entities all need a digit, an ``@`` or a
        ``:``; most event properties have none and cost one character-class scan."""
        if self._always or any(p.search(text) for p in self._custom_prefilters):
            return True
        if not self._builtin or not _MARKS.search(text):
            return False
        return bool(
            (self._email and "@" in text)
            or (self._digit_shapes is not None and self._digit_shapes.search(text))
            or (self._iban and _IBAN_SHAPE.search(text))
            or (self._ipv6 and ":" in text and _IPV6_SHAPE.search(text))
            or (self._street and _could_be_street(text))
        )

    def analyzer(self) -> AnalyzerEngine:
        """The presidio analyzer, built on first use (cached per configuration)."""
        if self._analyzer is None:
            from nexus.privacy import pii_recognizers as recognizers  # noqa: PLC0415

            config = recognizers.AnalyzerConfig(
                entities=self.entities,
                custom=tuple((p.name, p.regex, p.score) for p in self.custom_patterns),
                phone_regions=self.phone_regions or recognizers.DEFAULT_PHONE_REGIONS,
            )
            self._analyzer = (
                recognizers.cached_analyzer(config)
                if self.nlp_engine is None
                else recognizers.build_analyzer(config, self.nlp_engine)
            )
        return self._analyzer

    def detect(self, text: str, *, context: Sequence[str] = ()) -> list[Finding]:
        """The entities in ``text``, in order, none overlapping (where two overlap, the higher
        score wins, then the longer span). ``context`` are words saying what the text is,
        e.g. from its property's name (``["traits", "phone"]``): a value that is weak evidence
        on its own (a bare run of digits) counts under a property named for its entity."""
        self.scanned += 1
        if not text or not self.could_contain(text):
            return []
        self.analyzed += 1
        results = self.analyzer().analyze(
            text=text,
            language="en",
            entities=sorted(self.entities),
            score_threshold=self.score_threshold,
            context=list(context) or None,
        )
        chosen: list[Any] = []
        for result in sorted(results, key=lambda r: (-r.score, -(r.end - r.start), r.start)):
            if all(result.end <= kept.start or result.start >= kept.end for kept in chosen):
                chosen.append(result)
        findings = []
        for result in sorted(chosen, key=lambda r: r.start):
            value = text[result.start : result.end]
            metadata = result.recognition_metadata or {}
            canonical = metadata.get(CANONICAL_KEY) or _canonical(result.entity_type, value)
            findings.append(
                Finding(
                    result.entity_type, result.start, result.end, result.score, value, canonical
                )
            )
        return findings


def _canonical_phone(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return "+" + digits[2:] if digits.startswith("00") else digits


def _canonical_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_interface(value).ip)
    except ValueError:
        return value.lower()


def _canonical_words(value: str) -> str:
    return " ".join(value.split()).casefold()


def _canonical_code(value: str) -> str:
    return re.sub(r"[\s\-]", "", value).upper()


_CANONICAL: dict[str, Callable[[str], str]] = {
    "EMAIL_ADDRESS": lambda value: value.strip().lower(),
    "PHONE_NUMBER": _canonical_phone,  # the recognizer supplies E.164; this is the fallback
    "CREDIT_CARD": _canonical_code,
    "IBAN_CODE": _canonical_code,
    "IP_ADDRESS": _canonical_ip,
    "STREET_ADDRESS": _canonical_words,
    "PERSON": _canonical_words,
}


def _canonical(entity: str, value: str) -> str:
    """The form of a value that is hashed, so one person's value hashes one way; custom
    entities hash as written."""
    normalise = _CANONICAL.get(entity)
    return normalise(value) if normalise else value


_WORD_BREAK = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def _path_words(path: str) -> list[str]:
    """``properties.mobileNumber`` -> ``["properties", "mobile", "number"]``."""
    return [word.lower() for word in _WORD_BREAK.split(path) if word] if path else []


# --- redaction ------------------------------------------------------------------------------

Encrypt = Callable[[str, str], str]
"""``encrypt(entity, value) -> token``: the caller's encryption (it holds the key)."""


@dataclass(frozen=True, slots=True)
class Redaction:
    """What was done to one finding (offsets are in the original string)."""

    entity: str
    start: int
    end: int
    action: PiiAction


@dataclass(frozen=True, slots=True)
class TextRedaction:
    """A redacted string: ``text`` is ``None`` when the policy drops it."""

    text: str | None
    findings: tuple[Redaction, ...] = ()

    @property
    def dropped(self) -> bool:
        return self.text is None


@dataclass(frozen=True, slots=True)
class EventRedaction:
    """A redacted copy of an event and what was found in it."""

    event: dict[str, Any]
    entity_counts: dict[str, int]
    action_counts: dict[str, int]
    dropped_paths: tuple[str, ...] = ()

    @property
    def findings(self) -> int:
        return sum(self.entity_counts.values())


_DROPPED = object()


class PiiRedactor:
    """Applies a :class:`PiiPolicy` to strings and events.

    ``hash_key`` (at least 16 bytes, per workspace) is needed when the policy hashes,
    ``encrypt`` when it encrypts; ``detector`` defaults to :meth:`PiiDetector.for_policy`.

    Raises:
        ValueError: the policy hashes without a key or encrypts without a callback.
    """

    def __init__(
        self,
        policy: PiiPolicy,
        *,
        hash_key: bytes | None = None,
        encrypt: Encrypt | None = None,
        detector: PiiDetector | None = None,
        nlp_engine: NlpEngine | None = None,
    ) -> None:
        used = policy.actions_used
        if PiiAction.HASH in used and (hash_key is None or len(hash_key) < _MIN_HASH_KEY_BYTES):
            raise ValueError(
                f"the PII policy hashes values: pass hash_key, the workspace's secret key "
                f"of at least {_MIN_HASH_KEY_BYTES} bytes"
            )
        if PiiAction.ENCRYPT in used and encrypt is None:
            raise ValueError("the PII policy encrypts values: pass encrypt(entity, value)")
        self.policy = policy
        self.detector = detector or PiiDetector.for_policy(policy, nlp_engine=nlp_engine)
        self._hash_key = hash_key
        self._encrypt = encrypt

    def hash_value(self, entity: str, canonical: str) -> str:
        """``<ENTITY:hmac:16 hex>``: HMAC-SHA256 over the entity and the canonical value."""
        if self._hash_key is None:
            raise ValueError("no hash_key was given to this redactor")
        message = f"{entity}\x00{canonical}".encode()
        digest = hmac.new(self._hash_key, message, hashlib.sha256).hexdigest()
        return f"<{entity}:hmac:{digest[:_HASH_HEX_CHARS]}>"

    def redact_text(self, text: str, *, path: str = "") -> TextRedaction:
        """``text`` with the policy applied to every finding; ``path`` is the property path
        it came from (for per-property overrides)."""
        findings = self.detector.detect(text, context=_path_words(path))
        if not findings:
            return TextRedaction(text)
        actions = [self.policy.action_for(f.entity, path) for f in findings]
        if PiiAction.DROP in actions:
            return TextRedaction(
                None,
                tuple(Redaction(f.entity, f.start, f.end, PiiAction.DROP) for f in findings),
            )
        redactions = tuple(
            Redaction(f.entity, f.start, f.end, action)
            for f, action in zip(findings, actions, strict=True)
        )
        if all(action is PiiAction.KEEP for action in actions):
            return TextRedaction(text, redactions)
        return TextRedaction(self._anonymize(text, findings, actions), redactions)

    def _anonymize(self, text: str, findings: list[Finding], actions: list[PiiAction]) -> str:
        from presidio_anonymizer.entities import RecognizerResult  # noqa: PLC0415

        # Each finding gets its own operator, keyed by a per-finding type name, because one
        # string can hold the same entity under two actions (a per-entity override) and the
        # anonymizer picks operators by type.
        results = []
        operators: dict[str, OperatorConfig] = {}
        for index, (finding, action) in enumerate(zip(findings, actions, strict=True)):
            key = f"{finding.entity}#{index}"
            results.append(RecognizerResult(key, finding.start, finding.end, finding.score))
            operators[key] = self._operator(finding, action)
        return str(
            _anonymizer()
            .anonymize(
                text=text,
                analyzer_results=results,
                operators=operators,
                merge_entities_with_spaces=False,
            )
            .text
        )

    def _operator(self, finding: Finding, action: PiiAction) -> OperatorConfig:
        from presidio_anonymizer.entities import OperatorConfig  # noqa: PLC0415

        if action is PiiAction.KEEP:
            return OperatorConfig("keep")
        if action is PiiAction.MASK:
            return OperatorConfig("replace", {"new_value": f"<{finding.entity}>"})
        if action is PiiAction.HASH:
            token = self.hash_value(finding.entity, finding.canonical)
        else:
            assert self._encrypt is not None
            token = self._encrypt(finding.entity, finding.value)
            if not isinstance(token, str):
                raise TypeError("encrypt(entity, value) must return a str")
        return OperatorConfig("replace", {"new_value": token})

    def redact_event(
        self, event: Mapping[str, Any], *, sections: Iterable[str] = DEFAULT_SECTIONS
    ) -> EventRedaction:
        """A redacted copy of ``event`` (never modified): every string under the top-level
        keys named in ``sections`` (nested objects and lists included) is scanned, others are
        copied as they are. Integers of seven or more digits are scanned as strings (a phone
        number sent as a number); a finding turns them into a string. Object keys are not
        scanned. When a string is dropped, each finding in it counts as dropped."""
        entity_counts: Counter[str] = Counter()
        action_counts: Counter[str] = Counter()
        dropped: list[str] = []

        def scan(value: Any, path: str) -> Any:
            if isinstance(value, Mapping):
                out: dict[str, Any] = {}
                for key, item in value.items():
                    redacted = scan(item, f"{path}.{key}")
                    if redacted is not _DROPPED:
                        out[key] = redacted
                return out
            if isinstance(value, list | tuple):
                items = [scan(item, path) for item in value]
                return [item for item in items if item is not _DROPPED]
            if isinstance(value, str):
                text = value
            elif (
                isinstance(value, int)
                and not isinstance(value, bool)
                and len(str(abs(value))) >= _MIN_SCANNED_INT_DIGITS
            ):
                text = str(value)
            else:
                return value
            result = self.redact_text(text, path=path)
            for finding in result.findings:
                entity_counts[finding.entity] += 1
                action_counts[finding.action.value] += 1
            if result.text is None:
                dropped.append(path)
                return _DROPPED
            return value if not result.findings or result.text == text else result.text

        wanted = set(sections)
        copied: dict[str, Any] = {}
        for key, value in event.items():
            if key in wanted:
                redacted = scan(value, key)
                if redacted is not _DROPPED:
                    copied[key] = redacted
            else:
                copied[key] = copy.deepcopy(value)
        return EventRedaction(copied, dict(entity_counts), dict(action_counts), tuple(dropped))


@functools.cache
def _anonymizer() -> AnonymizerEngine:
    """One anonymizer per process (it holds only its operator registry)."""
    from presidio_anonymizer import AnonymizerEngine  # noqa: PLC0415

    # presidio-anonymizer's constructor carries no annotations.
    return AnonymizerEngine()  # type: ignore[no-untyped-call]

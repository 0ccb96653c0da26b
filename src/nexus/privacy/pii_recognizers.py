"""The presidio side of PII detection: recognizers, a model-free NLP engine and the analyzer.

Kept apart from :mod:`nexus.privacy.pii` so that importing the policy and the prefilter costs
nothing: presidio (and spaCy, which it imports) load only when a string first passes the
prefilter.

Everything here is pattern based and offline:

* :class:`PatternOnlyNlpEngine` satisfies presidio's ``NlpEngine`` without loading any model,
  so ``AnalyzerEngine`` never reaches for spaCy's ``en_core_web_lg`` (and never downloads it).
* :class:`OfflineEmailRecognizer` validates domains against the public suffix list snapshot
  bundled in ``tldextract``; presidio's own recognizer uses ``tldextract``'s default extractor,
  which fetches the list over the network on first use and caches it on disk.
* :class:`PhoneNumberRecognizer` finds phone-shaped runs with one regular expression and
  validates each with ``phonenumbers`` (Google's libphonenumber metadata), instead of running
  ``PhoneNumberMatcher`` over the whole text once per region.
* :class:`StreetAddressRecognizer` covers house number + street forms presidio has no
  recognizer for (English, German, Dutch, French).
* Credit cards (presidio's pattern plus Mastercard's 2-series, with the Luhn check), IBANs
  (ISO 13616 mod-97 check and per-country format) and IP addresses (validated by
  ``ipaddress``; version numbers such as ``Chrome/120.0.0.0`` excluded) are presidio's
  recognizers.

Context words in the text are weighed inside the recognizers that need them (phone numbers),
by looking at the characters around a match; presidio's lemma-based context enhancer needs
tokens from an NLP model, which this engine does not produce. It is replaced by
:class:`PropertyNameContext`, which weighs the words of the property a value came from.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import phonenumbers
import tldextract
from phonenumbers import NumberParseException, PhoneNumberFormat
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    LocalRecognizer,
    Pattern,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    SpacyRecognizer,
)
from spacy.tokens import Doc
from spacy.vocab import Vocab

from nexus.privacy.pii import CANONICAL_KEY, STREET_PARTS_EU, STREET_SUFFIXES_EN

LANGUAGE = "en"
"""presidio's language tag for every recognizer: the patterns do not depend on language, and
German, French or Dutch text is analysed under the same tag."""


class NerModelMissing(ImportError):
    """Person-name detection was asked for, but the spaCy model it needs is not installed."""


# --- the NLP engine that loads nothing ------------------------------------------------------


class PatternOnlyNlpEngine(NlpEngine):
    """An ``NlpEngine`` that loads no model and produces no tokens, lemmas or entities.

    Every recognizer NEXUS registers by default is self-contained, so presidio needs an engine
    only to satisfy its interface. Supplying this one keeps ``AnalyzerEngine`` from creating
    its default spaCy engine, which would load (and if missing, download) a model.
    """

    def __init__(self, languages: Sequence[str] = (LANGUAGE,)) -> None:
        self._languages = list(languages)
        self._empty = Doc(Vocab(), words=[])

    def load(self) -> None:
        """Nothing to load."""

    def is_loaded(self) -> bool:
        return True

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        return NlpArtifacts(
            entities=[],
            tokens=self._empty,
            tokens_indices=[],
            lemmas=[],
            nlp_engine=self,
            language=language,
            scores=[],
        )

    def process_batch(
        self,
        texts: Iterable[str],
        language: str,
        batch_size: int = 1,
        n_process: int = 1,
        **kwargs: Any,
    ) -> Iterator[tuple[str, NlpArtifacts]]:
        for text in texts:
            yield text, self.process_text(text, language)

    def is_stopword(self, word: str, language: str) -> bool:
        return False

    def is_punct(self, word: str, language: str) -> bool:
        return False

    def get_supported_entities(self) -> list[str]:
        return []

    def get_supported_languages(self) -> list[str]:
        return list(self._languages)


# Words in a property's path that say what its value is ("traits.phone", "mobileNumber").
_PATH_HINTS: dict[str, frozenset[str]] = {
    "PHONE_NUMBER": frozenset(
        {"phone", "tel", "telephone", "mobile", "cell", "cellphone", "fax", "whatsapp", "sms",
         "msisdn", "handy", "telefon", "telefoon", "mobiel", "portable"}
    ),
    "STREET_ADDRESS": frozenset({"address", "street", "addr", "adresse", "adres", "strasse"}),
}  # fmt: skip


class PropertyNameContext(ContextAwareEnhancer):
    """Raises a finding's score when the words of the property it came from name its entity
    (a bare ``4155550132`` under ``traits.phone`` is a phone number; in a chat message it may
    be an order number). The words arrive as ``analyze(context=...)``. Context in the text
    itself is weighed by the recognizers."""

    BOOST = 0.35

    def __init__(self) -> None:
        super().__init__(
            context_similarity_factor=self.BOOST,
            min_score_with_context_similarity=0.0,
            context_prefix_count=0,
            context_suffix_count=0,
        )

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        if not context:
            return raw_results
        words = {word.lower() for word in context}
        for result in raw_results:
            if words & _PATH_HINTS.get(result.entity_type, frozenset()):
                result.score = min(1.0, result.score + self.BOOST)
        return raw_results


def spacy_ner_engine(model: str = "en_core_web_sm", *, language: str = LANGUAGE) -> NlpEngine:
    """A spaCy NLP engine for the optional person-name (``PERSON``) detection.

    ``model`` is an installed spaCy model package or a directory a spaCy pipeline was saved
    to (``nlp.to_disk``). The model must already be installed: presidio's spaCy engine would
    otherwise download it on load, and NEXUS makes no network call at run time.

    Raises:
        NerModelMissing: spaCy's model ``model`` is not installed; the message says how to
            install it.
    """
    import spacy.util  # noqa: PLC0415

    if not (spacy.util.is_package(model) or Path(model).is_dir()):
        raise NerModelMissing(
            f"person-name detection needs the spaCy model {model!r}, which is not installed: "
            f"install it into this environment (pip install {model}, from a wheel you host, "
            f"or `python -m spacy download {model}` on a machine with network access), or "
            "leave PERSON out of the enabled entities. NEXUS never downloads models at run time."
        )
    from presidio_analyzer.nlp_engine import SpacyNlpEngine  # noqa: PLC0415

    return SpacyNlpEngine(models=[{"lang_code": language, "model_name": model}])


# --- email ----------------------------------------------------------------------------------


@functools.cache
def _offline_tld_extract() -> tldextract.TLDExtract:
    # suffix_list_urls=() never fetches; cache_dir=None never writes; the snapshot bundled in
    # the tldextract package is the suffix list.
    return tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


class OfflineEmailRecognizer(EmailRecognizer):
    """presidio's email pattern, validated against the bundled public suffix list."""

    def validate_result(self, pattern_text: str) -> bool:
        domain = pattern_text.rpartition("@")[2]
        return _offline_tld_extract()(domain).suffix != ""


# --- credit cards ---------------------------------------------------------------------------


class CardNumberRecognizer(CreditCardRecognizer):
    """presidio's card patterns and Luhn check, plus Mastercard's 2221-2720 range (since 2017),
    which presidio's pattern does not start with."""

    PATTERNS = [
        *CreditCardRecognizer.PATTERNS,
        Pattern(
            "Mastercard 2-series (weak)",
            r"\b(2[2-7]\d{2})[- ]?(\d{4})[- ]?(\d{4})[- ]?(\d{4})\b",
            0.3,
        ),
    ]

    def __init__(self) -> None:
        super().__init__(patterns=list(self.PATTERNS))


# --- IP addresses ---------------------------------------------------------------------------

# A dotted quad right after a product token ("Chrome/120.0.0.0") or a version word is a
# version number; after "://" it is a URL's host, an address.
_VERSION_BEFORE = re.compile(
    r"(?:(?<![/:])\b[A-Za-z][\w.\-]*/"
    r"|(?i:\b(?:version|ver|v|build|release|firmware|ios|android|os|chrome|firefox|safari)\s?))$"
)


class AddressNotVersionIpRecognizer(IpRecognizer):
    """presidio's IP recognizer (patterns and ``ipaddress`` validation), minus dotted quads
    that are version numbers in user agents and prose (``Chrome/120.0.0.0``,
    ``version 4.2.1.7``), which event properties carry all the time."""

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        results: list[RecognizerResult] = super().analyze(
            text, entities, nlp_artifacts, regex_flags
        )
        return [r for r in results if not _VERSION_BEFORE.search(text, 0, r.start)]


# --- phone numbers --------------------------------------------------------------------------

DEFAULT_PHONE_REGIONS: tuple[str, ...] = (
    "US", "GB", "DE", "FR", "NL", "ES", "IT", "IN", "AU", "CA", "BE", "AT", "CH", "IE",
)  # fmt: skip
"""Regions whose national formats are tried for numbers written without a country code.
Numbers written with ``+`` (E.164) or ``00`` are validated for every region."""

# A phone-shaped run: an optional + or 00, then groups of digits (or a parenthesised group
# such as "(0)" or "(415)") joined by at most three separator characters. Not inside a word,
# not glued to a hyphenated or slashed identifier (INV-2024-000183), not after # or @.
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+\-/#@.])"
    r"(?:\+\s?)?"
    r"(?:\(\s?\+?\d{1,5}\s?\)|\d+)"
    r"(?:(?:[ \-./\u00a0]{1,3}|(?=\()|(?<=\)))(?:\(\s?\d{1,5}\s?\)|\d+))*"
    r"(?![\w@]|[\-/.]\w)"
)
_GROUP = re.compile(r"\+?\(?\s?\d+\s?\)?")
_DATE_OR_IP = re.compile(
    r"\d{1,4}([./\-])\d{1,2}\1\d{2,4}"  # 2024-03-15, 15.03.2024, 03/15/2024
    r"|\d{1,3}(?:\.\d{1,3}){3}"  # 192.168.0.1
    r"|\d{1,4}\.\d{1,2}(?:\.\d{1,2})?"  # 2024.11.3, 3.10
)
_BLOCKS_OF_FOUR = re.compile(r"\d{4}(?:[ \-.]\d{4})+(?:[ \-.]\d{1,4})?")
_MIN_DIGITS, _MAX_DIGITS = 7, 15
_MAX_GROUPS = 12

# Words that say "a phone number follows/precedes" or "this number is something else".
_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|mob|cell|cellphone|call|callback|text|sms|whatsapp|"
    r"reach|ring|dial|fax|contact|telefon|telefonnummer|handy|rufnummer|anrufen|"
    r"erreichen|zur[üu]ckrufen|t[ée]l[ée]phone|portable|joindre|appeler|rappel\w*|"
    r"bel|bellen|telefoon|telefoonnummer|mobiel|gsm)\b"
)
_NOT_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:order|orders|invoice|inv|ticket|case|ref|reference|tracking|shipment|sku|"
    r"account|acct|id|po|customer|client|zip|postcode|postal|plz|iban|bic|swift|card|code|"
    r"otp|pin|serial|version|build|bestellung|bestellnummer|rechnung|kundennummer|"
    r"auftrag|commande|facture|bestelling|factuur|klantnummer|referentie)\b"
)
# "number" says phone only when nothing says it is another kind of number ("order number").
_NUMBER_WORD = re.compile(r"(?i)\b(?:number|nummer|num[ée]ro)\b")
_CONTEXT_BEFORE, _CONTEXT_AFTER = 40, 20


@dataclass(frozen=True, slots=True)
class _PhoneMatch:
    start: int
    end: int
    canonical: str
    international: bool


def _digits_of(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


class PhoneNumberRecognizer(LocalRecognizer):
    """Phone numbers in national or international format, validated with ``phonenumbers``.

    A candidate is a phone-shaped run of 7 to 15 digits (a longer run is split at its
    separators). It counts when it is a valid number: written with ``+``/``00`` for any
    country, or in the national format of one of ``regions`` (with its trunk prefix, e.g.
    ``030 1234567``, or as the bare national number, e.g. ``(415) 555-0132``).

    Scores: 0.75 written internationally, 0.55 national with separators, 0.45 as a bare digit
    run with a trunk prefix (``0612345678``), 0.3 as another bare digit run (an order number
    looks the same); +0.3 when a phone word is near (``call``, ``tel``, ``Handy``,
    ``joindre``, ``bel`` ..., or ``number`` when nothing names another kind of number). A
    national candidate right after a word naming another kind of number (``order``,
    ``invoice``, ``Kundennummer`` ...) is dropped unless a phone word is nearer. A run of more
    than 15 digits in blocks of four is a card, IBAN or account number, never split into
    phone numbers.
    """

    SCORE_INTERNATIONAL = 0.75
    SCORE_NATIONAL = 0.55
    SCORE_BARE_TRUNK = 0.45
    SCORE_BARE = 0.3
    CONTEXT_BOOST = 0.3

    def __init__(self, regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> None:
        self.regions = tuple(regions)
        super().__init__(
            supported_entities=["PHONE_NUMBER"],
            supported_language=LANGUAGE,
            name="PhoneNumberRecognizer",
        )

    def load(self) -> None:
        """Nothing to load: ``phonenumbers`` reads its metadata lazily."""

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
    ) -> list[RecognizerResult]:
        results: list[RecognizerResult] = []
        for candidate in _PHONE_CANDIDATE.finditer(text):
            for found in self._numbers_in(text, candidate.start(), candidate.end()):
                score = self._score(text, found)
                if score <= 0:
                    continue
                results.append(
                    RecognizerResult(
                        entity_type="PHONE_NUMBER",
                        start=found.start,
                        end=found.end,
                        score=score,
                        recognition_metadata={
                            RecognizerResult.RECOGNIZER_NAME_KEY: "PhoneNumberRecognizer",
                            RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                            CANONICAL_KEY: found.canonical,
                        },
                    )
                )
        return results

    def _numbers_in(self, text: str, start: int, end: int) -> list[_PhoneMatch]:
        """The valid numbers in one candidate run: the whole run, else its longest valid
        sub-runs, left to right. A run splits only where a space separates two groups
        ("030 12345678 10115"), never inside a dotted or dashed sequence ("115.0.1752.185")."""
        run = text[start:end]
        groups = [(start + m.start(), start + m.end()) for m in _GROUP.finditer(run)]
        if not groups or len(groups) > _MAX_GROUPS:
            return []
        if len(_digits_of(run)) > _MAX_DIGITS and _BLOCKS_OF_FOUR.fullmatch(run):
            return []  # card-, IBAN- or account-shaped, not phone numbers side by side
        # cut[k]: whether a number may begin at group k (and end at group k - 1).
        cut = [True] + [
            any(ch.isspace() for ch in text[groups[k - 1][1] : groups[k][0]])
            or text[groups[k - 1][1] - 1].isspace()
            for k in range(1, len(groups))
        ]
        cut.append(True)
        found: list[_PhoneMatch] = []
        i = 0
        while i < len(groups):
            for j in range(len(groups), i, -1):
                if not cut[j]:
                    continue
                span_start, span_end = groups[i][0], groups[j - 1][1]
                while text[span_end - 1] in " (":  # a group may end on an inner space
                    span_end -= 1
                match = self._validate(text, span_start, span_end)
                if match is not None:
                    found.append(match)
                    i = j
                    break
            else:
                i += 1
                while i < len(groups) and not cut[i]:
                    i += 1
        return found

    def _validate(self, text: str, start: int, end: int) -> _PhoneMatch | None:
        written = text[start:end]
        digits = _digits_of(written)
        if not _MIN_DIGITS <= len(digits) <= _MAX_DIGITS or _DATE_OR_IP.fullmatch(written):
            return None
        if written.startswith("+") or digits.startswith("00"):
            international = "+" + (digits[2:] if not written.startswith("+") else digits)
            number = _parse(international, None)
            if number is None or not phonenumbers.is_valid_number(number):
                return None
            return _PhoneMatch(start, end, _e164(number), international=True)
        for region in self.regions:
            number = _parse(written, region)
            if number is None or not phonenumbers.is_valid_number(number):
                continue
            if _written_as_dialled(digits, number):
                return _PhoneMatch(start, end, _e164(number), international=False)
        return None

    def _score(self, text: str, found: _PhoneMatch) -> float:
        written = text[found.start : found.end]
        if found.international:
            score = self.SCORE_INTERNATIONAL
        elif not written.isdigit():
            score = self.SCORE_NATIONAL
        elif written.startswith("0"):
            score = self.SCORE_BARE_TRUNK
        else:
            score = self.SCORE_BARE
        before = text[max(0, found.start - _CONTEXT_BEFORE) : found.start]
        after = text[found.end : found.end + _CONTEXT_AFTER]
        positive = [m.end() for m in _PHONE_CONTEXT.finditer(before)]
        negative = [m.end() for m in _NOT_PHONE_CONTEXT.finditer(before)]
        if negative and (not positive or negative[-1] > positive[-1]) and not found.international:
            return 0.0
        if (
            positive
            or _PHONE_CONTEXT.search(after)
            or (not negative and _NUMBER_WORD.search(before))
        ):
            score += self.CONTEXT_BOOST
        return min(score, 1.0)


def _parse(written: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(written, region)
    except NumberParseException:
        return None


def _e164(number: phonenumbers.PhoneNumber) -> str:
    return str(phonenumbers.format_number(number, PhoneNumberFormat.E164))


def _written_as_dialled(digits: str, number: phonenumbers.PhoneNumber) -> bool:
    """Whether the digits are the number as people write it: in national format (with the
    trunk prefix, ``0301234567``), as the national significant number when that is long
    enough not to be a short code (``4155550132``, ``3471234567``), or with the country code
    and no plus (``14155550132``)."""
    national = _digits_of(phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL))
    significant = phonenumbers.national_significant_number(number)
    return (
        digits == national
        or (digits == significant and len(significant) >= 9)
        or digits == f"{number.country_code}{significant}"
    )


# --- street addresses -----------------------------------------------------------------------

_EN_SUFFIX = "|".join(STREET_SUFFIXES_EN)
# Words that never name a street: function words, and units ("a 10 minute drive").
_EN_NOT_STREET_NAME = frozenset(
    {
        "a", "an", "the", "of", "on", "in", "at", "to", "for", "and", "or", "my", "our", "your",
        "his", "her", "their", "its", "is", "are", "was", "be", "by", "with", "from", "per", "more",
        "than", "about", "into", "this", "that", "these", "those", "we", "i", "you", "they", "it",
        "as", "if", "not", "no", "very", "so", "too", "quite", "really", "just", "only", "other",
        "same", "next", "last", "first", "second", "min", "mins", "minute", "minutes", "hour",
        "hours", "hr", "hrs", "day", "days", "week", "weeks", "month", "months", "year", "years",
        "mile", "miles", "km", "kilometer", "kilometers", "kilometre", "kilometres", "meter",
        "meters", "metre", "metres", "block", "blocks", "step", "steps", "seconds", "times",
        "percent",
    }
)  # fmt: skip
# 221B Baker Street, 1600 Pennsylvania Ave. NW, 350 5th Avenue, 220 W 42nd St, 12 elm st
_EN_STREET = re.compile(
    r"\b(?P<number>\d{1,5}[A-Za-z]?(?:-\d{1,5})?)\s+"
    r"(?:(?:[NSEW]|NE|NW|SE|SW)\.?\s+)?"  # 220 W 42nd St
    r"(?P<name>(?:(?:\d{1,3}(?:st|nd|rd|th)|[A-Za-z][A-Za-z'\-]+)\s+){1,3}?)"
    rf"(?P<suffix>(?:{_EN_SUFFIX}))\b(?:\.(?!\w))?"
    r"(?:\s(?:NE|NW|SE|SW)\b)?",  # 1600 Pennsylvania Avenue NW
    re.IGNORECASE,
)
_EU_COMPOUND = "|".join(
    re.escape(part) + (r"\." if part == "str" else "") for part in STREET_PARTS_EU
)
_HOUSE_NUMBER = r"\d{1,4}(?:\s?[a-zA-Z]\b|-\d{1,3}|\s(?:hs|bis|ter)\b)?"
# Hauptstraße 5, Gartenstr. 12a, Kastanienallee 14, Karl-Marx-Allee 33, Keizersgracht 123 hs
_EU_COMPOUND_STREET = re.compile(
    rf"(?i)\b(?P<name>[^\W\d_][\w\-]*?(?:{_EU_COMPOUND}))\s?"
    rf"(?P<number>{_HOUSE_NUMBER})(?!\w|[.,:]\d)"
)
# Berliner Straße 12, Laan van Meerdervoort 52, Am Rosengarten 3
_EU_WORDS_STREET = re.compile(
    r"\b(?P<name>"
    r"[A-ZÄÖÜ][\wäöüß\-]+\s+(?i:stra(?:ß|ss)e|str\.|weg|gasse|platz|allee|ring|damm|ufer)"
    r"|(?i:laan|weg|plein|kade|straat)\s+(?:van|der|de|den)\s+(?:(?:de|der|den)\s+)?"
    r"[A-Z][\w\-]+"
    r"|(?:Am|An der|An den|Im|In der|Auf der|Auf dem|Zum|Zur|Unter den)\s+"
    r"(?!(?:Montag|Dienstag|Mittwoch|Donnerstag|Freitag|Samstag|Sonntag|Jahr|Tag|Ende|Anfang|"
    r"Januar|Februar|März|April|Mai|Juni|Juli|August|September|Oktober|November|Dezember)\b)"
    r"[A-ZÄÖÜ][\wäöüß\-]+"
    r")\s+(?P<number>" + _HOUSE_NUMBER + r")(?!\w|[.,:]\d|\s?Uhr)"
)
# 12 rue de la Paix, 5 avenue Victor Hugo, 18 bd Haussmann, 3 bis, place Bellecour
_FR_STREET = re.compile(
    r"\b(?P<number>\d{1,4}(?:\s?(?:bis|ter)\b)?),?\s+"
    r"(?:"
    # street words that are not also everyday nouns: any name after them
    r"(?P<street>(?i:rue|avenue|av\.|boulevard|bd|quai|all[ée]e|chemin|impasse))\s+"
    r"(?:(?i:de la|de l'|de l\u2019|du|des|de|d'|d\u2019)\s*[\w\-'\u2019]+|[A-ZÀ-Ý][\w\-'\u2019]+)"
    # place, route, cours, passage are everyday nouns too ("2 place de parking"): a capital
    r"|(?P<noun>(?i:place|route|cours|passage))\s+"
    r"(?:(?i:de la|de l'|de l\u2019|du|des|de|d'|d\u2019)\s*)?[A-ZÀ-Ý][\w\-'\u2019]+"
    r")"
    r"(?:[ \-][A-ZÀ-Ý][\w\-'\u2019]+)*"
)


class StreetAddressRecognizer(LocalRecognizer):
    """A house number and a street name: ``221B Baker Street``, ``Hauptstraße 5``,
    ``12 rue de la Paix``, ``Keizersgracht 123``. Not the unit, postcode or city, and never a
    street without a number ("our office on Main Street" names a street, not an address)."""

    SCORE = 0.6

    def __init__(self) -> None:
        super().__init__(
            supported_entities=["STREET_ADDRESS"],
            supported_language=LANGUAGE,
            name="StreetAddressRecognizer",
        )

    def load(self) -> None:
        """Nothing to load."""

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
    ) -> list[RecognizerResult]:
        spans: list[tuple[int, int]] = []
        for match in _EN_STREET.finditer(text):
            words = match.group("name").lower().split()
            if not any(word in _EN_NOT_STREET_NAME for word in words):
                spans.append(match.span())
        for pattern in (_EU_COMPOUND_STREET, _EU_WORDS_STREET, _FR_STREET):
            spans.extend(match.span() for match in pattern.finditer(text))
        return [
            RecognizerResult(
                entity_type="STREET_ADDRESS",
                start=start,
                end=end,
                score=self.SCORE,
                recognition_metadata={
                    RecognizerResult.RECOGNIZER_NAME_KEY: "StreetAddressRecognizer",
                    RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                },
            )
            for start, end in spans
        ]


# --- per-workspace patterns -----------------------------------------------------------------


class CustomPatternRecognizer(LocalRecognizer):
    """One workspace-defined entity: every match of a compiled regular expression."""

    def __init__(self, entity: str, pattern: re.Pattern[str], score: float) -> None:
        self.entity = entity
        self.label = f"Custom:{entity}"
        self.pattern = pattern
        self.score = score
        super().__init__(supported_entities=[entity], supported_language=LANGUAGE, name=self.label)

    def load(self) -> None:
        """Nothing to load."""

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
    ) -> list[RecognizerResult]:
        return [
            RecognizerResult(
                entity_type=self.entity,
                start=match.start(),
                end=match.end(),
                score=self.score,
                recognition_metadata={
                    RecognizerResult.RECOGNIZER_NAME_KEY: self.label,
                    RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                },
            )
            for match in self.pattern.finditer(text)
            if match.end() > match.start()
        ]


# --- the analyzer ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnalyzerConfig:
    """What an analyzer is built from; equal configs share one cached analyzer."""

    entities: frozenset[str]
    custom: tuple[tuple[str, str, float], ...] = ()  # (entity, regex, score)
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS


def _recognizers(config: AnalyzerConfig) -> list[EntityRecognizer]:
    builtin: dict[str, Any] = {
        "EMAIL_ADDRESS": OfflineEmailRecognizer,
        "PHONE_NUMBER": lambda: PhoneNumberRecognizer(config.phone_regions),
        "CREDIT_CARD": CardNumberRecognizer,
        "IBAN_CODE": IbanRecognizer,
        "IP_ADDRESS": AddressNotVersionIpRecognizer,
        "STREET_ADDRESS": StreetAddressRecognizer,
    }
    recognizers: list[EntityRecognizer] = [
        builtin[entity]() for entity in sorted(config.entities) if entity in builtin
    ]
    recognizers.extend(
        CustomPatternRecognizer(entity, re.compile(regex), score)
        for entity, regex, score in config.custom
        if entity in config.entities
    )
    return recognizers


def build_analyzer(config: AnalyzerConfig, nlp_engine: NlpEngine | None = None) -> AnalyzerEngine:
    """A presidio analyzer for ``config``; with ``nlp_engine`` (see :func:`spacy_ner_engine`)
    it also runs that engine's named-entity recognizer for ``PERSON``."""
    recognizers = _recognizers(config)
    engine: NlpEngine
    if nlp_engine is None:
        engine = PatternOnlyNlpEngine()
    else:
        engine = nlp_engine
        if "PERSON" in config.entities:
            recognizers.append(
                SpacyRecognizer(supported_language=LANGUAGE, supported_entities=["PERSON"])
            )
    registry = RecognizerRegistry(recognizers=recognizers, supported_languages=[LANGUAGE])
    return AnalyzerEngine(
        registry=registry,
        nlp_engine=engine,
        supported_languages=[LANGUAGE],
        context_aware_enhancer=PropertyNameContext(),
    )


@functools.lru_cache(maxsize=64)
def cached_analyzer(config: AnalyzerConfig) -> AnalyzerEngine:
    """The pattern-only analyzer for ``config``, built once per process (building one compiles
    every pattern and takes milliseconds; analysing with it is stateless)."""
    return build_analyzer(config)

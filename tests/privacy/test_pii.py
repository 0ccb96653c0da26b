"""PII detection and redaction: entities, actions, policies, events, the prefilter, no network,
and recall/precision over the labelled sales-chat set."""

from __future__ import annotations

import copy
import hashlib
import hmac
import importlib.util
import json
import math
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.core.errors import InvalidInput
from nexus.privacy import pii_recognizers
from nexus.privacy.pii import (
    BUILTIN_ENTITIES,
    CustomPattern,
    PiiAction,
    PiiDetector,
    PiiPolicy,
    PiiPolicyError,
    PiiRedactor,
)
from nexus.privacy.pii_eval import LabelledSpan, LabelledText, evaluate, parse_labelled, score

DATA = Path(__file__).parent / "data"
LABELLED_SET = DATA / "pii_sales_chat.jsonl"
KEY = b"workspace-hash-key-0123456789abcdef"


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector()


@pytest.fixture(scope="module")
def masker() -> PiiRedactor:
    return PiiRedactor(PiiPolicy())


def _found(detector: PiiDetector, text: str) -> list[tuple[str, str]]:
    return [(f.entity, f.value) for f in detector.detect(text)]


# --- each entity ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "value"),
    [
        ("EMAIL_ADDRESS", "ada.lovelace+nexus@mail.example.co.uk"),
        ("EMAIL_ADDRESS", "Ben_Jones99@Northwind.IO"),
        ("PHONE_NUMBER", "(415) 732-0132"),
        ("PHONE_NUMBER", "+44 20 7123 4567"),
        ("PHONE_NUMBER", "+49 (0)30 12345678"),
        ("PHONE_NUMBER", "0171 2345678"),
        ("PHONE_NUMBER", "06 12 34 56 78"),
        ("PHONE_NUMBER", "0031 6 12345678"),
        ("CREDIT_CARD", "4111 1111 1111 1111"),
        ("CREDIT_CARD", "5555-5555-5555-4444"),
        ("CREDIT_CARD", "378282246310005"),
        ("CREDIT_CARD", "2223 0031 2200 3222"),
        ("IBAN_CODE", "DE89 3704 0044 0532 0130 00"),
        ("IBAN_CODE", "GB29NWBK60161331926819"),
        ("IBAN_CODE", "FR14 2004 1010 0505 0001 3M02 606"),
        ("IBAN_CODE", "NL91ABNA0417164300"),
        ("IP_ADDRESS", "203.0.113.7"),
        ("IP_ADDRESS", "2001:db8::8a2e:370:7334"),
        ("STREET_ADDRESS", "221B Baker Street"),
        ("STREET_ADDRESS", "1600 Pennsylvania Avenue NW"),
        ("STREET_ADDRESS", "220 W 42nd St"),
        ("STREET_ADDRESS", "Hauptstraße 5"),
        ("STREET_ADDRESS", "Berliner Straße 12a"),
        ("STREET_ADDRESS", "12 rue de la Paix"),
        ("STREET_ADDRESS", "Keizersgracht 123"),
    ],
)
def test_each_entity_is_found_with_its_exact_span(
    detector: PiiDetector, entity: str, value: str
) -> None:
    text = f"hi, for the demo: {value}, thanks"
    assert _found(detector, text) == [(entity, value)]


@pytest.mark.parametrize(
    "text",
    [
        "Reference 4532 7781 2290 1235 from the bank transfer",  # 16 digits, fails Luhn
        "The Pro plan is $1,299.00 per year",
        "We're on v2.10.3 and 2.10.4 will not install",
        "Order 100234871 still says processing",
        "Invoice INV-2024-000183 shows the wrong amount",
        "Can you call me at 5pm on 2024-03-15?",
        "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0 Safari/537.36",
        "logo@2x.png is blurry on retina",
        "we are a 10 minute drive from the station",
        "We need 2 way sync with Salesforce",
        "Do you ship to 94107?",
        "Kundennummer 0301234567, bitte Tarif ändern",
    ],
)
def test_distractors_are_not_pii(detector: PiiDetector, text: str) -> None:
    assert detector.detect(text) == []


def test_overlapping_findings_keep_the_stronger(detector: PiiDetector) -> None:
    # The IBAN's digits contain phone-shaped and card-shaped runs; only the IBAN is reported.
    assert _found(detector, "IBAN: DE89 3704 0044 0532 0130 00") == [
        ("IBAN_CODE", "DE89 3704 0044 0532 0130 00")
    ]


# --- actions --------------------------------------------------------------------------------


def test_mask_replaces_each_finding_with_its_entity_name(masker: PiiRedactor) -> None:
    result = masker.redact_text("mail ada@example.com or call +49 30 12345678")
    assert result.text == "mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>"
    assert [(r.entity, r.action) for r in result.findings] == [
        ("EMAIL_ADDRESS", PiiAction.MASK),
        ("PHONE_NUMBER", PiiAction.MASK),
    ]


def test_hash_is_hmac_sha256_of_the_canonical_value_under_the_workspace_key() -> None:
    redactor = PiiRedactor(PiiPolicy(default_action=PiiAction.HASH), hash_key=KEY)
    text = redactor.redact_text("I am Ada.Lovelace@Example.com").text
    expected = hmac.new(KEY, b"EMAIL_ADDRESS\x00ada.lovelace@example.com", hashlib.sha256)
    assert text == f"I am <EMAIL_ADDRESS:hmac:{expected.hexdigest()[:16]}>"


def test_hash_is_the_same_for_one_person_written_two_ways() -> None:
    redactor = PiiRedactor(PiiPolicy(default_action="hash"), hash_key=KEY)

    def token(text: str) -> str | None:
        return redactor.redact_text(text).text

    assert token("ADA@example.com") == token("ada@EXAMPLE.com")
    assert token("0171 2345678") == token("+49 171 2345678") == token("0049 171 234 5678")
    assert token("4111-1111-1111-1111") == token("4111 1111 1111 1111")
    assert token("ada@example.com") != token("bob@example.com")


def test_the_region_order_settles_ambiguous_national_numbers() -> None:
    # 030 12345678 is valid in Germany (Berlin) and in the UK (03 non-geographic).
    german_first = PiiDetector(phone_regions=["DE", "GB"]).detect("030 12345678")
    british_first = PiiDetector(phone_regions=["GB", "DE"]).detect("030 12345678")
    assert [f.canonical for f in german_first] == ["+493012345678"]
    assert [f.canonical for f in british_first] == ["+443012345678"]


def test_hash_differs_between_workspaces() -> None:
    policy = PiiPolicy(default_action="hash")
    one = PiiRedactor(policy, hash_key=KEY).redact_text("ada@example.com").text
    two = PiiRedactor(policy, hash_key=b"another-workspace-key-000").redact_text("ada@example.com")
    assert re.fullmatch(r"<EMAIL_ADDRESS:hmac:[0-9a-f]{16}>", one or "")
    assert one != two.text


def test_encrypt_inserts_what_the_callers_callback_returns() -> None:
    calls: list[tuple[str, str]] = []

    def encrypt(entity: str, value: str) -> str:
        calls.append((entity, value))
        return f"nxf1.sealed-{len(calls)}"

    redactor = PiiRedactor(PiiPolicy(default_action="encrypt"), encrypt=encrypt)
    result = redactor.redact_text("card 4111 1111 1111 1111, mail ada@example.com")
    assert result.text == "card nxf1.sealed-1, mail nxf1.sealed-2"
    assert calls == [("CREDIT_CARD", "4111 1111 1111 1111"), ("EMAIL_ADDRESS", "ada@example.com")]


def test_drop_removes_the_whole_string() -> None:
    redactor = PiiRedactor(PiiPolicy(entity_actions={"CREDIT_CARD": "drop"}))
    result = redactor.redact_text("mail ada@example.com, card 4111111111111111")
    assert result.dropped
    assert result.text is None
    assert {r.action for r in result.findings} == {PiiAction.DROP}


def test_keep_leaves_the_value_and_still_counts_it() -> None:
    redactor = PiiRedactor(PiiPolicy(default_action="keep"))
    result = redactor.redact_text("mail ada@example.com")
    assert result.text == "mail ada@example.com"
    assert [(r.entity, r.action) for r in result.findings] == [("EMAIL_ADDRESS", PiiAction.KEEP)]


def test_one_string_can_mix_actions() -> None:
    redactor = PiiRedactor(
        PiiPolicy(entity_actions={"EMAIL_ADDRESS": "hash", "IP_ADDRESS": "keep"}),
        hash_key=KEY,
    )
    text = redactor.redact_text("ada@example.com from 203.0.113.7 tel +49 30 12345678").text
    assert text is not None
    assert re.fullmatch(
        r"<EMAIL_ADDRESS:hmac:[0-9a-f]{16}> from 203\.0\.113\.7 tel <PHONE_NUMBER>", text
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "hello ",
                "ada@example.com",
                " call +44 20 7123 4567 ",
                "order 100234871 ",
                "4111 1111 1111 1111",
                " from 10.0.0.7",
                "$1,299.00 ",
                " at Hauptstraße 5 ",
                "\n",
            ]
        ),
        max_size=6,
    )
)
def test_mask_output_is_the_text_with_exactly_the_findings_replaced(fragments: list[str]) -> None:
    text = "".join(fragments)
    detector = PiiDetector()
    findings = detector.detect(text)
    expected, cursor = [], 0
    for finding in findings:
        expected += [text[cursor : finding.start], f"<{finding.entity}>"]
        cursor = finding.end
    expected.append(text[cursor:])
    result = PiiRedactor(PiiPolicy(), detector=detector).redact_text(text)
    assert result.text == "".join(expected)


# --- policy: per-property overrides, custom patterns, validation ----------------------------


def test_property_overrides_exact_paths_win_over_globs() -> None:
    policy = PiiPolicy(
        entity_actions={"EMAIL_ADDRESS": "hash"},
        property_actions={
            "properties.*_email": "keep",
            "properties.billing_email": "drop",
            "context.ip": {"IP_ADDRESS": "hash"},
            "traits.**": "encrypt",
        },
    )
    assert policy.action_for("EMAIL_ADDRESS", "properties.work_email") is PiiAction.KEEP
    assert policy.action_for("EMAIL_ADDRESS", "properties.billing_email") is PiiAction.DROP
    assert policy.action_for("EMAIL_ADDRESS", "properties.email") is PiiAction.HASH
    # * stays within one segment, ** crosses them
    assert policy.action_for("EMAIL_ADDRESS", "properties.form.work_email") is PiiAction.HASH
    assert policy.action_for("PHONE_NUMBER", "traits.address.phone") is PiiAction.ENCRYPT
    # a per-entity override leaves other entities to their defaults
    assert policy.action_for("IP_ADDRESS", "context.ip") is PiiAction.HASH
    assert policy.action_for("EMAIL_ADDRESS", "context.ip") is PiiAction.HASH
    assert policy.action_for("PHONE_NUMBER", "context.ip") is PiiAction.MASK
    assert policy.action_for("PHONE_NUMBER", "") is PiiAction.MASK


def test_custom_patterns_are_found_and_redacted() -> None:
    policy = PiiPolicy(
        custom_patterns=(
            CustomPattern("ORDER_REF", r"\bORD-\d{6}\b"),
            CustomPattern("CODENAME", r"(?i)\bproject\s+falcon\b", score=0.9),
        ),
        entity_actions={"ORDER_REF": "keep"},
    )
    redactor = PiiRedactor(policy)
    result = redactor.redact_text("Project Falcon: see ORD-123456")
    assert result.text == "<CODENAME>: see ORD-123456"
    assert [(r.entity, r.action) for r in result.findings] == [
        ("CODENAME", PiiAction.MASK),
        ("ORDER_REF", PiiAction.KEEP),
    ]


def test_enabled_entities_limit_what_is_found() -> None:
    redactor = PiiRedactor(PiiPolicy(entities=frozenset({"EMAIL_ADDRESS"})))
    assert redactor.redact_text("ada@example.com +49 30 12345678").text == (
        "<EMAIL_ADDRESS> +49 30 12345678"
    )


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: PiiPolicy(custom_patterns=(CustomPattern("ORDER_REF", "ORD-(\\d"),)), None),
        (lambda: CustomPattern("ORDER_REF", "ORD-(\\d"), "custom_patterns.regex"),
        (lambda: CustomPattern("ORDER_REF", "\\d*"), "custom_patterns.regex"),
        (lambda: CustomPattern("order ref", "x"), "custom_patterns.name"),
        (lambda: CustomPattern("EMAIL_ADDRESS", "x"), "custom_patterns.name"),
        (lambda: CustomPattern("ORDER_REF", "x", score=7), "custom_patterns.score"),
        (lambda: PiiPolicy(entity_actions={"SSN": "mask"}), "entity_actions.SSN"),
        (
            lambda: PiiPolicy(entity_actions={"EMAIL_ADDRESS": "shred"}),
            "entity_actions.EMAIL_ADDRESS",
        ),
        (lambda: PiiPolicy(default_action="shred"), "default_action"),
        (lambda: PiiPolicy(entities=frozenset({"SSN"})), "entities"),
        (
            lambda: PiiPolicy(property_actions={"properties.email": "shred"}),
            "property_actions.properties.email",
        ),
        (
            lambda: PiiPolicy(property_actions={"traits.phone": {"PHONE": "drop"}}),
            "property_actions.traits.phone",
        ),
        (
            lambda: PiiPolicy(
                custom_patterns=(CustomPattern("REF", "R-\\d"), CustomPattern("REF", "Q-\\d"))
            ),
            "custom_patterns.1.name",
        ),
        (
            lambda: PiiPolicy.from_mapping({"custom_patterns": [{"name": "REF", "regex": "("}]}),
            "custom_patterns.0.regex",
        ),
        (lambda: PiiPolicy.from_mapping({"actions": {}}), "actions"),
        (lambda: PiiDetector(entities=["PERSON"]), "entities"),
    ],
)
def test_invalid_policies_raise_an_error_naming_the_field(make: Any, field: str | None) -> None:
    with pytest.raises(PiiPolicyError) as caught:
        make()
    error = caught.value
    assert isinstance(error, ValueError)
    assert isinstance(error, InvalidInput)
    assert error.status == 422
    if field is not None:
        assert error.field == field
        assert error.detail.startswith(field)


def test_a_policy_from_json_data_equals_the_one_built_in_code() -> None:
    data = {
        "default_action": "mask",
        "entity_actions": {"EMAIL_ADDRESS": "hash"},
        "property_actions": {"context.ip": "keep", "properties.note": {"PHONE_NUMBER": "drop"}},
        "custom_patterns": [{"name": "ORDER_REF", "regex": "ORD-\\d{6}", "score": 0.9}],
        "entities": ["EMAIL_ADDRESS", "PHONE_NUMBER", "ORDER_REF"],
    }
    policy = PiiPolicy.from_mapping(json.loads(json.dumps(data)))
    assert policy == PiiPolicy(
        entity_actions={"EMAIL_ADDRESS": PiiAction.HASH},
        property_actions={
            "context.ip": PiiAction.KEEP,
            "properties.note": {"PHONE_NUMBER": PiiAction.DROP},
        },
        custom_patterns=(CustomPattern("ORDER_REF", "ORD-\\d{6}", 0.9),),
        entities=frozenset({"EMAIL_ADDRESS", "PHONE_NUMBER", "ORDER_REF"}),
    )


def test_a_redactor_refuses_a_policy_it_cannot_carry_out() -> None:
    with pytest.raises(ValueError, match="hash_key"):
        PiiRedactor(PiiPolicy(entity_actions={"EMAIL_ADDRESS": "hash"}))
    with pytest.raises(ValueError, match="hash_key"):
        PiiRedactor(PiiPolicy(default_action="hash"), hash_key=b"short")
    with pytest.raises(ValueError, match="encrypt"):
        PiiRedactor(PiiPolicy(property_actions={"traits.phone": "encrypt"}))


# --- events ---------------------------------------------------------------------------------


def _event() -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Contact Form Submitted",
        "messageId": "msg-ada@example.com",
        "userId": "ada@example.com",
        "timestamp": "2024-03-15T10:22:33Z",
        "properties": {
            "path": "/pricing",
            "message": "call me on +44 20 7123 4567 or mail ada@example.com",
            "work_email": "ada@acme-corp.com",
            "seats": 25,
            "phone_number": 4930123456789,
            "attachments": ["notes.pdf", "card 4111 1111 1111 1111", {"ip": "203.0.113.7"}],
        },
        "traits": {"email": "ADA@example.com", "plan": "Pro"},
        "context": {"ip": "203.0.113.7", "userAgent": "Mozilla/5.0 Chrome/120.0.0.0"},
    }


def test_an_event_is_redacted_per_policy_and_counted() -> None:
    redactor = PiiRedactor(
        PiiPolicy(
            entity_actions={"CREDIT_CARD": "drop"},
            property_actions={"properties.*_email": "keep", "context.ip": "hash"},
        ),
        hash_key=KEY,
    )
    result = redactor.redact_event(_event())
    props = result.event["properties"]
    assert props["message"] == "call me on <PHONE_NUMBER> or mail <EMAIL_ADDRESS>"
    assert props["work_email"] == "ada@acme-corp.com"
    assert props["seats"] == 25
    assert props["phone_number"] == "<PHONE_NUMBER>"  # an integer phone number is caught
    # the card's list element is dropped; list elements share their list's path
    assert props["attachments"] == ["notes.pdf", {"ip": "<IP_ADDRESS>"}]
    assert result.event["traits"] == {"email": "<EMAIL_ADDRESS>", "plan": "Pro"}
    assert re.fullmatch(r"<IP_ADDRESS:hmac:[0-9a-f]{16}>", result.event["context"]["ip"])
    assert result.event["context"]["userAgent"] == "Mozilla/5.0 Chrome/120.0.0.0"
    # identity and envelope keys are not scanned
    for key in ("messageId", "userId", "timestamp", "event", "type"):
        assert result.event[key] == _event()[key]
    assert result.entity_counts == {
        "PHONE_NUMBER": 2,
        "EMAIL_ADDRESS": 3,
        "CREDIT_CARD": 1,
        "IP_ADDRESS": 2,
    }
    assert result.action_counts == {"mask": 5, "keep": 1, "drop": 1, "hash": 1}
    assert result.dropped_paths == ("properties.attachments",)
    assert result.findings == 8


def test_a_property_named_for_an_entity_is_evidence_for_it() -> None:
    # A bare run of digits is a phone number under traits.phone, not in a free-text field.
    redactor = PiiRedactor(PiiPolicy())
    event = {
        "traits": {"phone": "4155550132", "mobileNumber": "4155550132"},
        "properties": {"reference": "4155550132"},
    }
    result = redactor.redact_event(event)
    assert result.event["traits"] == {"phone": "<PHONE_NUMBER>", "mobileNumber": "<PHONE_NUMBER>"}
    assert result.event["properties"] == {"reference": "4155550132"}


def test_a_dropped_property_disappears_from_its_object() -> None:
    redactor = PiiRedactor(PiiPolicy(property_actions={"traits.email": "drop"}))
    result = redactor.redact_event(_event())
    assert "email" not in result.event["traits"]
    assert result.event["traits"]["plan"] == "Pro"
    assert result.dropped_paths == ("traits.email",)


def test_only_the_sections_asked_for_are_scanned() -> None:
    result = PiiRedactor(PiiPolicy()).redact_event(_event(), sections=["traits"])
    assert result.event["traits"]["email"] == "<EMAIL_ADDRESS>"
    assert result.event["properties"] == _event()["properties"]
    assert result.entity_counts == {"EMAIL_ADDRESS": 1}


def test_redacting_an_event_never_changes_the_input() -> None:
    event = _event()
    before = copy.deepcopy(event)
    result = PiiRedactor(PiiPolicy(entity_actions={"CREDIT_CARD": "drop"})).redact_event(event)
    assert event == before
    result.event["type"] = "changed"
    result.event["properties"]["attachments"].append("x")
    assert event == before


# --- speed: the prefilter and the analyzer cache --------------------------------------------


def test_plain_strings_skip_presidio() -> None:
    detector = PiiDetector()
    plain = ["/pricing", "Signup Clicked", "Pro", "en-US", "checkout_step_2", "v2.10.3", ""]
    for text in plain:
        assert detector.detect(text) == []
    assert detector.scanned == len(plain)
    assert detector.analyzed == 0
    detector.detect("mail ada@example.com")
    assert detector.analyzed == 1


def test_the_prefilter_follows_the_enabled_entities() -> None:
    emails_only = PiiDetector(entities=["EMAIL_ADDRESS"])
    assert not emails_only.could_contain("call +44 20 7123 4567")
    assert emails_only.could_contain("ada@example.com")
    custom = PiiDetector(
        entities=["CODENAME"], custom_patterns=[CustomPattern("CODENAME", r"(?i)falcon")]
    )
    assert custom.could_contain("Project FALCON")
    assert not custom.could_contain("ada@example.com")


def test_the_prefilter_passes_every_labelled_entity() -> None:
    detector = PiiDetector()
    samples = parse_labelled(LABELLED_SET.read_text(encoding="utf-8").splitlines())
    for sample in samples:
        for span in sample.spans:
            assert detector.could_contain(sample.text[span.start : span.end]), sample.text


def test_one_analyzer_per_configuration() -> None:
    assert PiiDetector().analyzer() is PiiDetector().analyzer()
    assert PiiDetector().analyzer() is not PiiDetector(entities=["EMAIL_ADDRESS"]).analyzer()


# --- no network, no model -------------------------------------------------------------------


def test_detection_makes_no_network_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("PII detection tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    # Start cold, so building the analyzer and the suffix list happens with sockets blocked.
    pii_recognizers.cached_analyzer.cache_clear()
    pii_recognizers._offline_tld_extract.cache_clear()
    text = (
        "ada@mail.example.co.uk, +44 20 7123 4567, 4111 1111 1111 1111, "
        "DE89 3704 0044 0532 0130 00, 203.0.113.7, 221B Baker Street"
    )
    assert [f.entity for f in PiiDetector().detect(text)] == [
        "EMAIL_ADDRESS",
        "PHONE_NUMBER",
        "CREDIT_CARD",
        "IBAN_CODE",
        "IP_ADDRESS",
        "STREET_ADDRESS",
    ]


def test_the_ner_hook_names_what_to_install_when_the_model_is_missing() -> None:
    with pytest.raises(pii_recognizers.NerModelMissing, match="pip install nexus_no_such_model"):
        pii_recognizers.spacy_ner_engine("nexus_no_such_model")


def test_the_ner_hook_adds_person_names() -> None:
    import spacy
    from presidio_analyzer.nlp_engine import NlpArtifacts

    class FakeNer(pii_recognizers.PatternOnlyNlpEngine):
        """Marks "Ada Lovelace" as a PERSON, as a spaCy model would."""

        def __init__(self) -> None:
            super().__init__()
            self.nlp = spacy.blank("en")

        def process_text(self, text: str, language: str) -> NlpArtifacts:
            doc = self.nlp(text)
            start = text.find("Ada Lovelace")
            if start >= 0:
                doc.ents = [doc.char_span(start, start + 12, label="PERSON")]
            return NlpArtifacts(
                entities=list(doc.ents),
                tokens=doc,
                tokens_indices=[token.idx for token in doc],
                lemmas=[token.text for token in doc],
                nlp_engine=self,
                language=language,
            )

        def get_supported_entities(self) -> list[str]:
            return ["PERSON"]

    policy = PiiPolicy(entities=frozenset({*BUILTIN_ENTITIES, "PERSON"}))
    redactor = PiiRedactor(policy, nlp_engine=FakeNer())
    assert redactor.redact_text("I'm Ada Lovelace, ada@example.com").text == (
        "I'm <PERSON>, <EMAIL_ADDRESS>"
    )


# --- the labelled set -----------------------------------------------------------------------


def test_the_labelled_set_is_what_its_script_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_pii_set", DATA / "make_pii_set.py")
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    expected = [json.dumps(row, ensure_ascii=False) for row in script.build()]
    assert LABELLED_SET.read_text(encoding="utf-8").splitlines() == expected
    samples = parse_labelled(expected)
    assert len(samples) >= 220
    kinds = {span.entity for sample in samples for span in sample.spans}
    assert kinds == set(BUILTIN_ENTITIES)
    assert sum(1 for sample in samples if not sample.spans) >= 100


def test_scores_count_overlaps_per_entity() -> None:
    samples = [LabelledText("ada@x.com 123", (LabelledSpan("EMAIL_ADDRESS", 0, 9),))]
    found = [(LabelledSpan("EMAIL_ADDRESS", 2, 5), LabelledSpan("PHONE_NUMBER", 10, 13))]
    scores = score(samples, found)
    assert (scores["EMAIL_ADDRESS"].recall, scores["EMAIL_ADDRESS"].precision) == (1.0, 1.0)
    assert scores["PHONE_NUMBER"].precision == 0.0
    assert scores["PHONE_NUMBER"].labelled == 0
    assert math.isnan(scores["PHONE_NUMBER"].recall)


def test_recall_and_precision_on_the_labelled_set_meet_the_bar() -> None:
    samples = parse_labelled(LABELLED_SET.read_text(encoding="utf-8").splitlines())
    scores = evaluate(PiiDetector().detect, samples)
    report = {e: (round(s.recall, 3), round(s.precision, 3)) for e, s in scores.items()}
    for entity in ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"):
        assert scores[entity].recall >= 0.95, report
        assert scores[entity].precision >= 0.9, report
    for entity in ("IBAN_CODE", "IP_ADDRESS", "STREET_ADDRESS"):
        assert scores[entity].recall >= 0.8, report
        assert scores[entity].precision >= 0.8, report
    assert set(scores) == set(BUILTIN_ENTITIES), report  # nothing else is ever reported

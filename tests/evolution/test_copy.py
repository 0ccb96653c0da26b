"""The phrase grammar: seeded candidates in a tone, templates, limits, validation, and the
emotion -> tone rule."""

from __future__ import annotations

from random import Random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.evolution.copy import (
    DIMENSIONS,
    ENUMERATION_LIMIT,
    MAX_LENGTH,
    SEGMENT_PROFILES,
    TONES,
    Candidate,
    CopyError,
    PhraseLibrary,
    Tone,
    generate,
    tone_scores,
    tones_for,
)

LIBRARY: dict[str, Any] = {
    "slots": {
        "headline.opener": [
            "Meet Acme",
            {"text": "Relax, Acme is here", "tones": ["reassuring", "empathetic"]},
            {"text": "Hurry, Acme is live", "tones": ["urgent"]},
            {"text": "Say hi to Acme", "tones": ["playful"]},
        ],
        "headline.benefit": [
            "bookkeeping in minutes",
            {"text": "no surprises on your bill", "tones": ["reassuring"]},
            {"text": "before the price goes up", "tones": ["urgent"]},
            {"text": "we know month-end hurts", "tones": ["empathetic"]},
            {"text": "accounting for professionals", "tones": ["formal"]},
        ],
        "cta.verb": ["start", {"text": "grab", "tones": ["urgent", "playful"]}, "try"],
        "cta.object": ["my trial", {"text": "it today", "tones": ["urgent"]}, "Acme free"],
        "reassurance": [
            {"text": "cancel any time", "tones": ["reassuring", "empathetic"]},
            "no card needed",
        ],
    },
    "templates": {
        "headline": [
            "{opener}: {benefit}",
            {"text": "{benefit} , {opener}!", "tones": ["playful"]},
        ],
        "body": ["{headline.benefit} - {reassurance}."],
        "cta": ["{verb} {object}"],
    },
}

# Which tone each tagged phrase or template excludes: a text holding it is not in that tone.
TAGGED = {
    text: set(tones)
    for phrases in LIBRARY["slots"].values()
    for p in phrases
    if isinstance(p, dict)
    for text, tones in [(p["text"], p["tones"])]
}


def library(**changes: Any) -> PhraseLibrary:
    return PhraseLibrary.from_dict({**LIBRARY, **changes})


def texts(kind: str, tone: str, *, count: int = 50, seed: int = 0, **kwargs: Any) -> list[str]:
    return [
        c.text
        for c in generate(library(), kind, tone, count=count, rng=Random(seed), **kwargs)  # type: ignore[arg-type]
    ]


def test_the_same_seed_gives_the_same_candidates_and_another_seed_another_order() -> None:
    first = texts("headline", "urgent", count=3, seed=7)
    assert first == texts("headline", "urgent", count=3, seed=7)
    assert [texts("headline", "urgent", count=3, seed=s) for s in range(5)] != [first] * 5


@pytest.mark.parametrize("tone", TONES)
def test_candidates_use_only_phrases_that_fit_the_tone_and_carry_it(tone: Tone) -> None:
    for kind in ("headline", "body", "cta"):
        for text in texts(kind, tone):
            used = {phrase for phrase in TAGGED if phrase.casefold() in text.casefold()}
            assert all(tone in TAGGED[phrase] for phrase in used), (text, used)
            assert used or (kind == "headline" and tone == "playful"), text  # playful template


def test_candidates_are_distinct_capitalised_and_tidy() -> None:
    headlines = texts("headline", "reassuring")
    assert len(headlines) == len({t.casefold() for t in headlines})
    assert "Relax, Acme is here: bookkeeping in minutes" in headlines
    assert "Meet Acme: no surprises on your bill" in headlines
    playful = texts("headline", "playful")
    assert "Bookkeeping in minutes, Say hi to Acme!" in playful  # " ," closed up, capitalised


def test_a_small_grammar_gives_all_its_toned_texts_and_no_more() -> None:
    ctas = texts("cta", "urgent", count=100)
    # grab | start, try  x  it today | my trial, Acme free; at least one urgent phrase
    assert sorted(ctas) == sorted(
        [
            "Grab my trial",
            "Grab it today",
            "Grab Acme free",
            "Start it today",
            "Try it today",
        ]
    )
    assert texts("cta", "urgent", count=2) == texts("cta", "urgent", count=2)
    assert len(texts("cta", "urgent", count=2)) == 2


def test_allow_neutral_fills_up_with_tone_neutral_texts() -> None:
    assert texts("cta", "formal") == []  # no formal phrase for a CTA
    neutral = texts("cta", "formal", allow_neutral=True)
    assert "Start my trial" in neutral
    assert not any("Grab" in t or "today" in t for t in neutral)


def test_placeholders_resolve_within_the_kind_then_to_shared_or_full_names() -> None:
    body = texts("body", "empathetic")
    assert sorted(body) == [
        "Bookkeeping in minutes - cancel any time.",
        "We know month-end hurts - cancel any time.",
        "We know month-end hurts - no card needed.",
    ]
    lib = library(templates={"headline": ["{opener} {cta.verb}"]})
    assert lib.slots_of("headline", 0) == ("headline.opener", "cta.verb")


def test_template_tones_limit_where_a_template_is_used() -> None:
    for tone in TONES:
        if tone != "playful":
            assert not any(t.endswith("!") for t in texts("headline", tone)), tone


def test_expansions_over_the_kind_limit_are_left_out() -> None:
    lib = library(slots={**LIBRARY["slots"], "cta.object": ["x" * 35, "y" * 36]})
    got = [c.text for c in generate(lib, "cta", "urgent", count=10, rng=Random(0))]
    assert got == ["Grab " + "x" * 35]  # 40 characters; "Grab " + 36 would be 41
    assert MAX_LENGTH["cta"] == 40
    assert MAX_LENGTH["headline"] == 200


def test_a_grammar_too_big_to_enumerate_is_sampled_deterministically() -> None:
    slots = {f"s{i}": [f"w{i}x{j}" for j in range(10)] for i in range(5)}
    slots["s4"].append({"text": "now!", "tones": ["urgent"]})  # type: ignore[arg-type]
    lib = PhraseLibrary.from_dict(
        {"slots": slots, "templates": {"body": ["{s0} {s1} {s2} {s3} {s4}"]}}
    )
    assert ENUMERATION_LIMIT < 10**4 * 11
    first = generate(lib, "body", "urgent", count=20, rng=Random(3))
    assert first == generate(lib, "body", "urgent", count=20, rng=Random(3))
    assert len({c.text for c in first}) == 20
    assert all(c.text.endswith("now!") for c in first)
    assert generate(lib, "body", "formal", count=5, rng=Random(3)) == []
    assert len(generate(lib, "body", "formal", count=5, rng=Random(3), allow_neutral=True)) == 5


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), tone=st.sampled_from(TONES), count=st.integers(0, 12))
def test_every_candidate_is_valid_copy_in_its_tone(seed: int, tone: Tone, count: int) -> None:
    for kind in ("headline", "body", "cta"):
        got = generate(library(), kind, tone, count=count, rng=Random(seed))
        assert len(got) <= count
        assert len({c.text.casefold() for c in got}) == len(got)
        for candidate in got:
            assert candidate.kind == kind
            assert candidate.tone == tone
            assert (candidate.source, candidate.status) == ("grammar", "approved")
            assert 0 < len(candidate.text) <= MAX_LENGTH[kind]


def test_the_library_round_trips_through_its_json_form() -> None:
    lib = library()
    assert PhraseLibrary.from_dict(lib.to_dict()) == lib
    assert lib.to_dict()["slots"]["cta.verb"][0] == "start"
    assert lib.to_dict()["slots"]["cta.verb"][1] == {"text": "grab", "tones": ["urgent", "playful"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"slots": {}, "templates": {}}, "library is empty"),
        ({"templates": {"cta": []}}, "library is empty"),
        ({"templates": {"cta": ["{v} {thing}"]}}, r"unknown slot \{thing\}.*cta.thing"),
        ({"templates": {"cta": ["{v} {object"]}}, "brace"),
        ({"templates": {"banner": ["{verb}"]}}, "unknown copy kind 'banner'"),
        ({"slots": {"cta.verb": []}, "templates": {"cta": ["{verb}"]}}, "at least one phrase"),
        ({"slots": {"CTA": ["go"]}, "templates": {"cta": ["{CTA}"]}}, "slot name"),
        ({"slots": {"v": [{"text": "go", "tones": ["angry"]}]}}, "unknown tone 'angry'"),
        ({"slots": {"v": [{"text": "go", "tones": "urgent"}]}}, "list of tones"),
        ({"slots": {"v": [{"text": "go", "mood": "x"}]}}, "unknown field"),
        ({"slots": {"v": ["go", "Go"]}}, "repeats the phrase"),
        ({"slots": {"v": ["   "]}}, "must not be empty"),
        ({"slots": {"v": ["x" * 201]}}, "201 characters, more than 200"),
        ({"slots": {"v": ["line\nbreak"]}}, r"control character \(U\+000A\)"),
        ({"slots": {"v": ["bell\x07"]}}, "control character"),
        ({"slots": {"v": ["evil\u202etxt"]}}, r"U\+202E"),
    ],
)
def test_invalid_libraries_are_refused_with_a_located_error(
    change: dict[str, Any], message: str
) -> None:
    data = {"slots": {"v": ["go"]}, "templates": {"cta": ["{v}"]}, **change}
    with pytest.raises(CopyError, match=message) as caught:
        PhraseLibrary.from_dict(data)
    assert isinstance(caught.value, ValueError)
    assert caught.value.status == 422


def test_errors_name_where_the_problem_is() -> None:
    with pytest.raises(CopyError) as caught:
        PhraseLibrary.from_dict({"slots": {"v": ["go", "x" * 300]}, "templates": {"cta": ["{v}"]}})
    assert caught.value.errors[0].loc == ("slots", "v", 1, "text")
    assert str(caught.value).startswith("slots.v.1.text:")


def test_generate_refuses_unknown_tones_kinds_and_counts() -> None:
    lib = library()
    with pytest.raises(CopyError, match="unknown tone 'angry'"):
        generate(lib, "cta", "angry", count=1, rng=Random(0))  # type: ignore[arg-type]
    with pytest.raises(CopyError, match="unknown copy kind"):
        generate(lib, "footer", "urgent", count=1, rng=Random(0))  # type: ignore[arg-type]
    with pytest.raises(CopyError, match="count"):
        generate(lib, "cta", "urgent", count=101, rng=Random(0))
    assert generate(lib, "cta", "urgent", count=0, rng=Random(0)) == []


def test_a_candidate_checks_its_text_and_can_be_approved_or_rejected() -> None:
    candidate = Candidate(text="  Start now ", kind="cta", tone="urgent", status="pending")
    assert candidate.text == "Start now"
    assert candidate.with_status("approved").status == "approved"
    with pytest.raises(CopyError, match="more than 40"):
        Candidate(text="x" * 41, kind="cta", tone="urgent")
    with pytest.raises(CopyError, match="unknown status"):
        Candidate(text="x", kind="cta", tone="urgent", status="maybe")  # type: ignore[arg-type]
    with pytest.raises(CopyError, match="unknown source"):
        Candidate(text="x", kind="cta", tone="urgent", source="llm")  # type: ignore[arg-type]


# --- emotion -> tone --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "first_two"),
    [
        ("frustrated", {"empathetic", "reassuring"}),
        ("anxious", {"reassuring", "empathetic"}),
        ("sad", {"empathetic", "reassuring"}),
        ("excited", {"urgent", "playful"}),
    ],
)
def test_segments_get_the_tones_that_suit_them(segment: str, first_two: set[str]) -> None:
    ranked = tones_for(segment)
    assert set(ranked[:2]) == first_two
    assert sorted(ranked) == sorted(TONES)


def test_neutral_and_weak_readings_get_a_formal_register() -> None:
    assert tones_for("neutral")[0] == "formal"
    assert tones_for("  Neutral ")[0] == "formal"
    assert tones_for([0.0] * 11)[0] == "formal"
    assert tones_for("curious")[0] == "formal"


def test_vectors_mappings_and_emotion_vectors_are_read_alike() -> None:
    anxious = SEGMENT_PROFILES["anxious"]
    assert tones_for(list(anxious)) == tones_for("anxious")
    assert tones_for(np.asarray(anxious)) == tones_for("anxious")
    as_mapping = dict(zip(DIMENSIONS, anxious, strict=True))
    assert tones_for(as_mapping) == tones_for("anxious")
    assert tones_for({"fear": 0.9, "valence": -0.5})[0] == "reassuring"
    assert tones_for({"sadness": 0.9})[0] == "empathetic"
    assert tones_for({"joy": 0.9, "anticipation": 0.9, "arousal": 0.8})[0] == "urgent"
    assert tones_for({"joy": 0.9, "surprise": 0.8, "valence": 0.8})[0] == "playful"

    class Reading:
        def as_array(self) -> np.ndarray[Any, np.dtype[np.float64]]:
            return np.asarray(SEGMENT_PROFILES["excited"])

    assert tones_for(Reading()) == tones_for("excited")


def test_distress_pushes_urgent_and_playful_down() -> None:
    calm = tone_scores({"joy": 0.8, "anticipation": 0.8})
    upset = tone_scores({"joy": 0.8, "anticipation": 0.8, "fear": 0.8, "anger": 0.8})
    assert upset["urgent"] < calm["urgent"]
    assert upset["playful"] < calm["playful"]


@pytest.mark.parametrize(
    ("emotion", "message"),
    [
        ("bored", "unknown emotional segment 'bored'"),
        ([0.1] * 10, "must be 11 numbers"),
        ({"rage": 1.0}, "unknown dimension"),
        ([1.5] + [0.0] * 10, r"Plutchik emotions lie in \[0, 1\]"),
        ([0.0] * 8 + [-2.0, 0.0, 0.0], r"lie in \[-1, 1\]"),
        ([float("nan")] + [0.0] * 10, "finite"),
        (["a"] * 11, "11 numbers"),
    ],
)
def test_invalid_emotions_are_refused(emotion: Any, message: str) -> None:
    with pytest.raises(CopyError, match=message):
        tones_for(emotion)


def test_the_copied_constants_match_the_emotion_and_simulation_modules() -> None:
    from nexus.emotion.models.vector import DIMENSIONS as EMOTION_DIMENSIONS
    from nexus.experiments.simulation import PROFILES, SETTLED

    assert DIMENSIONS == EMOTION_DIMENSIONS
    for archetype, profile in PROFILES.items():
        assert SEGMENT_PROFILES[archetype] == profile
    assert SEGMENT_PROFILES["neutral"] == SETTLED

"""The design space: genes, exclusions, pins, and the variation operators."""

from __future__ import annotations

import itertools
import random

import pytest

from nexus.evolution.genome import DesignSpace, GenomeError

GENES = {
    "headline": ["save", "quality", "trust", "fast"],
    "cta": ["buy", "try", "see"],
    "theme": ["light", "dark", "calm"],
    "layout": ["single", "two-column", "dense"],
    "proof": ["on", "off"],
}


def space(**kwargs: object) -> DesignSpace:
    return DesignSpace.build(GENES, **kwargs)  # type: ignore[arg-type]


def test_size_encode_describe_round_trip() -> None:
    s = space()
    assert s.size == 4 * 3 * 3 * 3 * 2
    values = {"headline": "trust", "cta": "try", "theme": "calm", "layout": "dense", "proof": "on"}
    design = s.encode(values)
    assert s.describe(design) == values
    assert DesignSpace.key(design) == "d-2-1-2-2-0"
    with pytest.raises(GenomeError, match="no value"):
        s.encode({**values, "cta": "nope"})
    with pytest.raises(GenomeError, match="no value for genes: proof"):
        s.encode({k: v for k, v in values.items() if k != "proof"})


def test_exclusions_and_pins_hold_under_every_operator() -> None:
    s = space(
        exclusions=[{"theme": "dark", "layout": "dense"}, {"headline": "fast", "proof": "off"}],
        pins={"cta": "try"},
    )
    assert s.size == 4 * 3 * 3 * 2  # the pinned gene counts once
    rng = random.Random(3)
    designs = [s.random(rng) for _ in range(300)]
    for d in designs:
        assert s.valid(d)
        assert s.describe(d)["cta"] == "try"
    assert len(set(designs)) > 50  # the draw covers the space
    for a, b in itertools.pairwise(designs):
        child = s.crossover(a, b, rng)
        mutant = s.mutate(child, rng, rate=0.5)
        assert s.valid(child)
        assert s.valid(mutant)
        assert mutant != child
    with pytest.raises(GenomeError, match="not allowed"):
        s.encode(
            {"headline": "save", "cta": "try", "theme": "dark", "layout": "dense", "proof": "on"}
        )
    with pytest.raises(GenomeError, match="not allowed"):
        s.encode(
            {"headline": "save", "cta": "buy", "theme": "light", "layout": "dense", "proof": "on"}
        )


def test_neighbours_differ_in_one_free_gene() -> None:
    s = space(pins={"proof": "on"})
    d = s.random(random.Random(1))
    near = s.neighbours(d)
    assert len(near) == 3 + 2 + 2 + 2  # proof is pinned
    for n in near:
        assert sum(x != y for x, y in zip(n, d, strict=True)) == 1


def test_the_same_seed_gives_the_same_designs() -> None:
    s = space()
    a, b = random.Random(9), random.Random(9)
    assert [s.random(a) for _ in range(20)] == [s.random(b) for _ in range(20)]


@pytest.mark.parametrize(
    ("genes", "kwargs", "message"),
    [
        ({"a": []}, {}, "1 to 256 values"),
        ({"a": ["x", "x"]}, {}, "repeats a value"),
        ({"a": ["x", "y"]}, {"pins": {"b": "x"}}, "unknown genes: b"),
        ({"a": ["x", "y"]}, {"pins": {"a": "z"}}, "not one of its values"),
        ({"a": ["x"], "b": ["y"]}, {"exclusions": [{"a": "x"}]}, "at least two genes"),
        ({"a": ["x"], "b": ["y"]}, {"exclusions": [{"a": "x", "c": "y"}]}, "unknown gene 'c'"),
        (
            {"a": ["x", "z"], "b": ["y", "w"]},
            {"exclusions": [{"a": "x", "b": "y"}], "pins": {"a": "x", "b": "y"}},
            "pinned genes form a combination",
        ),
    ],
)
def test_bad_spaces_are_refused_with_a_reason(
    genes: dict[str, list[str]], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(GenomeError, match=message):
        DesignSpace.build(genes, **kwargs)  # type: ignore[arg-type]


def test_a_space_with_nothing_allowed_says_so() -> None:
    s = DesignSpace.build(
        {"a": ["x", "y"], "b": ["u", "v"]},
        exclusions=[
            {"a": "x", "b": "u"},
            {"a": "x", "b": "v"},
            {"a": "y", "b": "u"},
            {"a": "y", "b": "v"},
        ],
    )
    with pytest.raises(GenomeError, match="no allowed design"):
        s.random(random.Random(0))

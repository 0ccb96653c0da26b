"""The analyzer (tiers and cascade), the server model, resonance, taxonomy and metrics."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nexus.core.errors import InvalidInput, Unavailable
from nexus.emotion import service
from nexus.emotion.analyzer import EmotionAnalyzer, default_artifacts_dir
from nexus.emotion.datasets import detect_taxonomy
from nexus.emotion.models import metrics
from nexus.emotion.models.taxonomy import (
    EKMAN,
    EKMAN_GROUPS,
    GOEMOTIONS,
    PLUTCHIK_WEIGHTS,
    noisy_or,
)
from nexus.emotion.server_model import ServerArtifacts, ServerModel

HAS_SERVER = ServerArtifacts.in_directory(default_artifacts_dir()).exist()
needs_server = pytest.mark.skipif(not HAS_SERVER, reason="server artifacts not built")
TEXTS = [
    "Thank you so much!",
    "I am so angry, this is infuriating",
    "ok",
    "Is this the right place to ask about shipping?",
    "I'm worried the package won't arrive in time",
    "lol that is hilarious",
    "The product works as described.",
    "Why would anyone design it like this???",
]


@pytest.fixture(scope="module")
def analyzer() -> EmotionAnalyzer:
    return EmotionAnalyzer(edge_share=0.7)


def test_every_label_has_one_ekman_group_and_a_plutchik_place() -> None:
    grouped = [label for labels in EKMAN_GROUPS.values() for label in labels]
    assert sorted(grouped) == sorted(GOEMOTIONS)
    sums = PLUTCHIK_WEIGHTS.sum(axis=1)
    assert sums[GOEMOTIONS.index("neutral")] == 0
    assert np.allclose(np.delete(sums, GOEMOTIONS.index("neutral")), 1.0)
    love = PLUTCHIK_WEIGHTS[GOEMOTIONS.index("love")]
    assert love.nonzero()[0].size == 2  # the dyad joy + trust


@given(arrays(np.float64, (3, 28), elements=st.floats(0, 1)))
def test_noisy_or_is_a_probability_and_monotone(probabilities: np.ndarray) -> None:
    carried = noisy_or(probabilities, PLUTCHIK_WEIGHTS)
    assert ((carried >= 0) & (carried <= 1)).all()
    more = noisy_or(np.minimum(probabilities + 0.1, 1.0), PLUTCHIK_WEIGHTS)
    assert (more >= carried - 1e-12).all()


def test_taxonomy_detection() -> None:
    assert detect_taxonomy({"joy", "anger"}) == "ekman"
    assert detect_taxonomy({"trust", "joy"}) == "plutchik"
    assert detect_taxonomy({"gratitude", "joy"}) == "goemotions"
    with pytest.raises(InvalidInput, match="unknown emotion labels"):
        detect_taxonomy({"zorgle"})


@given(
    arrays(np.bool_, (40, 5), elements=st.booleans()),
    arrays(np.bool_, (40, 5), elements=st.booleans()),
)
@settings(deadline=None)
def test_f1_matches_scikit_learn(gold: np.ndarray, predicted: np.ndarray) -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    expected = sklearn_metrics.f1_score(gold, predicted, average=None, zero_division=0)
    assert np.allclose(metrics.f1_per_class(gold, predicted), expected)


def test_calibration_error_of_a_calibrated_and_an_overconfident_model() -> None:
    gold = np.zeros((10, 2), dtype=bool)
    gold[:7, 0] = True  # label 0 right 7 times in 10
    gold[7:, 1] = True
    calibrated = np.tile([0.7, 0.3], (10, 1))
    overconfident = np.tile([0.99, 0.01], (10, 1))
    assert metrics.expected_calibration_error(gold, calibrated) == pytest.approx(0.0)
    assert metrics.expected_calibration_error(gold, overconfident) == pytest.approx(0.29)


def test_tuned_thresholds_beat_a_fixed_half() -> None:
    rng = np.random.default_rng(3)
    gold = rng.random((500, 3)) < 0.1
    probabilities = np.clip(gold * 0.3 + rng.random((500, 3)) * 0.35, 0, 1)
    tuned = metrics.tune_thresholds(probabilities, gold)
    fixed = np.full(3, 0.5)
    assert metrics.macro_f1(gold, probabilities >= tuned) > metrics.macro_f1(
        gold, probabilities >= fixed
    )


def test_resonance_rewards_a_matching_profile(analyzer: EmotionAnalyzer) -> None:
    joyful, angry = analyzer.analyze(
        ["I love it, thank you!", "I hate this, so angry"], mode="edge"
    ).vectors
    warm = {"joy": 1.0, "trust": 0.8, "anger": 0.0, "valence": 0.8}
    assert service.resonance(joyful, warm) > service.resonance(angry, warm)
    assert 0.0 <= service.resonance(angry, warm) <= 1.0
    with pytest.raises(InvalidInput, match="unknown emotion dimensions"):
        service.resonance(joyful, {"happiness": 1.0})


def test_edge_only_deployments_answer_cascade_from_the_edge(tmp_path: Path) -> None:
    shutil.copy(default_artifacts_dir() / "edge.json", tmp_path / "edge.json")
    edge_only = EmotionAnalyzer(artifacts_dir=tmp_path, edge_share=0.0)
    analysis = edge_only.analyze(TEXTS, mode="cascade")
    assert {v.tier for v in analysis.vectors} == {"edge"}
    with pytest.raises(Unavailable, match="not installed"):
        edge_only.analyze(TEXTS, mode="server")


@needs_server
def test_the_cascade_keeps_what_the_router_trusts(analyzer: EmotionAnalyzer) -> None:
    edge = analyzer.analyze(TEXTS, mode="edge").vectors
    server = analyzer.analyze(TEXTS, mode="server").vectors
    assert {v.tier for v in server} == {"server"}
    for share, expected in ((1.0, "edge"), (0.0, "server")):
        analyzer.set_edge_share(share)
        assert {v.tier for v in analyzer.analyze(TEXTS, mode="cascade").vectors} == {expected}
    analyzer.set_edge_share(0.7)
    keep = analyzer.keeps_at_edge(TEXTS, analyzer.edge_scores(TEXTS).astype(np.float64), edge)
    mixed = analyzer.analyze(TEXTS, mode="cascade")
    for kept, vector, e, s in zip(keep, mixed.vectors, edge, server, strict=True):
        # A trusted edge answer is kept as is; any other is the server's answer.
        assert vector == (e if kept else s)
    assert mixed.edge_share == pytest.approx(keep.mean())


@needs_server
def test_the_shipped_router_keeps_about_the_target_share_of_dev_like_text(
    analyzer: EmotionAnalyzer,
) -> None:
    assert analyzer.router is not None
    texts = [f"{a} {b}" for a in TEXTS for b in TEXTS]
    scores = analyzer.edge_scores(texts).astype(np.float64)
    edge = analyzer.analyze(texts, mode="edge").vectors
    kept = []
    for share in (0.3, 0.9):
        analyzer.set_edge_share(share)
        kept.append(analyzer.keeps_at_edge(texts, scores, edge).mean())
    analyzer.set_edge_share(0.7)
    assert kept[0] < kept[1]


@needs_server
def test_the_server_model_does_not_depend_on_batch_company() -> None:
    model = ServerModel(ServerArtifacts.in_directory(default_artifacts_dir()))
    together = model.scores(TEXTS * 3)
    alone = np.vstack([model.scores([text]) for text in TEXTS])
    assert together.shape == (24, 38)
    # Each text is read on its own: the same numbers whatever else is in the batch.
    assert np.array_equal(together[:8], alone)
    assert np.array_equal(together[8:16], together[:8])
    assert model.scores([]).shape == (0, 38)


@needs_server
def test_server_readings_make_sense(analyzer: EmotionAnalyzer) -> None:
    thanks, furious, *_ = analyzer.analyze(TEXTS, mode="server").vectors
    assert thanks.dominant == "gratitude"
    assert furious.ekman_label == "anger"
    assert thanks.valence > furious.valence
    assert tuple(thanks.ekman) == EKMAN


def test_stored_readings_are_finite_and_in_range_or_missing(tmp_path: Path) -> None:
    from nexus.events.duckdb_store import DuckDBEventStore
    from nexus.events.normalize import normalize
    from nexus.events.store import EmotionScan, WorkspaceBatch

    readings = [
        {"valence": 1e300, "arousal": -7, "dominance": 0.5, "ekman": "joy"},
        {"valence": "inf", "arousal": "oops", "dominance": None, "ekman": "rage"},
    ]
    rows = [
        normalize(
            {"type": "track", "event": "Chat", "anonymousId": "v", "messageId": f"m{i}",
             "timestamp": f"2026-11-20T10:0{i}:00Z", "context": {"emotion": reading}},
            received_at=1_763_600_000_000_000,
        )
        for i, reading in enumerate(readings)
    ]  # fmt: skip
    store = DuckDBEventStore(tmp_path / "events.duckdb", memory_limit="256MB", threads=1)
    try:
        store.append([WorkspaceBatch("ws", rows)])
        found = store.emotion_rows(EmotionScan("ws", 0, 2**62, person="v"))
    finally:
        store.close()
    assert found.message_id == ["m0", "m1"]
    assert found.vad[0].tolist() == [1.0, -1.0, 0.5]
    assert np.isnan(found.vad[1]).all()

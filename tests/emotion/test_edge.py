"""The edge tier: tokenizer, hashing, the artifact, and Python/JavaScript agreement."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.emotion.analyzer import EmotionAnalyzer, default_artifacts_dir, threshold_for_share
from nexus.emotion.models.edge import EdgeModel, FeatureHasher, fnv1a, tokenize

SCRIPT = Path(__file__).parents[2] / "src/nexus/web/static/edge-emotion.js"
ARTIFACT = default_artifacts_dir() / "edge.json"

TRICKY = [
    "",
    "   ",
    "THANK YOU!!!",
    "I'm   so\thappy\nright now 😀😀",
    "Café crème, ÉTÉ, naïve façade — ¿qué? ¡sí!",
    "\u00d7\u00f7 ÀÖØÞ ßÿ ĀŽ ǅ",
    "日本語のテキスト 한국어",
    "e\u0301 combining accent",
    "emoji family 👨‍👩‍👧 flags 🇫🇷",
    "numbers 123 4.5 and don't won't y'all",
    "\u00a0non\u2003breaking\u3000spaces\ufeff",
    "x" * 3000,
]


def test_tokenizer_lowercases_and_splits_symbols() -> None:
    assert tokenize("I'm SO happy!! 😀") == ["i'm", "so", "happy", "!", "!", "😀"]
    assert tokenize("ÀÉ\u00d7ñ") == ["àé", "\u00d7", "ñ"]
    assert tokenize(" \t\n") == []


def test_fnv1a_matches_the_published_test_vectors() -> None:
    # FNV-1a 32-bit reference values (Fowler, Noll, Vo: "FNV test vectors").
    assert fnv1a("") == 0x811C9DC5
    assert fnv1a("a") == 0xE40C292C
    assert fnv1a("foobar") == 0xBF9CF968


@given(st.lists(st.text(max_size=40), min_size=1, max_size=8))
@settings(max_examples=60, deadline=None)
def test_batch_features_equal_one_text_at_a_time(texts: list[str]) -> None:
    hasher = FeatureHasher(bits=16)
    ids, offsets = hasher.batch(texts)
    for index, text in enumerate(texts):
        alone = FeatureHasher(bits=16).features(text)
        assert np.array_equal(ids[offsets[index] : offsets[index + 1]], alone)
        tokens = tokenize(text)
        assert len(alone) <= 2 * len(tokens)
        assert (len(alone) == 0) == (len(tokens) == 0)


def test_the_artifact_is_small_and_round_trips() -> None:
    raw = ARTIFACT.read_bytes()
    assert len(raw) <= 512 * 1024  # the 0.5 MB budget for the browser
    model = EdgeModel.from_json(json.loads(raw))
    again = EdgeModel.from_json(model.to_json())
    texts = ["I love it", "this is awful", "what?"]
    assert np.allclose(model.scores(texts), again.scores(texts), atol=1e-5)


def test_a_foreign_json_is_refused() -> None:
    with pytest.raises(ValueError, match="nexus-edge-emotion"):
        EdgeModel.from_json({"format": "something else"})


def test_the_router_threshold_follows_the_share() -> None:
    quantiles = list(np.linspace(0.0, 1.0, 101))
    assert threshold_for_share(quantiles, 0.7) == pytest.approx(0.3)
    assert threshold_for_share(quantiles, 1.0) == float("-inf")
    assert threshold_for_share(quantiles, 0.0) == float("inf")
    with pytest.raises(ValueError, match="between 0 and 1"):
        threshold_for_share(quantiles, 1.5)


def test_the_cascade_sends_about_the_target_share_to_the_edge() -> None:
    texts = [line.split("\t")[0] for line in _dev_like_texts()]
    analyzer = EmotionAnalyzer(edge_share=0.7)
    confidences = np.asarray([v.confidence for v in analyzer.analyze(texts, mode="edge").vectors])
    share = float((confidences >= analyzer.threshold).mean())
    assert 0.5 < share < 0.9


def _dev_like_texts() -> list[str]:
    # Varied short texts; enough for a share estimate, no data set needed.
    starts = ["I", "You", "This", "Honestly", "Wow", "Ugh", "Thanks", "Why", "Maybe", "Oh no"]
    middles = ["love", "hate", "am confused by", "can't believe", "want", "fear", "miss", "like"]
    ends = ["it.", "this product!", "the checkout?", "you so much", "nothing", "the price..."]
    return [f"{s} {m} {e}" for s in starts for m in middles for e in ends]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_javascript_gives_the_same_output_as_python() -> None:
    texts = TRICKY + _dev_like_texts()
    runner = f"""
const {{ EdgeModel }} = require({json.dumps(str(SCRIPT))});
const fs = require("fs");
const model = new EdgeModel(JSON.parse(fs.readFileSync({json.dumps(str(ARTIFACT))}, "utf8")));
const texts = JSON.parse(fs.readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(texts.map((t) => model.analyze(t))));
"""
    done = subprocess.run(
        ["node", "-e", runner],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    from_js = json.loads(done.stdout)
    from_python = EmotionAnalyzer().analyze(texts, mode="edge").vectors
    assert len(from_js) == len(texts)
    for js, py in zip(from_js, from_python, strict=True):
        for name, value in py.labels.items():
            assert js["labels"][name] == pytest.approx(value, abs=1e-5)
        for name, value in py.plutchik.items():
            assert js["plutchik"][name] == pytest.approx(value, abs=1e-5)
        assert js["valence"] == pytest.approx(py.valence, abs=1e-5)
        assert js["arousal"] == pytest.approx(py.arousal, abs=1e-5)
        assert js["dominance"] == pytest.approx(py.dominance, abs=1e-5)
        assert js["confidence"] == pytest.approx(py.confidence, abs=1e-5)
        assert js["predicted"] == list(py.predicted)
        assert js["ekman_predicted"] == list(py.ekman_predicted)
        assert js["dominant"] == py.dominant

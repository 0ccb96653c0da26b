"""``nexus emotion analyze | eval | train`` on small hand-written fixtures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from nexus.emotion.models.edge import EdgeModel
from nexus.emotion.models.taxonomy import GOEMOTIONS
from nexus.events.duckdb_store import DuckDBEventStore
from nexus.events.store import EmotionScan
from tests.cli.test_events_cli import Cli, cli, data_dir, workspace  # noqa: F401 - fixtures

# (text, GoEmotions labels): enough variety for every metric to be defined.
SAMPLES = [
    ("Thank you so much, you are the best!", ["gratitude", "admiration"]),
    ("Thanks a lot for the help", ["gratitude"]),
    ("I love this so much", ["love"]),
    ("This is hilarious lol", ["amusement"]),
    ("I am so angry right now", ["anger"]),
    ("This is disgusting", ["disgust"]),
    ("I'm scared of what happens next", ["fear"]),
    ("That makes me so sad", ["sadness"]),
    ("Wow, I did not expect that!", ["surprise"]),
    ("Why does it work like that?", ["curiosity", "confusion"]),
    ("The meeting is at noon", ["neutral"]),
    ("It is a blue car", ["neutral"]),
    ("Great job, well done", ["admiration"]),
    ("I'm sorry, my mistake", ["remorse"]),
    ("So annoying, stop it", ["annoyance"]),
    ("I hope it goes well", ["optimism"]),
]


def _tsv(path: Path, samples: list[tuple[str, list[str]]] = SAMPLES) -> Path:
    lines = [
        f"{text}\t{','.join(str(GOEMOTIONS.index(label)) for label in labels)}\tid{i}"
        for i, (text, labels) in enumerate(samples)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _emobank(path: Path) -> Path:
    rows = ["id,split,V,A,D,text"]
    for i, (text, labels) in enumerate(SAMPLES):
        positive = labels[0] in {"gratitude", "admiration", "love", "amusement", "optimism"}
        negative = labels[0] in {"anger", "disgust", "fear", "sadness", "annoyance", "remorse"}
        valence = 4.2 if positive else 1.8 if negative else 3.0
        split = "dev" if i % 4 == 0 else "train"
        rows.append(f'r{i},{split},{valence},3.1,3.0,"{text}"')
    path.write_text("\n".join(rows) + "\n")
    return path


def test_analyze_prints_json_with_every_reading(cli: Cli) -> None:  # noqa: F811
    out = cli("emotion", "analyze", "Thank you so much!", "--tier", "edge", "--json").json()
    assert out["dominant"] == "gratitude"
    assert out["tier"] == "edge"
    assert len(out["plutchik"]) == 8
    assert -1 <= out["valence"] <= 1


def test_analyze_prints_a_table(cli: Cli) -> None:  # noqa: F811
    done = cli("emotion", "analyze", "I hate waiting", "--tier", "edge")
    assert done.returncode == 0, done.stderr
    assert "valence" in done.stdout
    assert "Ekman" in done.stdout


def test_analyze_refuses_an_empty_text(cli: Cli) -> None:  # noqa: F811
    assert "empty" in cli("emotion", "analyze", "  ").one_line_error(2)


def test_eval_reports_both_taxonomies_as_json(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    out = cli("emotion", "eval", str(_tsv(tmp_path / "s.tsv")), "--tier", "edge", "--json").json()
    assert out["texts"] == len(SAMPLES)
    assert set(out) >= {"goemotions", "ekman"}
    report = out["goemotions"]
    assert set(report["per_class"]) == set(GOEMOTIONS)
    assert 0.0 <= report["macro_f1"] <= 1.0
    assert 0.0 <= report["calibration_error"] <= 1.0
    # The model reads obvious texts right.
    assert out["ekman"]["macro_f1"] > 0.3
    assert out["ekman"]["per_class"]["joy"]["support"] == 6


def test_eval_reads_a_csv_in_any_taxonomy(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    ekman = tmp_path / "ekman.csv"
    ekman.write_text('text,label\n"I love it",joy\n"I am furious",anger\n"meh",neutral\n')
    out = cli("emotion", "eval", str(ekman), "--tier", "edge", "--json").json()
    assert set(out) >= {"ekman"}
    assert "goemotions" not in out
    plutchik = tmp_path / "plutchik.csv"
    plutchik.write_text(
        'text,labels\n"I trust you completely",trust\n"Can\'t wait!",anticipation|joy\n'
    )
    out = cli("emotion", "eval", str(plutchik), "--tier", "edge", "--json").json()
    assert set(out["plutchik"]["per_class"]) >= {"trust", "anticipation"}
    table = cli("emotion", "eval", str(ekman), "--tier", "edge")
    assert "macro-F1" in table.stdout


def test_eval_scores_emobank_vad(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    out = cli(
        "emotion",
        "eval",
        "--emobank",
        str(_emobank(tmp_path / "eb.csv")),
        "--tier",
        "edge",
        "--json",
    ).json()
    assert set(out["pearson"]) == {"valence", "arousal", "dominance"}
    assert out["pearson"]["valence"] > 0.3


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        (None, ".tsv", "no such file"),
        ("just text without tabs\n", ".tsv", "expected text<TAB>label ids"),
        ("hello\t99\tx\n", ".tsv", "label ids must be 0..27"),
        ("words,stuff\na,b\n", ".csv", "needs a 'text' column"),
        ("text,label\nhi,zorgle\n", ".csv", "unknown emotion labels"),
    ],
)
def test_eval_refuses_bad_files_in_one_line(
    cli: Cli,  # noqa: F811
    tmp_path: Path,
    content: str | None,
    suffix: str,
    message: str,
) -> None:
    path = tmp_path / f"bad{suffix}"
    if content is not None:
        path.write_text(content)
    assert message in cli("emotion", "eval", str(path), "--tier", "edge").one_line_error(1)


def test_eval_needs_exactly_one_input(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    assert "one of them" in cli("emotion", "eval").one_line_error(2)


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="needs the train extra")
def test_train_edge_writes_a_loadable_artifact(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    corpus = tmp_path / "goemotions"
    corpus.mkdir()
    _tsv(corpus / "train.tsv", SAMPLES * 3)
    _tsv(corpus / "dev.tsv")
    out = tmp_path / "artifacts"
    emobank = str(_emobank(tmp_path / "e.csv"))
    done = cli(
        "emotion", "train", "--goemotions", str(corpus), "--emobank", emobank,
        "--tier", "edge", "--out", str(out), "--version", "t1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    model = EdgeModel.from_json(json.loads((out / "edge.json").read_text()))
    assert model.version == "edge-t1"
    assert len(model.thresholds["goemotions"]) == 28
    scores = model.scores(["Thanks a lot for the help"])
    assert scores.shape == (1, 38)
    # Trained on these very texts, it reads its training text right.
    assert int(scores[0, :28].argmax()) == GOEMOTIONS.index("gratitude")


def test_train_refuses_a_missing_corpus(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    done = cli(
        "emotion",
        "train",
        "--goemotions",
        str(tmp_path / "nope"),
        "--emobank",
        str(tmp_path / "e.csv"),
    )
    assert "no such file" in done.one_line_error(1)


def _chat_file(path: Path) -> Path:
    lines = [
        {"type": "track", "event": "Chat", "anonymousId": "v1", "messageId": f"chat-{i}",
         "timestamp": f"2026-11-20T10:0{i}:00Z", "properties": {"message": text}}
        for i, text in enumerate(["Thank you so much!", "I am so angry about this"])
    ]  # fmt: skip
    lines.append({"type": "track", "event": "Viewed", "anonymousId": "v1", "messageId": "view"})
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def _readings(data: Path, workspace_id: str) -> list[tuple[str, str]]:
    store = DuckDBEventStore(data / "events.duckdb", memory_limit="256MB", threads=1)
    try:
        rows = store.emotion_rows(EmotionScan(workspace_id, 0, 2**62))
    finally:
        store.close()
    return sorted(zip(rows.message_id, rows.ekman, strict=True))


def test_import_reads_text_properties_for_emotion(
    cli: Cli,  # noqa: F811
    workspace: str,  # noqa: F811
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    done = cli("import", "events", str(_chat_file(tmp_path / "chat.jsonl")), "--json")
    assert done.json()["imported"] == 3
    assert _readings(data_dir, workspace) == [("chat-0", "joy"), ("chat-1", "anger")]


def test_import_can_skip_enrichment(
    cli: Cli,  # noqa: F811
    workspace: str,  # noqa: F811
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    path = _chat_file(tmp_path / "chat.jsonl")
    assert cli("import", "events", str(path), "--no-enrich", "--json").json()["imported"] == 3
    assert _readings(data_dir, workspace) == []


def test_eval_refuses_malformed_csv_and_non_finite_ratings(
    cli: Cli,  # noqa: F811
    tmp_path: Path,
) -> None:
    huge = tmp_path / "huge.csv"
    huge.write_text('text,label\n"' + "x" * 200_000 + '",joy\n')
    assert "not valid CSV" in cli("emotion", "eval", str(huge), "--tier", "edge").one_line_error(1)
    bank = tmp_path / "bank.csv"
    bank.write_text("id,split,V,A,D,text\nr1,dev,nan,3,3,hello\n")
    error = cli("emotion", "eval", "--emobank", str(bank), "--tier", "edge").one_line_error(1)
    assert "finite" in error

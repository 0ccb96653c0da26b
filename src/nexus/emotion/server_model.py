"""The server tier at inference time: an int8 MiniLM under onnxruntime.

Needs only onnxruntime, tokenizers and numpy. Texts of a batch are sorted by length and run
in sub-batches of similar length, so a long text does not make every other text in the batch
pay for its padding; results come back in the caller's order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nexus.core.errors import ConfigurationError

SUB_BATCH = 16


@dataclass(frozen=True, slots=True)
class ServerArtifacts:
    model: Path
    tokenizer: Path
    metadata: Path

    @classmethod
    def in_directory(cls, directory: Path) -> ServerArtifacts:
        return cls(
            model=directory / "server.onnx",
            tokenizer=directory / "server-tokenizer.json",
            metadata=directory / "server.json",
        )

    def exist(self) -> bool:
        return self.model.is_file() and self.tokenizer.is_file() and self.metadata.is_file()


class ServerModel:
    """Loads the exported encoder once; :meth:`scores` is thread-safe."""

    def __init__(self, artifacts: ServerArtifacts, *, threads: int = 2) -> None:
        if not artifacts.exist():
            raise ConfigurationError(
                f"server emotion model not found in {artifacts.model.parent}; "
                "run `nexus emotion train` or use the edge tier"
            )
        import onnxruntime  # noqa: PLC0415
        from tokenizers import Tokenizer  # noqa: PLC0415

        self.metadata: dict[str, Any] = json.loads(artifacts.metadata.read_text())
        self.version = str(self.metadata["version"])
        self.label_thresholds = np.asarray(self.metadata["thresholds"]["goemotions"])
        self.ekman_thresholds = np.asarray(self.metadata["thresholds"]["ekman"])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = onnxruntime.InferenceSession(
            str(artifacts.model), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = Tokenizer.from_file(str(artifacts.tokenizer))
        self._tokenizer.enable_truncation(int(self.metadata["max_length"]))
        self._tokenizer.no_padding()

    def scores(self, texts: list[str]) -> NDArray[np.float32]:
        """Raw outputs ``(n, 38)``: 28 label logits, 7 Ekman logits, VAD on a 1-5 scale."""
        if not texts:
            return np.zeros((0, 38), dtype=np.float32)
        encoded = self._tokenizer.encode_batch(texts)
        ids = [e.ids for e in encoded]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.zeros((len(texts), 38), dtype=np.float32)
        for start in range(0, len(order), SUB_BATCH):
            rows = order[start : start + SUB_BATCH]
            width = max(len(ids[i]) for i in rows)
            input_ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for position, row in enumerate(rows):
                input_ids[position, : len(ids[row])] = ids[row]
                mask[position, : len(ids[row])] = 1
            (result,) = self._session.run(None, {"input_ids": input_ids, "attention_mask": mask})
            out[rows] = result
        return out

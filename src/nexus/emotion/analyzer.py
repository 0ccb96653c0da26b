"""The two tiers behind one call, and the cascade router between them.

The edge tier scores every text (tens of thousands per second). In ``cascade`` mode the
router (:mod:`nexus.emotion.models.router`, ``router.json``) estimates for each text the risk
that the edge's Ekman-7 reading is wrong where it matters most for macro-F1; texts whose risk
is at or below the threshold keep the edge answer, the rest go to the server tier. The
threshold is not a magic number: it is the risk quantile on dev that leaves the target share
of texts (default 70%) with the edge. Without ``router.json`` the edge's own confidence
ranks the texts instead (quantiles in the edge artifact).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from nexus.core.errors import ConfigurationError, Unavailable
from nexus.emotion.models.edge import EdgeModel, FeatureHasher
from nexus.emotion.models.router import CascadeRouter, router_features
from nexus.emotion.models.vector import EmotionVector, vectors_from_scores
from nexus.emotion.server_model import ServerArtifacts, ServerModel

Mode = Literal["edge", "server", "cascade"]
MODES: tuple[Mode, ...] = ("edge", "server", "cascade")


def default_artifacts_dir() -> Path:
    return Path(str(resources.files("nexus.emotion") / "artifacts"))


def load_edge_model(directory: Path) -> EdgeModel:
    path = directory / "edge.json"
    try:
        return EdgeModel.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ConfigurationError(f"edge emotion model not found: {path}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigurationError(f"{path} is not a valid edge emotion model: {exc}") from None


def load_router(directory: Path) -> CascadeRouter | None:
    path = directory / "router.json"
    if not path.is_file():
        return None
    try:
        return CascadeRouter.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigurationError(f"{path} is not a valid cascade router: {exc}") from None


def threshold_for_share(quantiles: list[float], edge_share: float) -> float:
    """Edge confidence above which ``edge_share`` of dev texts fall (linear interpolation)."""
    if not 0.0 <= edge_share <= 1.0:
        raise ValueError("edge share must be between 0 and 1")
    if edge_share >= 1.0:
        return float("-inf")
    if edge_share <= 0.0:
        return float("inf")
    grid = np.linspace(0.0, 1.0, len(quantiles))
    return float(np.interp(1.0 - edge_share, grid, quantiles))


@dataclass(frozen=True, slots=True)
class Analysis:
    vectors: list[EmotionVector]
    edge_share: float  # share of these texts the edge tier answered


class EmotionAnalyzer:
    """Holds both tiers; the server tier is loaded on first use (it takes ~0.5 s)."""

    def __init__(
        self,
        *,
        artifacts_dir: Path | None = None,
        edge_share: float = 0.7,
        server_threads: int = 2,
    ) -> None:
        self.artifacts_dir = artifacts_dir or default_artifacts_dir()
        self.edge = load_edge_model(self.artifacts_dir)
        self.router = load_router(self.artifacts_dir)
        self._hasher = FeatureHasher(self.edge.bits)
        self._edge_labels = np.asarray(self.edge.thresholds["goemotions"])
        self._edge_ekman = np.asarray(self.edge.thresholds["ekman"])
        self.server_threads = server_threads
        self._server: ServerModel | None = None
        self._server_lock = threading.Lock()
        self._server_available: bool | None = None
        self.set_edge_share(edge_share)

    def set_edge_share(self, edge_share: float) -> None:
        if not 0.0 <= edge_share <= 1.0:
            raise ValueError("edge share must be between 0 and 1")
        self.edge_share = edge_share
        self.threshold = threshold_for_share(
            list(self.edge.metadata["confidence_quantiles"]), edge_share
        )
        self.risk_threshold = (
            self.router.risk_threshold(edge_share) if self.router is not None else math.inf
        )

    def keeps_at_edge(
        self, texts: list[str], scores: NDArray[np.float64], edge: list[EmotionVector]
    ) -> NDArray[np.bool_]:
        """Which texts the cascade leaves with the edge tier."""
        if self.router is None:
            return np.asarray([v.confidence >= self.threshold for v in edge], dtype=bool)
        lengths = np.asarray([len(t) for t in texts], dtype=np.int64)
        risk = self.router.risk(router_features(scores, lengths, self._edge_ekman))
        return np.asarray(risk <= self.risk_threshold, dtype=bool)

    @property
    def server_available(self) -> bool:
        if self._server_available is None:
            self._server_available = ServerArtifacts.in_directory(self.artifacts_dir).exist()
        return self._server_available

    @property
    def server(self) -> ServerModel:
        if not self.server_available:
            raise Unavailable(
                "The server emotion model is not installed here; use mode 'edge' or 'cascade'."
            )
        with self._server_lock:
            if self._server is None:
                self._server = ServerModel(
                    ServerArtifacts.in_directory(self.artifacts_dir), threads=self.server_threads
                )
            return self._server

    def edge_scores(self, texts: list[str]) -> NDArray[np.float32]:
        return self.edge.scores(texts, self._hasher)

    def analyze(self, texts: list[str], *, mode: Mode = "cascade") -> Analysis:
        """One :class:`EmotionVector` per text, in order."""
        if not texts:
            return Analysis(vectors=[], edge_share=0.0)
        if mode == "server":
            return Analysis(vectors=self._server_vectors(texts), edge_share=0.0)
        scores = self.edge_scores(texts).astype(np.float64)
        edge = vectors_from_scores(
            scores,
            label_thresholds=self._edge_labels,
            ekman_thresholds=self._edge_ekman,
            tier="edge",
        )
        if mode == "edge":
            return Analysis(vectors=edge, edge_share=1.0)
        unsure = np.flatnonzero(~self.keeps_at_edge(texts, scores, edge)).tolist()
        if unsure and not self.server_available:
            # A deployment without the server artifacts still answers, from the edge alone.
            return Analysis(vectors=edge, edge_share=1.0)
        if unsure:
            for index, vector in zip(
                unsure, self._server_vectors([texts[i] for i in unsure]), strict=True
            ):
                edge[index] = vector
        return Analysis(vectors=edge, edge_share=1.0 - len(unsure) / len(texts))

    def _server_vectors(self, texts: list[str]) -> list[EmotionVector]:
        server = self.server
        return vectors_from_scores(
            server.scores(texts).astype(np.float64),
            label_thresholds=server.label_thresholds,
            ekman_thresholds=server.ekman_thresholds,
            tier="server",
        )

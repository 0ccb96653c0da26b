"""The edge tier: a fixed tokenizer, hashed n-gram features and linear heads.

Small and plain enough to run in a browser: the same arithmetic is implemented in
``nexus/emotion/static/edge-emotion.js`` and both must give the same output for the same
input (tests run the JavaScript under Node and compare). Everything that could differ
between the two languages is pinned down here:

* **Tokenizer.** Lowercase ASCII ``A-Z`` and Latin-1 ``À-Þ`` by code point arithmetic
  (not ``str.lower``, whose Unicode tables differ across runtimes). A word is a maximal run
  of ASCII letters, digits, apostrophes and Latin letters ``U+00C0-U+024F`` (bar U+00D7 and
  U+00F7); any other code point that is not whitespace is a token of its own, so ``!``,
  ``?`` and each emoji carry signal.
* **Hashing.** FNV-1a (32-bit) over a token's UTF-8 bytes, finished with MurmurHash3's
  ``fmix32``; a bigram hashes its two tokens' FNV values together. Features are the hashes'
  low ``bits`` bits. Only features kept at training time have weights; the rest still count
  toward the length normalisation.
* **Scoring.** ``x`` is the set of distinct features with value ``1/sqrt(|x|)``;
  ``scores = bias + x · W`` with ``W`` stored as int8 with one scale per output column.
"""

from __future__ import annotations

import base64
import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from nexus.emotion.models.taxonomy import EKMAN, GOEMOTIONS, PLUTCHIK, PLUTCHIK_WEIGHTS

FNV_OFFSET: Final = 0x811C9DC5
FNV_PRIME: Final = 0x01000193
GOLDEN: Final = 0x9E3779B1
BIGRAM_SEED: Final = 0x5BD1E995
MASK32: Final = 0xFFFFFFFF
FORMAT: Final = "nexus-edge-emotion"


_FOLD = {code: code + 32 for code in [*range(65, 91), *range(0xC0, 0xDF)] if code != 0xD7}
_WORD = "0-9a-z'\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"
# The whitespace JavaScript's /\s/ and Python's str.isspace() agree on, listed explicitly so
# neither runtime's Unicode tables decide.
_SPACE = "\t\n\u000b\u000c\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
TOKEN_PATTERN: Final = re.compile(f"[{_WORD}]+|[^{_WORD}{_SPACE}]")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lowercase word tokens and single-character symbol tokens."""
    return TOKEN_PATTERN.findall(text.translate(_FOLD))


def fnv1a(token: str) -> int:
    value = FNV_OFFSET
    for byte in token.encode("utf-8", "surrogatepass"):
        value = ((value ^ byte) * FNV_PRIME) & MASK32
    return value


def fmix32(value: NDArray[np.uint32]) -> NDArray[np.uint32]:
    """MurmurHash3's finaliser, vectorised over uint32 (wrapping multiplication)."""
    value = value ^ (value >> np.uint32(16))
    value = value * np.uint32(0x85EBCA6B)
    value = value ^ (value >> np.uint32(13))
    value = value * np.uint32(0xC2B2AE35)
    return np.asarray(value ^ (value >> np.uint32(16)), dtype=np.uint32)


def fmix32_int(value: int) -> int:
    """:func:`fmix32` on one Python int (the single-text path avoids numpy's per-call cost)."""
    value ^= value >> 16
    value = (value * 0x85EBCA6B) & MASK32
    value ^= value >> 13
    value = (value * 0xC2B2AE35) & MASK32
    return value ^ (value >> 16)


@dataclass
class FeatureHasher:
    """Texts to hashed unigram + bigram feature ids, with a per-token hash cache.

    Whole batches are hashed at once: tokens are concatenated, bigrams formed across the
    concatenation and those straddling two texts dropped, so numpy does the arithmetic.
    """

    bits: int = 20
    cache: dict[str, int] = field(default_factory=dict)

    def _hash(self, token: str) -> int:
        value = fnv1a(token)
        if len(self.cache) < 500_000:
            self.cache[token] = value
        return value

    def batch(self, texts: list[str]) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
        """Distinct feature ids of many texts (sorted within each text), concatenated,
        and the offsets where each text's ids start (``len(texts) + 1`` entries)."""
        token_lists = [tokenize(text) for text in texts]
        lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(texts))
        get = self.cache.get
        hashes = np.fromiter(
            (get(token) or self._hash(token) for tokens in token_lists for token in tokens),
            dtype=np.uint32,
            count=int(lengths.sum()),
        )
        rows = np.repeat(np.arange(len(texts), dtype=np.uint64), lengths)
        same_text = rows[1:] == rows[:-1]
        with np.errstate(over="ignore"):
            unigrams = fmix32(hashes)
            bigrams = fmix32(
                (hashes[:-1] * np.uint32(GOLDEN)) ^ hashes[1:] ^ np.uint32(BIGRAM_SEED)
            )
        features = np.concatenate([unigrams, bigrams[same_text]]) & np.uint32((1 << self.bits) - 1)
        owners = np.concatenate([rows, rows[1:][same_text]])
        keys = np.unique((owners << np.uint64(32)) | features.astype(np.uint64))
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(
            np.bincount((keys >> np.uint64(32)).astype(np.int64), minlength=len(texts)),
            out=offsets[1:],
        )
        return (keys & np.uint64(MASK32)).astype(np.uint32), offsets

    def features(self, text: str) -> NDArray[np.uint32]:
        """Distinct feature ids of one text, sorted."""
        return self.batch([text])[0]

    def features_one(self, text: str) -> list[int]:
        """What :meth:`features` returns, as Python ints, computed without numpy: one text
        (a decision's chat line) is a few dozen integer operations, where the batch path's
        array set-up would cost more than the arithmetic."""
        get = self.cache.get
        hashes = [get(token) or self._hash(token) for token in tokenize(text)]
        mask = (1 << self.bits) - 1
        ids = {fmix32_int(h) & mask for h in hashes}
        for first, second in itertools.pairwise(hashes):
            ids.add(fmix32_int(((first * GOLDEN) & MASK32) ^ second ^ BIGRAM_SEED) & mask)
        return sorted(ids)


@dataclass(frozen=True)
class EdgeModel:
    """A trained edge model: kept features, int8 weights, biases, thresholds."""

    version: str
    bits: int
    features: NDArray[np.uint32]  # sorted kept feature ids
    weights: NDArray[np.float32]  # (len(features), outputs), dequantised
    bias: NDArray[np.float32]  # (outputs,)
    outputs: tuple[str, ...]
    thresholds: dict[str, list[float]]
    metadata: dict[str, Any]
    # Kept feature id -> its row of ``weights``, for scoring one text without numpy search.
    rows: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", {int(f): i for i, f in enumerate(self.features.tolist())})

    def scores(self, texts: list[str], hasher: FeatureHasher | None = None) -> NDArray[np.float32]:
        """Raw output scores ``(n, outputs)``: logits for the label heads, VAD values."""
        hasher = hasher or FeatureHasher(self.bits)
        if len(texts) == 1:
            return self._score_one(texts[0], hasher)
        ids, offsets = hasher.batch(texts)
        counts = np.diff(offsets)
        norm = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0).astype(np.float32)
        position = np.searchsorted(self.features, ids)
        position = np.minimum(position, len(self.features) - 1)
        known = self.features[position] == ids
        row_of = np.repeat(np.arange(len(texts)), counts)
        out = np.zeros((len(texts), len(self.outputs)), dtype=np.float32)
        np.add.at(out, row_of[known], self.weights[position[known]])
        return out * norm[:, None] + self.bias

    def _score_one(self, text: str, hasher: FeatureHasher) -> NDArray[np.float32]:
        """:meth:`scores` of one text, bit for bit: the same float32 sums in the same order
        (ascending feature id, one row after another, as ``np.add.at`` adds them)."""
        ids = hasher.features_one(text)
        get = self.rows.get
        rows = [row for row in map(get, ids) if row is not None]
        out = np.zeros((1, len(self.outputs)), dtype=np.float32)
        if rows:
            out[0] = np.cumsum(self.weights[rows], axis=0)[-1]
        norm = np.float32(1.0 / math.sqrt(len(ids))) if ids else np.float32(0.0)
        return out * norm + self.bias

    def to_json(self) -> dict[str, Any]:
        scale = np.abs(self.weights).max(axis=0) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        quantised = np.clip(np.round(self.weights / scale), -127, 127).astype(np.int8)
        return {
            "format": FORMAT,
            "version": self.version,
            "bits": self.bits,
            "outputs": list(self.outputs),
            "features": base64.b64encode(
                np.diff(self.features, prepend=np.uint32(0)).astype("<u4").tobytes()
            ).decode(),
            "weights": base64.b64encode(quantised.tobytes()).decode(),
            "scales": [float(v) for v in scale],
            "bias": [float(v) for v in self.bias],
            "thresholds": self.thresholds,
            # The label names and Plutchik weights travel with the weights, so the browser
            # needs no copy of the taxonomy.
            "taxonomy": {
                "goemotions": list(GOEMOTIONS),
                "ekman": list(EKMAN),
                "plutchik": list(PLUTCHIK),
                "plutchik_weights": PLUTCHIK_WEIGHTS.round(6).tolist(),
            },
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EdgeModel:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} artifact")
        deltas = np.frombuffer(base64.b64decode(data["features"]), dtype="<u4")
        features = np.cumsum(deltas, dtype=np.uint64).astype(np.uint32)
        outputs = tuple(data["outputs"])
        quantised = np.frombuffer(base64.b64decode(data["weights"]), dtype=np.int8)
        weights = quantised.reshape(len(features), len(outputs)).astype(np.float32)
        weights *= np.asarray(data["scales"], dtype=np.float32)
        return cls(
            version=str(data["version"]),
            bits=int(data["bits"]),
            features=features,
            weights=weights,
            bias=np.asarray(data["bias"], dtype=np.float32),
            outputs=outputs,
            thresholds={k: list(v) for k, v in data["thresholds"].items()},
            metadata=dict(data.get("metadata", {})),
        )

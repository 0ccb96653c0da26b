"""``nexus emotion analyze | eval | train``: the emotion engine from the command line.

``train`` reproduces the shipped artifacts from the labelled data (seeded); the server tier
needs the optional ``train`` extra (torch). ``eval`` scores a tier, or the cascade, on a
labelled file; ``analyze`` reads one text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nexus.cli.output import console, fail, print_json, print_table
from nexus.core.errors import NexusError
from nexus.core.settings import Settings
from nexus.emotion.analyzer import EmotionAnalyzer, default_artifacts_dir
from nexus.emotion.datasets import Taxonomy, read_emobank, read_goemotions_tsv, read_labelled
from nexus.emotion.evaluation import EvaluationReport, VadReport, evaluate, evaluate_vad
from nexus.emotion.models.taxonomy import EKMAN, GOEMOTIONS
from nexus.emotion.models.vector import EKMAN_END, sigmoid
from nexus.emotion.server_model import ServerArtifacts, ServerModel

emotion_app = typer.Typer(
    help="Emotion: analyse text, evaluate and train the models.", no_args_is_help=True
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
TierOption = Annotated[
    Literal["edge", "server", "cascade"],
    typer.Option("--tier", help="edge, server, or cascade (edge when confident)."),
]
ShareOption = Annotated[
    float | None,
    typer.Option("--edge-share", min=0.0, max=1.0, help="Cascade: share left to the edge tier."),
]


def _analyzer(edge_share: float | None = None) -> EmotionAnalyzer:
    settings = Settings()
    try:
        return EmotionAnalyzer(
            artifacts_dir=settings.emotion_models_dir,
            edge_share=settings.emotion_edge_share if edge_share is None else edge_share,
            server_threads=settings.emotion_threads,
        )
    except NexusError as exc:
        fail(str(exc))
        raise  # unreachable: fail exits


@emotion_app.command("analyze")
def analyze(
    text: Annotated[str, typer.Argument(help="The text to read.")],
    tier: TierOption = "cascade",
    as_json: JsonOption = False,
) -> None:
    """Read the emotion in TEXT."""
    if not text.strip():
        fail("the text is empty", 2)
    try:
        vector = _analyzer().analyze([text[:10_000]], mode=tier).vectors[0]
    except NexusError as exc:
        fail(str(exc))
        return
    if as_json:
        print_json(asdict(vector))
        return
    console.print(
        f"[bold]{vector.dominant}[/] ({', '.join(vector.predicted)}) · "
        f"Ekman {vector.ekman_label} · {vector.tier} tier, confidence {vector.confidence:.2f}"
    )
    print_table(
        "Plutchik-8 and VAD",
        ["dimension", "value"],
        [
            *((k, f"{v:.3f}") for k, v in vector.plutchik.items()),
            ("valence", f"{vector.valence:+.3f}"),
            ("arousal", f"{vector.arousal:+.3f}"),
            ("dominance", f"{vector.dominance:+.3f}"),
        ],
    )


def _report_json(report: EvaluationReport) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tier": report.mode,
        "texts": report.texts,
        "edge_share": round(report.edge_share, 4),
        "texts_per_second": round(report.texts / report.seconds, 1) if report.seconds else None,
    }
    for name, r in report.reports.items():
        out[name] = {
            "accuracy": round(r.accuracy, 4),
            "top1_accuracy": round(r.top1_accuracy, 4),
            "macro_f1": round(r.macro_f1, 4),
            "calibration_error": round(r.calibration_error, 4),
            "per_class": {
                label: {"f1": round(f1, 4), "support": support}
                for label, f1, support in zip(r.labels, r.per_class_f1, r.support, strict=True)
            },
        }
    return out


def _print_report(report: EvaluationReport) -> None:
    console.print(
        f"{report.texts} texts, tier {report.mode}"
        + (f", edge share {report.edge_share:.1%}" if report.mode == "cascade" else "")
        + (f", {report.texts / report.seconds:,.0f} texts/s" if report.seconds else "")
    )
    print_table(
        "Summary",
        ["taxonomy", "macro-F1", "accuracy (exact set)", "top-1 accuracy", "calibration error"],
        [
            (
                name,
                f"{r.macro_f1:.4f}",
                f"{r.accuracy:.4f}",
                f"{r.top1_accuracy:.4f}",
                f"{r.calibration_error:.4f}",
            )
            for name, r in report.reports.items()
        ],
    )
    for name, r in report.reports.items():
        print_table(
            f"Per-class F1 ({name})",
            ["label", "F1", "support"],
            [
                (label, f"{f1:.3f}", support)
                for label, f1, support in zip(r.labels, r.per_class_f1, r.support, strict=True)
            ],
        )


def _print_vad(report: VadReport) -> None:
    print_table(
        f"EmoBank, {report.texts} texts, tier {report.mode}",
        ["dimension", "Pearson r"],
        [(k, f"{v:.4f}") for k, v in report.pearson.items()],
    )


@emotion_app.command("eval")
def evaluate_command(
    file: Annotated[
        Path | None,
        typer.Argument(help="GoEmotions TSV (text, label ids, id) or CSV with text and label."),
    ] = None,
    emobank: Annotated[
        Path | None, typer.Option("--emobank", help="Score VAD on an EmoBank CSV instead.")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="EmoBank: only rows of this split (e.g. dev).")
    ] = None,
    tier: TierOption = "cascade",
    edge_share: ShareOption = None,
    taxonomy: Annotated[
        Taxonomy | None, typer.Option(help="CSV labels' taxonomy (default: detected).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Score a tier (or the cascade) on labelled texts."""
    if (file is None) == (emobank is None):
        fail("give a labelled FILE or --emobank FILE (one of them)", 2)
    analyzer = _analyzer(edge_share)
    try:
        if emobank is not None:
            vad = evaluate_vad(analyzer, read_emobank(emobank, split=split), mode=tier)
            if as_json:
                print_json({"tier": vad.mode, "texts": vad.texts, "pearson": vad.pearson})
            else:
                _print_vad(vad)
            return
        assert file is not None
        report = evaluate(analyzer, read_labelled(file, taxonomy=taxonomy), mode=tier)
    except NexusError as exc:
        fail(str(exc))
        return
    if as_json:
        print_json(_report_json(report))
    else:
        _print_report(report)


def _teacher(
    directory: Path, texts: list[str], advance: Callable[[str, int, int], None]
) -> np.ndarray | None:
    """The server tier's label and Ekman probabilities for ``texts``, if it is there."""
    artifacts = ServerArtifacts.in_directory(directory)
    if not artifacts.exist():
        return None
    model = ServerModel(artifacts)
    out = np.zeros((len(texts), len(GOEMOTIONS) + len(EKMAN)))
    chunk = 1024
    for start in range(0, len(texts), chunk):
        out[start : start + chunk] = sigmoid(
            model.scores(texts[start : start + chunk])[:, :EKMAN_END].astype(np.float64)
        )
        advance("server readings for distillation", min(start + chunk, len(texts)), len(texts))
    model.close()
    return out


@emotion_app.command("train")
def train(
    goemotions: Annotated[
        Path, typer.Option("--goemotions", help="Directory with train.tsv and dev.tsv.")
    ],
    emobank: Annotated[Path, typer.Option("--emobank", help="EmoBank CSV (train and dev rows).")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write the artifacts (default: the shipped ones).")
    ] = None,
    tier: Annotated[
        Literal["edge", "server", "both"], typer.Option(help="Which tier to train.")
    ] = "both",
    epochs: Annotated[
        int, typer.Option(min=1, max=20, help="Server tier: fine-tuning epochs.")
    ] = 3,
    work_dir: Annotated[
        Path, typer.Option(help="Server tier: checkpoints between training and export.")
    ] = Path(".nexus/training"),
    limit: Annotated[
        int | None, typer.Option(min=16, help="Train on the first N texts only (smoke runs).")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Version stamped on the artifacts.")] = None,
    distill: Annotated[
        bool,
        typer.Option(
            "--distill/--no-distill",
            help="Edge tier: learn from the server tier's readings too (needs the server "
            "artifacts in the output directory, trained first with --tier both).",
        ),
    ] = True,
) -> None:
    """Train the edge and/or server tier from GoEmotions and EmoBank (seeded)."""
    from nexus.emotion.training.edge import EdgeTrainingConfig, train_edge  # noqa: PLC0415

    target = out or default_artifacts_dir()
    stamp = version or datetime.now(UTC).strftime("%Y.%m.%d")
    try:
        train_set = read_goemotions_tsv(goemotions / "train.tsv")
        dev_set = read_goemotions_tsv(goemotions / "dev.tsv")
        vad_train = read_emobank(emobank, split="train")
        vad_dev = read_emobank(emobank, split="dev")
        target.mkdir(parents=True, exist_ok=True)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            tasks: dict[str, Any] = {}

            def advance(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = progress.add_task(stage, total=total)
                progress.update(tasks[stage], completed=done, total=total)

            if tier in ("server", "both"):
                from nexus.emotion.training.export import export_server  # noqa: PLC0415
                from nexus.emotion.training.server import (  # noqa: PLC0415
                    ServerTrainingConfig,
                    train_server,
                )

                checkpoint = train_server(
                    train=train_set,
                    dev=dev_set,
                    vad_train=vad_train,
                    vad_dev=vad_dev,
                    work_dir=work_dir,
                    config=ServerTrainingConfig(epochs=epochs, limit=limit),
                    progress=advance,
                    log=progress.console.print,
                )
                artifacts = export_server(
                    checkpoint=checkpoint, out_dir=target, dev=dev_set, version=f"server-{stamp}"
                )
                progress.console.print(f"server tier written to {artifacts.model}")
            if tier in ("edge", "both"):
                started = time.perf_counter()
                texts = train_set.texts[:limit]
                teacher = _teacher(target, texts, advance) if distill else None
                model = train_edge(
                    train=train_set,
                    dev=dev_set,
                    vad_train=vad_train,
                    version=f"edge-{stamp}",
                    config=EdgeTrainingConfig(limit=limit),
                    teacher=teacher,
                    progress=advance,
                )
                (target / "edge.json").write_bytes(orjson.dumps(model.to_json()))
                seconds = time.perf_counter() - started
                how = "distilled from the server tier" if teacher is not None else "gold labels"
                progress.console.print(
                    f"edge tier ({how}) written to {target / 'edge.json'} ({seconds:.0f} s)"
                )
                router_path = target / "router.json"
                if not ServerArtifacts.in_directory(target).exist():
                    # A router belongs to one edge model and routes to a server tier.
                    router_path.unlink(missing_ok=True)
                    return
                from nexus.emotion.training.router import train_router  # noqa: PLC0415

                router = train_router(
                    train=train_set,
                    dev=dev_set,
                    vad_train=vad_train,
                    edge=model,
                    teacher=teacher,
                    version=f"router-{stamp}",
                    config=EdgeTrainingConfig(limit=limit),
                    progress=advance,
                )
                router_path.write_bytes(orjson.dumps(router.to_json()))
                progress.console.print(f"cascade router written to {router_path}")
    except NexusError as exc:
        fail(str(exc))

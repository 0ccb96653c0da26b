"""PII redaction on the ingest path: per-message latency, prefilter throughput, and recall and
precision on the labelled sales-chat set.

What is timed, per call, in process, on ``tests/privacy/data/pii_sales_chat.jsonl`` (synthetic
chat and contact-form messages, about three in five with planted PII):

* **redact**: ``PiiRedactor.redact_text`` of one message under a mixed policy (emails hashed
  under a workspace key, everything else masked): prefilter, presidio analysis with NEXUS's
  pattern recognizers, conflict resolution, presidio-anonymizer substitution.
* **detect**: ``PiiDetector.detect`` alone (no substitution).
* Baseline, same run, same messages: **presidio's stock recognizers** for the same entities
  (email with the bundled suffix list so that nothing is fetched, phone via
  ``PhoneNumberMatcher`` over the same regions, card, IBAN, IP; no street recognizer, presidio
  has none), called on every message with no prefilter, on the same model-free NLP engine.
* **plain strings**: strings/s of ``detect`` on event properties with no PII that the
  prefilter rejects (``/pricing``, ``Signup Clicked`` ...), so presidio never sees them;
  baseline: the same strings sent to presidio's analyzer directly. (A string that passes the
  prefilter, e.g. one with seven or more digits, costs a presidio call, as in the message
  series.)

Latency is per message over several passes after a warm-up (p50/p99 are nearest-rank); the
analyzer is built once before timing (its build time is reported separately). Recall and
precision use :mod:`nexus.privacy.pii_eval`: a finding is correct when it overlaps a labelled
span of its type.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.report import REPO_ROOT, LatencyStats, Section, fmt, table
from nexus.privacy.pii import BUILTIN_ENTITIES, PiiDetector, PiiPolicy, PiiRedactor
from nexus.privacy.pii_eval import LabelledSpan, evaluate, parse_labelled, score

TITLE = "PII detection and redaction"

LABELLED_SET = REPO_ROOT / "tests" / "privacy" / "data" / "pii_sales_chat.jsonl"
PASSES = 5
PLAIN_ROUNDS = 5_000
PLAIN = [
    "/pricing",
    "Signup Clicked",
    "Button Clicked",
    "https://acme.example/features#integrations",
    "Pro",
    "en-US",
    "Europe/Berlin",
    "checkout_step_2",
    "Safari/605.1.15",
    "Compare plans",
]
BAR_RECALL = {"EMAIL_ADDRESS": 0.95, "PHONE_NUMBER": 0.95, "CREDIT_CARD": 0.95}
BAR_PRECISION = {"EMAIL_ADDRESS": 0.9, "PHONE_NUMBER": 0.9, "CREDIT_CARD": 0.9}
BAR_FLOOR = 0.8  # IBAN, IP, street: recall and precision
BAR_P99_MS = 5.0
BAR_PLAIN_PER_S = 100_000


def _latencies(call: Callable[[str], object], texts: Sequence[str]) -> LatencyStats:
    for text in texts:  # warm-up
        call(text)
    latencies: list[int] = []
    started = time.perf_counter()
    for _ in range(PASSES):
        for text in texts:
            t0 = time.perf_counter_ns()
            call(text)
            latencies.append(time.perf_counter_ns() - t0)
    return LatencyStats.from_ns(latencies, time.perf_counter() - started)


def _per_second(call: Callable[[str], object], texts: Sequence[str], rounds: int) -> float:
    for text in texts:
        call(text)
    started = time.perf_counter()
    for _ in range(rounds):
        for text in texts:
            call(text)
    return rounds * len(texts) / (time.perf_counter() - started)


def _stock_presidio() -> Callable[[str], list[Any]]:
    """presidio's own recognizers for the same entities, analyzing every string."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
    )

    from nexus.privacy import pii_recognizers

    registry = RecognizerRegistry(
        recognizers=[
            # the stock pattern; the stock validation would fetch the public suffix list
            pii_recognizers.OfflineEmailRecognizer(),
            PhoneRecognizer(supported_regions=pii_recognizers.DEFAULT_PHONE_REGIONS),
            CreditCardRecognizer(),
            IbanRecognizer(),
            IpRecognizer(),
        ],
        supported_languages=["en"],
    )
    engine = AnalyzerEngine(registry=registry, nlp_engine=pii_recognizers.PatternOnlyNlpEngine())

    def analyze(text: str) -> list[Any]:
        return list(engine.analyze(text=text, language="en"))

    return analyze


def _stock_findings(
    analyze: Callable[[str], list[Any]], texts: Sequence[str]
) -> list[list[LabelledSpan]]:
    return [[LabelledSpan(r.entity_type, r.start, r.end) for r in analyze(text)] for text in texts]


def run() -> Section:
    samples = parse_labelled(LABELLED_SET.read_text(encoding="utf-8").splitlines())
    texts = [sample.text for sample in samples]
    with_pii = [sample.text for sample in samples if sample.spans]
    without_pii = [sample.text for sample in samples if not sample.spans]

    from nexus.privacy import pii_recognizers

    # Cold start after imports: build the analyzer, compile its patterns on first use, load
    # the bundled public suffix list.
    pii_recognizers.cached_analyzer.cache_clear()
    pii_recognizers._offline_tld_extract.cache_clear()
    started = time.perf_counter()
    PiiDetector().detect("ada@example.com, +49 30 12345678, 4111 1111 1111 1111, 10.0.0.7")
    cold_ms = (time.perf_counter() - started) * 1000

    redactor = PiiRedactor(
        PiiPolicy(entity_actions={"EMAIL_ADDRESS": "hash"}),
        hash_key=b"bench-workspace-key-0123456789",
    )
    detector = redactor.detector
    stock = _stock_presidio()

    redact_all = _latencies(redactor.redact_text, texts)
    redact_pii = _latencies(redactor.redact_text, with_pii)
    redact_none = _latencies(redactor.redact_text, without_pii)
    detect_all = _latencies(detector.detect, texts)
    stock_all = _latencies(stock, texts)

    plain_nexus = _per_second(detector.detect, PLAIN, PLAIN_ROUNDS)
    plain_stock = _per_second(stock, PLAIN, max(1, PLAIN_ROUNDS // 50))
    before = detector.analyzed
    for text in PLAIN:
        detector.detect(text)
    plain_to_presidio = detector.analyzed - before

    scores = evaluate(PiiDetector().detect, samples)
    stock_scores = score(samples, _stock_findings(stock, texts))

    def ratio(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:.3f}"

    latency_rows = [
        ["redact, all messages", str(len(texts)), fmt(redact_all.p50_ms, 3),
         fmt(redact_all.p99_ms, 3), fmt(redact_all.per_second, 0)],
        ["redact, messages with PII", str(len(with_pii)), fmt(redact_pii.p50_ms, 3),
         fmt(redact_pii.p99_ms, 3), fmt(redact_pii.per_second, 0)],
        ["redact, messages without PII", str(len(without_pii)), fmt(redact_none.p50_ms, 3),
         fmt(redact_none.p99_ms, 3), fmt(redact_none.per_second, 0)],
        ["detect only, all messages", str(len(texts)), fmt(detect_all.p50_ms, 3),
         fmt(detect_all.p99_ms, 3), fmt(detect_all.per_second, 0)],
        ["baseline: stock presidio recognizers, all messages", str(len(texts)),
         fmt(stock_all.p50_ms, 3), fmt(stock_all.p99_ms, 3), fmt(stock_all.per_second, 0)],
    ]  # fmt: skip
    quality_rows = []
    for entity in BUILTIN_ENTITIES:
        ours = scores.get(entity)
        theirs = stock_scores.get(entity)
        quality_rows.append(
            [
                entity,
                str(ours.labelled if ours else 0),
                ratio(ours.recall if ours else math.nan),
                ratio(ours.precision if ours else math.nan),
                ratio(theirs.recall if theirs else math.nan),
                ratio(theirs.precision if theirs else math.nan),
            ]
        )
    extra = sorted(set(scores) - set(BUILTIN_ENTITIES))

    def bar(name: str, passed: bool, figure: str) -> list[str]:
        return [name, "pass" if passed else "FAIL", figure]

    bars = []
    for entity in BUILTIN_ENTITIES:
        s = scores[entity]
        floor_r = BAR_RECALL.get(entity, BAR_FLOOR)
        floor_p = BAR_PRECISION.get(entity, BAR_FLOOR)
        bars.append(bar(f"{entity} recall >= {floor_r:g}", s.recall >= floor_r, ratio(s.recall)))
        bars.append(
            bar(f"{entity} precision >= {floor_p:g}", s.precision >= floor_p, ratio(s.precision))
        )
    bars.append(
        bar(
            f"redact p99 <= {BAR_P99_MS:g} ms",
            redact_all.p99_ms <= BAR_P99_MS,
            f"{redact_all.p99_ms:.3f} ms",
        )
    )
    bars.append(
        bar(
            f"plain strings >= {BAR_PLAIN_PER_S:,}/s",
            plain_nexus >= BAR_PLAIN_PER_S,
            f"{plain_nexus:,.0f}/s",
        )
    )

    markdown = "\n\n".join(
        [
            f"{len(texts)} labelled sales-chat messages ({len(with_pii)} with PII, "
            f"{len(without_pii)} without; English, German, French, Dutch), each redacted "
            f"{PASSES} times after a warm-up; ms per message, nearest-rank percentiles. Policy: "
            "emails hashed (HMAC-SHA256), other entities masked. First call after imports "
            "(building the analyzer, cached per configuration; compiling patterns; loading the "
            f"bundled public suffix list): {cold_ms:,.0f} ms. Baseline, same "
            "run: presidio's stock recognizers for the same entities on the same model-free "
            "NLP engine, no prefilter.",
            table(
                ["series", "messages", "p50 ms", "p99 ms", "messages/s"],
                latency_rows,
                "lrrrr",
            ),
            f"Plain event properties ({len(PLAIN)} strings such as `/pricing`, `Signup "
            f"Clicked`, a product token): {plain_nexus:,.0f} strings/s through `detect`, "
            f"{plain_to_presidio} of {len(PLAIN)} reaching presidio; baseline, presidio's "
            f"analyzer on each: {plain_stock:,.0f} strings/s "
            f"({plain_nexus / plain_stock:,.0f}x).",
            "Recall and precision per entity (a finding counts when it overlaps a labelled "
            "span of its type):",
            table(
                ["entity", "labelled", "recall", "precision", "stock recall", "stock precision"],
                quality_rows,
                "lrrrrr",
            ),
            (
                f"Entities reported but never labelled: {', '.join(extra)}."
                if extra
                else "No other entity was reported."
            ),
            table(["bar", "result", "figure"], bars, "lll"),
        ]
    )
    summary = [
        f"redact p50 {redact_all.p50_ms:.3f} ms, p99 {redact_all.p99_ms:.3f} ms "
        f"(stock presidio p50 {stock_all.p50_ms:.3f} ms, p99 {stock_all.p99_ms:.3f} ms)",
        f"plain strings {plain_nexus:,.0f}/s (presidio on each {plain_stock:,.0f}/s)",
        "recall/precision "
        + ", ".join(
            f"{e.split('_')[0].lower()} {ratio(scores[e].recall)}/{ratio(scores[e].precision)}"
            for e in BUILTIN_ENTITIES
        ),
    ]
    return Section(TITLE, markdown, summary)

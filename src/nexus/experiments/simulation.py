"""The visitor simulator's world: seeded visitors with emotions, what they write, and a
ground-truth conversion model whose best UI adaptation depends on the visitor's emotion.

Pure (no I/O): ``nexus simulate`` drives a running NEXUS with it over HTTP, and
``benchmarks/bench_bandits.py`` measures bandit regret in it offline. Because the truth is
known, regret is computed exactly (expected, not sampled: ``optimal_probability(v) -
conversion_probability(v, chosen)``) and a policy is judged against the state-optimal oracle.

Visitors
    Each visitor has a hidden *archetype* (:data:`ARCHETYPES`): ``frustrated`` (anger,
    annoyance; valence -), ``anxious`` (fear, nervousness), ``excited`` (joy, excitement),
    ``curious`` (curiosity, close to neutral) or ``sad`` (sadness, disappointment), drawn
    with :data:`ARCHETYPE_WEIGHTS`. Its latent 11-dimension emotion vector (Plutchik-8 in
    [0, 1] in :data:`~nexus.emotion.models.taxonomy.PLUTCHIK` order, then valence, arousal,
    dominance in [-1, 1]) is ``settled + intensity · (profile - settled) + N(0, 0.05²)``,
    clipped: the archetype's profile (:data:`PROFILES`) pulled toward the calm
    :data:`SETTLED` state by an intensity drawn uniformly in [0.5, 1]. Attributes (country,
    device, plan interest, returning) and preferences (price sensitivity, chattiness) are
    drawn independently of the archetype.

Ground truth (:func:`conversion_probability`)
    ``logit p = BASE_LOGIT[archetype] + intensity · ADAPTATION_EFFECT[archetype][adaptation]
    + attribute effects + experiment variant effects``.

    * :data:`ADAPTATION_EFFECT` is the heart of it: ``calm`` is best for frustrated
      visitors, ``reassuring`` for anxious and sad ones, ``urgent`` for excited ones and
      ``neutral`` for curious ones, while ``urgent`` hurts the unhappy archetypes. Effects
      scale with intensity but never change sign, so the best adaptation of a visitor is
      the best of its archetype (:func:`optimal_adaptation`). No single adaptation is best
      for every archetype, so the best fixed arm (:func:`best_fixed_adaptation`) is strictly
      worse than the state-optimal choice (:func:`population_conversion` gives both,
      exactly, by summing over the discrete attributes and integrating the intensity).
    * Attribute effects (:data:`DEVICE_EFFECT`, :data:`PLAN_EFFECT`,
      :data:`RETURNING_EFFECT`) shift every adaptation alike: they move conversion, not
      which adaptation is best.
    * Experiments (:class:`ExperimentTruth`): a variant adds ``lift + price_lift ·
      price_sensitivity`` to the logit; the default ``pricing-test`` has a control ``a`` and
      a cheaper ``b`` whose lift grows with the visitor's price sensitivity (mean
      ``DEFAULT_EXPERIMENTS[0].mean_lift("b")`` on the logit). Unknown experiments or
      variants have no effect.

Journeys (:meth:`Simulation.opening`, :meth:`Simulation.journey`)
    A visit is Segment-shaped ``track`` messages: ``Landing Viewed`` and a first ``Chat
    Message Sent`` (property ``text``: the text NEXUS reads for emotion) *before* the
    decision, then ``Offer Viewed`` → ``Checkout Started`` → ``Order Completed`` after it.
    Each visitor carries one uniform draw ``luck`` (common random numbers: every policy
    shown the same visitor faces the same draw): with ``p`` the conversion probability of
    what was served, the visitor reaches the offer when ``luck < p**0.4``, checkout when
    ``luck < p**0.75`` and orders when ``luck < p``, so drop-off follows the same model and a
    visitor converts exactly when ``luck < p``.

Emotional dynamics (:func:`drift`)
    After the decision the latent vector moves at each step as an Ornstein-Uhlenbeck process
    (the model the trajectory filter assumes, :mod:`nexus.emotion.models.trajectory`)
    toward ``settled + (1 - s) · (start - settled)``, with the soothing ``s =``
    :data:`SOOTHING` ``[archetype][adaptation]``: a frustrated visitor served ``calm``
    settles most of the way toward calm within a few minutes (half-life
    :data:`DRIFT_HALF_LIFE_S`), one served ``urgent`` gets more worked up (``s < 0``). What
    the visitor writes later is in the register of the archetype nearest the current vector
    (:func:`register_of`). Conversion depends on the state at the decision only.

Texts (:func:`compose_text`)
    Templated sentences of our own per archetype and kind (chat, form, review), with product
    words, prices, openers and closers mixed in: several thousand distinct texts per
    archetype, in a register NEXUS's emotion models read roughly right.

Observation (:func:`observe_emotion`)
    What NEXUS would read is the latent vector plus ``N(0, sigma²)`` per dimension
    (``sigma`` = :data:`OBSERVATION_NOISE` by default), clipped to the ranges; bandits get
    that, never the archetype label.

Every random draw comes from a generator seeded by ``(seed, visitor index, purpose)``, so a
visitor is the same whatever order visitors are generated or used in.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

from nexus.emotion.models.taxonomy import PLUTCHIK, VAD

FloatArray = NDArray[np.float64]
Name = TypeVar("Name", bound=str)
Archetype = Literal["frustrated", "anxious", "excited", "curious", "sad"]
TextKind = Literal["chat", "form", "review"]

DIMENSIONS: Final[tuple[str, ...]] = (*PLUTCHIK, *VAD)
ARCHETYPES: Final[tuple[Archetype, ...]] = ("frustrated", "anxious", "excited", "curious", "sad")
ARCHETYPE_WEIGHTS: Final[Mapping[Archetype, float]] = {
    "frustrated": 0.20,
    "anxious": 0.20,
    "excited": 0.20,
    "curious": 0.25,
    "sad": 0.15,
}
ADAPTATIONS: Final[tuple[str, ...]] = ("neutral", "calm", "reassuring", "urgent")
DEFAULT_ADAPTATION: Final = "neutral"

# --- emotion profiles ------------------------------------------------------------------------
#                 joy  trust fear surpr sadn disg anger antic  valence arousal dominance
PROFILES: Final[Mapping[Archetype, tuple[float, ...]]] = {
    "frustrated": (0.05, 0.10, 0.15, 0.20, 0.25, 0.35, 0.80, 0.15, -0.60, 0.60, 0.30),
    "anxious": (0.05, 0.10, 0.80, 0.25, 0.30, 0.10, 0.15, 0.55, -0.40, 0.50, -0.50),
    "excited": (0.85, 0.45, 0.05, 0.40, 0.03, 0.03, 0.05, 0.75, 0.75, 0.70, 0.40),
    "curious": (0.20, 0.45, 0.05, 0.50, 0.05, 0.05, 0.05, 0.40, 0.15, 0.20, 0.10),
    "sad": (0.05, 0.15, 0.20, 0.15, 0.80, 0.15, 0.10, 0.10, -0.60, -0.40, -0.40),
}
# The calm state every archetype relaxes toward (and is pulled toward at low intensity).
SETTLED: Final[tuple[float, ...]] = (0.15, 0.30, 0.05, 0.10, 0.05, 0.05, 0.05, 0.20, 0.10, 0.0, 0.1)
# Each archetype's defining Plutchik emotions (checked by the tests against the profiles).
DEFINING_EMOTIONS: Final[Mapping[Archetype, tuple[str, ...]]] = {
    "frustrated": ("anger",),
    "anxious": ("fear",),
    "excited": ("joy",),
    "curious": ("surprise", "trust"),
    "sad": ("sadness",),
}
INTENSITY_RANGE: Final = (0.5, 1.0)
INDIVIDUAL_SPREAD: Final = 0.05
OBSERVATION_NOISE: Final = 0.15

# --- the ground-truth conversion model -------------------------------------------------------


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# Conversion of a visitor of each archetype shown the neutral UI, before attribute effects.
BASE_CONVERSION: Final[Mapping[Archetype, float]] = {
    "frustrated": 0.035,
    "anxious": 0.05,
    "excited": 0.11,
    "curious": 0.07,
    "sad": 0.045,
}
BASE_LOGIT: Final[Mapping[Archetype, float]] = {a: _logit(p) for a, p in BASE_CONVERSION.items()}
# Logit effect of each UI adaptation at full intensity (scaled by the visitor's intensity).
# The row maximum is each archetype's best adaptation; no column is best in every row.
ADAPTATION_EFFECT: Final[Mapping[Archetype, Mapping[str, float]]] = {
    "frustrated": {"neutral": 0.0, "calm": 0.90, "reassuring": 0.35, "urgent": -0.70},
    "anxious": {"neutral": 0.0, "calm": 0.35, "reassuring": 0.80, "urgent": -0.80},
    "excited": {"neutral": 0.0, "calm": -0.35, "reassuring": -0.15, "urgent": 0.75},
    "curious": {"neutral": 0.0, "calm": -0.10, "reassuring": -0.05, "urgent": -0.25},
    "sad": {"neutral": 0.0, "calm": 0.20, "reassuring": 0.70, "urgent": -0.60},
}
COUNTRIES: Final[Mapping[str, float]] = {
    "US": 0.35,
    "GB": 0.12,
    "DE": 0.12,
    "FR": 0.10,
    "CA": 0.08,
    "IN": 0.13,
    "BR": 0.10,
}
DEVICES: Final[Mapping[str, float]] = {"desktop": 0.45, "mobile": 0.45, "tablet": 0.10}
PLANS: Final[Mapping[str, float]] = {"basic": 0.5, "pro": 0.35, "team": 0.15}
RETURNING_SHARE: Final = 0.3
DEVICE_EFFECT: Final[Mapping[str, float]] = {"desktop": 0.0, "mobile": -0.25, "tablet": -0.10}
PLAN_EFFECT: Final[Mapping[str, float]] = {"basic": 0.0, "pro": -0.10, "team": -0.20}
RETURNING_EFFECT: Final = 0.35
PLAN_PRICES: Final[Mapping[str, int]] = {"basic": 19, "pro": 49, "team": 99}


@dataclass(frozen=True, slots=True)
class ExperimentTruth:
    """The true effect of one experiment's variants on the conversion logit.

    A visitor served ``variant`` gets ``lifts[variant] + price_lifts[variant] ·
    price_sensitivity``; variants not listed have no effect (the control's is zero).
    """

    key: str
    lifts: Mapping[str, float]
    price_lifts: Mapping[str, float] = field(default_factory=dict)
    prices: Mapping[str, float] = field(default_factory=dict)

    def effect(self, variant: str, price_sensitivity: float) -> float:
        return self.lifts.get(variant, 0.0) + self.price_lifts.get(variant, 0.0) * price_sensitivity

    def mean_lift(self, variant: str) -> float:
        """The logit lift averaged over visitors (price sensitivity ~ Beta(2, 2), mean 0.5)."""
        return self.effect(variant, PRICE_SENSITIVITY_MEAN)


PRICE_SENSITIVITY_MEAN: Final = 0.5  # Beta(2, 2)
DEFAULT_EXPERIMENTS: Final[tuple[ExperimentTruth, ...]] = (
    ExperimentTruth(
        key="pricing-test",
        lifts={"a": 0.0, "b": 0.0},
        price_lifts={"b": 0.40},
        prices={"a": 1.0, "b": 0.8},  # b shows a 20 % lower price
    ),
)
# How much each adaptation soothes each archetype toward SETTLED in [-1, 1] (negative: the
# visitor gets more worked up). Drives what visitors write after the decision only.
SOOTHING: Final[Mapping[Archetype, Mapping[str, float]]] = {
    "frustrated": {"neutral": 0.1, "calm": 0.7, "reassuring": 0.4, "urgent": -0.3},
    "anxious": {"neutral": 0.1, "calm": 0.5, "reassuring": 0.7, "urgent": -0.3},
    "excited": {"neutral": 0.1, "calm": 0.4, "reassuring": 0.2, "urgent": -0.1},
    "curious": {"neutral": 0.1, "calm": 0.2, "reassuring": 0.1, "urgent": 0.0},
    "sad": {"neutral": 0.1, "calm": 0.3, "reassuring": 0.6, "urgent": -0.2},
}
DRIFT_HALF_LIFE_S: Final = 90.0
DRIFT_SPREAD: Final = 0.05  # stationary standard deviation of the drift around its target
# Reaching the offer, checkout and an order: luck below p**0.4, p**0.75 and p.
STAGE_EXPONENTS: Final = (0.4, 0.75, 1.0)
JOURNEY_STEPS: Final = ("Landing Viewed", "Offer Viewed", "Checkout Started", "Order Completed")
CHAT_EVENT: Final = "Chat Message Sent"
FORM_EVENT: Final = "Form Submitted"
REVIEW_EVENT: Final = "Review Submitted"
GOAL_EVENT: Final = "Order Completed"
DEFAULT_START: Final = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class VisitorAttributes:
    country: str
    device: str
    plan_interest: str
    returning: bool

    def as_dict(self) -> dict[str, Any]:
        """What ``decide`` gets as targeting attributes."""
        return {
            "country": self.country,
            "device": self.device,
            "plan": self.plan_interest,
            "returning": self.returning,
        }


@dataclass(frozen=True, slots=True)
class Preferences:
    """``price_sensitivity`` in [0, 1] scales price variants' lift; ``chattiness`` in [0, 1]
    is the chance to write at each later step of the journey."""

    price_sensitivity: float
    chattiness: float


@dataclass(frozen=True, slots=True)
class Visitor:
    """One simulated visitor; ``vector`` is the latent emotion in :data:`DIMENSIONS` order."""

    index: int
    id: str
    archetype: Archetype
    intensity: float
    vector: tuple[float, ...]
    attributes: VisitorAttributes
    preferences: Preferences
    arrival: datetime
    luck: float  # the visitor's one uniform draw deciding conversion and drop-off

    @property
    def emotion(self) -> dict[str, float]:
        """The latent vector by dimension name (Plutchik-8, valence, arousal, dominance)."""
        return dict(zip(DIMENSIONS, self.vector, strict=True))


def _clip_vector(values: FloatArray) -> FloatArray:
    plutchik = np.clip(values[: len(PLUTCHIK)], 0.0, 1.0)
    vad = np.clip(values[len(PLUTCHIK) :], -1.0, 1.0)
    return np.concatenate([plutchik, vad])


def archetype_vector(archetype: Archetype, intensity: float = 1.0) -> FloatArray:
    """The noise-free vector of an archetype at an intensity (0: settled, 1: the profile)."""
    settled = np.asarray(SETTLED, dtype=np.float64)
    profile = np.asarray(PROFILES[archetype], dtype=np.float64)
    return np.asarray(settled + intensity * (profile - settled), dtype=np.float64)


def register_of(vector: Sequence[float] | FloatArray) -> Archetype:
    """The archetype whose full-intensity profile is nearest the vector, with the settled
    state counted as ``curious`` (its register is the neutral one)."""
    point = np.asarray(vector, dtype=np.float64)
    best: Archetype = "curious"
    best_distance = float(np.sum((point - np.asarray(SETTLED)) ** 2))
    for archetype in ARCHETYPES:
        distance = float(np.sum((point - np.asarray(PROFILES[archetype])) ** 2))
        if distance < best_distance:
            best, best_distance = archetype, distance
    return best


def _experiment_effect(
    variants: Mapping[str, str] | None,
    price_sensitivity: float,
    experiments: Sequence[ExperimentTruth],
) -> float:
    if not variants:
        return 0.0
    return sum(
        truth.effect(variants[truth.key], price_sensitivity)
        for truth in experiments
        if truth.key in variants
    )


def _conversion(
    archetype: Archetype,
    intensity: float,
    attributes: VisitorAttributes,
    adaptation: str,
    extra_logit: float = 0.0,
) -> float:
    effects = ADAPTATION_EFFECT[archetype]
    logit = (
        BASE_LOGIT[archetype]
        + intensity * effects.get(adaptation, 0.0)
        + DEVICE_EFFECT.get(attributes.device, 0.0)
        + PLAN_EFFECT.get(attributes.plan_interest, 0.0)
        + (RETURNING_EFFECT if attributes.returning else 0.0)
        + extra_logit
    )
    return _sigmoid(logit)


def conversion_probability(
    visitor: Visitor,
    adaptation: str,
    variants: Mapping[str, str] | None = None,
    *,
    experiments: Sequence[ExperimentTruth] = DEFAULT_EXPERIMENTS,
) -> float:
    """The true probability that ``visitor`` orders when served ``adaptation`` and the
    experiment ``variants`` (``{experiment key: variant key}``). An adaptation outside
    :data:`ADAPTATIONS` counts as ``neutral`` (no effect)."""
    extra = _experiment_effect(variants, visitor.preferences.price_sensitivity, experiments)
    return _conversion(
        visitor.archetype, visitor.intensity, visitor.attributes, adaptation, extra_logit=extra
    )


def conversion_probabilities(
    visitor: Visitor,
    variants: Mapping[str, str] | None = None,
    *,
    experiments: Sequence[ExperimentTruth] = DEFAULT_EXPERIMENTS,
) -> dict[str, float]:
    """:func:`conversion_probability` of every adaptation in :data:`ADAPTATIONS`."""
    return {
        adaptation: conversion_probability(visitor, adaptation, variants, experiments=experiments)
        for adaptation in ADAPTATIONS
    }


def best_adaptation_for(archetype: Archetype) -> str:
    """The adaptation with the largest effect for an archetype (ties: :data:`ADAPTATIONS`
    order); intensity scales effects without changing their order."""
    effects = ADAPTATION_EFFECT[archetype]
    return max(ADAPTATIONS, key=lambda a: (effects[a], -ADAPTATIONS.index(a)))


BEST_ADAPTATION: Final[Mapping[str, str]] = {a: best_adaptation_for(a) for a in ARCHETYPES}


def optimal_adaptation(visitor: Visitor) -> str:
    """What the state-optimal oracle serves this visitor."""
    return best_adaptation_for(visitor.archetype)


def optimal_probability(
    visitor: Visitor,
    variants: Mapping[str, str] | None = None,
    *,
    experiments: Sequence[ExperimentTruth] = DEFAULT_EXPERIMENTS,
) -> float:
    """The conversion probability under the state-optimal adaptation."""
    return conversion_probability(
        visitor, optimal_adaptation(visitor), variants, experiments=experiments
    )


def _intensity_nodes(count: int = 64) -> FloatArray:
    """Midpoints of ``count`` equal cells of the intensity range (uniform quadrature)."""
    low, high = INTENSITY_RANGE
    return low + (np.arange(count) + 0.5) * (high - low) / count


def population_conversion(
    adaptation: str | None,
    *,
    archetype_weights: Mapping[Archetype, float] = ARCHETYPE_WEIGHTS,
) -> float:
    """Expected conversion over the visitor population (no experiment variants) when every
    visitor is served ``adaptation``, or, with ``None``, their state-optimal adaptation.

    Exact over the archetypes and discrete attributes; the uniform intensity is integrated
    with a 64-point midpoint rule (error far below 1e-6). Country has no effect.
    """
    total_weight = sum(archetype_weights.values())
    nodes = _intensity_nodes()
    expected = 0.0
    for archetype, weight in archetype_weights.items():
        served = best_adaptation_for(archetype) if adaptation is None else adaptation
        for device, p_device in DEVICES.items():
            for plan, p_plan in PLANS.items():
                for returning, p_returning in (
                    (True, RETURNING_SHARE),
                    (False, 1 - RETURNING_SHARE),
                ):
                    attributes = VisitorAttributes("US", device, plan, returning)
                    mean = float(
                        np.mean(
                            [_conversion(archetype, float(i), attributes, served) for i in nodes]
                        )
                    )
                    expected += weight / total_weight * p_device * p_plan * p_returning * mean
    return expected


def best_fixed_adaptation(
    *, archetype_weights: Mapping[Archetype, float] = ARCHETYPE_WEIGHTS
) -> str:
    """The single adaptation with the highest expected conversion over the population."""
    return max(
        ADAPTATIONS,
        key=lambda a: population_conversion(a, archetype_weights=archetype_weights),
    )


def observe_emotion(
    vector: Sequence[float] | FloatArray,
    rng: np.random.Generator,
    *,
    noise: float = OBSERVATION_NOISE,
) -> dict[str, float]:
    """A reading of a latent vector as NEXUS would see it: ``N(0, noise²)`` added to each
    dimension, clipped to [0, 1] (Plutchik) and [-1, 1] (valence, arousal, dominance)."""
    point = np.asarray(vector, dtype=np.float64)
    observed = _clip_vector(point + rng.normal(0.0, noise, size=point.shape))
    return dict(zip(DIMENSIONS, (round(float(v), 6) for v in observed), strict=True))


def drift(
    vector: Sequence[float] | FloatArray,
    archetype: Archetype,
    adaptation: str,
    seconds: float,
    rng: np.random.Generator,
    *,
    start: Sequence[float] | FloatArray | None = None,
) -> FloatArray:
    """One exact Ornstein-Uhlenbeck step of ``seconds`` toward the soothed target.

    The target is ``settled + (1 - s) · (start - settled)`` with ``s`` =
    ``SOOTHING[archetype][adaptation]`` (0 for an unknown adaptation) and ``start`` the
    vector at the decision (default: ``vector``); mean reversion has half-life
    :data:`DRIFT_HALF_LIFE_S` and stationary spread :data:`DRIFT_SPREAD`.
    """
    point = np.asarray(vector, dtype=np.float64)
    origin = point if start is None else np.asarray(start, dtype=np.float64)
    settled = np.asarray(SETTLED)
    soothing = SOOTHING[archetype].get(adaptation, 0.0)
    target = settled + (1.0 - soothing) * (origin - settled)
    keep = math.exp(-math.log(2.0) * max(seconds, 0.0) / DRIFT_HALF_LIFE_S)
    spread = DRIFT_SPREAD * math.sqrt(1.0 - keep * keep)
    moved = target + keep * (point - target) + rng.normal(0.0, spread, size=point.shape)
    return _clip_vector(moved)


# --- texts -----------------------------------------------------------------------------------

PRODUCTS: Final = (
    "Pro plan",
    "starter kit",
    "subscription",
    "annual plan",
    "team plan",
    "headphones",
    "running shoes",
    "coffee grinder",
    "desk lamp",
    "backpack",
)
THINGS: Final = (
    "checkout",
    "payment form",
    "cart",
    "website",
    "app",
    "login page",
    "discount code",
    "order page",
    "signup form",
    "delivery tracker",
)

CHAT_TEMPLATES: Final[Mapping[Archetype, tuple[str, ...]]] = {
    "frustrated": (
        "The {thing} keeps failing and I'm getting really annoyed.",
        "Why does the {thing} reset every time I click back? This is ridiculous.",
        "I've tried three times to pay for the {product} and it still won't go through.",
        "Seriously, the {thing} is broken again.",
        "This is so annoying, the discount code doesn't work on the {product}.",
        "I'm fed up with the {thing}, nothing loads.",
        "Your {thing} just charged me {price} more than the page said. Unacceptable.",
        "Terrible experience so far, the {thing} keeps throwing errors.",
        "I hate that I need an account just to see the price of the {product}.",
        "Stop asking for my email, I just want to buy the {product}!",
        "How hard can it be to make a {thing} that works?",
        "The {thing} is a mess and I'm losing my patience.",
        "I'm angry, I waited ten minutes for the {thing} to load.",
        "The {thing} logged me out again, what a joke.",
        "What a waste of time, the {product} page won't even open.",
        "I'm sick of this {thing}, it's the worst I've used.",
    ),
    "anxious": (
        "I'm worried my card will be charged twice for the {product}.",
        "Is it safe to enter my card details in this {thing}?",
        "I'm nervous about committing to the {product}, what if it doesn't work for us?",
        "What happens if I can't cancel the {product} later?",
        "I'm scared I'll lose my data if I switch to the {product}.",
        "Will I be charged {price} right away? I'm a bit anxious about that.",
        "I'm not sure this {thing} is secure, is my payment protected?",
        "I'm afraid I picked the wrong {product}, can I still change it?",
        "Is there a risk the {product} renews without telling me?",
        "I'm worried about hidden fees on the {product}.",
        "What if the {thing} fails halfway through the payment?",
        "Nervous first-time buyer here, is the {product} refundable?",
        "I'm really nervous about paying {price} online, is this legit?",
        "I'm afraid the {product} won't arrive before my trip.",
        "I'm scared my payment for the {product} will fail.",
        "This {thing} makes me nervous, I don't trust it with my card.",
        "I'm afraid I'll pay {price} and get nothing.",
        "I'm anxious about the {product}, I've been scammed before.",
        "I'm terrified of making the wrong choice with the {product}.",
    ),
    "excited": (
        "Wow, the {product} looks amazing!",
        "I love this, can't wait to try the {product}!",
        "This is exactly what I needed, the {product} is perfect!",
        "So excited to get started with the {product}!",
        "The new {thing} is fantastic, great job!",
        "Yes! {price} for the {product} is a great deal!",
        "Awesome, I'm buying the {product} today!",
        "The {thing} is so smooth, I love it!",
        "Can't wait to show my friends the {product}!",
        "Brilliant, the {product} has everything I wanted!",
        "Amazing deal, I'm so happy I found the {product}!",
        "This is wonderful, thank you so much!",
        "I'm thrilled, the {product} is even better than the photos!",
        "Best price I've seen for the {product}, love it!",
    ),
    "curious": (
        "How does the {product} compare to the basic plan?",
        "Does the {product} include a free trial?",
        "What payment methods does the {thing} accept?",
        "Can I use the {product} on more than one device?",
        "I'm curious, what's the difference between the {product} and the team plan?",
        "Is the {price} price per month or per year?",
        "Which colours does the {product} come in?",
        "Do you ship the {product} to Canada?",
        "Could you tell me more about the {product}?",
        "How long does delivery of the {product} take?",
        "Is there a student discount on the {product}?",
        "Where can I read the specifications of the {product}?",
        "What sizes does the {product} come in?",
        "Does the {thing} save my cart if I come back tomorrow?",
    ),
    "sad": (
        "I'm disappointed, the {product} isn't what I hoped for.",
        "Sadly the {product} is out of my budget now.",
        "I lost my job, so I probably can't afford the {product}.",
        "It's a shame the {product} doesn't come in my size.",
        "I'm sad the discount on the {product} expired.",
        "Honestly a bit let down by the {thing}.",
        "I miss the old {thing}, the new one feels empty.",
        "Unfortunately the {product} didn't arrive in time for my mom's birthday.",
        "Feeling down, I really wanted the {product} but it's sold out.",
        "I regret cancelling my {product}, it was the one thing I liked.",
        "My last order never came and I'm heartbroken.",
        "It's disappointing that the {product} costs {price} now.",
        "I'm so sad, the {product} I saved up for is gone.",
    ),
}
REVIEW_TEMPLATES: Final[Mapping[Archetype, tuple[str, ...]]] = {
    "frustrated": (
        "The {product} is fine but the {thing} was a nightmare. Two stars.",
        "Ordering the {product} took forever, the {thing} kept crashing. Annoying.",
        "Got the {product} in the end, no thanks to your awful {thing}.",
        "Way too much hassle for {price}. Fix your {thing}.",
    ),
    "anxious": (
        "I was nervous paying for the {product}, still not sure it went through.",
        "Ordered the {product}, a little worried about the delivery date.",
        "Hope the {product} is as described, I'm slightly anxious I paid {price} for nothing.",
        "Bought the {product}, but I'm afraid the {thing} charged me twice.",
    ),
    "excited": (
        "Love the {product}! Five stars, the {thing} was super easy.",
        "Amazing {product}, totally worth {price}!",
        "So happy with the {product}, can't wait for it to arrive!",
        "Great experience, the {thing} was quick and the {product} is awesome!",
    ),
    "curious": (
        "Ordered the {product}, the {thing} was straightforward.",
        "The {product} arrived on time. Will see how it works.",
        "Bought the {product} for {price}. Interested to see how it compares.",
        "The {thing} worked. The {product} does what the page says.",
    ),
    "sad": (
        "I bought the {product} but honestly I feel a bit disappointed.",
        "The {product} is okay, sadly not what I hoped for {price}.",
        "Ordered the {product} as a gift for someone I miss. Bittersweet.",
        "It's fine I guess, the {product} just doesn't make me as happy as I thought.",
    ),
}
OPENERS: Final[Mapping[Archetype, tuple[str, ...]]] = {
    "frustrated": ("", "", "Ugh. ", "Come on. ", "Seriously? ", "Not again. "),
    "anxious": ("", "", "Hi, ", "Sorry, quick question: ", "Um, ", "Hello, "),
    "excited": ("", "", "Wow! ", "Yay, ", "Oh nice, ", "Hey! "),
    "curious": ("", "", "Hi, ", "Hello! ", "Quick question: ", "Hey, "),
    "sad": ("", "", "Sigh. ", "Oh well. ", "Hi. ", "Well... "),
}
CLOSERS: Final[Mapping[Archetype, tuple[str, ...]]] = {
    "frustrated": ("", "", " Fix it.", " So frustrating.", " This is annoying.", " Unbelievable."),
    "anxious": ("", "", " I'm a bit nervous.", " Please tell me it's safe.", " I'm worried."),
    "excited": ("", "", " Love it!", " So excited!", " Thanks so much!", " Great!"),
    "curious": ("", "", " Thanks.", " Just wondering.", " I'd like to know more."),
    "sad": ("", "", " Sadly.", " So disappointing.", " It makes me sad.", " Oh well."),
}


def compose_text(archetype: Archetype, rng: np.random.Generator, kind: TextKind = "chat") -> str:
    """One sentence in the archetype's register: a template with a product, a thing of the
    shop and a price filled in, and maybe an opener and a closer (chat and form texts)."""
    templates = REVIEW_TEMPLATES[archetype] if kind == "review" else CHAT_TEMPLATES[archetype]
    template = templates[int(rng.integers(len(templates)))]
    body = template.format(
        product=PRODUCTS[int(rng.integers(len(PRODUCTS)))],
        thing=THINGS[int(rng.integers(len(THINGS)))],
        price=f"${int(rng.choice([19, 29, 39, 49, 79, 99, 129]))}",
    )
    if kind == "review":
        return body
    opener = OPENERS[archetype][int(rng.integers(len(OPENERS[archetype])))]
    closer = CLOSERS[archetype][int(rng.integers(len(CLOSERS[archetype])))]
    if opener.endswith((", ", ": ")) and not body.startswith(("I ", "I'")):
        body = body[0].lower() + body[1:]
    return f"{opener}{body}{closer}"


# --- the world -------------------------------------------------------------------------------

# Purposes of the per-visitor random streams (part of each stream's seed).
_VISITOR, _OPENING, _JOURNEY, _OBSERVE = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Opening:
    """What a visitor does before the decision: lands and writes in the chat."""

    visitor: Visitor
    text: str
    events: list[dict[str, Any]]
    ends_at: datetime


@dataclass(frozen=True, slots=True)
class EmotionPoint:
    """The latent emotion at one moment of a journey (for trajectory checks)."""

    at: datetime
    vector: tuple[float, ...]
    register: Archetype


@dataclass(frozen=True, slots=True)
class Journey:
    """What a visitor does after the decision, and the truth behind it."""

    visitor: Visitor
    adaptation: str
    variants: dict[str, str]
    probability: float  # true conversion probability of what was served
    optimal_probability: float  # ... under the state-optimal adaptation, same variants
    converted: bool
    reached: str  # the last funnel step reached
    events: list[dict[str, Any]]
    emotions: list[EmotionPoint]


def _pick(rng: np.random.Generator, weights: Mapping[Name, float]) -> Name:
    names = list(weights)
    cumulative = np.cumsum([weights[n] for n in names], dtype=np.float64)
    position = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return names[min(position, len(names) - 1)]


class Simulation:
    """A seeded, reproducible world of visitors (see the module docstring).

    ``arrival_rate`` is visitors per simulated second (Poisson arrivals from ``start``);
    ``id_prefix`` names visitors ``<prefix>-<index>``: give each run against one server its
    own prefix, so message ids and visitor ids do not collide with an earlier run's while
    the same seed still yields the same visitors.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        archetype_weights: Mapping[Archetype, float] = ARCHETYPE_WEIGHTS,
        experiments: Sequence[ExperimentTruth] = DEFAULT_EXPERIMENTS,
        start: datetime = DEFAULT_START,
        arrival_rate: float = 1.0,
        id_prefix: str = "sim",
        observation_noise: float = OBSERVATION_NOISE,
    ) -> None:
        if arrival_rate <= 0:
            raise ValueError("arrival_rate must be positive")
        unknown = set(archetype_weights) - set(ARCHETYPES)
        if unknown or not any(w > 0 for w in archetype_weights.values()):
            raise ValueError(f"archetype weights need positive weights of {ARCHETYPES}")
        self.seed = seed
        self.archetype_weights = dict(archetype_weights)
        self.experiments = tuple(experiments)
        self.start = start
        self.arrival_rate = arrival_rate
        self.id_prefix = id_prefix
        self.observation_noise = observation_noise

    def _rng(self, index: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, index, purpose]))

    def visitor(self, index: int) -> Visitor:
        """Visitor number ``index`` (the same for a seed whatever else was generated)."""
        rng = self._rng(index, _VISITOR)
        archetype = _pick(rng, self.archetype_weights)
        intensity = float(rng.uniform(*INTENSITY_RANGE))
        vector = archetype_vector(archetype, intensity)
        vector = _clip_vector(vector + rng.normal(0.0, INDIVIDUAL_SPREAD, size=vector.shape))
        attributes = VisitorAttributes(
            country=_pick(rng, COUNTRIES),
            device=_pick(rng, DEVICES),
            plan_interest=_pick(rng, PLANS),
            returning=bool(rng.random() < RETURNING_SHARE),
        )
        preferences = Preferences(
            price_sensitivity=float(rng.beta(2.0, 2.0)), chattiness=float(rng.uniform(0.1, 0.6))
        )
        # Arrivals: the index-th point of a Poisson process, approximated per visitor by its
        # mean position plus jitter, so a visitor's arrival needs no earlier visitor.
        gap = 1.0 / self.arrival_rate
        arrival = self.start + timedelta(seconds=(index + float(rng.uniform(0.0, 1.0))) * gap)
        return Visitor(
            index=index,
            id=f"{self.id_prefix}-{index}",
            archetype=archetype,
            intensity=intensity,
            vector=tuple(round(float(v), 6) for v in vector),
            attributes=attributes,
            preferences=preferences,
            arrival=arrival,
            luck=float(rng.random()),
        )

    def visitors(self, n: int | None = None, *, first: int = 0) -> Iterator[Visitor]:
        """Visitors ``first``, ``first + 1`` … (``n`` of them, or without end)."""
        index = first
        while n is None or index < first + n:
            yield self.visitor(index)
            index += 1

    def observe(self, visitor: Visitor) -> dict[str, float]:
        """The visitor's emotion as NEXUS would read it at the decision (seeded per visitor)."""
        return observe_emotion(
            visitor.vector, self._rng(visitor.index, _OBSERVE), noise=self.observation_noise
        )

    def _message(
        self,
        visitor: Visitor,
        sequence: int,
        event: str,
        at: datetime,
        properties: dict[str, Any],
    ) -> dict[str, Any]:
        return {
            "type": "track",
            "event": event,
            "anonymousId": visitor.id,
            "messageId": f"{visitor.id}-{sequence}",
            "timestamp": at.isoformat().replace("+00:00", "Z"),
            "properties": properties,
            "context": {
                "device": {"type": visitor.attributes.device},
                "locale": f"en-{visitor.attributes.country}",
                "traits": {"returning": visitor.attributes.returning},
            },
        }

    def opening(self, visitor: Visitor) -> Opening:
        """``Landing Viewed`` and the first ``Chat Message Sent``, in the visitor's register."""
        rng = self._rng(visitor.index, _OPENING)
        text = compose_text(visitor.archetype, rng, "chat")
        landed = visitor.arrival
        wrote = landed + timedelta(seconds=float(rng.uniform(5.0, 90.0)))
        plan = visitor.attributes.plan_interest
        events = [
            self._message(visitor, 0, JOURNEY_STEPS[0], landed, {"plan": plan}),
            self._message(visitor, 1, CHAT_EVENT, wrote, {"text": text}),
        ]
        return Opening(visitor=visitor, text=text, events=events, ends_at=wrote)

    def journey(
        self,
        visitor: Visitor,
        adaptation: str,
        variants: Mapping[str, str] | None = None,
        *,
        decided_at: datetime | None = None,
    ) -> Journey:
        """The rest of the visit after the decision served ``adaptation`` and ``variants``.

        Steps reached follow the visitor's ``luck`` against the true probability (see the
        module docstring); the emotion drifts between steps and the visitor may write (chat,
        a checkout form comment, a review after ordering) in the register of the moment.
        """
        rng = self._rng(visitor.index, _JOURNEY)
        served = dict(variants or {})
        probability = conversion_probability(
            visitor, adaptation, served, experiments=self.experiments
        )
        optimal = optimal_probability(visitor, served, experiments=self.experiments)
        reached_steps = 1 + sum(visitor.luck < probability**e for e in STAGE_EXPONENTS)
        moment = decided_at or self.opening(visitor).ends_at
        start = np.asarray(visitor.vector)
        current = start
        emotions = [EmotionPoint(moment, visitor.vector, register_of(current))]
        events: list[dict[str, Any]] = []
        sequence = 2
        price = PLAN_PRICES[visitor.attributes.plan_interest]
        for truth in self.experiments:
            factor = truth.prices.get(served.get(truth.key, ""), 1.0)
            price = round(price * factor)
        common: dict[str, Any] = {"adaptation": adaptation, **served}
        for step in JOURNEY_STEPS[1:reached_steps]:
            seconds = float(rng.uniform(20.0, 240.0))
            moment += timedelta(seconds=seconds)
            current = drift(current, visitor.archetype, adaptation, seconds, rng, start=start)
            register = register_of(current)
            emotions.append(
                EmotionPoint(moment, tuple(round(float(v), 6) for v in current), register)
            )
            properties: dict[str, Any] = {**common, "plan": visitor.attributes.plan_interest}
            if step != "Offer Viewed":
                properties["price"] = price
            if step == GOAL_EVENT:
                properties["revenue"] = price
            events.append(self._message(visitor, sequence, step, moment, properties))
            sequence += 1
            written = self._written(register, step, visitor, rng)
            if written is not None:
                event, prop, text = written
                moment += timedelta(seconds=float(rng.uniform(3.0, 60.0)))
                extra: dict[str, Any] = {prop: text, **common}
                if event == REVIEW_EVENT:
                    extra["rating"] = _RATINGS[register]
                events.append(self._message(visitor, sequence, event, moment, extra))
                sequence += 1
        return Journey(
            visitor=visitor,
            adaptation=adaptation,
            variants=served,
            probability=probability,
            optimal_probability=optimal,
            converted=reached_steps == len(JOURNEY_STEPS),
            reached=JOURNEY_STEPS[reached_steps - 1],
            events=events,
            emotions=emotions,
        )

    @staticmethod
    def _written(
        register: Archetype, step: str, visitor: Visitor, rng: np.random.Generator
    ) -> tuple[str, str, str] | None:
        """Maybe a text after ``step``: (event, text property, text)."""
        if rng.random() >= visitor.preferences.chattiness:
            return None
        if step == GOAL_EVENT:
            return REVIEW_EVENT, "review", compose_text(register, rng, "review")
        if step == "Checkout Started":
            return FORM_EVENT, "comment", compose_text(register, rng, "form")
        return CHAT_EVENT, "text", compose_text(register, rng, "chat")


_RATINGS: Final[Mapping[Archetype, int]] = {
    "frustrated": 2,
    "anxious": 3,
    "excited": 5,
    "curious": 4,
    "sad": 3,
}

"""Experiment analysis: pure functions from per-arm sufficient statistics to results.

Inputs are frozen per-arm summaries (:class:`SampleStats`, :class:`ProportionStats`,
:class:`RatioStats`, :class:`CupedStats`) that one SQL aggregate per arm produces; outputs are
frozen result dataclasses. Nothing here does I/O. Data never raises: degenerate data (fewer than
two units, no variance, a zero control mean for a lift, impossible counts) comes back as a
result whose ``error`` is a :class:`StatsError` code. Impossible parameters (``alpha`` outside
(0, 1), a non-positive ``tuning_n``, a bad prior or traffic weights) raise ``ValueError``.

* :func:`welch`, :func:`two_proportions`: fixed-horizon tests (one look, planned sample size).
* :func:`ratio`: ratio metrics (revenue per session) by the delta method.
* :func:`cuped`: variance reduction with a pre-exposure covariate, then Welch.
* :func:`sequential`, :func:`sequential_arrays`: always-valid confidence sequences and p-values,
  safe under continuous monitoring.
* :func:`bayesian_proportions`, :func:`bayesian_means`: chance to beat control, expected loss,
  credible intervals.
* :func:`srm`: sample-ratio-mismatch check of the traffic split.
* :func:`holm`, :func:`benjamini_hochberg`: multiple-comparison corrections.
"""

from nexus.experiments.stats.bayesian import (
    BayesianResult,
    BetaPrior,
    NormalPrior,
    bayesian_means,
    bayesian_proportions,
)
from nexus.experiments.stats.corrections import (
    CorrectionMethod,
    CorrectionResult,
    benjamini_hochberg,
    holm,
)
from nexus.experiments.stats.cuped import CupedResult, cuped
from nexus.experiments.stats.frequentist import two_proportions, welch
from nexus.experiments.stats.ratio import ratio
from nexus.experiments.stats.results import Alternative, Estimate, StatsError, TestResult
from nexus.experiments.stats.sequential import (
    DEFAULT_TUNING_N,
    SequentialArrays,
    SequentialResult,
    sequential,
    sequential_arrays,
)
from nexus.experiments.stats.srm import DEFAULT_SRM_THRESHOLD, SRMResult, srm
from nexus.experiments.stats.summaries import CupedStats, ProportionStats, RatioStats, SampleStats

__all__ = [
    "DEFAULT_SRM_THRESHOLD",
    "DEFAULT_TUNING_N",
    "Alternative",
    "BayesianResult",
    "BetaPrior",
    "CorrectionMethod",
    "CorrectionResult",
    "CupedResult",
    "CupedStats",
    "Estimate",
    "NormalPrior",
    "ProportionStats",
    "RatioStats",
    "SRMResult",
    "SampleStats",
    "SequentialArrays",
    "SequentialResult",
    "StatsError",
    "TestResult",
    "bayesian_means",
    "bayesian_proportions",
    "benjamini_hochberg",
    "cuped",
    "holm",
    "ratio",
    "sequential",
    "sequential_arrays",
    "srm",
    "two_proportions",
    "welch",
]

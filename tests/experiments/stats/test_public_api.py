"""The package's public surface, and that it stays a pure core."""

from __future__ import annotations

import subprocess
import sys

import nexus.experiments.stats as stats_package


def test_everything_in_all_is_exported() -> None:
    for name in stats_package.__all__:
        assert hasattr(stats_package, name), name
    for function in (
        "welch",
        "two_proportions",
        "sequential",
        "bayesian_proportions",
        "bayesian_means",
        "cuped",
        "srm",
        "holm",
        "benjamini_hochberg",
        "ratio",
    ):
        assert callable(getattr(stats_package, function))  # fmt: skip


def test_importing_it_loads_no_web_framework_database_or_statsmodels() -> None:
    forbidden = ("fastapi", "starlette", "sqlalchemy", "httpx", "duckdb", "statsmodels")
    code = (
        "import sys, nexus.experiments.stats\n"
        f"loaded = [m for m in sys.modules if m.split('.')[0] in {forbidden!r}]\n"
        "print(','.join(loaded))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert completed.stdout.strip() == ""

"""The cascade router: its numpy tree walk equals scikit-learn, and it round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from nexus.emotion.models.router import CascadeRouter

ensemble = pytest.importorskip("sklearn.ensemble")


def _fitted(seed: int) -> tuple[object, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(600, 6))
    target = (features[:, 0] + features[:, 1] * features[:, 2] + rng.normal(0, 0.5, 600)) > 0
    classifier = ensemble.HistGradientBoostingClassifier(max_iter=40, random_state=seed)
    return classifier.fit(features, target), rng.normal(size=(200, 6))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_exported_trees_predict_what_scikit_learn_predicts(seed: int) -> None:
    from nexus.emotion.training.router import _export

    classifier, fresh = _fitted(seed)
    router = _export(classifier, version="t")
    expected = classifier.predict_proba(fresh)[:, 1]  # type: ignore[attr-defined]
    assert np.allclose(router.risk(fresh), expected, atol=1e-9)


def test_the_router_round_trips_and_maps_shares_to_thresholds() -> None:
    from nexus.emotion.training.router import _export

    classifier, fresh = _fitted(4)
    router = _export(classifier, version="t")
    quantiles = list(np.linspace(0.0, 1.0, 101))
    router = CascadeRouter.from_json({**router.to_json(), "risk_quantiles": quantiles})
    again = CascadeRouter.from_json(router.to_json())
    assert np.array_equal(again.risk(fresh), router.risk(fresh))
    assert router.risk_threshold(0.7) == pytest.approx(0.7)
    assert router.risk_threshold(1.0) == float("inf")
    assert router.risk_threshold(0.0) == float("-inf")
    with pytest.raises(ValueError, match="nexus-cascade-router"):
        CascadeRouter.from_json({"format": "other"})


def test_rare_class_errors_are_the_target() -> None:
    from nexus.emotion.training.router import rare_weighted_errors

    gold = np.zeros((10, 3), dtype=bool)
    gold[:6, 0] = True  # common
    gold[6:9, 1] = True
    gold[9, 2] = True  # rare
    predicted = gold.copy()
    predicted[0, 0] = False  # a lone mistake on the common class
    predicted[9, 2] = False  # a mistake on the rare class
    assert rare_weighted_errors(predicted, gold).tolist() == [False] * 9 + [True]

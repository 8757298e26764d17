"""Promotion gate: the rule itself, and real walk-forward comparisons with tiny models."""

from __future__ import annotations

from dataclasses import replace

import pytest
from helpers import indicator_frame, mean_reverting_prices

from ml.gate import decide


@pytest.mark.parametrize(
    ("candidate", "champion", "version", "force", "alias", "reason"),
    [
        (0.97, 0.99, "3", False, "champion", "beats naive"),
        (0.99, 0.99, "3", False, "champion", "no worse"),
        (0.98, 0.96, "3", False, "challenger", "worse than champion v3"),
        (1.01, 1.05, "3", False, "challenger", "does not beat naive"),
        (1.01, 0.96, "3", True, "champion", "--force"),
        (0.95, None, None, False, "champion", "first model"),
        (1.02, None, None, False, "champion", "bootstrap"),
    ],
)
def test_gate_rule(candidate, champion, version, force, alias, reason):
    decision = decide(candidate, champion, version, force)
    assert decision.alias == alias
    assert reason in decision.reason
    assert decision.forced is force
    assert decision.bootstrap is (reason == "bootstrap")
    assert decision.tags()["gate_alias"] == alias


@pytest.fixture(scope="module")
def learnable_frame():
    from ml.features import build_feature_frame

    return build_feature_frame(indicator_frame(mean_reverting_prices(1400, seed=2), "SYN"))


@pytest.mark.slow
def test_gate_refuses_a_weakened_model_and_accepts_a_good_one(learnable_frame):
    pytest.importorskip("tensorflow")
    from ml.fitting import TrainConfig
    from ml.gate import compare_on_same_folds
    from ml.model import ModelParams

    good = ModelParams(window=10, units=16, dropout=0.0, learning_rate=0.005, epochs=10,
                       batch_size=128, seed=1)  # fmt: skip
    # Deliberately weakened: a learning rate so large that training diverges.
    weakened = replace(good, learning_rate=2.0, epochs=2)
    train = TrainConfig(params=good, stop_days=60, train_years=None, max_train_samples=None)

    weak_rel, good_rel, _ = compare_on_same_folds(
        learnable_frame, train, weakened, good, n_folds=2, test_days=21
    )
    # Measured: weakened 1.61, good 0.89 (the AR(1) optimum at h=1 is 0.80).
    refused = decide(weak_rel, good_rel, "1")
    assert refused.alias == "challenger", refused.reason

    good_rel_again, weak_rel_again, _ = compare_on_same_folds(
        learnable_frame, train, good, weakened, n_folds=2, test_days=21
    )
    accepted = decide(good_rel_again, weak_rel_again, "1")
    assert accepted.alias == "champion", accepted.reason
    assert good_rel_again < 0.95  # real skill on a learnable series
    assert good_rel_again == pytest.approx(good_rel, rel=1e-6)  # same folds, same result

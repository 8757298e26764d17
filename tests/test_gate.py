"""Promotion gate: the rule itself, and real walk-forward comparisons with tiny models."""

from __future__ import annotations

from dataclasses import replace

import pytest
from helpers import indicator_frame, mean_reverting_prices

from ml.gate import ModelScore, decide

NAN = float("nan")
EWMA = ModelScore(rel_mae=1.0, pinball=1.200)


def score(rel_mae, pinball):
    return ModelScore(rel_mae=rel_mae, pinball=pinball)


# (candidate, champion, champion version, force) -> (alias, published, passed, reason)
RULE = [
    pytest.param(score(0.99, 1.10), None, None, False,
                 "champion", "model", True, "beats the baseline", id="passes, first model"),
    pytest.param(score(1.0, 1.10), None, None, False,  # shrunk fully to naive: exactly 1
                 "champion", "model", True, "relative MAE 1.0000", id="passes at exactly 1"),
    pytest.param(score(1.01, 1.10), None, None, False, "challenger", "baseline", False,
                 "does not beat the baseline: relative MAE 1.0100 > 1", id="fails on point"),
    pytest.param(score(0.98, 1.25), None, None, False, "challenger", "baseline", False,
                 "does not beat the baseline: pinball 1.2500 >= ewma 1.2000 "
                 "(relative MAE 0.9800)", id="fails on intervals"),
    pytest.param(score(0.98, 1.20), None, None, False, "challenger", "baseline", False,
                 "pinball 1.2000 >= ewma 1.2000", id="ties the baseline: fails"),
    pytest.param(score(0.98, NAN), None, None, False, "challenger", "baseline", False,
                 "gives no prediction intervals", id="no intervals"),
    pytest.param(score(0.99, 1.10), score(0.99, 1.05), "3", False, "challenger", "model", True,
                 "worse than champion v3 on the same folds: pinball 1.1000 > 1.0500",
                 id="worse than champion"),
    pytest.param(score(1.01, 1.10), score(0.99, 1.15), "3", False, "challenger", "model", False,
                 "does not beat the baseline: relative MAE 1.0100 > 1",
                 id="fails with a champion: the champion stays published"),
    pytest.param(score(0.99, 1.10), score(0.99, 1.10), "3", False, "champion", "model", True,
                 "no worse than champion v3", id="ties the champion: replaces it"),
    pytest.param(score(1.0, 1.05), score(0.98, 1.10), "3", False, "challenger", "model", True,
                 "worse than champion v3 on the same folds: relative MAE 1.0000 > 0.9800",
                 id="better intervals, but the champion's point skill is lost"),
    pytest.param(score(0.99, 1.10), score(1.02, NAN), "3", False, "champion", "model", True,
                 "no worse than champion v3", id="champion without intervals"),
    pytest.param(score(1.03, 1.30), score(0.99, 1.05), "3", True, "champion", "model", False,
                 "promoted by --force", id="force"),
    pytest.param(score(1.03, 1.30), None, None, True, "champion", "model", False,
                 "promoted by --force", id="force, first model"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("candidate", "champion", "version", "force", "alias", "published", "passed", "reason"),
    RULE,
)
def test_gate_rule(candidate, champion, version, force, alias, published, passed, reason):
    decision = decide(candidate, EWMA, champion, version, force)
    assert decision.alias == alias
    assert decision.published == published
    assert decision.passed is passed
    assert reason in decision.reason, decision.reason
    assert decision.forced is force
    assert decision.promoted is (alias == "champion")
    tags = decision.tags()
    assert tags["gate_alias"] == alias and tags["gate_published"] == published
    assert tags["gate_reason"] == decision.reason
    assert "gate_bootstrap" not in tags


def test_a_forced_promotion_says_what_the_gate_would_have_refused():
    decision = decide(score(1.03, 1.30), EWMA, force=True)
    assert "the gate would refuse it: does not beat the baseline" in decision.reason
    assert "pinball 1.3000 vs ewma 1.2000, relative MAE 1.0300" in decision.reason


def test_no_champion_and_a_failed_candidate_publishes_the_baseline():
    """There is no bootstrap: the first model is not promoted unless it passes."""
    decision = decide(score(1.0, 1.25), EWMA)
    assert decision.alias == "challenger" and decision.published == "baseline"
    assert decision.champion_version is None and decision.champion_pinball is None


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

    weak = compare_on_same_folds(learnable_frame, train, weakened, good, n_folds=2, test_days=21)
    # Measured: weakened 1.61, good 0.89 before the published forecast was shrunk toward naive;
    # 0.975 since (one ticker's 60-day block proves skill at p < 0.001 only at some horizons).
    refused = decide(weak.candidate, weak.baseline, weak.champion, "1")
    assert refused.alias == "challenger", refused.reason

    strong = compare_on_same_folds(learnable_frame, train, good, weakened, n_folds=2, test_days=21)
    # On its own the good model passes (point skill and intervals better than the baseline's).
    # It does not replace the weakened one here: the weakened network's point forecast shrinks
    # to naive and its intervals fall back on the fast EWMA scale, which scores a little better
    # on this constant-volatility series; each is worse on one criterion, so the incumbent
    # stays (measured: pinball 0.2227 vs 0.2204, relative MAE 0.9857 vs 1.0000).
    accepted = decide(strong.candidate, strong.baseline, None, None)
    assert accepted.alias == "champion", accepted.reason
    assert strong.candidate.rel_mae < 0.99  # real skill on a learnable series, even shrunk
    # Same folds, same result, whichever side the settings are on.
    assert strong.candidate.rel_mae == pytest.approx(weak.champion.rel_mae, rel=1e-6)
    assert strong.candidate.pinball == pytest.approx(weak.champion.pinball, rel=1e-6)
    # The baseline: naive's point forecast (relative MAE exactly 1) with EWMA intervals.
    assert strong.baseline.rel_mae == 1.0
    assert strong.baseline.pinball > strong.candidate.pinball
    assert 0.5 < strong.baseline.coverage_80 < 1
    assert set(strong.metrics["model"]) == {"candidate", "champion", "ewma", "naive"}

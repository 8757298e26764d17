"""Promotion gate: a new model becomes `champion` only if it earns it on the same folds.

The candidate's settings, the current champion's (if any) and the published baseline ``ewma``
(naive point forecast with RiskMetrics EWMA intervals, :func:`ml.baselines.ewma_forecasts`)
are scored on one walk-forward backtest beside naive. Per model: the pooled relative MAE vs
naive (mean over horizons) and the mean pinball loss of the 80/95% bounds (pooled, mean over
horizons; a proper score of the intervals). The rule (:func:`decide`):

* the candidate **passes** when its relative MAE is at most 1 (never worse than naive's point
  forecast; exactly 1 when it shrinks fully to naive) and its pinball loss is below the ewma
  baseline's; a candidate without intervals (NaN pinball) does not pass;
* it **replaces** the champion only if it is also no worse than the champion on the same folds:
  pinball at most the champion's and relative MAE at most the champion's (a network shrunk to
  naive with good intervals does not replace one with proven point skill);
* otherwise it is registered as `challenger`, with the numbers that decided in the reason.

There is no bootstrap: with no champion and a candidate that fails, no champion exists and
forecasts are published from the baseline (``naive_ewma``, see :mod:`ml.score`). ``force``
promotes anyway and is recorded.

This module is the rule and the comparison (no I/O); :mod:`ml.promote` is the stage that runs
them for a registered model and records the decision.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import pandas as pd

from ml.backtest import BacktestConfig, run_backtest
from ml.evaluate import POOLED, skill_by_model
from ml.fitting import TrainConfig
from ml.model import ModelParams

CANDIDATE, CHAMPION, CHALLENGER = "candidate", "champion", "challenger"
BASELINE = "ewma"  # the backtest model the published baseline (naive_ewma) is scored as


@dataclass(frozen=True)
class ModelScore:
    """One model's walk-forward scores, pooled over tickers and averaged over horizons."""

    rel_mae: float  # MAE / naive MAE (geometric mean over tickers); <= 1: no worse than naive
    pinball: float  # mean pinball loss of the 80/95% bounds, % of close; NaN without intervals
    coverage_80: float = math.nan
    coverage_95: float = math.nan

    @property
    def has_intervals(self) -> bool:
        return not math.isnan(self.pinball)


@dataclass(frozen=True)
class GateScores:
    """What :func:`compare_on_same_folds` measured: one score per model, and the metrics."""

    candidate: ModelScore
    champion: ModelScore | None
    baseline: ModelScore  # ewma
    metrics: pd.DataFrame

    def by_model(self) -> dict[str, ModelScore]:
        scores = {CANDIDATE: self.candidate, BASELINE: self.baseline}
        if self.champion is not None:
            scores[CHAMPION] = self.champion
        return scores


@dataclass(frozen=True)
class GateDecision:
    alias: str  # "champion" or "challenger"
    reason: str
    # What forecasts are published from after this decision: "model" (the candidate, or the
    # champion it did not replace) or "baseline" (no champion exists: naive_ewma).
    published: str
    passed: bool  # beat the baseline (relative MAE <= 1 and pinball below ewma's)
    candidate_rel_mae: float
    candidate_pinball: float
    baseline_pinball: float
    champion_rel_mae: float | None
    champion_pinball: float | None
    champion_version: str | None
    forced: bool = False

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION

    def tags(self) -> dict[str, str]:
        return {f"gate_{k}": str(v) for k, v in asdict(self).items()}


def _num(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def decide(
    candidate: ModelScore,
    baseline: ModelScore,
    champion: ModelScore | None = None,
    champion_version: str | None = None,
    force: bool = False,
) -> GateDecision:
    """The gate's rule, pure (see the module docstring). ``champion`` is the current
    champion's score on the same folds, ``None`` when there is no champion."""
    has_champion = champion_version is not None and champion is not None
    rel, pin, base = candidate.rel_mae, candidate.pinball, baseline.pinball
    figures = f"pinball {_num(pin)} vs ewma {_num(base)}, relative MAE {_num(rel)}"

    if not candidate.has_intervals:
        failure = (
            f"does not beat the baseline: it gives no prediction intervals (pinball n/a, "
            f"ewma {_num(base)}; relative MAE {_num(rel)})"
        )
    elif not rel <= 1.0:
        failure = (
            f"does not beat the baseline: relative MAE {_num(rel)} > 1, worse than naive's "
            f"point forecast (pinball {_num(pin)} vs ewma {_num(base)})"
        )
    elif not pin < base:
        failure = (
            f"does not beat the baseline: pinball {_num(pin)} >= ewma {_num(base)} "
            f"(relative MAE {_num(rel)})"
        )
    else:
        failure = None
    passed = failure is None

    worse = None
    if passed and has_champion:
        if champion.has_intervals and not pin <= champion.pinball:
            worse = (
                f"worse than champion v{champion_version} on the same folds: pinball "
                f"{_num(pin)} > {_num(champion.pinball)} (relative MAE {_num(rel)} vs "
                f"{_num(champion.rel_mae)})"
            )
        elif not rel <= champion.rel_mae:
            worse = (
                f"worse than champion v{champion_version} on the same folds: relative MAE "
                f"{_num(rel)} > {_num(champion.rel_mae)} (pinball {_num(pin)} vs "
                f"{_num(champion.pinball)})"
            )

    common = {
        "passed": passed,
        "candidate_rel_mae": rel,
        "candidate_pinball": pin,
        "baseline_pinball": base,
        "champion_rel_mae": champion.rel_mae if has_champion else None,
        "champion_pinball": champion.pinball if has_champion else None,
        "champion_version": champion_version if has_champion else None,
    }
    if force:
        why = "" if passed and worse is None else f"; the gate would refuse it: {failure or worse}"
        return GateDecision(
            CHAMPION, f"promoted by --force ({figures}){why}", "model", forced=True, **common
        )
    if failure is not None:
        # With a champion, forecasts stay the champion's; without one, the baseline's.
        published = "model" if has_champion else "baseline"
        return GateDecision(CHALLENGER, failure, published, **common)
    if worse is not None:
        return GateDecision(CHALLENGER, worse, "model", **common)
    if has_champion:
        reason = (
            f"beats the baseline ({figures}) and is no worse than champion "
            f"v{champion_version} (pinball {_num(champion.pinball)}, relative MAE "
            f"{_num(champion.rel_mae)})"
        )
    else:
        reason = f"beats the baseline ({figures}); no champion before it"
    return GateDecision(CHAMPION, reason, "model", **common)


def compare_on_same_folds(
    frame: pd.DataFrame,
    train: TrainConfig,
    candidate: ModelParams,
    champion: ModelParams | TrainConfig | None,
    n_folds: int = 2,
    test_days: int = 21,
    progress=None,
) -> GateScores:
    """Candidate, champion (if any) and the ewma baseline on one walk-forward backtest beside
    naive: pooled relative MAE and pinball loss (means over horizons), interval coverage.

    The candidate is ``train`` with ``candidate``'s settings; the champion is either settings
    (the rest of ``train`` kept) or a whole :class:`TrainConfig` (e.g. its own feature set).

    ``progress`` hears the backtest's fold and model lines as they finish."""
    variants = {CANDIDATE: candidate}
    if champion is not None:
        variants[CHAMPION] = champion
    config = BacktestConfig(
        n_folds=n_folds,
        test_days=test_days,
        models=(*variants, BASELINE, "naive"),
        train=replace(train, params=candidate),
        variants=variants,
    )
    metrics = run_backtest(frame, config, progress).metrics
    return GateScores(
        candidate=model_score(metrics, CANDIDATE),
        champion=model_score(metrics, CHAMPION) if champion is not None else None,
        baseline=model_score(metrics, BASELINE),
        metrics=metrics,
    )


def model_score(metrics: pd.DataFrame, model: str) -> ModelScore:
    """``model``'s :class:`ModelScore` from :func:`ml.evaluate.backtest_metrics` output."""
    pooled = metrics[(metrics["ticker"] == POOLED) & (metrics["model"] == model)]
    if pooled.empty:
        raise ValueError(f"the backtest scored no forecasts of {model}")
    # A horizon without intervals makes the mean NaN: such a model has no interval score.
    means = pooled[["pinball", "coverage_80", "coverage_95"]].mean(skipna=False)
    return ModelScore(
        rel_mae=float(skill_by_model(metrics)[model]),
        pinball=float(means["pinball"]),
        coverage_80=float(means["coverage_80"]),
        coverage_95=float(means["coverage_95"]),
    )

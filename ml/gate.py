"""Promotion gate: a new model becomes `champion` only if it earns it on the same folds.

Rule (the candidate's and the champion's settings are each refit in every fold of one
walk-forward backtest beside the naive forecast):

* the candidate must beat naive: pooled relative MAE (mean over horizons) below 1, and
* it must be no worse than the current champion on those folds;
* otherwise it is registered as `challenger` and the reason is logged and printed.

``force`` promotes anyway and is recorded. With no champion at all, the first model is promoted
as a *bootstrap* champion, recorded as such, so that forecasts exist; any later model must pass
the rule above to replace it.

This module is the rule and the comparison (no I/O); :mod:`ml.promote` is the stage that runs
them for a registered model and records the decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import pandas as pd

from ml.backtest import BacktestConfig, run_backtest
from ml.evaluate import skill_by_model
from ml.fitting import TrainConfig
from ml.model import ModelParams

CANDIDATE, CHAMPION = "candidate", "champion"


@dataclass(frozen=True)
class GateDecision:
    alias: str  # "champion" or "challenger"
    reason: str
    candidate_rel_mae: float
    champion_rel_mae: float | None
    champion_version: str | None
    forced: bool = False
    bootstrap: bool = False

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION

    def tags(self) -> dict[str, str]:
        return {f"gate_{k}": str(v) for k, v in asdict(self).items()}


def decide(
    candidate_rel_mae: float,
    champion_rel_mae: float | None,
    champion_version: str | None,
    force: bool = False,
) -> GateDecision:
    """The gate's rule, pure. Relative MAEs are walk-forward, pooled, averaged over horizons."""
    common = {
        "candidate_rel_mae": candidate_rel_mae,
        "champion_rel_mae": champion_rel_mae,
        "champion_version": champion_version,
    }
    beats_naive = candidate_rel_mae < 1.0
    if force:
        return GateDecision(CHAMPION, "promoted by --force", forced=True, **common)
    if champion_version is None:
        if beats_naive:
            return GateDecision(CHAMPION, "first model and it beats naive", **common)
        return GateDecision(
            CHAMPION,
            f"bootstrap: no champion existed, so the first model is promoted although it does "
            f"not beat naive (relative MAE {candidate_rel_mae:.4f} >= 1)",
            bootstrap=True,
            **common,
        )
    if not beats_naive:
        return GateDecision(
            "challenger",
            f"does not beat naive: walk-forward relative MAE {candidate_rel_mae:.4f} >= 1",
            **common,
        )
    if champion_rel_mae is not None and candidate_rel_mae > champion_rel_mae:
        return GateDecision(
            "challenger",
            f"worse than champion v{champion_version} on the same folds: relative MAE "
            f"{candidate_rel_mae:.4f} > {champion_rel_mae:.4f}",
            **common,
        )
    return GateDecision(
        CHAMPION,
        f"beats naive ({candidate_rel_mae:.4f} < 1) and is no worse than champion "
        f"v{champion_version} ({champion_rel_mae:.4f})",
        **common,
    )


def compare_on_same_folds(
    frame: pd.DataFrame,
    train: TrainConfig,
    candidate: ModelParams,
    champion: ModelParams | None,
    n_folds: int = 2,
    test_days: int = 21,
    progress=None,
) -> tuple[float, float | None, pd.DataFrame]:
    """Walk-forward pooled relative MAE (mean over horizons) of candidate and champion.

    ``progress`` hears the backtest's fold and model lines as they finish."""
    variants = {CANDIDATE: candidate}
    if champion is not None:
        variants[CHAMPION] = champion
    config = BacktestConfig(
        n_folds=n_folds,
        test_days=test_days,
        models=(*variants, "naive"),
        train=replace(train, params=candidate),
        variants=variants,
    )
    metrics = run_backtest(frame, config, progress).metrics
    skill = skill_by_model(metrics)
    champion_score = float(skill[CHAMPION]) if champion is not None else None
    return float(skill[CANDIDATE]), champion_score, metrics

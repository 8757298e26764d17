"""Tune stage: Optuna search over the LSTM's settings, judged by walk-forward forecast quality.

Each trial runs the walk-forward backtest (the LSTM as published, naive and the EWMA baseline
on the same folds, every fit before its fold) and scores the LSTM's mean pinball loss over its
80%/95% interval bounds relative to the EWMA baseline's, averaged over horizons: lower is
better, below 1 beats the baseline. The pinball loss scores the whole forecast (the point
forecast the intervals sit on and their width); the point forecast alone is shrunk toward
naive (:mod:`ml.combine`), so its relative MAE is ~1 in every trial and cannot rank them; it is
logged beside. Never a shuffled split. Every trial is a nested MLflow run under
one parent; the best parameters are stored on the parent run (tag ``stage=tune``) and
:func:`ml.tuned.best_params` hands them to ``train``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import pandas as pd

from ml.backtest import BacktestConfig, run_backtest
from ml.data import load_indicators
from ml.evaluate import POOLED, skill_by_model
from ml.features import build_feature_frame
from ml.fitting import TrainConfig
from ml.model import ModelParams
from ml.tuned import TUNED_FIELDS

if TYPE_CHECKING:
    from ml.context import RunContext


@dataclass
class TuneResult:
    run_id: str
    best_params: ModelParams
    best_score: float
    trials: pd.DataFrame


def suggest(trial, base: ModelParams) -> ModelParams:
    return replace(
        base,
        window=trial.suggest_categorical("window", [20, 30, 40, 60]),
        # One trial of 96 units x 2 layers x 16 epochs took over 13 minutes on 150 tickers (2 cores).
        units=trial.suggest_categorical("units", [16, 32, 64]),
        layers=trial.suggest_int("layers", 1, 2),
        dropout=trial.suggest_float("dropout", 0.0, 0.3),
        # Below ~5e-4 a few epochs leave the network predicting the training mean (every such
        # trial scored the same): the range starts where learning happens within the epochs.
        learning_rate=trial.suggest_float("learning_rate", 5e-4, 5e-3, log=True),
        epochs=trial.suggest_int("epochs", 4, 12),
    )


BASELINE = "ewma"


def objective_score(metrics: pd.DataFrame) -> float:
    """The LSTM's pooled mean pinball loss over the EWMA baseline's (mean over horizons)."""
    pooled = metrics[metrics["ticker"] == POOLED].groupby("model")["pinball"].mean()
    return float(pooled["lstm"] / pooled[BASELINE])


def tune(
    ctx: RunContext,
    trials: int,
    base: TrainConfig | None = None,
    n_folds: int = 3,
    test_days: int = 21,
    progress=None,
    search=suggest,
) -> TuneResult:
    import mlflow
    import optuna

    base = base or TrainConfig()
    say = progress or (lambda message: None)
    warehouse = ctx.warehouse
    frame = build_feature_frame(
        load_indicators(warehouse, list(base.tickers) if base.tickers else None)
    )
    ctx.tracking()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=base.params.seed)
    study = optuna.create_study(direction="minimize", sampler=sampler)

    from ml.registry import owner_tags

    with mlflow.start_run(run_name="tune") as parent:
        mlflow.set_tags(
            {
                "stage": "tune",
                "objective": "walk-forward pooled pinball loss vs the EWMA baseline",
                **owner_tags(),  # a later process marks the run FAILED if this one is killed
            }
        )
        mlflow.log_params({"trials": trials, "n_folds": n_folds, "test_days": test_days})

        def objective(trial) -> float:
            params = search(trial, base.params)
            config = BacktestConfig(
                n_folds=n_folds,
                test_days=test_days,
                models=("lstm", "naive", BASELINE),
                train=replace(base, params=params),
            )
            with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
                mlflow.set_tags({"stage": "tune-trial", **owner_tags()})
                mlflow.log_params(params.as_dict())
                say(f"trial {trial.number + 1}/{trials}: {trial.params}")
                metrics = run_backtest(frame, config, lambda line: say(f"  {line}")).metrics
                score = objective_score(metrics)
                rel_mae = float(skill_by_model(metrics)["lstm"])
                mlflow.log_metrics(
                    {"walk_forward_pinball_vs_ewma": score, "walk_forward_rel_mae": rel_mae}
                )
            say(
                f"trial {trial.number + 1}/{trials}: pinball vs EWMA {score:.4f}, "
                f"rel MAE {rel_mae:.4f}"
            )
            return score

        study.optimize(objective, n_trials=trials)
        best = replace(base.params, **study.best_params)
        mlflow.log_metric("best_walk_forward_pinball_vs_ewma", study.best_value)
        mlflow.log_dict(best.as_dict(), "best_params.json")
        mlflow.set_tag("best_params", json.dumps({k: getattr(best, k) for k in TUNED_FIELDS}))
    trials_frame = study.trials_dataframe(attrs=("number", "value", "params"))
    return TuneResult(parent.info.run_id, best, float(study.best_value), trials_frame)

"""Tune stage: Optuna search over the LSTM's settings, judged by walk-forward skill vs naive.

Each trial runs the walk-forward backtest (LSTM and naive on the same folds, every fit inside
its fold) and scores the pooled relative MAE against naive averaged over horizons: lower is
better, below 1 beats naive. Never a shuffled split. Every trial is a nested MLflow run under
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
from ml.evaluate import skill_by_model
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
        units=trial.suggest_categorical("units", [16, 32, 64, 96]),
        layers=trial.suggest_int("layers", 1, 2),
        dropout=trial.suggest_float("dropout", 0.0, 0.3),
        learning_rate=trial.suggest_float("learning_rate", 1e-4, 5e-3, log=True),
        epochs=trial.suggest_int("epochs", 2, 12),
    )


def objective_score(metrics: pd.DataFrame) -> float:
    return float(skill_by_model(metrics)["lstm"])


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
                "objective": "walk-forward pooled rel MAE vs naive",
                **owner_tags(),  # a later process marks the run FAILED if this one is killed
            }
        )
        mlflow.log_params({"trials": trials, "n_folds": n_folds, "test_days": test_days})

        def objective(trial) -> float:
            params = search(trial, base.params)
            config = BacktestConfig(
                n_folds=n_folds,
                test_days=test_days,
                models=("lstm", "naive"),
                train=replace(base, params=params),
            )
            with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
                mlflow.set_tags({"stage": "tune-trial", **owner_tags()})
                mlflow.log_params(params.as_dict())
                score = objective_score(run_backtest(frame, config).metrics)
                mlflow.log_metric("walk_forward_rel_mae", score)
            say(f"trial {trial.number + 1}/{trials}: rel MAE {score:.4f} with {trial.params}")
            return score

        study.optimize(objective, n_trials=trials)
        best = replace(base.params, **study.best_params)
        mlflow.log_metric("best_walk_forward_rel_mae", study.best_value)
        mlflow.log_dict(best.as_dict(), "best_params.json")
        mlflow.set_tag("best_params", json.dumps({k: getattr(best, k) for k in TUNED_FIELDS}))
    trials_frame = study.trials_dataframe(attrs=("number", "value", "params"))
    return TuneResult(parent.info.run_id, best, float(study.best_value), trials_frame)

"""Train stage: indicator mart -> windows -> LSTM -> MLflow run + registered model.

Time split, never shuffled across time: the last ``validation_days`` trading dates are held
out for the reported metrics; the ``stop_days`` before them drive early stopping. Samples are
purged so that no training target reaches into the early-stopping or validation period.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ml.config import MODEL_NAME
from ml.data import load_indicators
from ml.evaluate import horizon_metrics, naive_scales
from ml.features import (
    FEATURES,
    HORIZONS,
    VOLATILITY,
    WindowSet,
    build_feature_frame,
    make_windows,
)
from ml.folds import Fold
from ml.model import ModelParams

if TYPE_CHECKING:
    from ml.context import RunContext


@dataclass(frozen=True)
class TrainConfig:
    params: ModelParams = field(default_factory=ModelParams)
    validation_days: int = 126
    stop_days: int = 63
    train_years: float | None = 10.0
    max_train_samples: int | None = 200_000
    tickers: tuple[str, ...] | None = None
    # Start from the best parameters of the latest `stockcast tune` run; settings given here
    # that differ from the defaults still win.
    use_tuned: bool = True
    # The promotion gate's walk-forward comparison with naive and the champion.
    gate_folds: int = 2
    gate_test_days: int = 21


def resolve_params(config: TrainConfig) -> tuple[ModelParams, str | None]:
    if not config.use_tuned:
        return config.params, None
    from ml.tune import best_params

    tuned, tune_run_id = best_params()
    defaults = ModelParams()
    explicit = {k: v for k, v in config.params.as_dict().items() if v != getattr(defaults, k)}
    return replace(tuned, **explicit), tune_run_id


@dataclass
class TrainResult:
    run_id: str
    model_version: str
    metrics: pd.DataFrame
    n_train: int
    n_validation: int
    gate: object = None  # ml.gate.GateDecision


@dataclass
class Split:
    fit: WindowSet
    stop: WindowSet
    validation: WindowSet
    bounds: dict


def fit_and_stop_windows(
    frame: pd.DataFrame, config: TrainConfig, before: pd.Timestamp
) -> tuple[WindowSet, WindowSet, pd.Timestamp]:
    """Fit and early-stopping windows for a model that must know nothing from ``before`` on.

    The ``stop_days`` trading dates before ``before`` drive early stopping; fit samples are
    purged so their targets end before that block, and stop samples so theirs end before
    ``before``. Returns (fit, stop, stop_start).
    """
    dates = np.sort(frame.loc[frame["trade_date"] < before, "trade_date"].unique())
    needed = config.stop_days + config.params.window + 2 * HORIZONS
    if len(dates) < needed:
        raise ValueError(
            f"only {len(dates)} trading dates before {before.date()}; a fit needs at least "
            f"{needed} (window {config.params.window} + early-stopping {config.stop_days} + "
            "purge gaps)"
        )
    stop_start = pd.Timestamp(dates[-config.stop_days])
    fit_from = None
    if config.train_years:
        fit_from = stop_start - pd.DateOffset(days=round(365.25 * config.train_years))
    window = config.params.window
    fit = make_windows(
        frame,
        window,
        as_of_from=fit_from,
        targets_before=stop_start,
        max_samples=config.max_train_samples,
        seed=config.params.seed,
    )
    stop = make_windows(frame, window, as_of_from=stop_start, targets_before=before)
    if len(fit) == 0:
        raise ValueError(f"no complete training windows before {stop_start.date()}")
    return fit, stop, stop_start


def split_windows(frame: pd.DataFrame, config: TrainConfig) -> Split:
    """Purged time split of all windows into fit / early-stopping / validation sets."""
    dates = np.sort(frame["trade_date"].unique())
    if len(dates) <= config.validation_days:
        raise ValueError(
            f"only {len(dates)} trading dates in the mart; validation alone needs "
            f"{config.validation_days}"
        )
    val_start = pd.Timestamp(dates[-config.validation_days])
    fit, stop, stop_start = fit_and_stop_windows(frame, config, before=val_start)
    validation = make_windows(frame, config.params.window, as_of_from=val_start)
    if len(validation) == 0:
        raise ValueError("not enough complete windows to validate")
    bounds = {
        "data_start": str(pd.Timestamp(dates[0]).date()),
        "data_end": str(pd.Timestamp(dates[-1]).date()),
        "fit_as_of_start": str(pd.Timestamp(fit.as_of_dates.min()).date()),
        "fit_as_of_end": str(pd.Timestamp(fit.as_of_dates.max()).date()),
        "stop_start": str(stop_start.date()),
        "validation_start": str(val_start.date()),
    }
    return Split(fit, stop, validation, bounds)


def train(
    ctx: RunContext,
    config: TrainConfig | None = None,
    progress=None,
    force: bool = False,
) -> TrainResult:
    """Train, evaluate against naive on the held-out period, log and register the model, and
    let the promotion gate decide whether it becomes `champion` or `challenger`."""
    from ml.warehouse.preflight import check_local_store, check_warehouse

    # Train reads the warehouse and writes the MLflow store: both are checked before minutes of
    # work (and before TensorFlow loads), so a damaged or read-only disk is one early error.
    check_warehouse(ctx.warehouse, write=False)
    check_local_store(ctx.settings.mlflow_tracking_uri, "MLflow store")
    check_local_store(ctx.settings.mlflow_artifact_root, "MLflow artifacts")

    import mlflow

    from ml import intervals, registry
    from ml.model import fit_forecaster

    config = config or TrainConfig()
    warehouse = ctx.warehouse
    say = progress or (lambda message: None)

    ctx.tracking()
    params, tune_run_id = resolve_params(config)
    config = replace(config, params=params)
    if tune_run_id:
        say(f"using tuned parameters from tune run {tune_run_id}")
    indicators = load_indicators(warehouse, list(config.tickers) if config.tickers else None)
    frame = build_feature_frame(indicators)
    # The gate runs first: its walk-forward fits are freed before the final fit's windows are
    # built, which keeps peak memory at one fit's worth.
    decision = _gate(frame, config, force, say)
    split = split_windows(frame, config)
    say(
        f"windows: {len(split.fit):,} fit, {len(split.stop):,} early-stop, "
        f"{len(split.validation):,} validation across {frame['ticker'].nunique()} tickers"
    )

    with mlflow.start_run(run_name="train") as run:
        # PID and host: a later process marks this run FAILED if it was killed (registry.recover).
        mlflow.set_tags({"stage": "train", "model_name": MODEL_NAME, **registry.owner_tags()})
        if tune_run_id:
            mlflow.set_tag("tuned_from_run", tune_run_id)
        mlflow.log_params(
            {
                **params.as_dict(),
                **{k: v for k, v in asdict(config).items() if k not in ("params", "tickers")},
                "n_features": len(FEATURES),
                "horizons": HORIZONS,
                "n_tickers": int(frame["ticker"].nunique()),
                "n_fit_samples": len(split.fit),
                "n_stop_samples": len(split.stop),
                "n_validation_samples": len(split.validation),
                **split.bounds,
            }
        )
        mlflow.log_dict({"features": FEATURES, "horizons": HORIZONS}, "features.json")
        mlflow.log_text("\n".join(sorted(frame["ticker"].unique())), "tickers.txt")

        def on_epoch(epoch, logs):
            mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch)
            say(f"epoch {epoch + 1}/{params.epochs}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in (logs or {}).items()
            ))  # fmt: skip

        forecaster = fit_forecaster(
            split.fit.x, split.fit.y, split.stop.x, split.stop.y, params, on_epoch=on_epoch
        )
        predicted = forecaster.predict(split.validation.x)
        # Split-conformal intervals calibrated on the held-out (latest) period; the walk-forward
        # backtest measures their coverage on data they were not calibrated on.
        interval_quantiles = intervals.calibrate(
            split.validation.y - predicted, split.validation.x[:, -1, VOLATILITY]
        )
        validation_fold = Fold(
            0,
            pd.Timestamp(split.bounds["validation_start"]),
            pd.Timestamp(split.bounds["data_end"]),
        )
        metrics = horizon_metrics(
            split.validation.as_of_close,
            split.validation.y,
            predicted,
            split.validation.tickers,
            as_of_dates=split.validation.as_of_dates,
            naive_scale=naive_scales(frame, [validation_fold]),
        )
        for row in metrics.itertuples():
            for name in ("mae", "rmse", "mape", "naive_mae", "rel_mae", "mase",
                         "directional_accuracy", "dm_pvalue"):  # fmt: skip
                value = getattr(row, name)
                if np.isfinite(value):
                    mlflow.log_metric(f"val_{name}_h{row.horizon}", value)
        mlflow.log_metrics(
            {
                "val_rel_mae_mean": float(metrics["rel_mae"].mean()),
                "val_mape_mean": float(metrics["mape"].mean()),
                "val_naive_mape_mean": float(metrics["naive_mape"].mean()),
            }
        )
        mlflow.log_text(metrics.to_csv(index=False), "validation_metrics.csv")
        meta = {
            "features": FEATURES,
            "window": params.window,
            "horizons": HORIZONS,
            "params": params.as_dict(),
            "interval_quantiles": interval_quantiles,
            "interval_calibration_samples": len(split.validation),
            "tickers": sorted(frame["ticker"].unique()),
            **split.bounds,
        }
        mlflow.log_text(json.dumps(meta, indent=2), "model_meta.json")
        version = registry.log_forecaster(forecaster, meta, split.validation.x[:8])
        mlflow.set_tag("registered_version", version)
        registry.set_alias(version, decision.alias)
        mlflow.set_tags(decision.tags())
        mlflow.log_metric("gate_candidate_rel_mae", decision.candidate_rel_mae)
        if decision.champion_rel_mae is not None:
            mlflow.log_metric("gate_champion_rel_mae", decision.champion_rel_mae)
    return TrainResult(
        run.info.run_id, version, metrics, len(split.fit), len(split.validation), decision
    )


def _gate(frame: pd.DataFrame, config: TrainConfig, force: bool, say):
    from ml import registry
    from ml.gate import compare_on_same_folds, decide

    current = registry.champion_settings()
    champion_params = ModelParams(**current[1]["params"]) if current else None
    say(
        f"promotion gate: walk-forward over {config.gate_folds} folds of "
        f"{config.gate_test_days} days, candidate"
        + (f" vs champion v{current[0]}" if current else "")
        + " vs naive"
    )
    candidate_rel, champion_rel, _ = compare_on_same_folds(
        frame,
        config,
        config.params,
        champion_params,
        n_folds=config.gate_folds,
        test_days=config.gate_test_days,
    )
    decision = decide(candidate_rel, champion_rel, current[0] if current else None, force)
    say(f"gate: {decision.alias}: {decision.reason}")
    return decision

"""Train stage: indicator mart -> windows -> LSTM -> MLflow run + registered model.

The split (:func:`ml.fitting.split_windows`) is in time, never shuffled: the last
``validation_days`` trading dates are held out for the reported metrics; the ``stop_days``
before them drive early stopping; samples are purged so that no training target reaches into
the early-stopping or validation period.

Training registers the model and stops there: whether it becomes `champion` or `challenger` is
the next stage's decision (:func:`ml.promote.promote`, the promotion gate), which the pipeline
and the CLI call after this one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ml.config import MODEL_NAME
from ml.data import load_indicators
from ml.evaluate import horizon_metrics, naive_scales
from ml.features import HORIZONS, build_feature_frame, feature_index
from ml.fitting import TrainConfig, split_windows
from ml.folds import Fold
from ml.monitor import log_reference, reference_inputs, reference_predictions
from ml.tuned import resolve_params

if TYPE_CHECKING:
    from ml.context import RunContext


@dataclass
class TrainResult:
    run_id: str
    model_version: str
    metrics: pd.DataFrame
    n_train: int
    n_validation: int
    # The config the model was fit with: tuned parameters resolved, explicit settings laid over
    # them. The promotion gate refits these settings on its walk-forward folds.
    config: TrainConfig


def train(ctx: RunContext, config: TrainConfig | None = None, progress=None) -> TrainResult:
    """Train, evaluate against naive on the held-out period, log and register the model.

    The registered version has no alias yet: :func:`ml.promote.promote` gives it one."""
    from ml.warehouse.preflight import check_local_store, check_warehouse

    # Train reads the warehouse and writes the MLflow store: both are checked before minutes of
    # work (and before TensorFlow loads), so a damaged or read-only disk is one early error.
    check_warehouse(ctx.warehouse, write=False)
    check_local_store(ctx.settings.mlflow_tracking_uri, "MLflow store")
    check_local_store(ctx.settings.mlflow_artifact_root, "MLflow artifacts")

    import mlflow

    from ml import combine, registry
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
                **{
                    k: v
                    for k, v in asdict(config).items()
                    if k not in ("params", "tickers", "features")
                },
                "n_features": len(config.features),
                "horizons": HORIZONS,
                "n_tickers": int(frame["ticker"].nunique()),
                "n_fit_samples": len(split.fit),
                "n_stop_samples": len(split.stop),
                "n_validation_samples": len(split.validation),
                **split.bounds,
            }
        )
        mlflow.log_dict({"features": list(config.features), "horizons": HORIZONS}, "features.json")
        mlflow.log_text("\n".join(sorted(frame["ticker"].unique())), "tickers.txt")

        def on_epoch(epoch, logs):
            mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch)
            say(f"epoch {epoch + 1}/{params.epochs}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in (logs or {}).items()
            ))  # fmt: skip

        forecaster = fit_forecaster(
            split.fit.x, split.fit.y, split.stop.x, split.stop.y, params, on_epoch=on_epoch
        )
        location, scale = forecaster.predict_distribution(split.validation.x)
        # The published forecast: the location shrunk toward naive per horizon, with conformal
        # intervals scaled by the scale head, both calibrated on the latest held-out dates
        # (``calibration_days``). The walk-forward backtest measures them on data they were not
        # calibrated on.
        returns = feature_index(config.features, "ret_1")
        fast = combine.fast_scale(split.validation.x, returns, HORIZONS)
        block = split.validation.as_of_dates >= np.datetime64(split.bounds["calibration_start"])
        calibration = combine.calibrate(
            split.validation.y[block],
            location[block],
            scale[block],
            split.validation.as_of_dates[block],
            fast=fast[block],
        )
        predicted, _ = combine.publish(location, scale, calibration, fast=fast)
        # The drift reference `stockcast monitor` compares recent inputs and forecasts with.
        log_reference(
            reference_inputs(
                frame,
                list(config.features),
                split.bounds["fit_as_of_start"],
                split.bounds["fit_as_of_end"],
                seed=params.seed,
            ),
            reference_predictions(
                predicted, split.validation.tickers, split.validation.as_of_dates
            ),
        )
        mlflow.log_metrics(
            {f"combination_weight_h{h + 1}": w for h, w in enumerate(calibration.weights)}
            | {f"scale_exponent_h{h + 1}": a for h, a in enumerate(calibration.scale_exponents)}
        )
        say(
            "combination weights on the LSTM (the rest on naive), h1..h10: "
            + " ".join(f"{w:.2f}" for w in calibration.weights)
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
            "features": list(config.features),
            "window": params.window,
            "horizons": HORIZONS,
            "params": params.as_dict(),
            **calibration.to_dict(),
            "tickers": sorted(frame["ticker"].unique()),
            **split.bounds,
        }
        mlflow.log_text(json.dumps(meta, indent=2), "model_meta.json")
        version = registry.log_forecaster(forecaster, meta, split.validation.x[:8])
        mlflow.set_tag("registered_version", version)
    return TrainResult(
        run.info.run_id, version, metrics, len(split.fit), len(split.validation), config
    )

"""Backtest stage: expanding-window walk-forward evaluation of the LSTM beside baselines.

In every fold each model is fit on data before the fold only (scalers and interval calibration
included), then forecasts horizons 1..10 as of every trading day of the fold. All models
forecast the same origins, so every comparison is on the same rows.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ml.data import load_indicators
from ml.evaluate import (
    INTERVAL_METRICS,
    POOLED,
    backtest_metrics,
    naive_scales,
    regime_metrics,
    skill_by_model,
)
from ml.features import (
    FEATURES,
    HORIZONS,
    WindowSet,
    build_feature_frame,
    feature_index,
    make_windows,
)
from ml.fitting import TrainConfig, calibration_windows, fit_and_stop_windows
from ml.folds import Fold, forecast_frame, make_folds, regime_folds
from ml.model import ModelParams

if TYPE_CHECKING:
    from ml.context import RunContext

MODEL_NAMES = ("lstm", "naive", "drift", "ets", "peer_lstm", "ewma", "garch")
# LSTM ablations: the same fit per fold as `lstm`, published another way.
LSTM_ABLATIONS = ("lstm_raw", "lstm_volscale", "lstm_netscale")


@dataclass(frozen=True)
class BacktestConfig:
    # ``n_folds`` blocks of ``test_days`` as-of dates: the last ones whose actuals are known, or
    # placed from ``start`` / ending by ``end`` (ISO dates); with both and ``n_folds=None``, as
    # many as fit between them. ``regimes``: instead, ``folds_per_regime`` blocks from the start
    # of each named regime (ml.folds.REGIMES) the data reaches.
    n_folds: int | None = 4
    test_days: int = 21
    start: str | None = None
    end: str | None = None
    regimes: bool = False
    folds_per_regime: int = 1
    models: tuple[str, ...] = MODEL_NAMES
    train: TrainConfig = field(default_factory=TrainConfig)
    peer_epochs: int = 5
    # Training windows sampled for each peer_lstm fit. Its cost grows with them: on 38 tickers
    # and 2 shared cores, 5 epochs of 100,000 windows took over 15 minutes, of 20,000 about 3,
    # of 10,000 about 1 (docs/benchmarks.md).
    peer_samples: int = 10_000
    # A fit is reused for a later fold that starts within this many trading days of the fit's
    # cutoff (honest: it saw nothing after the cutoff); 0 refits in every fold.
    refit_days: int = 126
    tickers: tuple[str, ...] | None = None
    # Extra LSTM models by name, each with its own settings (e.g. a candidate and the champion
    # compared on the same folds by the promotion gate).
    # A ModelParams variant keeps the rest of ``train`` (features included); a TrainConfig one
    # is used whole (e.g. a champion trained on another feature set).
    variants: dict[str, ModelParams | TrainConfig] = field(default_factory=dict)

    def variant_train(self, name: str) -> TrainConfig:
        variant = self.variants[name]
        if isinstance(variant, TrainConfig):
            return variant
        return replace(self.train, params=variant)

    def as_params(self) -> dict:
        return {
            "n_folds": self.n_folds,
            "test_days": self.test_days,
            "models": ",".join(self.models),
            "peer_epochs": self.peer_epochs,
            "peer_samples": self.peer_samples,
            "start": self.start,
            "end": self.end,
            "regimes": self.regimes,
            "folds_per_regime": self.folds_per_regime,
            "refit_days": self.refit_days,
            **{f"lstm_{k}": v for k, v in self.train.params.as_dict().items()},
            **{k: v for k, v in asdict(self.train).items() if k not in ("params", "tickers")},
        }


@dataclass
class BacktestResult:
    folds: list[Fold]
    forecasts: pd.DataFrame
    metrics: pd.DataFrame
    run_id: str | None = None

    def pooled(self) -> pd.DataFrame:
        return self.metrics[self.metrics["ticker"] == POOLED].drop(columns="ticker")


Forecaster = Callable[[pd.DataFrame, Fold, WindowSet, BacktestConfig], tuple]


def _trading_days_between(frame: pd.DataFrame, first: pd.Timestamp, last: pd.Timestamp) -> int:
    dates = frame["trade_date"].to_numpy()
    between = (dates >= np.datetime64(first)) & (dates < np.datetime64(last))
    return len(np.unique(dates[between]))


@dataclass(frozen=True)
class _LstmFit:
    model: object
    cutoff: pd.Timestamp  # the fit saw nothing dated on or after it


def _fit_lstm(frame, fold, config, train: TrainConfig, cache: dict | None):
    """The LSTM for ``fold`` and its location and scale on the fold's calibration block.

    As in production (:mod:`ml.train`), a fresh network is fit on data before the last
    ``validation_days`` trading dates before the fold (early stopping on the block just before
    those) and calibrated on the last ``calibration_days`` of them, targets purged at the fold
    (:func:`ml.fitting.calibration_windows`). A network fit before an earlier fold knows
    nothing of this one either, so it is reused while the fold starts within
    ``config.refit_days`` trading days of that fit's cutoff, recalibrated on the block before
    this fold (data it has not seen); otherwise it is refit.
    """
    from ml.model import fit_forecaster

    # Another variant of the same settings in the same fold: the same network and block.
    stored = cache.get(("calibrated", train)) if cache is not None else None
    if stored is not None and stored[0] == fold.index:
        return stored[1]
    fit_before, block = calibration_windows(frame, train, before=fold.test_start)
    latest = _reusable(cache, train, frame, fold, config)
    if latest is None:
        fit, stop, _ = fit_and_stop_windows(frame, train, before=fit_before)
        latest = _LstmFit(
            fit_forecaster(fit.x, fit.y, stop.x, stop.y, train.params), fold.test_start
        )
        del fit
        if cache is not None:
            cache[train] = latest
    calibrated = (latest.model, block, *latest.model.predict_distribution(block.x))
    if cache is not None:
        cache[("calibrated", train)] = (fold.index, calibrated)  # only this fold's is kept
    return calibrated


def _lstm(
    frame,
    fold,
    origins,
    config,
    train: TrainConfig | None = None,
    cache: dict | None = None,
    shrink: bool = True,
    model_scale: bool = True,
    fast: bool = True,
):
    """The Stockcast LSTM refit on the fold's past, published as it is in production: its
    location shrunk toward naive per horizon and conformal intervals around that scaled by its
    own scale head, both calibrated on the latest ``calibration_days`` before the fold (:func:`_fit_lstm`).

    ``shrink=False`` (model ``lstm_raw``) publishes the network's location as it is;
    ``model_scale=False`` (``lstm_volscale``) scales the intervals by the 20-day volatility
    instead of the scale head (the method before the head existed)."""
    from ml import combine, intervals

    train = train or config.train
    if train.params.window != origins.x.shape[1] or train.features != tuple(FEATURES):
        origins = _same_origins(frame, origins, train.params.window, train.features)
    model, block, block_location, block_scale = _fit_lstm(frame, fold, config, train, cache)
    location, scale = model.predict_distribution(origins.x)
    if len(block) == 0:
        return location, None
    if not model_scale:
        volatility = feature_index(train.features, "volatility_20")
        block_scale = intervals.volatility_scale(block.x[:, -1, volatility], HORIZONS)
        scale = intervals.volatility_scale(origins.x[:, -1, volatility], HORIZONS)
    block_fast = origins_fast = None
    if fast and model_scale:
        returns = feature_index(train.features, "ret_1")
        block_fast = combine.fast_scale(block.x, returns, HORIZONS)
        origins_fast = combine.fast_scale(origins.x, returns, HORIZONS)
    calibration = combine.calibrate(
        block.y, block_location, block_scale, block.as_of_dates, shrink=shrink, fast=block_fast
    )
    return combine.publish(location, scale, calibration, fast=origins_fast)


def _same_origins(
    frame: pd.DataFrame, origins: WindowSet, window: int, features=tuple(FEATURES)
) -> WindowSet:
    """``origins`` rebuilt with a shorter ``window`` or other ``features``, row for row (same
    ticker and as-of date)."""
    dates = pd.DatetimeIndex(origins.as_of_dates)
    rebuilt = make_windows(
        frame, window, features=features, as_of_from=dates.min(), as_of_to=dates.max()
    )
    position = pd.Series(
        np.arange(len(rebuilt)),
        index=pd.MultiIndex.from_arrays([rebuilt.tickers, rebuilt.as_of_dates]),
    )
    rows = position.reindex(pd.MultiIndex.from_arrays([origins.tickers, origins.as_of_dates]))
    if rows.isna().any():
        raise ValueError(
            f"{int(rows.isna().sum())} origins lack complete inputs with a {window}-day window "
            f"of {len(features)} features"
        )
    return rebuilt.take(rows.to_numpy(dtype=int))


def _naive(frame, fold, origins, config):
    from ml.baselines import naive_forecasts

    return naive_forecasts(origins), None


def _drift(frame, fold, origins, config):
    from ml.baselines import drift_forecasts

    return drift_forecasts(frame, origins), None


def _ets(frame, fold, origins, config):
    from ml.baselines import classical_forecasts

    return classical_forecasts(frame, fold, origins, model="AutoETS")


def _ewma(frame, fold, origins, config):
    from ml.baselines import ewma_forecasts

    return ewma_forecasts(frame, origins)


def _reusable(fits: dict | None, name, frame, fold, config):
    """The latest fit stored under ``name`` (a baseline's name, or the LSTM's TrainConfig) if it
    may serve ``fold``: made at a cutoff on or
    before the fold's start (so it saw nothing of the fold) and at most ``config.refit_days``
    trading days before it; else ``None`` (refit)."""
    latest = fits.get(name) if fits is not None else None
    if latest is None or latest.cutoff > fold.test_start:
        return None
    if _trading_days_between(frame, latest.cutoff, fold.test_start) > config.refit_days:
        return None
    return latest


def _garch(frame, fold, origins, config, fits: dict | None = None):
    """GARCH(1,1)-t intervals; the per-ticker fits are reused across folds like the LSTM's
    (``config.refit_days``) and filtered forward from their cutoff."""
    from ml.baselines import fit_garch_models, garch_forecasts

    latest = _reusable(fits, "garch", frame, fold, config)
    if latest is None:
        latest = fit_garch_models(frame, fold.test_start, origins.tickers)
        if fits is not None:
            fits["garch"] = latest
    return garch_forecasts(frame, fold, origins, fits=latest)


def _peer_lstm(frame, fold, origins, config, fits: dict | None = None):
    """The peer close-LSTM; its network and the min-max scalers it was trained with are reused
    across folds like the LSTM's (``config.refit_days``)."""
    from ml.baselines import fit_peer_lstm, predict_peer_lstm

    latest = _reusable(fits, "peer_lstm", frame, fold, config)
    if latest is None:
        latest = fit_peer_lstm(
            frame,
            fold.test_start,
            epochs=config.peer_epochs,
            seed=config.train.params.seed,
            max_train_samples=config.peer_samples,
        )
        if fits is not None:
            fits["peer_lstm"] = latest
    return predict_peer_lstm(latest, frame, fold, origins), None


def backtest_folds(trade_dates, config: BacktestConfig, say=None) -> list[Fold]:
    """The folds ``config`` asks for (see :class:`BacktestConfig`); with ``regimes``, the
    regimes the data does not reach are told to ``say``, and none reached is an error."""
    if not config.regimes:
        return make_folds(
            trade_dates, config.n_folds, config.test_days, start=config.start, end=config.end
        )
    if config.start or config.end:
        raise ValueError("regime folds are placed by the regimes: leave out start and end")
    folds, skipped = regime_folds(
        trade_dates, config.test_days, folds_per_regime=config.folds_per_regime
    )
    for name, reason in skipped.items():
        (say or (lambda message: None))(f"regime {name} skipped: {reason}")
    if not folds:
        raise ValueError(f"the data reaches none of the named regimes ({', '.join(skipped)})")
    return folds


FORECASTERS: dict[str, Forecaster] = {
    "lstm": _lstm,
    "naive": _naive,
    "drift": _drift,
    "ets": _ets,
    "peer_lstm": _peer_lstm,
    "ewma": _ewma,
    "garch": _garch,
}


def run_backtest(
    frame: pd.DataFrame, config: BacktestConfig, progress=None, folds: list[Fold] | None = None
) -> BacktestResult:
    """Walk forward over the folds (``folds``, else the ones ``config`` places:
    :func:`backtest_folds`); pure apart from model fitting (no I/O).

    ``progress`` hears each fold as it starts and each model as it finishes in that fold
    (fold i/n, model, seconds taken, seconds since the start)."""
    say = progress or (lambda message: None)
    started = time.perf_counter()
    forecasters = dict(FORECASTERS)
    cache: dict = {}  # per LSTM settings: the latest fit and this fold's calibration block
    forecasters["lstm"] = partial(_lstm, cache=cache)
    forecasters["lstm_raw"] = partial(_lstm, cache=cache, shrink=False)
    forecasters["lstm_volscale"] = partial(_lstm, cache=cache, model_scale=False)
    forecasters["lstm_netscale"] = partial(_lstm, cache=cache, fast=False)
    for name in config.variants:
        forecasters[name] = partial(_lstm, train=config.variant_train(name), cache=cache)
    unknown = set(config.models) - set(forecasters)
    if unknown:
        raise ValueError(f"unknown models {sorted(unknown)}; known: {', '.join(forecasters)}")
    fits: dict = {}  # the latest peer_lstm and GARCH fits, reused like the LSTM's
    forecasters["peer_lstm"] = partial(_peer_lstm, fits=fits)
    forecasters["garch"] = partial(_garch, fits=fits)
    folds = list(folds) if folds is not None else backtest_folds(frame["trade_date"], config, say)
    forecasts = []
    for fold in folds:
        # The longest LSTM window decides which origins every model forecasts.
        window = max(
            [config.train.params.window]
            + [config.variant_train(name).params.window for name in config.variants]
        )
        origins = make_windows(frame, window, as_of_from=fold.test_start, as_of_to=fold.test_end)
        if len(origins) == 0:
            raise ValueError(f"fold {fold.index} has no complete forecast origins")
        say(
            f"fold {fold.index + 1}/{len(folds)}: as-of {fold.test_start.date()}.."
            f"{fold.test_end.date()}, {len(origins):,} origins"
        )
        for name in config.models:
            model_started = time.perf_counter()
            predicted, bounds = forecasters[name](frame, fold, origins, config)
            predicted = np.asarray(predicted, dtype=float)
            keys = (origins.tickers, origins.as_of_dates, origins.as_of_close, origins.y)
            forecasts.append(forecast_frame(name, fold.index, *keys, predicted, bounds))
            now = time.perf_counter()
            say(
                f"  fold {fold.index + 1}/{len(folds)} {name}: done in {now - model_started:.1f}s "
                f"({now - started:.0f}s elapsed)"
            )
    forecasts = pd.concat(forecasts, ignore_index=True)
    metrics = backtest_metrics(forecasts, naive_scales(frame, folds))
    return BacktestResult(folds, forecasts, metrics)


SUMMARY_MEANS = ("mase", "dm_pvalue", *INTERVAL_METRICS)


def summary_table(result: BacktestResult) -> pd.DataFrame:
    """Pooled relative MAE by model (rows) and horizon (columns), plus each model's mean over
    horizons of MASE, the DM p-value and the interval scores (coverage, width, Winkler at 80
    and 95%, pinball loss; NaN for models without intervals)."""
    pooled = result.pooled()
    table = pooled.pivot(index="model", columns="horizon", values="rel_mae")
    table.columns = [f"h{h}" for h in table.columns]
    means = pooled.groupby("model")[list(SUMMARY_MEANS)].mean()
    return table.join(means.rename(columns=lambda c: f"mean_{c}"))


def regime_table(result: BacktestResult) -> pd.DataFrame:
    """Per named regime (folds outside every regime pooled as ``other``) and model: relative
    MAE vs naive, and for interval models coverage and Winkler score at 80 and 95%, each the
    mean over horizons of the pooled metric on that regime's rows (:func:`regime_metrics`).
    Empty when no fold carries a regime."""
    return regime_metrics(result.forecasts, result.folds)


def _plots(result: BacktestResult, frame: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled = result.pooled()
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for model, group in pooled.groupby("model"):
        axes[0].plot(group["horizon"], group["rel_mae"], marker="o", label=model)
        axes[1].plot(group["horizon"], group["mase"], marker="o", label=model)
    axes[0].axhline(1.0, color="grey", linestyle="--", linewidth=1)
    axes[0].set(title="Relative MAE vs naive (geometric mean over tickers)", xlabel="horizon")
    axes[1].set(title="MASE (scaled by the fold's one-day naive MAE)", xlabel="horizon")
    axes[0].legend()
    fig.tight_layout()
    paths.append(out / "error_by_horizon.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    lstm = result.forecasts[result.forecasts["model"] == "lstm"]
    if len(lstm) and lstm["lower_80"].notna().any():
        last = lstm[lstm["fold"] == lstm["fold"].max()]
        as_of = last["as_of_date"].min()
        tickers = sorted(last.loc[last["as_of_date"] == as_of, "ticker"].unique())[:3]
        fig, axes = plt.subplots(1, len(tickers), figsize=(5 * len(tickers), 3.6), squeeze=False)
        for ax, ticker in zip(axes[0], tickers, strict=True):
            history = frame[(frame["ticker"] == ticker) & (frame["trade_date"] <= as_of)].tail(40)
            path = last[(last["ticker"] == ticker) & (last["as_of_date"] == as_of)]
            path = path.sort_values("horizon")
            close = path["as_of_close"].to_numpy()
            steps = np.arange(1, len(path) + 1)
            ax.plot(np.arange(-len(history) + 1, 1), history["close"], color="black")
            ax.plot(steps, close * np.exp(path["actual_log_return"]), color="black", ls=":")
            ax.plot(steps, close * np.exp(path["predicted_log_return"]), color="C0")
            for level, alpha in ((95, 0.15), (80, 0.3)):
                ax.fill_between(
                    steps,
                    close * np.exp(path[f"lower_{level}"]),
                    close * np.exp(path[f"upper_{level}"]),
                    color="C0",
                    alpha=alpha,
                    label=f"{level}%",
                )
            ax.set(title=f"{ticker} as of {pd.Timestamp(as_of).date()}", xlabel="trading days")
            ax.legend(loc="upper left")
        fig.tight_layout()
        paths.append(out / "fan_charts.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def with_fold_span(metrics: pd.DataFrame, folds: list[Fold]) -> pd.DataFrame:
    """The metrics as stored: with the run's fold count, first and last as-of dates and time."""
    return metrics.assign(
        n_folds=len(folds),
        first_as_of=folds[0].test_start.date(),
        last_as_of=folds[-1].test_end.date(),
        created_at=pd.Timestamp.now(tz="UTC").tz_localize(None),
    )


def backtest(
    ctx: RunContext, config: BacktestConfig | None = None, progress=None
) -> BacktestResult:
    """Run the walk-forward backtest, log it to MLflow and store its metrics in the warehouse."""
    import mlflow

    from ml.tuned import resolve_params

    config = config or BacktestConfig()
    ctx.tracking()
    # As train does: the LSTM starts from the latest `stockcast tune` result unless told not to.
    params, tune_run_id = resolve_params(config.train)
    config = replace(config, train=replace(config.train, params=params))
    if tune_run_id and progress:
        progress(f"using tuned parameters from tune run {tune_run_id}")
    warehouse = ctx.warehouse
    indicators = load_indicators(warehouse, list(config.tickers) if config.tickers else None)
    frame = build_feature_frame(indicators)
    from ml.registry import owner_tags

    with mlflow.start_run(run_name="backtest") as run:
        # PID and host: a later process marks the run FAILED if this one is killed.
        mlflow.set_tags({"stage": "backtest", **owner_tags()})
        if tune_run_id:
            mlflow.set_tag("tuned_from_run", tune_run_id)
        mlflow.log_params(
            {
                **config.as_params(),
                "n_tickers": int(frame["ticker"].nunique()),
                "horizons": HORIZONS,
            }
        )
        result = run_backtest(frame, config, progress)
        result.run_id = run.info.run_id
        mlflow.log_dict([f.as_dict() for f in result.folds], "folds.json")
        pooled = result.pooled()
        names = ("rel_mae", "mase", "mape", "directional_accuracy", "dm_pvalue",
                 *INTERVAL_METRICS)  # fmt: skip
        mlflow.log_metrics(
            {
                f"{row.model}/{name}_h{row.horizon}": float(getattr(row, name))
                for row in pooled.itertuples()
                for name in names
                if np.isfinite(getattr(row, name))
            }
        )
        for model, skill in skill_by_model(result.metrics).items():
            mlflow.log_metric(f"{model}/rel_mae_mean", float(skill))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            result.metrics.to_csv(out / "backtest_metrics.csv", index=False)
            summary_table(result).to_csv(out / "summary.csv")
            regimes = regime_table(result)
            if len(regimes):
                regimes.to_csv(out / "regimes.csv", index=False)
                mlflow.log_artifact(str(out / "regimes.csv"))
            for path in _plots(result, frame, out):
                mlflow.log_artifact(str(path))
            mlflow.log_artifact(str(out / "backtest_metrics.csv"))
            mlflow.log_artifact(str(out / "summary.csv"))
        mlflow.log_text(json.dumps(asdict(config), default=str, indent=2), "config.json")
    warehouse.replace_backtest(
        result.run_id, with_fold_span(result.metrics, result.folds), result.forecasts
    )
    return result

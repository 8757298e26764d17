"""Score stage: the champion model forecasts every ticker as of its last bar.

Forecasts for horizons 1..10 are dated on the NYSE trading days after the as-of date
(weekends and exchange holidays skipped) and written to ``ml.predicted_prices``, replacing any
earlier forecasts for the same (ticker, as-of date) in one transaction.

With no champion (no model has passed the promotion gate, :mod:`ml.gate`), the baseline is
published instead: the naive point forecast (the as-of close) with RiskMetrics EWMA
intervals (:func:`ml.baselines.ewma_forecasts`), rows marked ``model_name = 'naive_ewma'``,
``model_version = 'baseline'`` and an empty ``mlflow_run_id`` (no run produced it).

Every scoring is an MLflow run of its own (tag ``stage = score``: the model and version, the
as-of date, the counts); the monitor logs its drift report in a run nested under it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ml.config import MODEL_NAME
from ml.data import load_indicators, load_recent_indicators
from ml.features import (
    EWMA_LAMBDA,
    FEATURE_GROUPS,
    FEATURES,
    HORIZONS,
    build_feature_frame,
    history_rows,
    make_windows,
)

if TYPE_CHECKING:
    from ml.context import RunContext

# What `ml.predicted_prices` says when no model has passed the gate and the baseline is published.
BASELINE_MODEL_NAME = "naive_ewma"
BASELINE_VERSION = "baseline"
BASELINE_RUN_ID = ""  # no MLflow run produced it
# The baseline needs only each ticker's last bar with complete features (and its closes).
BASELINE_WINDOW = 1


def next_trading_days(as_of_dates: list[pd.Timestamp], count: int) -> dict:
    """For each as-of date, the next ``count`` NYSE sessions strictly after it."""
    import exchange_calendars as xc

    start = min(as_of_dates) - pd.Timedelta(days=7)
    end = max(as_of_dates) + pd.Timedelta(days=count * 2 + 20)
    calendar = xc.get_calendar(
        "XNYS", start=start.strftime("%Y-%m-%d"), end=end.strftime("%Y-%m-%d")
    )
    sessions = calendar.sessions.tz_localize(None) if calendar.sessions.tz else calendar.sessions
    sessions = sessions.to_numpy()
    result = {}
    for as_of in set(as_of_dates):
        first = np.searchsorted(sessions, np.datetime64(as_of), side="right")
        upcoming = sessions[first : first + count]
        if len(upcoming) < count:
            raise ValueError(f"the NYSE calendar does not reach {count} sessions after {as_of}")
        result[as_of] = [pd.Timestamp(d).date() for d in upcoming]
    return result


@dataclass
class ScoreResult:
    model_version: str
    run_id: str
    rows_written: int
    tickers_scored: int
    tickers_skipped: list[str]
    model_name: str = MODEL_NAME  # BASELINE_MODEL_NAME when the baseline was published
    scoring_run_id: str = ""  # the MLflow run of this scoring

    @property
    def baseline(self) -> bool:
        """Whether the forecasts are the naive_ewma baseline's (no champion exists)."""
        return self.model_name == BASELINE_MODEL_NAME


def score(
    ctx: RunContext,
    tickers: list[str] | None = None,
    progress=None,
    since: date | None = None,
    *,
    whole_history: bool = False,
) -> ScoreResult:
    """Forecast with the champion as of each ticker's last bar; with ``since``, as of every
    trading day from ``since`` on (a backfill, so that history and realized accuracy can be
    shown at once). A backfill keeps the forecasts already published for an as-of date (they
    are the record of what was forecast then) and writes the model's ``data_end`` beside each
    forecast: the marts flag those whose target date the model was fitted on as in-sample.

    Only the bars each forecast depends on are read (:func:`ml.features.history_rows` per
    ticker); ``whole_history`` reads every bar instead, which gives the same forecasts, slower
    (the reference the tests hold the short read to)."""
    from ml.warehouse.preflight import check_warehouse

    warehouse = ctx.warehouse
    # A read-only, full or damaged warehouse is reported now, before MLflow and TensorFlow load
    # and the model runs.
    check_warehouse(warehouse, write=True)
    from ml import registry  # imports MLflow: seconds

    say = progress or (lambda message: None)
    ctx.tracking()
    if registry.champion_version() is None:
        return score_baseline(ctx, tickers, say, since=since, whole_history=whole_history)
    champion = registry.load_champion()
    window = int(champion.meta["window"])

    features = champion.meta["features"]
    # Market inputs are means over the universe loaded: build them from every ticker the
    # model was trained beside, then keep the ones asked for.
    market = bool(set(features) & set(FEATURE_GROUPS["market"]))
    universe = None if market else tickers
    frame = build_feature_frame(
        _read_history(warehouse, universe, history_rows(window), since, market, whole_history)
    )
    if tickers and universe is None:
        frame = frame[frame["ticker"].isin(set(tickers))]
    latest = _origins(warehouse, frame, window, features, since, say)
    all_tickers = sorted(frame["ticker"].unique())
    skipped = sorted(set(all_tickers) - set(latest.tickers))
    if len(latest) == 0:
        if since is not None:
            raise ValueError(
                f"nothing to backfill since {since}: every as-of date from then on is already "
                "published, or no ticker has enough complete feature rows"
            )
        raise ValueError(
            f"no ticker has the {window} complete feature rows (after indicator warm-up) "
            "needed to forecast"
        )
    if since is None:
        say(f"forecasting {len(latest)} tickers with {MODEL_NAME} v{champion.version}")
    else:
        say(
            f"backfilling {len(latest)} forecasts ({len(set(latest.tickers))} tickers, as-of "
            f"{pd.Timestamp(min(latest.as_of_dates)).date()}.."
            f"{pd.Timestamp(max(latest.as_of_dates)).date()}) with {MODEL_NAME} "
            f"v{champion.version}, fitted on data through {champion.meta.get('data_end')}"
        )
    log_returns, bounds = champion.model.unwrap_python_model().forecast(latest.x)
    predictions = _predictions(latest, log_returns, bounds).assign(
        model_name=MODEL_NAME,
        model_version=champion.version,
        mlflow_run_id=champion.run_id,
        scored_at=pd.Timestamp.now(tz="UTC").tz_localize(None),
        model_data_end=pd.Timestamp(champion.meta["data_end"]).date()
        if champion.meta.get("data_end")
        else None,
    )
    if not np.isfinite(predictions["predicted_close"]).all():
        raise ValueError("the model produced non-finite forecasts; nothing was written")
    written = warehouse.replace_predictions(predictions)
    result = ScoreResult(
        champion.version, champion.run_id, written, len(set(latest.tickers)), skipped
    )
    return _logged(result, predictions)


def _read_history(
    warehouse, tickers, rows: int, since: date | None, market: bool, whole_history: bool
) -> pd.DataFrame:
    """The indicator bars the forecasts depend on: each ticker's last ``rows`` (before
    ``since`` and all from it on, for a backfill). Market features are means over the
    universe by date, so with them every ticker's bars are read from the earliest date any
    forecast needs."""
    if whole_history:
        return load_indicators(warehouse, tickers)
    return load_recent_indicators(warehouse, rows, tickers, since=since, common_start=market)


def _predictions(latest, log_returns: np.ndarray, bounds: dict | None) -> pd.DataFrame:
    """``HORIZONS`` rows per origin: the target trading days, the forecast log returns and
    their bounds (NULL without ``bounds``) as prices of the as-of close."""
    as_of = pd.DatetimeIndex(latest.as_of_dates)
    targets = next_trading_days(list(as_of), HORIZONS)
    close = np.asarray(latest.as_of_close, dtype=np.float64)[:, None]
    columns = {
        "ticker": np.repeat(latest.tickers, HORIZONS),
        "as_of_date": np.repeat(as_of.date, HORIZONS),
        "target_date": [day for d in as_of for day in targets[d]],
        "horizon": np.tile(np.arange(1, HORIZONS + 1), len(latest)),
        "predicted_close": (close * np.exp(log_returns)).ravel(),
    }
    for column in ("lower_80", "upper_80", "lower_95", "upper_95"):
        columns[column] = (close * np.exp(bounds[column])).ravel() if bounds else None
    return pd.DataFrame(columns)


def _origins(warehouse, frame: pd.DataFrame, window: int, features, since: date | None, say):
    """The windows to forecast from: each ticker's last one, or, for a backfill, every one as
    of ``since`` on that is not published yet."""
    if since is None:
        return make_windows(frame, window, features=features, require_targets=False, last_only=True)
    windows = make_windows(
        frame, window, features=features, require_targets=False, as_of_from=pd.Timestamp(since)
    )
    return _without_published(warehouse, windows, since, say)


def _without_published(warehouse, windows, since: date, say):
    """``windows`` less the (ticker, as-of date) pairs that already have forecasts."""
    from ml.contracts import PREDICTED_PRICES

    if not warehouse.table_exists(PREDICTED_PRICES.full_name):
        return windows
    published = warehouse.query_df(
        f"select distinct ticker, as_of_date from {warehouse.table(PREDICTED_PRICES.full_name)} "
        f"where as_of_date >= cast('{since.isoformat()}' as date)"
    )
    if published.empty:
        return windows
    known = set(zip(published["ticker"], pd.to_datetime(published["as_of_date"]), strict=True))
    keep = np.array(
        [
            (ticker, pd.Timestamp(day)) not in known
            for ticker, day in zip(windows.tickers, windows.as_of_dates, strict=True)
        ],
        dtype=bool,
    )
    say(f"keeping {int((~keep).sum())} forecasts already published since {since}")
    return windows.take(keep)


def score_baseline(
    ctx: RunContext,
    tickers: list[str] | None = None,
    say=None,
    since: date | None = None,
    *,
    whole_history: bool = False,
) -> ScoreResult:
    """Publish the baseline: the naive point forecast (predicted close = the as-of close) with
    RiskMetrics EWMA 80/95% intervals, for every ticker whose last bar has complete features;
    with ``since``, as of every trading day from then on not yet published (a backfill; the
    baseline fits nothing, so none of it is in-sample).

    What :func:`score` writes when no champion exists (nothing has passed the promotion gate).
    """
    from ml.baselines import EWMA_LAMBDA as BASELINE_LAMBDA
    from ml.baselines import ewma_forecasts

    say = say or (lambda message: None)
    # The base features' EWMA and the baseline's own both reach back this far.
    rows = history_rows(BASELINE_WINDOW, min(EWMA_LAMBDA, BASELINE_LAMBDA))
    frame = build_feature_frame(
        _read_history(ctx.warehouse, tickers, rows, since, False, whole_history)
    )
    latest = _origins(ctx.warehouse, frame, BASELINE_WINDOW, FEATURES, since, say)
    skipped = sorted(set(frame["ticker"].unique()) - set(latest.tickers))
    if len(latest) == 0:
        if since is not None:
            raise ValueError(
                f"nothing to backfill since {since}: every as-of date from then on is already "
                "published, or no ticker has a complete feature row"
            )
        raise ValueError(
            "no ticker has a complete feature row (after indicator warm-up) to forecast"
        )
    if since is None:
        say(
            f"forecasting {len(latest)} tickers with the {BASELINE_MODEL_NAME} baseline "
            "(no model has passed the promotion gate)"
        )
    else:
        say(
            f"backfilling {len(latest)} forecasts ({len(set(latest.tickers))} tickers, as-of "
            f"{pd.Timestamp(min(latest.as_of_dates)).date()}.."
            f"{pd.Timestamp(max(latest.as_of_dates)).date()}) with the {BASELINE_MODEL_NAME} "
            "baseline (no model has passed the promotion gate)"
        )
    log_returns, bounds = ewma_forecasts(frame, latest)
    predictions = _predictions(latest, log_returns, bounds)
    for column in ("lower_80", "upper_80", "lower_95", "upper_95"):
        # A ticker with no past return has no EWMA variance: no interval (NULL), as the
        # contract allows.
        prices = predictions[column].to_numpy()
        predictions[column] = np.where(np.isfinite(prices), prices, np.nan)
    predictions = predictions.assign(
        model_name=BASELINE_MODEL_NAME,
        model_version=BASELINE_VERSION,
        mlflow_run_id=BASELINE_RUN_ID,
        scored_at=pd.Timestamp.now(tz="UTC").tz_localize(None),
    )
    if not np.isfinite(predictions["predicted_close"]).all():
        raise ValueError("the baseline produced non-finite forecasts; nothing was written")
    written = ctx.warehouse.replace_predictions(predictions)
    result = ScoreResult(
        BASELINE_VERSION,
        BASELINE_RUN_ID,
        written,
        len(set(latest.tickers)),
        skipped,
        model_name=BASELINE_MODEL_NAME,
    )
    return _logged(result, predictions)


def _logged(result: ScoreResult, predictions: pd.DataFrame) -> ScoreResult:
    """``result`` with the id of the MLflow run recording this scoring (in the experiment the
    context's tracking points at)."""
    import mlflow

    as_of = max(predictions["as_of_date"])
    with mlflow.start_run(run_name=f"score {as_of}") as run:
        mlflow.set_tags(
            {
                "stage": "score",
                "model_name": result.model_name,
                "model_version": result.model_version,
                "model_run_id": result.run_id,
                "as_of_date": str(as_of),
                "scored_at": str(predictions["scored_at"].iloc[0]),
            }
        )
        mlflow.log_metrics(
            {
                "tickers_scored": result.tickers_scored,
                "tickers_skipped": len(result.tickers_skipped),
                "rows_written": result.rows_written,
            }
        )
    return replace(result, scoring_run_id=run.info.run_id)

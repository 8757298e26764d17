"""Score stage: the champion model forecasts every ticker as of its last bar.

Forecasts for horizons 1..10 are dated on the NYSE trading days after the as-of date
(weekends and exchange holidays skipped) and written to ``ml.predicted_prices``, replacing any
earlier forecasts for the same (ticker, as-of date) in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ml import intervals
from ml.config import MODEL_NAME
from ml.data import load_indicators
from ml.features import HORIZONS, VOLATILITY, build_feature_frame, make_windows

if TYPE_CHECKING:
    from ml.context import RunContext


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


def score(ctx: RunContext, tickers: list[str] | None = None, progress=None) -> ScoreResult:
    from ml.warehouse.preflight import check_warehouse

    warehouse = ctx.warehouse
    # A read-only, full or damaged warehouse is reported now, before MLflow and TensorFlow load
    # and the model runs.
    check_warehouse(warehouse, write=True)
    from ml import registry  # imports MLflow: seconds

    say = progress or (lambda message: None)
    ctx.tracking()
    champion = registry.load_champion()
    window = int(champion.meta["window"])

    indicators = load_indicators(warehouse, tickers)
    frame = build_feature_frame(indicators)
    latest = make_windows(frame, window, require_targets=False, last_only=True)
    all_tickers = sorted(frame["ticker"].unique())
    skipped = sorted(set(all_tickers) - set(latest.tickers))
    if len(latest) == 0:
        raise ValueError(
            f"no ticker has the {window} complete feature rows (after indicator warm-up) "
            "needed to forecast"
        )
    say(f"forecasting {len(latest)} tickers with {MODEL_NAME} v{champion.version}")
    log_returns = np.asarray(champion.model.predict(latest.x))
    bounds = {}
    if champion.meta.get("interval_quantiles"):
        quantiles = {int(k): v for k, v in champion.meta["interval_quantiles"].items()}
        bounds = intervals.apply(log_returns, latest.x[:, -1, VOLATILITY], quantiles)
    as_of = [pd.Timestamp(d) for d in latest.as_of_dates]
    targets = next_trading_days(as_of, HORIZONS)
    scored_at = pd.Timestamp.now(tz="UTC").tz_localize(None)
    rows = []
    for i, ticker in enumerate(latest.tickers):
        close = latest.as_of_close[i]
        for h in range(HORIZONS):
            row = {
                "ticker": ticker,
                "as_of_date": as_of[i].date(),
                "target_date": targets[as_of[i]][h],
                "horizon": h + 1,
                "predicted_close": float(close * np.exp(log_returns[i, h])),
            }
            for column in ("lower_80", "upper_80", "lower_95", "upper_95"):
                row[column] = float(close * np.exp(bounds[column][i, h])) if bounds else None
            rows.append(row)
    predictions = pd.DataFrame(rows).assign(
        model_name=MODEL_NAME,
        model_version=champion.version,
        mlflow_run_id=champion.run_id,
        scored_at=scored_at,
    )
    if not np.isfinite(predictions["predicted_close"]).all():
        raise ValueError("the model produced non-finite forecasts; nothing was written")
    written = warehouse.replace_predictions(predictions)
    return ScoreResult(champion.version, champion.run_id, written, len(latest), skipped)

"""Expanding-window walk-forward folds and the long forecast format every model returns.

A fold tests forecasts made as of each trading date in a block of ``test_days`` consecutive
dates; the model for that fold is fit only on samples whose targets end before the block
starts (purged), so nothing it learns has seen the block. Blocks are consecutive and end at
the last date whose 10-day-ahead actuals are known.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.features import HORIZONS

# One row per (model, fold, ticker, as_of_date, horizon). Interval columns are NaN for models
# that give none. Log returns are from the as-of close to the target close.
FORECAST_COLUMNS = [
    "model", "fold", "ticker", "as_of_date", "horizon", "as_of_close", "actual_log_return",
    "predicted_log_return", "lower_80", "upper_80", "lower_95", "upper_95",
]  # fmt: skip


@dataclass(frozen=True)
class Fold:
    index: int
    test_start: pd.Timestamp  # first as-of date tested
    test_end: pd.Timestamp  # last as-of date tested

    def as_dict(self) -> dict:
        return {
            "fold": self.index,
            "test_start": str(self.test_start.date()),
            "test_end": str(self.test_end.date()),
        }


def make_folds(trade_dates, n_folds: int, test_days: int = 21) -> list[Fold]:
    """The last ``n_folds`` blocks of ``test_days`` as-of dates whose actuals are all known."""
    dates = np.sort(pd.to_datetime(pd.Index(trade_dates).unique()).to_numpy())
    usable = dates[: len(dates) - HORIZONS]  # as-of dates with 10 later dates
    if n_folds < 1 or test_days < 1:
        raise ValueError("n_folds and test_days must be positive")
    if len(usable) < n_folds * test_days + 1:
        raise ValueError(
            f"{len(dates)} trading dates cannot hold {n_folds} folds of {test_days} days "
            f"plus {HORIZONS} days of actuals"
        )
    blocks = usable[len(usable) - n_folds * test_days :].reshape(n_folds, test_days)
    return [
        Fold(i, pd.Timestamp(block[0]), pd.Timestamp(block[-1])) for i, block in enumerate(blocks)
    ]


def empty_forecasts() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in FORECAST_COLUMNS})


def forecast_frame(
    model: str,
    fold: int,
    tickers: np.ndarray,
    as_of_dates: np.ndarray,
    as_of_close: np.ndarray,
    actual: np.ndarray,
    predicted: np.ndarray,
    intervals: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Long format from (samples, horizons) arrays of actual and predicted log returns."""
    n, horizons = predicted.shape
    frame = pd.DataFrame(
        {
            "model": model,
            "fold": fold,
            "ticker": np.repeat(tickers, horizons),
            "as_of_date": np.repeat(as_of_dates, horizons),
            "horizon": np.tile(np.arange(1, horizons + 1), n),
            "as_of_close": np.repeat(as_of_close, horizons),
            "actual_log_return": actual.reshape(-1),
            "predicted_log_return": predicted.reshape(-1),
        }
    )
    for column in ("lower_80", "upper_80", "lower_95", "upper_95"):
        values = (intervals or {}).get(column)
        frame[column] = np.nan if values is None else values.reshape(-1)
    return frame[FORECAST_COLUMNS]

"""Small builders shared by the tests (no fixtures with side effects here)."""

from __future__ import annotations

import contextlib
import os
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
# The developer data set beside the repository (`../shared/data`); STOCKCAST_SHARED_DATA points
# the tests at another copy.
SHARED_DATA = Path(
    os.environ.get("STOCKCAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
YAHOO = SHARED_DATA / "yahoo_sp500_daily"


def tiny_train_config(seed: int = 1, **overrides):
    """A TrainConfig small enough for a test: a 4-unit LSTM on 10-day windows, one epoch, at
    most 2,000 training samples; ``overrides`` replace any field."""
    from ml.fitting import TrainConfig
    from ml.model import ModelParams

    params = ModelParams(window=10, units=4, dropout=0.0, epochs=1, batch_size=256, seed=seed)
    settings = {
        "params": params,
        "validation_days": 60,
        "calibration_days": 30,
        "stop_days": 30,
        "max_train_samples": 2000,
    }
    return TrainConfig(**(settings | overrides))


def read_yahoo(ticker: str) -> pd.DataFrame:
    frame = pd.read_csv(YAHOO / f"{ticker}.csv.gz", na_values="null").dropna()
    frame["Date"] = pd.to_datetime(frame["Date"])
    return frame


def indicator_frame(prices: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """The indicator mart's columns, computed with TA-Lib (the reference the mart must match)."""
    import talib

    close = prices["Close"].to_numpy(dtype=float)
    frame = pd.DataFrame(
        {
            "ticker": ticker,
            "trade_date": pd.to_datetime(prices["Date"]).to_numpy(),
            "open": prices["Open"].to_numpy(float),
            "high": prices["High"].to_numpy(float),
            "low": prices["Low"].to_numpy(float),
            "close": close,
            "volume": prices["Volume"].to_numpy(float),
        }
    )
    for n in (5, 20, 50):
        frame[f"sma_{n}"] = talib.SMA(close, n)
    frame["ema_12"] = talib.EMA(close, 12)
    frame["ema_26"] = talib.EMA(close, 26)
    frame["macd"], frame["macd_signal"], frame["macd_hist"] = talib.MACD(close, 12, 26, 9)
    frame["rsi_14"] = talib.RSI(close, 14)
    return frame


def random_walk_prices(n: int, seed: int, start: str = "2015-01-02") -> pd.DataFrame:
    """A labelled synthetic OHLCV series on business days (for pure unit tests only)."""
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.015, n)))
    open_ = close * np.exp(rng.normal(0, 0.004, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.005, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.005, n)))
    return pd.DataFrame(
        {
            "Date": pd.bdate_range(start, periods=n),
            "Open": open_,
            "High": high,
            "Low": low,
            "Close": close,
            "Volume": rng.integers(1_000, 100_000, n),
        }
    )


def mean_reverting_prices(n: int, coefficient: float = -0.6, seed: int = 0) -> pd.DataFrame:
    """A labelled synthetic series whose daily returns follow an AR(1): a learnable signal, for
    tests that need a model with real skill (the optimum relative MAE at h=1 is
    sqrt(1 - coefficient**2))."""
    rng = np.random.default_rng(seed)
    returns = np.zeros(n)
    shocks = rng.normal(0, 0.012, n)
    for t in range(1, n):
        returns[t] = coefficient * returns[t - 1] + shocks[t]
    prices = random_walk_prices(n, seed=seed + 9)
    close = 40 * np.exp(np.cumsum(returns))
    prices["Close"] = close
    prices["Open"] = close * np.exp(-returns / 2)
    prices["High"] = np.maximum(prices["Open"], close) * 1.002
    prices["Low"] = np.minimum(prices["Open"], close) * 0.998
    return prices


@contextlib.contextmanager
def isolated_home(home: Path, env: dict[str, str] | None = None):
    """Point every Stockcast setting at ``home`` (a fresh data folder) while the block runs:
    warehouse, MLflow store and dbt artefacts all land there; ``env`` is set on top (e.g. the
    emulators' target). For module-scoped fixtures."""
    import pytest

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STOCKCAST_HOME", str(home))
        for name in ("STOCKCAST_DUCKDB_PATH", "MLFLOW_TRACKING_URI", "STOCKCAST_TARGET"):
            patch.delenv(name, raising=False)
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        yield home


@contextlib.contextmanager
def duckdb_lock_held(path: Path):
    """Another process holding the DuckDB file ``path`` open for writing while the block runs;
    yields that process (its pid is what lock errors should name)."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('held', flush=True); "
         "time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


# Days (of January 2020) with a bar: A every day to the 10th, B with a gap, C ending early.
TAIL_DAYS = {"A": list(range(1, 11)), "B": [1, 2, 8, 9, 10, 11, 12], "C": [5, 6]}
# Warehouse.read_table_tail over TAIL_DAYS: (rows, options, the days kept per ticker).
TAIL_READS = [
    (3, {}, {"A": [8, 9, 10], "B": [10, 11, 12], "C": [5, 6]}),
    (1, {"filter_in": {"ticker": ["B", "C"]}}, {"B": [12], "C": [6]}),
    # the rows before the date, all from it on; C ends before it: still its last rows
    (2, {"kept_from": date(2020, 1, 10)}, {"A": [8, 9, 10], "B": [8, 9, 10, 11, 12], "C": [5, 6]}),
    # the last 2 rows start on day 9 (A), 11 (B), 5 (C): all from day 5, and each ticker's bar
    # before it (B's on day 2: its return on day 8 needs it)
    (2, {"common_start": True}, {"A": [4, 5, 6, 7, 8, 9, 10], "B": [2, 8, 9, 10, 11, 12], "C": [5, 6]}),
    # the last row before the 12th: day 10 (A), 11 (B), 6 (C): all from day 6
    (
        1,
        {"common_start": True, "kept_from": date(2020, 1, 12)},
        {"A": [5, 6, 7, 8, 9, 10], "B": [2, 8, 9, 10, 11, 12], "C": [5, 6]},
    ),
]  # fmt: skip


def tail_days_frame() -> pd.DataFrame:
    """TAIL_DAYS as rows (ticker, trade_date, day)."""
    return pd.DataFrame(
        [(t, date(2020, 1, d), d) for t, days in TAIL_DAYS.items() for d in days],
        columns=["ticker", "trade_date", "day"],
    )


def tail_days(warehouse, table: str, rows: int, **options) -> dict[str, list[int]]:
    """The days a tail read of ``table`` (:func:`tail_days_frame`'s rows) keeps, per ticker;
    checks they come sorted by ticker and date."""
    frame = warehouse.read_table_tail(
        table, ["ticker", "trade_date", "day"],
        partition_by="ticker", order_by="trade_date", rows=rows, **options,
    )  # fmt: skip
    assert list(zip(frame["ticker"], frame["trade_date"], strict=True)) == sorted(
        zip(frame["ticker"], frame["trade_date"], strict=True)
    )
    return {ticker: [int(d) for d in group["day"]] for ticker, group in frame.groupby("ticker")}

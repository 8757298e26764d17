"""Model features and targets, built from the indicator mart (long format: one row per ticker, day).

Everything the model sees or predicts is a per-ticker stationary quantity: log returns, log
ratios of the close to its moving averages, MACD over the close, RSI/100, volume relative to
its own recent average. Raw price levels never enter. Each feature row uses only bars on or
before its own date; targets are the log returns from the as-of close to the close ``h``
trading rows later.

Pure pandas/numpy: no I/O, no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

HORIZONS = 10
FEATURES = [
    "ret_1",
    "gap_open",
    "body_oc",
    "range_hl",
    "close_sma_5",
    "close_sma_20",
    "close_sma_50",
    "close_ema_12",
    "close_ema_26",
    "macd_over_close",
    "macd_signal_over_close",
    "macd_hist_over_close",
    "rsi",
    "volatility_20",
    "volume_ratio_20",
]
# Position of the as-of volatility in a window's last row: it scales the prediction intervals.
VOLATILITY = FEATURES.index("volatility_20")
INDICATOR_COLUMNS = [
    "ticker", "trade_date", "open", "high", "low", "close", "volume",
    "sma_5", "sma_20", "sma_50", "ema_12", "ema_26", "macd", "macd_signal", "macd_hist",
    "rsi_14",
]  # fmt: skip


def build_feature_frame(indicators: pd.DataFrame) -> pd.DataFrame:
    """Per-row features (``FEATURES``) and targets (``target_1..target_10``), long format.

    Rows are sorted by ticker and date. Feature columns are NaN during indicator warm-up;
    targets are NaN for the last ``HORIZONS`` rows of each ticker.
    """
    df = indicators.sort_values(["ticker", "trade_date"]).reset_index(drop=True)
    by_ticker = df.groupby("ticker", sort=False)
    close = df["close"].astype("float64")
    prev_close = by_ticker["close"].shift(1)
    out = pd.DataFrame({"ticker": df["ticker"], "trade_date": df["trade_date"], "close": close})
    log_close = np.log(close)
    out["ret_1"] = log_close - np.log(prev_close)
    out["gap_open"] = np.log(df["open"] / prev_close)
    out["body_oc"] = np.log(close / df["open"])
    out["range_hl"] = np.log(df["high"] / df["low"])
    for column, source in [
        ("close_sma_5", "sma_5"),
        ("close_sma_20", "sma_20"),
        ("close_sma_50", "sma_50"),
        ("close_ema_12", "ema_12"),
        ("close_ema_26", "ema_26"),
    ]:
        out[column] = log_close - np.log(df[source].astype("float64"))
    for column, source in [
        ("macd_over_close", "macd"),
        ("macd_signal_over_close", "macd_signal"),
        ("macd_hist_over_close", "macd_hist"),
    ]:
        out[column] = df[source].astype("float64") / close
    out["rsi"] = df["rsi_14"].astype("float64") / 100.0
    out["volatility_20"] = (
        out.groupby("ticker", sort=False)["ret_1"]
        .rolling(20, min_periods=20)
        .std()
        .reset_index(level=0, drop=True)
    )
    volume = df["volume"].astype("float64").fillna(0.0)
    mean_volume = (
        volume.groupby(df["ticker"], sort=False)
        .rolling(20, min_periods=20)
        .mean()
        .reset_index(level=0, drop=True)
    )
    out["volume_ratio_20"] = np.log1p(volume) - np.log1p(mean_volume)
    for h in range(1, HORIZONS + 1):
        out[f"target_{h}"] = np.log(by_ticker["close"].shift(-h)) - log_close
    # The last date a sample's targets look at: purging on it keeps targets out of later splits.
    out["target_end_date"] = by_ticker["trade_date"].shift(-HORIZONS)
    features = out[FEATURES].to_numpy()
    out.loc[~np.isfinite(features).all(axis=1), FEATURES] = np.nan
    return out


@dataclass
class WindowSet:
    """Model inputs as (samples, window, features), targets (samples, horizons), and keys."""

    x: np.ndarray
    y: np.ndarray
    tickers: np.ndarray
    as_of_dates: np.ndarray
    as_of_close: np.ndarray
    target_end_dates: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def take(self, rows: np.ndarray) -> WindowSet:
        """The samples at ``rows`` (indices or a boolean mask), in that order."""
        return WindowSet(
            self.x[rows], self.y[rows], self.tickers[rows], self.as_of_dates[rows],
            self.as_of_close[rows], self.target_end_dates[rows],
        )  # fmt: skip


def make_windows(
    frame: pd.DataFrame,
    window: int,
    *,
    require_targets: bool = True,
    last_only: bool = False,
    as_of_from: pd.Timestamp | None = None,
    as_of_to: pd.Timestamp | None = None,
    targets_before: pd.Timestamp | None = None,
    max_samples: int | None = None,
    seed: int = 0,
) -> WindowSet:
    """Sliding windows of ``window`` consecutive rows per ticker ending at each as-of row.

    A window is kept only when all its feature rows are complete. ``last_only`` keeps the
    window ending at each ticker's last bar (for scoring). ``as_of_from``/``as_of_to`` bound
    the as-of dates (inclusive) without ever cutting the history a window looks back on;
    ``targets_before`` drops samples whose last target date is on or after it (purging).
    ``max_samples`` draws a seeded random subset before any window is materialised, so memory
    stays proportional to the sample, not to the history.
    """
    selected = []  # (ticker, features, targets, dates, closes, target ends, as-of row indices)
    for ticker, group in frame.groupby("ticker", sort=True):
        feats = group[FEATURES].to_numpy(dtype=np.float32)
        if len(feats) < window:
            continue
        targets = group[[f"target_{h}" for h in range(1, HORIZONS + 1)]].to_numpy(np.float32)
        complete = np.isfinite(feats).all(axis=1)
        # A window is usable when its last `window` rows are all complete.
        run = np.convolve(complete.astype(np.int32), np.ones(window, dtype=np.int32), "full")
        usable = run[window - 1 : len(feats)] == window  # index i -> window ending at i+window-1
        ends = np.arange(window - 1, len(feats))[usable]
        if require_targets:
            ends = ends[np.isfinite(targets[ends]).all(axis=1)]
        trade_dates = group["trade_date"].to_numpy()
        if as_of_from is not None:
            ends = ends[trade_dates[ends] >= np.datetime64(as_of_from)]
        if as_of_to is not None:
            ends = ends[trade_dates[ends] <= np.datetime64(as_of_to)]
        target_end = group["target_end_date"].to_numpy()
        if targets_before is not None:
            keep = ~pd.isna(target_end[ends])
            keep[keep] = target_end[ends][keep] < np.datetime64(targets_before)
            ends = ends[keep]
        if last_only:
            ends = ends[ends == len(feats) - 1]
        if len(ends):
            closes = group["close"].to_numpy()
            selected.append((ticker, feats, targets, trade_dates, closes, target_end, ends))

    total = sum(len(item[-1]) for item in selected)
    if max_samples is not None and total > max_samples:
        chosen = np.zeros(total, bool)
        chosen[np.random.default_rng(seed).choice(total, max_samples, replace=False)] = True
        offsets = np.cumsum([0] + [len(item[-1]) for item in selected])
        selected = [
            (*item[:-1], item[-1][chosen[offsets[i] : offsets[i + 1]]])
            for i, item in enumerate(selected)
        ]
        total = max_samples

    n_features = len(FEATURES)
    x = np.empty((total, window, n_features), np.float32)
    y = np.empty((total, HORIZONS), np.float32)
    tickers = np.empty(total, object)
    as_of_dates = np.empty(total, "datetime64[ns]")
    as_of_close = np.empty(total)
    target_end_dates = np.empty(total, "datetime64[ns]")
    at = 0
    for ticker, feats, targets, trade_dates, closes, target_end, ends in selected:
        n = len(ends)
        view = np.lib.stride_tricks.sliding_window_view(feats, window, axis=0)
        # view[i] is rows i..i+window-1 with the window axis last: (n, features, window).
        x[at : at + n] = view[ends - window + 1].transpose(0, 2, 1)
        y[at : at + n] = targets[ends]
        tickers[at : at + n] = ticker
        as_of_dates[at : at + n] = trade_dates[ends]
        as_of_close[at : at + n] = closes[ends]
        target_end_dates[at : at + n] = target_end[ends]
        at += n
    return WindowSet(x, y, tickers, as_of_dates, as_of_close, target_end_dates)

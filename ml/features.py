"""Model features and targets, built from the indicator mart (long format: one row per ticker, day).

Everything the model sees or predicts is a per-ticker stationary quantity: log returns, log
ratios of the close to its moving averages, MACD over the close, RSI/100, volume relative to
its own recent average. Raw price levels never enter. Each feature row uses only bars on or
before its own date; targets are the log returns from the as-of close to the close ``h``
trading rows later.

``FEATURES`` is the base set (the default model). ``FEATURE_GROUPS`` names candidate groups a
model may add on top of it (:func:`feature_set` builds the column list, ``make_windows(...,
features=...)`` windows it); :func:`build_feature_frame` always computes every column, so any
set can be windowed from one frame. Warm-up is counted in a ticker's rows (its first row is 0):

- ``volatility``: ``log_vol_5`` / ``log_vol_60``, the log of the rolling standard deviation
  of ``ret_1`` over 5 / 60 rows (first values at rows 5 / 60); ``log_park_5`` /
  ``log_park_20``, the log Parkinson range volatility ``sqrt(mean(range_hl**2) / (4 ln 2))``
  over 5 / 20 rows (rows 4 / 19); ``log_ewma_vol``, the log RiskMetrics EWMA volatility
  (lambda 0.94, start-up weights normalised as in :func:`ml.baselines.ewma_variance`) of
  ``ret_1``, from its 20th return on (row 20). Volatilities are floored at ``VOL_FLOOR``
  before the log, so a flat stretch gives a finite low value, not -inf.
- ``market``: ``mkt_ret_1``, the equal-weighted market return, i.e. the mean ``ret_1`` of
  every ticker in the frame with a finite return on that date (from the universe's second
  date on, so a ticker that joins later has it from its first row); ``mkt_vol_20``, the
  standard deviation of ``mkt_ret_1`` over the last 20 dates of the universe (from its 21st
  date); ``excess_ret_1 = ret_1 - mkt_ret_1`` (row 1; no beta: the return beyond the
  market's). The market is the universe loaded into this call, nothing else: an index series
  such as ``^GSPC``, if loaded, is simply one of its members, and a different ticker list
  gives a different market (score with the universe the model was trained on). Only
  same-date bars enter a date's market value, so no ticker's later bars reach any row.
- ``volume``: ``volume_change = log1p(volume) - log1p(previous volume)``, clipped to
  [-10, 10] (row 1).

Pure pandas/numpy (and scipy's ``lfilter`` for the EWMA): no I/O, no TensorFlow.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
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
# Candidate inputs on top of the base set, by group (see the module docstring); the order here
# is the order feature_set() lays them out in.
FEATURE_GROUPS: dict[str, list[str]] = {
    "base": FEATURES,
    "volatility": ["log_vol_5", "log_vol_60", "log_park_5", "log_park_20", "log_ewma_vol"],
    "market": ["mkt_ret_1", "mkt_vol_20", "excess_ret_1"],
    "volume": ["volume_change"],
}
VOL_FLOOR = 1e-6  # volatilities are floored here before their log (a flat stretch is not -inf)
EWMA_LAMBDA = 0.94  # RiskMetrics daily decay, as in ml.baselines
EWMA_MIN_RETURNS = 20  # returns an EWMA volatility needs before it is reported
VOLUME_CHANGE_CLIP = 10.0
# The longest finite look-back of a feature row: log_vol_60 reads 60 returns, i.e. 61 closes.
# The mart's indicators (sma_50, ...) are columns, computed over the whole history by dbt; the
# market group looks back at most 21 dates of the universe, which 61 rows of any ticker span.
LONGEST_LOOKBACK_ROWS = 61
# Returns the EWMA volatility still weighs below 1e-18 of the latest (lambda**age): cutting the
# history there changes no variance at double precision, even after a spell 1e6 times as
# volatile (relative change < 1e-12).
EWMA_NEGLIGIBLE_WEIGHT = 1e-18


def history_rows(window: int, lam: float = EWMA_LAMBDA) -> int:
    """The bars per ticker, ending at an as-of bar, that its ``window`` of features (and an EWMA
    variance with decay ``lam``, the baseline's) depend on to double precision: read only
    these and the forecast is that of the whole history (a test in ``tests/test_pipeline.py``).

    Each window row looks back ``LONGEST_LOOKBACK_ROWS`` rows, and the EWMA volatility as far
    as its weights matter. Nothing is standardised by statistics of the scored data (the
    model's scalers are fitted at training)."""
    burn_in = math.ceil(math.log(EWMA_NEGLIGIBLE_WEIGHT) / math.log(lam))
    return window + LONGEST_LOOKBACK_ROWS + burn_in


def feature_set(groups: Iterable[str]) -> list[str]:
    """The base features followed by the named groups' columns, in ``FEATURE_GROUPS`` order
    whatever the order or repetition of ``groups`` ("base" is always included)."""
    names = {groups} if isinstance(groups, str) else set(groups)
    unknown = sorted(names - FEATURE_GROUPS.keys())
    if unknown:
        raise ValueError(
            f"unknown feature group(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(FEATURE_GROUPS)}"
        )
    return [
        column
        for group, columns in FEATURE_GROUPS.items()
        if group == "base" or group in names
        for column in columns
    ]


def feature_index(features: Sequence[str], name: str) -> int:
    """Position of ``name`` in ``features`` (e.g. the as-of volatility in a window's last row)."""
    columns = list(features)
    if name not in columns:
        raise ValueError(f"feature {name!r} is not in the feature set {columns}")
    return columns.index(name)


# Every column build_feature_frame computes.
ALL_FEATURES = feature_set(FEATURE_GROUPS)
INDICATOR_COLUMNS = [
    "ticker", "trade_date", "open", "high", "low", "close", "volume",
    "sma_5", "sma_20", "sma_50", "ema_12", "ema_26", "macd", "macd_signal", "macd_hist",
    "rsi_14",
]  # fmt: skip


def _log_floored(volatility: pd.Series | np.ndarray) -> np.ndarray:
    """``log(max(volatility, VOL_FLOOR))``; NaN stays NaN."""
    return np.log(np.maximum(np.asarray(volatility, dtype=np.float64), VOL_FLOOR))


def _per_ticker(values, bounds: np.ndarray, apply) -> np.ndarray:
    """``apply`` (a pandas Series of one ticker's values -> a Series as long) run on each
    ticker's rows separately; ``bounds`` are the row offsets where tickers start (and the end).
    A plain loop over tickers: the same pandas kernels as a groupby, without its index work."""
    values = np.asarray(values, dtype=np.float64)
    out = np.empty(len(values))
    for start, stop in itertools.pairwise(bounds):
        out[start:stop] = apply(pd.Series(values[start:stop])).to_numpy()
    return out


def _ewma_variance(returns: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Per-ticker RiskMetrics EWMA variance of ``returns`` with normalised start-up weights
    (the recursion of :func:`ml.baselines.ewma_variance`: ``S_t = lam S_(t-1) + r_t**2``,
    ``W_t = lam W_(t-1) + 1``, variance ``S_t / W_t``; NaN returns get no weight). NaN until a
    ticker has ``EWMA_MIN_RETURNS`` finite returns."""
    from scipy.signal import lfilter

    finite = np.isfinite(returns)
    squares = np.where(finite, returns, 0.0) ** 2
    out = np.full(len(returns), np.nan)
    decay = [1.0, -EWMA_LAMBDA]
    for start, stop in itertools.pairwise(bounds):
        weight = finite[start:stop].astype(np.float64)
        seen = np.cumsum(weight)
        with np.errstate(invalid="ignore", divide="ignore"):
            variance = lfilter([1.0], decay, squares[start:stop]) / lfilter([1.0], decay, weight)
        out[start:stop] = np.where(seen >= EWMA_MIN_RETURNS, variance, np.nan)
    return out


def build_feature_frame(indicators: pd.DataFrame) -> pd.DataFrame:
    """Per-row features (``ALL_FEATURES``: the base set and every candidate group) and targets
    (``target_1..target_10``), long format.

    Rows are sorted by ticker and date. Feature columns are NaN during their warm-up; targets
    are NaN for the last ``HORIZONS`` rows of each ticker. A row with any non-finite base
    feature has all its base features NaN; a non-finite candidate value is NaN on its own (so a
    candidate's warm-up never removes a base row).
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
    # Ticker blocks (rows are sorted by ticker): bounds[k] is the first row of the k-th ticker.
    tickers = df["ticker"].to_numpy()
    bounds = np.concatenate([[0], np.flatnonzero(tickers[1:] != tickers[:-1]) + 1, [len(df)]])
    returns = out["ret_1"].where(np.isfinite(out["ret_1"]))  # a bad close is no return

    def rolling(values, n: int, stat: str) -> np.ndarray:
        return _per_ticker(values, bounds, lambda s: getattr(s.rolling(n, min_periods=n), stat)())

    out["volatility_20"] = rolling(out["ret_1"], 20, "std")
    volume = df["volume"].astype("float64").fillna(0.0)
    mean_volume = rolling(volume, 20, "mean")
    out["volume_ratio_20"] = np.log1p(volume) - np.log1p(mean_volume)

    with np.errstate(invalid="ignore"):
        # volatility group
        for n in (5, 60):
            out[f"log_vol_{n}"] = _log_floored(rolling(returns, n, "std"))
        range_squared = out["range_hl"].where(np.isfinite(out["range_hl"])) ** 2
        for n in (5, 20):
            mean_square = rolling(range_squared, n, "mean")
            out[f"log_park_{n}"] = _log_floored(np.sqrt(mean_square / (4.0 * np.log(2.0))))
        ewma_variance = _ewma_variance(returns.to_numpy(), bounds)
        out["log_ewma_vol"] = _log_floored(np.sqrt(ewma_variance))
    # market group: the same-date cross-section of the universe loaded
    date_codes, _ = pd.factorize(df["trade_date"], sort=True)
    market = returns.groupby(date_codes).mean()  # one row per date code, in date order
    market_return = market.to_numpy()[date_codes]
    out["mkt_ret_1"] = market_return
    out["mkt_vol_20"] = market.rolling(20, min_periods=20).std().to_numpy()[date_codes]
    out["excess_ret_1"] = returns - market_return
    # volume group
    log_volume = np.log1p(volume).to_numpy()
    previous = np.concatenate([[np.nan], log_volume[:-1]])
    previous[bounds[:-1]] = np.nan  # a ticker's first row has no previous volume
    out["volume_change"] = np.clip(log_volume - previous, -VOLUME_CHANGE_CLIP, VOLUME_CHANGE_CLIP)

    for h in range(1, HORIZONS + 1):
        out[f"target_{h}"] = np.log(by_ticker["close"].shift(-h)) - log_close
    # The last date a sample's targets look at: purging on it keeps targets out of later splits.
    out["target_end_date"] = by_ticker["trade_date"].shift(-HORIZONS)
    features = out[FEATURES].to_numpy()
    out.loc[~np.isfinite(features).all(axis=1), FEATURES] = np.nan
    for column in ALL_FEATURES[len(FEATURES) :]:
        values = out[column].to_numpy()
        if not np.isfinite(values[~np.isnan(values)]).all():
            out[column] = np.where(np.isfinite(values), values, np.nan)
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
    features: Sequence[str] = FEATURES,
    require_targets: bool = True,
    last_only: bool = False,
    as_of_from: pd.Timestamp | None = None,
    as_of_to: pd.Timestamp | None = None,
    targets_before: pd.Timestamp | None = None,
    max_samples: int | None = None,
    seed: int = 0,
) -> WindowSet:
    """Sliding windows of ``window`` consecutive rows per ticker ending at each as-of row.

    ``features`` are the columns of ``x``, in that order (default: the base set). A window is
    kept only when all its rows are complete in those columns. ``last_only`` keeps the
    window ending at each ticker's last bar (for scoring). ``as_of_from``/``as_of_to`` bound
    the as-of dates (inclusive) without ever cutting the history a window looks back on;
    ``targets_before`` drops samples whose last target date is on or after it (purging).
    ``max_samples`` draws a seeded random subset before any window is materialised, so memory
    stays proportional to the sample, not to the history.
    """
    columns = list(features)
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"features {missing} are not columns of the feature frame")
    if not columns:
        raise ValueError("no features selected")
    selected = []  # (ticker, features, targets, dates, closes, target ends, as-of row indices)
    # Tickers in sorted order, each ticker's rows in frame order (as a sorted groupby gives
    # them), sliced from whole-frame arrays: pandas' per-group frames cost more than the rest.
    codes, names = pd.factorize(frame["ticker"], sort=True)
    order = np.argsort(codes, kind="stable")
    order = order[codes[order] >= 0]  # no ticker: no group
    codes = codes[order]
    all_feats = frame[columns].to_numpy(dtype=np.float32)[order]
    target_columns = [f"target_{h}" for h in range(1, HORIZONS + 1)]
    all_targets = frame[target_columns].to_numpy(np.float32)[order]
    all_dates = frame["trade_date"].to_numpy()[order]
    all_target_end = frame["target_end_date"].to_numpy()[order]
    all_closes = frame["close"].to_numpy()[order]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(codes)) + 1, [len(codes)]])
    for start, stop in itertools.pairwise(bounds):
        feats = all_feats[start:stop]
        if len(feats) < window:
            continue
        ticker = names[codes[start]]
        targets = all_targets[start:stop]
        complete = np.isfinite(feats).all(axis=1)
        # A window is usable when its last `window` rows are all complete.
        run = np.convolve(complete.astype(np.int32), np.ones(window, dtype=np.int32), "full")
        usable = run[window - 1 : len(feats)] == window  # index i -> window ending at i+window-1
        ends = np.arange(window - 1, len(feats))[usable]
        if require_targets:
            ends = ends[np.isfinite(targets[ends]).all(axis=1)]
        trade_dates = all_dates[start:stop]
        if as_of_from is not None:
            ends = ends[trade_dates[ends] >= np.datetime64(as_of_from)]
        if as_of_to is not None:
            ends = ends[trade_dates[ends] <= np.datetime64(as_of_to)]
        target_end = all_target_end[start:stop]
        if targets_before is not None:
            keep = ~pd.isna(target_end[ends])
            keep[keep] = target_end[ends][keep] < np.datetime64(targets_before)
            ends = ends[keep]
        if last_only:
            ends = ends[ends == len(feats) - 1]
        if len(ends):
            closes = all_closes[start:stop]
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

    n_features = len(columns)
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

"""Expanding-window walk-forward folds and the long forecast format every model returns.

A fold tests forecasts made as of each trading date in a block of ``test_days`` consecutive
dates; the model for that fold is fit only on samples whose targets end before the block
starts (purged), so nothing it learns has seen the block. By default the blocks are
consecutive and end at the last date whose 10-day-ahead actuals are known; ``start``/``end``
place them elsewhere, and :func:`regime_folds` puts one (or more) at the start of each named
market regime in :data:`REGIMES` that the data reaches.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ml.features import HORIZONS

# One row per (model, fold, ticker, as_of_date, horizon). Interval columns are NaN for models
# that give none. Log returns are from the as-of close to the target close.
FORECAST_COLUMNS = [
    "model", "fold", "ticker", "as_of_date", "horizon", "as_of_close", "actual_log_return",
    "predicted_log_return", "lower_80", "upper_80", "lower_95", "upper_95",
]  # fmt: skip


# Named market regimes: name -> (first, last) calendar date, in time order. A regime fold
# starts at the regime's first trading date; "2017 calm" is the quiet reference.
REGIMES: dict[str, tuple[pd.Timestamp, pd.Timestamp]] = {
    name: (pd.Timestamp(first), pd.Timestamp(last))
    for name, (first, last) in {
        "2008 crisis": ("2008-09-01", "2009-03-31"),
        "2015-16 selloff": ("2015-08-01", "2016-02-29"),
        "2017 calm": ("2017-01-01", "2017-12-31"),
        "2018 Q4": ("2018-10-01", "2018-12-31"),
        "2020 crash": ("2020-02-20", "2020-04-30"),
        "2022 bear": ("2022-01-01", "2022-10-31"),
    }.items()
}


@dataclass(frozen=True)
class Fold:
    index: int
    test_start: pd.Timestamp  # first as-of date tested
    test_end: pd.Timestamp  # last as-of date tested
    regime: str | None = None  # the named regime the block tests, if any

    def as_dict(self) -> dict:
        return {
            "fold": self.index,
            "test_start": str(self.test_start.date()),
            "test_end": str(self.test_end.date()),
            "regime": self.regime,
        }


def _trading_dates(trade_dates) -> np.ndarray:
    return np.sort(pd.to_datetime(pd.Index(trade_dates).unique()).to_numpy())


def make_folds(
    trade_dates,
    n_folds: int | None,
    test_days: int = 21,
    *,
    start=None,
    end=None,
) -> list[Fold]:
    """Consecutive blocks of ``test_days`` as-of dates whose 10-day actuals are all known.

    - neither ``start`` nor ``end``: the last ``n_folds`` such blocks;
    - ``start``: ``n_folds`` blocks from the first trading date on or after ``start``;
    - ``end``: ``n_folds`` blocks ending at the last as-of date on or before ``end`` whose
      actuals are known;
    - both: the blocks from ``start`` must end by ``end``; with ``n_folds=None``, as many
      whole blocks as fit between them.

    At least one trading date must precede the first block (something to fit on). Raises
    ValueError, naming the dates, when the data or the range cannot hold the blocks. Folds
    tested inside a named regime are labelled with it (:func:`label_regimes`).
    """
    if (n_folds is not None and n_folds < 1) or test_days < 1:
        raise ValueError("n_folds and test_days must be positive")
    start = None if start is None else pd.Timestamp(start)
    end = None if end is None else pd.Timestamp(end)
    if n_folds is None and (start is None or end is None):
        raise ValueError("n_folds may be left out only when both start and end are given")
    if start is not None and end is not None and end < start:
        raise ValueError(f"end {end.date()} is before start {start.date()}")
    dates = _trading_dates(trade_dates)
    usable = dates[: max(len(dates) - HORIZONS, 0)]  # as-of dates with 10 later dates
    if start is None and end is None:
        if len(usable) < n_folds * test_days + 1:
            raise ValueError(
                f"{len(dates)} trading dates cannot hold {n_folds} folds of {test_days} days "
                f"plus {HORIZONS} days of actuals"
            )
        return _blocks(usable, len(usable) - n_folds * test_days, n_folds, test_days)
    last_known = f"the last as-of date with {HORIZONS} days of actuals is " + (
        str(pd.Timestamp(usable[-1]).date()) if len(usable) else "none"
    )
    if start is None:
        stop = int(np.searchsorted(usable, end.to_datetime64(), side="right"))  # usable[:stop]
        if stop < n_folds * test_days + 1:
            raise ValueError(
                f"{n_folds} folds of {test_days} days ending by {end.date()} need "
                f"{n_folds * test_days} as-of dates after the first trading date; "
                f"{max(stop - 1, 0)} are there ({last_known})"
            )
        return _blocks(usable, stop - n_folds * test_days, n_folds, test_days)
    first = int(np.searchsorted(usable, start.to_datetime64()))
    if first == 0:
        raise ValueError(
            f"start {start.date()} leaves no trading date before the first fold to fit on "
            f"(the data starts {pd.Timestamp(dates[0]).date() if len(dates) else 'nowhere'})"
        )
    stop = len(usable)
    if end is not None:
        stop = int(np.searchsorted(usable, end.to_datetime64(), side="right"))
    room = stop - first
    if n_folds is None:
        n_folds = room // test_days
        if n_folds < 1:
            raise ValueError(
                f"{start.date()}..{end.date()} holds {max(room, 0)} as-of dates with known "
                f"actuals, fewer than one fold of {test_days} days ({last_known})"
            )
    if room < n_folds * test_days:
        until = f"by {end.date()}" if end is not None else "in the data"
        raise ValueError(
            f"{n_folds} folds of {test_days} days from {start.date()} need "
            f"{n_folds * test_days} as-of dates with known actuals {until}; {max(room, 0)} "
            f"are there ({last_known})"
        )
    return _blocks(usable, first, n_folds, test_days)


def _blocks(usable: np.ndarray, first: int, n_folds: int, test_days: int) -> list[Fold]:
    blocks = usable[first : first + n_folds * test_days].reshape(n_folds, test_days)
    return label_regimes(
        [Fold(i, pd.Timestamp(block[0]), pd.Timestamp(block[-1])) for i, block in enumerate(blocks)]
    )


def label_regimes(folds: list[Fold], regimes=None) -> list[Fold]:
    """The folds, each labelled with the named regime its first as-of date falls in (first
    and last dates included), or ``None``."""
    regimes = REGIMES if regimes is None else regimes

    def regime(fold: Fold) -> str | None:
        for name, (first, last) in regimes.items():
            if pd.Timestamp(first) <= fold.test_start <= pd.Timestamp(last):
                return name
        return None

    return [replace(fold, regime=regime(fold)) for fold in folds]


def regime_folds(
    trade_dates,
    test_days: int = 21,
    regimes=None,
    folds_per_regime: int = 1,
) -> tuple[list[Fold], dict[str, str]]:
    """``folds_per_regime`` consecutive blocks of ``test_days`` as-of dates from the first
    trading date of each named regime (default :data:`REGIMES`), and the regimes skipped.

    A regime is skipped (name -> reason in the second value) when the data has no trading
    date before it to fit on, or its blocks do not fit between its first trading date and the
    earlier of its last date and the last as-of date whose 10-day actuals are known. Folds are
    indexed 0..n-1 in time order and never overlap (overlapping regimes raise ValueError).
    """
    if folds_per_regime < 1 or test_days < 1:
        raise ValueError("folds_per_regime and test_days must be positive")
    regimes = REGIMES if regimes is None else regimes
    dates = _trading_dates(trade_dates)
    usable = dates[: max(len(dates) - HORIZONS, 0)]
    needed = folds_per_regime * test_days
    spans, skipped = [], {}
    ordered = sorted(regimes.items(), key=lambda item: pd.Timestamp(item[1][0]))
    for name, (first, last) in ordered:
        first, last = pd.Timestamp(first), pd.Timestamp(last)
        begin = int(np.searchsorted(usable, first.to_datetime64()))
        stop = int(np.searchsorted(usable, last.to_datetime64(), side="right"))
        if len(dates) == 0 or dates[0] >= first.to_datetime64():
            start = pd.Timestamp(dates[0]).date() if len(dates) else "nowhere"
            skipped[name] = f"the data starts {start}, not before {first.date()}"
        elif stop - begin < needed:
            skipped[name] = (
                f"{folds_per_regime} fold(s) of {test_days} days need {needed} as-of dates "
                f"with known actuals from {first.date()} to {last.date()}; the data has "
                f"{max(stop - begin, 0)}"
            )
        else:
            spans.append((name, begin))
    folds: list[Fold] = []
    for name, begin in spans:
        blocks = usable[begin : begin + needed].reshape(folds_per_regime, test_days)
        for block in blocks:
            if folds and pd.Timestamp(block[0]) <= folds[-1].test_end:
                raise ValueError(f"regime {name!r} overlaps {folds[-1].regime!r}")
            folds.append(Fold(len(folds), pd.Timestamp(block[0]), pd.Timestamp(block[-1]), name))
    return folds, skipped


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

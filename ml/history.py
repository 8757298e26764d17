"""Whole histories: how a new file's bars fit the history the warehouse already holds.

Pure (frames in, findings out). Called by ingest before a file is written, so that a file
adjusted for different splits than the stored history, or from a vendor that disagrees with it,
is refused with the evidence instead of spliced in, and a file that leaves a gap or a jump where
it meets the stored history is reported.

The rule, per ticker:
- **Conflict** (the file is refused unless the user says ``--replace``): on dates both hold,
  the file's close differs from a close another file loaded by more than
  :data:`CLOSE_TOLERANCE` (relative). A constant ratio across the overlap is named as the split
  adjustment it most likely is. Rows of the same file (a re-download under the same name) are
  corrections, not conflicts.
- **Gap** (reported): where the file's bars meet stored bars, more than :data:`MAX_GAP_SESSIONS`
  NYSE sessions are missing in between.
- **Jump** (reported): where the file's bars meet stored bars, the close moves by more than
  :data:`JUNCTION_JUMP` from one bar to the next; a move close to a split ratio says so.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

CLOSE_TOLERANCE = 0.01  # relative: beyond any vendor's rounding of a real price
CLOSE_TOLERANCE_ABS = 0.005  # half a cent: closes rounded to cents agree on penny prices
MAX_GAP_SESSIONS = 5
JUNCTION_JUMP = 0.20
# The ratio is "constant" (one adjustment factor) when this share of the dates both files hold
# are within the tolerance of its median. Early back-adjusted prices (0.03) are too coarse for
# all of them to be.
CONSTANT_RATIO_SHARE = 0.95
SPLIT_RATIOS = (
    (2, 1),
    (3, 1),
    (3, 2),
    (4, 1),
    (5, 1),
    (5, 4),
    (6, 1),
    (7, 1),
    (8, 1),
    (10, 1),
    (15, 1),
    (20, 1),
)
SPLIT_RATIO_TOLERANCE = 0.02


@dataclass(frozen=True)
class Conflict:
    """The file disagrees with the bars another file loaded for one ticker."""

    ticker: str
    other_file: str
    overlap: int  # dates both hold
    disagreeing: int  # of those, dates whose closes differ beyond the tolerance
    first_date: pd.Timestamp  # first and last disagreeing date
    last_date: pd.Timestamp
    example_date: pd.Timestamp  # the worst disagreement
    new_close: float
    stored_close: float
    constant_ratio: float | None  # new / stored, when it is the same all across the overlap
    split: str | None  # "4:1" when the ratio is a split ratio

    def describe(self) -> str:
        ratio = self.new_close / self.stored_close
        text = (
            f"{self.ticker}: {self.disagreeing} of {self.overlap} dates both files hold disagree "
            f"with {Path(self.other_file).name} ({_span(self.first_date, self.last_date)})"
            f", e.g. {_day(self.example_date)} close {self.new_close:.6g} here vs "
            f"{self.stored_close:.6g} stored (ratio {ratio:.4g})"
        )
        if self.split:
            text += (
                f"; the ratio is constant, the factor of a {self.split} split: one file is "
                "adjusted for it and the other is not"
            )
        elif self.constant_ratio is not None:
            text += "; the ratio is constant: the files are adjusted differently"
        return text


@dataclass(frozen=True)
class Junction:
    """Where the file's bars meet stored bars of another file: a gap, a jump, or both."""

    ticker: str
    before: pd.Timestamp
    after: pd.Timestamp
    close_before: float
    close_after: float
    missing_sessions: int
    split: str | None

    @property
    def move(self) -> float:
        return self.close_after / self.close_before - 1

    @property
    def is_gap(self) -> bool:
        return self.missing_sessions > MAX_GAP_SESSIONS

    def describe(self) -> str:
        parts = [f"{self.ticker}: "]
        if self.is_gap:
            parts.append(
                f"{self.missing_sessions} trading days missing between {_day(self.before)} and "
                f"{_day(self.after)}, where this file meets the stored history"
            )
        else:
            parts.append(
                f"the close jumps from {self.close_before:.6g} on {_day(self.before)} to "
                f"{self.close_after:.6g} on {_day(self.after)} where this file meets the stored "
                "history"
            )
        parts.append(f" ({self.move:+.0%}")
        if self.split:
            parts.append(f", the factor of a {self.split} split: is only one side adjusted?")
        parts.append(")")
        return "".join(parts)


@dataclass
class HistoryCheck:
    conflicts: list[Conflict]
    junctions: list[Junction]

    @property
    def conflicting_files(self) -> dict[str, list[str]]:
        """{ticker: [other files it disagrees with]}."""
        out: dict[str, list[str]] = {}
        for c in self.conflicts:
            out.setdefault(c.ticker, []).append(c.other_file)
        return out


def check_history(new: pd.DataFrame, stored: pd.DataFrame, source_file: str) -> HistoryCheck:
    """Compare a file's bars (``ticker, trade_date, close``) with the stored ones
    (``ticker, trade_date, close, source_file``) of the same tickers."""
    return HistoryCheck(
        find_conflicts(new, stored, source_file), find_junctions(new, stored, source_file)
    )


def find_conflicts(new: pd.DataFrame, stored: pd.DataFrame, source_file: str) -> list[Conflict]:
    """The conflicts of :func:`check_history` alone (a refused file's junctions are moot)."""
    stored = stored[stored["source_file"] != source_file]
    if stored.empty or new.empty:
        return []
    return _conflicts(new[["ticker", "trade_date", "close"]], stored)


def find_junctions(new: pd.DataFrame, stored: pd.DataFrame, source_file: str) -> list[Junction]:
    """The junctions of :func:`check_history` alone."""
    stored = stored[stored["source_file"] != source_file]
    if stored.empty or new.empty:
        return []
    return _junctions(new[["ticker", "trade_date", "close"]], stored)


def _conflicts(new: pd.DataFrame, stored: pd.DataFrame) -> list[Conflict]:
    both = new.merge(stored, on=["ticker", "trade_date"], suffixes=("_new", "_stored"))
    if both.empty:
        return []
    both["ratio"] = both["close_new"] / both["close_stored"]
    difference = (both["close_new"] - both["close_stored"]).abs()
    both["off"] = (difference > CLOSE_TOLERANCE * both["close_stored"].abs()) & (
        difference > CLOSE_TOLERANCE_ABS
    )
    # Only the (ticker, other file) pairs that disagree somewhere are looked at row by row.
    both = both[both.groupby(["ticker", "source_file"], sort=False)["off"].transform("any")]
    out = []
    for (ticker, other), rows in both.groupby(["ticker", "source_file"], sort=True):
        bad = rows[rows["off"]]
        if bad.empty:
            continue
        ratio = rows["ratio"]
        median = float(ratio.median())
        constant = None
        if (
            abs(median - 1) > CLOSE_TOLERANCE
            and ((ratio / median - 1).abs() <= CLOSE_TOLERANCE).mean() >= CONSTANT_RATIO_SHARE
        ):
            constant = median
            worst = bad.loc[bad["trade_date"].idxmax()]  # the latest: the least rounded
        else:
            worst = bad.loc[np.log(bad["ratio"]).abs().idxmax()]
        out.append(
            Conflict(
                ticker=str(ticker),
                other_file=str(other),
                overlap=len(rows),
                disagreeing=len(bad),
                first_date=bad["trade_date"].min(),
                last_date=bad["trade_date"].max(),
                example_date=worst["trade_date"],
                new_close=float(worst["close_new"]),
                stored_close=float(worst["close_stored"]),
                constant_ratio=constant,
                split=split_ratio(constant) if constant is not None else None,
            )
        )
    return out


def _junctions(new: pd.DataFrame, stored: pd.DataFrame) -> list[Junction]:
    """Consecutive bars of the merged history where one comes from the file and the other
    only from the stored history."""
    merged = pd.concat(
        [
            new.assign(from_file=True),
            stored[["ticker", "trade_date", "close"]].assign(from_file=False),
        ]
    )
    # A date the file holds is the file's bar (it wins the upsert).
    merged = merged.sort_values(["ticker", "trade_date", "from_file"]).drop_duplicates(
        ["ticker", "trade_date"], keep="last"
    )
    previous = merged.groupby("ticker", sort=False).shift(1)
    meets = previous["from_file"].notna() & (previous["from_file"] != merged["from_file"])
    if not meets.any():
        return []
    pairs = pd.DataFrame(
        {
            "ticker": merged["ticker"][meets],
            "before": previous["trade_date"][meets],
            "after": merged["trade_date"][meets],
            "close_before": previous["close"][meets].astype(float),
            "close_after": merged["close"][meets].astype(float),
        }
    )
    out = []
    for row in pairs.itertuples(index=False):
        missing = missing_sessions(row.before, row.after)
        move = row.close_after / row.close_before
        if missing > MAX_GAP_SESSIONS or abs(move - 1) > JUNCTION_JUMP:
            out.append(
                Junction(
                    ticker=row.ticker,
                    before=row.before,
                    after=row.after,
                    close_before=row.close_before,
                    close_after=row.close_after,
                    missing_sessions=missing,
                    split=split_ratio(move),
                )
            )
    return out


def split_ratio(ratio: float) -> str | None:
    """``"4:1"`` when a price ratio is within tolerance of a split's factor, either way: one
    side adjusted for a 4:1 split and the other not differ by 4 or 1/4, depending on which is
    which (and a 1:4 reverse split gives the same factors)."""
    if not np.isfinite(ratio) or ratio <= 0:
        return None
    factor = max(ratio, 1 / ratio)
    for a, b in SPLIT_RATIOS:
        if abs(factor / (a / b) - 1) <= SPLIT_RATIO_TOLERANCE:
            return f"{a}:{b}"
    return None


def missing_sessions(before: pd.Timestamp, after: pd.Timestamp) -> int:
    """NYSE sessions strictly between two bars' dates (weekdays where the calendar ends)."""
    start = np.datetime64(pd.Timestamp(before).date(), "D") + 1
    end = np.datetime64(pd.Timestamp(after).date(), "D")
    weekdays = int(np.busday_count(start, end))
    if weekdays == 0:
        return 0  # consecutive sessions or a weekend: no calendar needed (building it takes ~2 s)
    sessions = _nyse_sessions()
    if len(sessions) == 0 or start < sessions[0] or end > sessions[-1] + 1:
        return weekdays
    return int(np.searchsorted(sessions, end) - np.searchsorted(sessions, start))


@functools.cache
def _nyse_sessions() -> np.ndarray:
    import exchange_calendars as xc

    try:
        calendar = xc.get_calendar("XNYS", start="1990-01-01")
    except Exception:  # a calendar that cannot be built falls back to weekdays
        return np.array([], dtype="datetime64[D]")
    sessions = calendar.sessions.tz_localize(None) if calendar.sessions.tz else calendar.sessions
    return sessions.to_numpy().astype("datetime64[D]")


def _day(value) -> str:
    return pd.Timestamp(value).strftime("%Y-%m-%d")


def _span(first, last) -> str:
    return _day(first) if _day(first) == _day(last) else f"{_day(first)}..{_day(last)}"

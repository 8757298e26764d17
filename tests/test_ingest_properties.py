"""Property-based tests: real lines of every layout (Yahoo, the Kaggle long table, Alpha
Vantage with a split, a yfinance history export), mutated at random, never break
parse_price_file's promises (only IngestFileError escapes; accepted bars hold the OHLC
invariants; every data record is accounted for)."""

from __future__ import annotations

import gzip
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA, YAHOO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml.ingest import IngestFileError, parse_price_file

if not YAHOO.is_dir():
    pytest.skip(f"shared developer data not found at {YAHOO}", allow_module_level=True)


def _lines(path: Path, limit: int | None = None) -> list[str]:
    with gzip.open(path, "rt") as handle:
        if limit is None:
            return handle.read().splitlines()
        return [line.rstrip("\n") for _, line in zip(range(limit), handle, strict=False)]


# Real slices: Yahoo's `null` glitch row (2022-01-27) plus an older stretch; the Kaggle long
# table where one ticker ends and the next begins; Alpha Vantage around AAPL's 7:1 split of
# 2014-06-09 (raw prices, back-adjusted by ingest); SPY's yfinance export (tz-aware times).
_YAHOO = _lines(YAHOO / "AAPL.csv.gz")
LINES = [_YAHOO[0], *_YAHOO[2000:2012], *_YAHOO[-12:]]
_KAGGLE = _lines(SHARED_DATA / "kaggle_sp500_5yr" / "all_stocks_5yr_dev.csv.gz", 1270)
_AV = _lines(SHARED_DATA / "alphavantage_daily_adjusted" / "DA-AAPL-T-2021-04-21.csv.gz")
_SPY = _lines(SHARED_DATA / "index_etf" / "SPY.csv.gz", 20)
SOURCES = {
    "AAPL.csv": LINES,
    "all_stocks_5yr.csv": [_KAGGLE[0], *_KAGGLE[1250:1270]],
    "DA-AAPL-T-2021-04-21.csv": [_AV[0], *_AV[3665:3685]],
    "SPY.csv": _SPY,
}

JUNK = st.sampled_from(
    [
        "",
        " ",
        "null",
        "-1",
        "0",
        "-0.0",
        "1e308",
        "1e400",
        "inf",
        "-inf",
        "NaN",
        "abc",
        "1,5",
        '"1,000.5"',
        '"',
        '""',
        "2021-02-30",
        "2021-03-06",
        "2020-13-01",
        "13/13/2020",
        "03/04/2021",
        "2999-01-01",
        "1e-300",
        "99999999999999999999",
        "12:00",
        "=HYPERLINK(1)",
    ]
)


@st.composite
def mutated_files(draw) -> tuple[str, str, bool]:
    name = draw(st.sampled_from(sorted(SOURCES)))
    lines = list(SOURCES[name])
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "field", "quote", "comma"]))
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(draw(st.integers(0, len(lines))), lines[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "field":
            fields = lines[i].split(",")
            fields[draw(st.integers(0, len(fields) - 1))] = draw(JUNK)
            lines[i] = ",".join(fields)
        else:
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + ('"' if kind == "quote" else ",") + lines[i][at:]
    text = "\n".join(lines) + "\n"
    if draw(st.booleans()):  # truncate anywhere
        text = text[: draw(st.integers(0, len(text)))]
    return name, text, '"' in text


@settings(
    max_examples=160,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_files())
def test_mutated_real_files_keep_the_promises(case):
    name, text, has_quotes = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        try:
            parsed = parse_price_file(path)
        except IngestFileError:
            return  # a file problem, reported as such
    p = parsed.prices
    assert len(p) + len(parsed.rejected) + parsed.duplicates_dropped == parsed.rows_read
    if not has_quotes:  # one record per non-blank physical line after the header
        body = [line for line in text.splitlines()[1:] if line.strip()]
        assert parsed.rows_read == len(body)
    if p.empty:
        return
    ohlc = p[["open", "high", "low", "close"]].to_numpy(float)
    assert np.isfinite(ohlc).all() and (ohlc > 0).all()
    assert (p["high"] >= p[["open", "close", "low"]].max(axis=1)).all()
    assert (p["low"] <= p[["open", "close"]].min(axis=1)).all()
    assert (p["volume"].dropna() >= 0).all()
    adj = p["adj_close"].dropna().to_numpy(float)
    assert all(math.isfinite(v) and v > 0 for v in adj)
    assert not p.duplicated(["ticker", "trade_date"]).any()
    assert p["ticker"].str.fullmatch(r"[A-Z0-9.\-^]{1,15}").all()
    assert (p["trade_date"].dt.dayofweek < 5).all()
    assert set(parsed.rejected["line_number"]) <= set(range(2, text.count("\n") + 2))


def test_volume_beyond_int64_is_refused_not_a_crash(tmp_path):
    # Found by the property test above: 99999999999999999999 made the Int64 cast raise.
    path = tmp_path / "AAPL.csv"
    path.write_text("\n".join([LINES[0], LINES[1].rsplit(",", 1)[0] + ",99999999999999999999"]))
    parsed = parse_price_file(path)
    assert parsed.prices.empty and list(parsed.rejected["reason"]) == [
        "volume too large: 99999999999999999999"
    ]

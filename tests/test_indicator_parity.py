"""The dbt indicator mart equals TA-Lib on real price histories.

Real files from the shared developer data set are loaded into a temporary DuckDB warehouse,
the real ``dbt build`` runs in a subprocess (models, data tests and unit tests), and every
indicator of ``marts.fct_daily_indicators`` is compared with ``talib`` computed on the same
closes: within 1e-8 x the ticker's price level (RSI: 1e-6 points), with NULLs exactly where
TA-Lib returns NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import SHARED_DATA, YAHOO, isolated_home

talib = pytest.importorskip("talib")

KAGGLE = SHARED_DATA / "kaggle_sp500_5yr" / "all_stocks_5yr_dev.csv.gz"
GSPC = SHARED_DATA / "index_etf" / "GSPC.csv.gz"

# AAPL: full 22-year history; HWM: shortest (1,319 bars); AMCR and NTES: runs of flat bars
# (AMCR starts with 1,371 of them, so its RSI is exactly 0 at first).
YAHOO_TICKERS = ["AAPL", "HWM", "AMCR", "NTES"]
# Kaggle long-table tickers that are not in the Yahoo set (LNT has a half-price glitch).
KAGGLE_TICKERS = ["ABBV", "LNT", "APTV"]
SYNTHETIC_FLAT = "ZZFLAT"

INDICATORS = [
    "sma_5", "sma_15", "sma_20", "sma_50", "ema_12", "ema_26",
    "macd", "macd_signal", "macd_hist", "rsi_14",
]  # fmt: skip
PRICE_TOLERANCE = 1e-8  # x the ticker's price level (max |close|)
RSI_TOLERANCE = 1e-6  # RSI points


def talib_indicators(close: np.ndarray) -> dict[str, np.ndarray]:
    macd, signal, hist = talib.MACD(close, fastperiod=12, slowperiod=26, signalperiod=9)
    return {
        "sma_5": talib.SMA(close, 5),
        "sma_15": talib.SMA(close, 15),
        "sma_20": talib.SMA(close, 20),
        "sma_50": talib.SMA(close, 50),
        "ema_12": talib.EMA(close, 12),
        "ema_26": talib.EMA(close, 26),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "rsi_14": talib.RSI(close, 14),
    }


def _synthetic_flat_series() -> pd.DataFrame:
    """300 moving bars, 2,000 unchanged ones (longer than two smoothing blocks), 100 moving."""
    rng = np.random.default_rng(11)
    moves = np.round(rng.normal(0, 0.5, 400), 2)
    close = np.concatenate([50 + np.cumsum(moves[:300]), np.full(2000, np.nan), np.zeros(100)])
    close[300:2300] = close[299]
    close[2300:] = close[299] + np.cumsum(moves[300:])
    close = np.round(np.abs(close) + 1.0, 2)
    dates = pd.bdate_range("2000-01-03", periods=len(close))
    return pd.DataFrame({"trade_date": dates.date, "close": close})


def load_prices(ctx) -> None:
    """Load the test files into a fresh warehouse through the real ingest."""
    from ml.ingest import ingest_paths

    warehouse = ctx.warehouse
    yahoo_files = [YAHOO / f"{t}.csv.gz" for t in YAHOO_TICKERS]
    # Kaggle first, then the Yahoo histories with --replace: where they disagree (AAPL: Kaggle
    # is not adjusted for the 4:1 split of 2020) Yahoo's replace Kaggle's rows, so each
    # ticker's series comes from one vendor. GSPC rows with open = 0 are refused by ingest.
    first = ingest_paths(ctx, [KAGGLE])
    report = ingest_paths(ctx, [*yahoo_files, GSPC], replace=True)
    assert first.ok and report.ok, first.summary_lines() + report.summary_lines()
    assert "AAPL" in report.files[YAHOO_TICKERS.index("AAPL")].history_replaced
    flat = _synthetic_flat_series().assign(
        ticker=SYNTHETIC_FLAT, source_file="synthetic", ingested_at=pd.Timestamp.now()
    )
    with warehouse.connect() as con:
        con.register("flat", flat)
        con.execute(
            """
            insert into raw.daily_prices
            select ticker, trade_date, close, close, close, close, null, null, source_file,
                   ingested_at
            from flat
            """
        )


@pytest.fixture(scope="module")
def mart(tmp_path_factory) -> pd.DataFrame:
    if not (YAHOO.is_dir() and KAGGLE.is_file() and GSPC.is_file()):
        pytest.skip(f"shared developer data not found under {SHARED_DATA}")
    from ml.context import build_context
    from ml.transform import transform

    with isolated_home(tmp_path_factory.mktemp("dbt_parity")):
        ctx = build_context()
        load_prices(ctx)
        transform(ctx)  # the product's `dbt build`: models, data tests and unit tests
        yield ctx.warehouse.query_df(
            "select * from marts.fct_daily_indicators order by ticker, trade_date"
        )


def _compare(frame: pd.DataFrame) -> dict[str, float]:
    """Max deviation per indicator (scaled like the tolerance); asserts NULL positions."""
    close = frame["close"].to_numpy(dtype=float)
    level = float(np.max(np.abs(close)))
    deviations = {}
    for name, expected in talib_indicators(close).items():
        actual = frame[name].to_numpy(dtype=float)
        ticker = frame["ticker"].iloc[0]
        mismatched = np.flatnonzero(np.isnan(actual) != np.isnan(expected))
        assert mismatched.size == 0, f"{ticker} {name}: NULL/NaN differ at rows {mismatched[:10]}"
        both = ~np.isnan(expected)
        diff = np.abs(actual[both] - expected[both])
        worst = float(diff.max()) if diff.size else 0.0
        if name == "rsi_14":
            assert worst <= RSI_TOLERANCE, f"{ticker} {name}: max deviation {worst}"
        else:
            worst /= level
            assert worst <= PRICE_TOLERANCE, f"{ticker} {name}: max deviation {worst} x level"
        deviations[name] = worst
    return deviations


@pytest.mark.slow
@pytest.mark.parametrize("ticker", [*YAHOO_TICKERS, "GSPC", *KAGGLE_TICKERS, SYNTHETIC_FLAT])
def test_indicators_match_talib(mart: pd.DataFrame, ticker: str) -> None:
    frame = mart[mart["ticker"] == ticker]
    assert len(frame) > 0, f"{ticker} missing from the mart"
    assert (frame["price_index"].to_numpy() == np.arange(len(frame))).all()
    _compare(frame)


@pytest.mark.slow
def test_every_loaded_ticker_matches_talib(mart: pd.DataFrame) -> None:
    """All tickers in the warehouse (the whole Kaggle long table included)."""
    worst: dict[str, float] = {}
    for _, frame in mart.groupby("ticker", sort=False):
        for name, value in _compare(frame).items():
            worst[name] = max(worst.get(name, 0.0), value)
    print("max deviation (x price level; RSI in points):", worst)
    assert set(worst) == set(INDICATORS)


@pytest.mark.slow
def test_long_history_is_complete(mart: pd.DataFrame) -> None:
    aapl = mart[mart["ticker"] == "AAPL"]
    # 5,556 data rows in the file, minus Yahoo's all-null 2022-01-27 row.
    assert len(aapl) == 5555
    assert aapl["rsi_14"].notna().sum() == 5555 - 14
    assert aapl["macd_signal"].notna().sum() == 5555 - 33


@pytest.mark.slow
def test_flat_bars_rsi(mart: pd.DataFrame) -> None:
    """TA-Lib's RSI is 0 only while no close has moved; in a flat run it keeps its last value."""
    amcr = mart[mart["ticker"] == "AMCR"].reset_index(drop=True)
    close = amcr["close"].to_numpy(dtype=float)
    expected = talib.RSI(close, 14)
    # AMCR's close first moves at bar 16: bars 14 and 15 have both averages exactly 0.
    assert np.flatnonzero(np.diff(close))[0] == 15
    assert (expected[14:16] == 0).all()
    np.testing.assert_array_equal(amcr["rsi_14"].to_numpy() == 0, expected == 0)
    flat = mart[mart["ticker"] == SYNTHETIC_FLAT].reset_index(drop=True)
    rsi = flat["rsi_14"].to_numpy()
    assert rsi[2200] == pytest.approx(rsi[299], abs=1e-9)
    assert 0 < rsi[2200] < 100

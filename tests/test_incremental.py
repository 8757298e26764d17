"""Incremental runs of ``marts.fct_daily_indicators`` equal a full refresh, row for row.

Real files from the shared developer data set are loaded into a temporary DuckDB warehouse and
the real dbt builds the mart. Then, as a daily run would see them: new bars (one trading day
per ticker, twice), a vendor's correction of an old bar and a bar deleted from a history. After
each change an incremental run is compared with ``--full-refresh``: same keys and integers,
NULLs at the same places, floats within 1e-12 x the ticker's price level (the incremental run
continues the recursions from stored values, the full build sums blocks: both are exact to
double precision, not bit for bit).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import YAHOO, isolated_home

duckdb = pytest.importorskip("duckdb")

# AAPL: 22 years; HWM: 1,319 bars; AMCR: starts with 1,371 flat bars (RSI 0, then carried).
TICKERS = ["AAPL", "HWM", "AMCR", "NTES"]
SELECT = ["--select", "stg_raw__daily_prices", "fct_daily_indicators"]
FLOATS = [
    "open", "high", "low", "close", "adj_close", "volume",
    "sma_5", "sma_15", "sma_20", "sma_50", "ema_12", "ema_26",
    "macd", "macd_signal", "macd_hist", "rsi_14", "rsi_average_gain", "rsi_average_loss",
]  # fmt: skip
RELATIVE_TOLERANCE = 1e-12  # x the ticker's price level; RSI: points
STATE = "intermediate.fct_daily_indicators__resume_state"
STATE_KEYS = ("ticker", "trade_date", "price_index")
STATE_FLOATS = [
    "close", "ema_12", "ema_26", "macd", "macd_signal", "rsi_14",
    "rsi_average_gain", "rsi_average_loss",
]  # fmt: skip


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    files = [YAHOO / f"{t}.csv.gz" for t in TICKERS]
    if not all(f.is_file() for f in files):
        pytest.skip(f"shared developer data not found under {YAHOO}")
    with isolated_home(tmp_path_factory.mktemp("incremental")):
        from ml.context import build_context
        from ml.ingest import ingest_paths

        context = build_context()
        report = ingest_paths(context, files)
        assert report.ok, report.summary_lines()
        context.warehouse.ensure_schema()
        _dbt(context)
        yield context


def _dbt(ctx, *flags: str) -> None:
    from ml.transform import run_dbt

    run_dbt(["run", *SELECT, *flags], ctx.settings)


def _mart(ctx) -> pd.DataFrame:
    return ctx.warehouse.query_df(
        "select * from marts.fct_daily_indicators order by ticker, trade_date"
    ).reset_index(drop=True)


def _execute(ctx, sql: str) -> None:
    with ctx.warehouse.connect() as con:
        con.execute(sql)


def _append_one_day(ctx, step: float) -> None:
    """One new bar per ticker on its next business day, loaded now (as ingest stamps it)."""
    _execute(
        ctx,
        f"""
        insert into raw.daily_prices
        select
            ticker,
            trade_date + case when dayofweek(trade_date) = 5 then 3 else 1 end as trade_date,
            close * {1 + step}, close * {1 + 2 * step}, close * {1 - step}, close * {1 + step},
            adj_close * {1 + step}, volume, 'next-day.csv', now()
        from raw.daily_prices
        qualify row_number() over (partition by ticker order by trade_date desc) = 1
        """,
    )


def _state(ctx) -> pd.DataFrame:
    """The resume state the next increment continues from (kept by the mart's hooks)."""
    sql = f"select * from {STATE} order by ticker, trade_date"
    return ctx.warehouse.query_df(sql).reset_index(drop=True)


def _assert_same_state(incremental: pd.DataFrame, full: pd.DataFrame) -> None:
    """The same bars and values; the watermark is the rows' newest (each row carries the one of
    the run that wrote it)."""
    _assert_same(incremental, full, STATE_KEYS, STATE_FLOATS)
    assert incremental["loaded_until"].max() == full["loaded_until"].max()


def _assert_same(
    incremental: pd.DataFrame,
    full: pd.DataFrame,
    keys: tuple[str, ...] = ("ticker", "trade_date", "price_index", "ingested_at"),
    floats: list[str] = FLOATS,
) -> None:
    assert len(incremental) == len(full)
    for column in keys:
        pd.testing.assert_series_equal(incremental[column], full[column])
    level = full.groupby("ticker")["close"].transform(lambda c: c.abs().max()).to_numpy()
    for column in floats:
        a = incremental[column].to_numpy(dtype=float)
        b = full[column].to_numpy(dtype=float)
        nulls = np.isnan(a) != np.isnan(b)
        assert not nulls.any(), f"{column}: NULL differs at rows {np.flatnonzero(nulls)[:10]}"
        scale = 1.0 if column.startswith("rsi_14") else level
        diff = np.nan_to_num(np.abs(a - b)) / scale
        assert diff.max() <= RELATIVE_TOLERANCE, f"{column}: max deviation {diff.max()}"


def _set_sentinel(ctx, ticker: str, trade_date: str) -> float:
    """Overwrite one stored sma_5; an incremental run that leaves it alone did not recompute
    that bar. Returns the true value."""
    (value,) = ctx.warehouse.query_df(
        f"select sma_5 from marts.fct_daily_indicators "
        f"where ticker = '{ticker}' and trade_date = '{trade_date}'"
    )["sma_5"]
    _execute(
        ctx,
        f"update marts.fct_daily_indicators set sma_5 = -1 "
        f"where ticker = '{ticker}' and trade_date = '{trade_date}'",
    )
    return float(value)


def _sentinel_kept(ctx, ticker: str, trade_date: str, value: float) -> bool:
    """Whether the sentinel is still there; puts the true value back."""
    (stored,) = ctx.warehouse.query_df(
        f"select sma_5 from marts.fct_daily_indicators "
        f"where ticker = '{ticker}' and trade_date = '{trade_date}'"
    )["sma_5"]
    _execute(
        ctx,
        f"update marts.fct_daily_indicators set sma_5 = {value!r} "
        f"where ticker = '{ticker}' and trade_date = '{trade_date}'",
    )
    return stored == -1


def test_new_days_incremental_equals_full_refresh(ctx) -> None:
    before = _mart(ctx)
    value = _set_sentinel(ctx, "AAPL", "2021-12-31")  # an old bar: an append leaves it alone
    _append_one_day(ctx, 0.01)
    _dbt(ctx)
    _append_one_day(ctx, -0.02)  # the second run continues from the first run's rows
    _dbt(ctx)
    assert _sentinel_kept(ctx, "AAPL", "2021-12-31", value)
    incremental, state = _mart(ctx), _state(ctx)
    assert len(incremental) == len(before) + 2 * len(TICKERS)
    _dbt(ctx, "--full-refresh")
    _assert_same(incremental, _mart(ctx))
    _assert_same_state(state, _state(ctx))


def test_corrected_and_deleted_bars_incremental_equals_full_refresh(ctx) -> None:
    # A vendor fix of an AAPL close in 2015 (its ingested_at is updated, as ingest does); one
    # NTES bar of 2010 deleted (a replaced history): NTES is rebuilt whole, AAPL from 2015 on,
    # HWM and AMCR not at all.
    sentinels = {
        ("HWM", "2021-06-01"): _set_sentinel(ctx, "HWM", "2021-06-01"),
        ("AAPL", "2014-06-02"): _set_sentinel(ctx, "AAPL", "2014-06-02"),
    }
    deleted = "select count(*) as n from raw.daily_prices where ticker = 'NTES' and trade_date = '2010-05-03'"
    assert ctx.warehouse.query_df(deleted)["n"].iloc[0] == 1
    _execute(
        ctx,
        """
        update raw.daily_prices
        set close = close * 1.03, high = greatest(high, close * 1.03), ingested_at = now()
        where ticker = 'AAPL' and trade_date = '2015-03-02'
        """,
    )
    _execute(
        ctx, "delete from raw.daily_prices where ticker = 'NTES' and trade_date = '2010-05-03'"
    )
    _dbt(ctx)
    for (ticker, day), value in sentinels.items():
        assert _sentinel_kept(ctx, ticker, day, value), f"{ticker} {day} was recomputed"
    incremental, state = _mart(ctx), _state(ctx)
    _dbt(ctx, "--full-refresh")
    full = _mart(ctx)
    _assert_same(incremental, full)
    _assert_same_state(state, _state(ctx))
    aapl = full[full["ticker"] == "AAPL"]
    assert aapl["trade_date"].astype(str).eq("2015-03-02").any()
    assert not full[(full["ticker"] == "NTES")]["trade_date"].astype(str).eq("2010-05-03").any()


def test_the_state_holds_each_tickers_last_50_bars_and_the_newest_ingested_at(ctx) -> None:
    state, mart = _state(ctx), _mart(ctx)
    last_50 = mart.groupby("ticker").tail(50).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        state.drop(columns="loaded_until"), last_50[state.columns.drop("loaded_until")]
    )
    assert state["loaded_until"].max() == mart["ingested_at"].max()


def test_an_increment_without_the_state_reads_the_mart_and_rebuilds_the_state(ctx) -> None:
    _execute(ctx, f"drop table {STATE}")
    _append_one_day(ctx, 0.005)
    _dbt(ctx)
    incremental, state = _mart(ctx), _state(ctx)
    _dbt(ctx, "--full-refresh")
    _assert_same(incremental, _mart(ctx))
    _assert_same_state(state, _state(ctx))


def test_a_new_ticker_and_a_removed_one_incremental_equals_full_refresh(ctx) -> None:
    # HWMX: a new file (HWM's bars under another name, loaded now); AMCR: every bar deleted.
    _execute(
        ctx,
        """
        insert into raw.daily_prices
        select 'HWMX', trade_date, open, high, low, close, adj_close, volume, 'HWMX.csv', now()
        from raw.daily_prices
        where ticker = 'HWM'
        """,
    )
    _execute(ctx, "delete from raw.daily_prices where ticker = 'AMCR'")
    sentinel = _set_sentinel(ctx, "AAPL", "2021-06-01")
    _dbt(ctx)
    assert _sentinel_kept(ctx, "AAPL", "2021-06-01", sentinel)
    incremental, state = _mart(ctx), _state(ctx)
    assert set(incremental["ticker"]) == {"AAPL", "HWM", "HWMX", "NTES"}
    assert set(state["ticker"]) == {"AAPL", "HWM", "HWMX", "NTES"}
    _dbt(ctx, "--full-refresh")
    _assert_same(incremental, _mart(ctx))
    _assert_same_state(state, _state(ctx))

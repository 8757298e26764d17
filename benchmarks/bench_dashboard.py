"""The dashboard's queries and figures on a large universe (issue 10): 500+ tickers, 20+ years.

The universe is the 150 real Yahoo histories of the developer data (1999-2022), each loaded
``--copies`` times under a suffixed symbol (``AAPL``, ``AAPL.2``, ...): real bars, a large
universe's row count. The indicator mart is computed with TA-Lib (the mart's reference) and
written straight into a DuckDB file, with a year of published forecasts per ticker (250 as-of
dates x 10 horizons) beside it, then the dashboard's own reader (:mod:`ml.dashboard.data`)
and figure builders are timed, cold and cached. Run from the repository root:

    uv run python benchmarks/bench_dashboard.py --data ../shared/data/yahoo_sp500_daily
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import talib

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def indicators(path: Path) -> pd.DataFrame:
    prices = pd.read_csv(path, na_values="null").dropna(subset=["Open", "High", "Low", "Close"])
    close = prices["Close"].to_numpy(float)
    frame = pd.DataFrame(
        {
            "trade_date": pd.to_datetime(prices["Date"]),
            "price_index": np.arange(len(prices)),
            "open": prices["Open"].to_numpy(float),
            "high": prices["High"].to_numpy(float),
            "low": prices["Low"].to_numpy(float),
            "close": close,
            "adj_close": prices["Adj Close"].to_numpy(float),
            "volume": prices["Volume"].to_numpy(float),
        }
    )
    for n in (5, 15, 20, 50):
        frame[f"sma_{n}"] = talib.SMA(close, n)
    frame["ema_12"], frame["ema_26"] = talib.EMA(close, 12), talib.EMA(close, 26)
    frame["macd"], frame["macd_signal"], frame["macd_hist"] = talib.MACD(close, 12, 26, 9)
    frame["rsi_14"] = talib.RSI(close, 14)
    return frame


def build(path: Path, data: Path, copies: int) -> dict:
    files = sorted(data.glob("*.csv.gz"))
    with duckdb.connect(str(path)) as con:
        con.execute("create schema marts")
        first = True
        for file in files:
            frame = indicators(file)
            ticker = file.name.removesuffix(".csv.gz")
            for copy in range(1, copies + 1):
                symbol = ticker if copy == 1 else f"{ticker}.{copy}"
                con.register("part", frame.assign(ticker=symbol))
                if first:
                    con.execute(
                        "create table marts.fct_daily_indicators as "
                        "select * replace (cast(trade_date as date) as trade_date) from part"
                    )
                    first = False
                else:
                    con.execute(
                        "insert into marts.fct_daily_indicators by name "
                        "select * replace (cast(trade_date as date) as trade_date) from part"
                    )
        con.execute(
            """
            create table marts.fct_forecasts_vs_actuals as
            with numbered as (
                select ticker, trade_date, close,
                    row_number() over (partition by ticker order by trade_date desc) as back
                from marts.fct_daily_indicators
            )
            select
                a.ticker, a.trade_date as as_of_date, h.horizon,
                coalesce(t.trade_date, a.trade_date + cast(h.horizon as integer)) as target_date,
                'stockcast-lstm' as model_name, '1' as model_version, 'bench' as mlflow_run_id,
                now() as scored_at, a.close as as_of_close,
                a.close * (1 + 0.001 * h.horizon) as predicted_close,
                a.close * (1 - 0.01 * sqrt(h.horizon)) as lower_80,
                a.close * (1 + 0.012 * sqrt(h.horizon)) as upper_80,
                a.close * (1 - 0.02 * sqrt(h.horizon)) as lower_95,
                a.close * (1 + 0.022 * sqrt(h.horizon)) as upper_95,
                t.close as actual_close, false as is_in_sample
            from numbered a
            cross join range(1, 11) h(horizon)
            left join numbered t on t.ticker = a.ticker and t.back = a.back - h.horizon
            where a.back <= 250
            """
        )
        con.execute(
            "create table marts.fct_ticker_data_quality as select ticker, count(*) as bars, "
            "true as is_clean from marts.fct_daily_indicators group by ticker"
        )
        con.execute(
            "create table marts.fct_ticker_refused_rows as select ticker, 1::bigint as "
            "rows_refused from marts.fct_ticker_data_quality"
        )
        sizes = {
            name: con.execute(f"select count(*) from marts.{name}").fetchone()[0]
            for name in ("fct_daily_indicators", "fct_forecasts_vs_actuals")
        }
        sizes["tickers"] = con.execute(
            "select count(distinct ticker) from marts.fct_daily_indicators"
        ).fetchone()[0]
        span = con.execute(
            "select min(trade_date), max(trade_date) from marts.fct_daily_indicators"
        ).fetchone()
        sizes["dates"] = f"{span[0]}..{span[1]}"
    sizes["file_mb"] = round(path.stat().st_size / 1e6, 1)
    return sizes


def timed(action, repeat: int = 1):
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1), result


def measure() -> dict:
    from ml.context import build_context
    from ml.dashboard import data, figures

    warehouse = build_context().warehouse
    reader = data.MartReader(warehouse, ttl_seconds=600)
    out: dict = {}
    out["overview_cold_ms"], frame = timed(lambda: data.overview(reader))
    out["overview_rows"] = len(frame)
    out["overview_cached_ms"], _ = timed(lambda: data.overview(reader), repeat=3)
    out["ticker_list_cold_ms"], names = timed(lambda: data.tickers(reader))
    ticker = "MSFT.3" if "MSFT.3" in names else names[len(names) // 2]
    span = data.date_span(reader, ticker)
    year = span.last - timedelta(days=365)

    def ticker_page(start):
        bars = data.bars(reader, ticker, start, span.last)
        forecast = data.latest_forecast(reader, ticker)
        published = data.past_forecasts(reader, ticker, start, span.last, 1)
        figure = figures.ticker_figure(ticker, bars, forecast, published, None, ("sma_20",))
        return bars, figure

    out["ticker_page_1y_cold_ms"], (bars, figure) = timed(lambda: ticker_page(year))
    out["ticker_page_1y_cached_ms"], _ = timed(lambda: ticker_page(year), repeat=3)
    out["ticker_page_1y_bars"] = len(bars)
    out["ticker_figure_1y_json_kb"] = round(len(figure.to_json()) / 1e3)
    out["ticker_page_all_cold_ms"], (bars, figure) = timed(lambda: ticker_page(span.first))
    out["ticker_page_all_bars"] = len(bars)
    out["ticker_figure_all_json_kb"] = round(len(figure.to_json()) / 1e3)
    other = names[len(names) // 3]
    out["another_ticker_1y_cold_ms"], _ = timed(lambda: data.bars(reader, other, year, span.last))
    # What the filters avoid: the whole indicator mart in one answer.
    out["full_indicator_table_ms"], whole = timed(
        lambda: warehouse.read_query("select * from marts.fct_daily_indicators")
    )
    out["full_indicator_table_mb"] = round(whole.memory_usage(deep=True).sum() / 1e6)
    out["queries_run"] = reader.queries_run
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/yahoo_sp500_daily")
    parser.add_argument("--copies", type=int, default=4, help="Symbols per real history.")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/dashboard.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["STOCKCAST_HOME"] = home
        for name in ("STOCKCAST_DUCKDB_PATH", "STOCKCAST_TARGET", "MLFLOW_TRACKING_URI"):
            os.environ.pop(name, None)
        path = Path(home) / "warehouse" / "stockcast.duckdb"
        path.parent.mkdir(parents=True)
        started = time.perf_counter()
        sizes = build(path, args.data, args.copies)
        sizes["build_seconds"] = round(time.perf_counter() - started, 1)
        print("universe:", json.dumps(sizes), flush=True)
        figures = measure()
    result = {
        "universe": sizes,
        "timings": figures,
        "machine": f"{os.cpu_count()} CPU, {platform.platform()}, Python {platform.python_version()}",
        "duckdb": duckdb.__version__,
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

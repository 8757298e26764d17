"""The dashboard's data access and figures, on a real DuckDB file whose marts hold real bars
(KO and MSFT from the developer data, indicators by TA-Lib, the mart's reference) and
forecasts written by hand; the pages on an empty warehouse with Streamlit's AppTest. The
browser test on a real run is tests/test_dashboard_browser.py."""

from __future__ import annotations

import time
from datetime import date

import duckdb
import pandas as pd
import pytest
from helpers import YAHOO, duckdb_lock_held, indicator_frame, isolated_home, read_yahoo

pytest.importorskip("streamlit")

from ml.dashboard import data, figures
from ml.warehouse import WarehouseBusyError

needs_data = pytest.mark.skipif(not YAHOO.is_dir(), reason="../shared/data is not beside the repo")
TICKERS = ["KO", "MSFT"]
AS_OF = pd.Timestamp("2021-12-31")
TARGETS = pd.bdate_range("2022-01-03", periods=10)  # no NYSE holiday among them


def _forecast_rows(ticker: str, close: float) -> pd.DataFrame:
    steps = pd.Series(range(1, 11), dtype=float)
    predicted = close * (1 + 0.002 * steps)
    spread = close * 0.01 * steps**0.5
    return pd.DataFrame(
        {
            "ticker": ticker,
            "as_of_date": AS_OF,
            "horizon": range(1, 11),
            "target_date": TARGETS,
            "model_name": "stockcast-lstm",
            "model_version": "3",
            "mlflow_run_id": "run-abc",
            "scored_at": pd.Timestamp("2022-01-01 01:00"),
            "as_of_close": close,
            "predicted_close": predicted,
            "lower_80": predicted - spread,
            "upper_80": predicted + spread,
            "lower_95": predicted - 2 * spread,
            "upper_95": predicted + 2 * spread,
            "actual_close": None,
        }
    )


@pytest.fixture(scope="module")
def marts(tmp_path_factory):
    """A warehouse with the indicator mart (2020-2021 bars of KO and MSFT, MSFT two days
    short), published forecasts, a data-quality row per ticker and refused rows for KO."""
    if not YAHOO.is_dir():
        pytest.skip("../shared/data is not beside the repo")
    home = tmp_path_factory.mktemp("dashboard_home")
    with isolated_home(home):
        from ml.context import build_context

        ctx = build_context()
        ctx.warehouse.ensure_schema()
    indicators = []
    for ticker in TICKERS:
        prices = read_yahoo(ticker)
        frame = indicator_frame(prices, ticker)
        frame = frame[(frame["trade_date"] >= "2020-01-01") & (frame["trade_date"] <= AS_OF)]
        if ticker == "MSFT":
            frame = frame.iloc[:-2]
        indicators.append(frame)
    indicators = pd.concat(indicators, ignore_index=True)
    last_close = indicators[indicators["trade_date"] == AS_OF].set_index("ticker")["close"]
    forecasts = pd.concat([_forecast_rows(t, last_close.get(t, 100.0)) for t in TICKERS])
    with duckdb.connect(str(ctx.warehouse.path)) as con:
        con.execute("create schema if not exists marts")
        con.register("indicators", indicators)
        con.execute("create table marts.fct_daily_indicators as select * from indicators")
        con.register("forecasts", forecasts)
        con.execute("create table marts.fct_forecasts_vs_actuals as select * from forecasts")
        con.execute(
            "create table marts.fct_ticker_data_quality as "
            "select * from (values ('KO', false), ('MSFT', true)) t(ticker, is_clean)"
        )
        con.execute(
            "create table marts.fct_ticker_refused_rows as "
            "select 'KO' as ticker, 3::bigint as rows_refused"
        )
    return {"warehouse": ctx.warehouse, "indicators": indicators, "forecasts": forecasts}


def test_bars_are_filtered_in_sql_and_cached(marts):
    reader = data.MartReader(marts["warehouse"], ttl_seconds=60)
    bars = data.bars(reader, "KO", date(2021, 3, 1), date(2021, 3, 31))
    expected = marts["indicators"].query(
        "ticker == 'KO' and '2021-03-01' <= trade_date <= '2021-03-31'"
    )
    assert bars["trade_date"].tolist() == expected["trade_date"].tolist()
    assert bars["close"].tolist() == pytest.approx(expected["close"].tolist())
    assert bars["trade_date"].is_monotonic_increasing
    assert reader.queries_run == 1
    again = data.bars(reader, "KO", date(2021, 3, 1), date(2021, 3, 31))
    assert reader.queries_run == 1  # from the cache
    pd.testing.assert_frame_equal(again, bars)
    data.bars(reader, "MSFT", date(2021, 3, 1), date(2021, 3, 31))
    assert reader.queries_run == 2  # another ticker is another query


def test_a_full_cache_forgets_the_oldest_answer(marts):
    reader = data.MartReader(marts["warehouse"], ttl_seconds=60, max_entries=2)
    for day in (1, 2, 3):
        data.bars(reader, "KO", date(2021, 3, day), date(2021, 3, 31))
    assert reader.queries_run == 3
    data.bars(reader, "KO", date(2021, 3, 1), date(2021, 3, 31))
    assert reader.queries_run == 4  # forgotten: asked again
    data.bars(reader, "KO", date(2021, 3, 3), date(2021, 3, 31))
    assert reader.queries_run == 4


def test_while_a_writer_holds_the_file_the_reader_serves_its_last_answer(marts):
    """No wait for the lock (a flow holds it for minutes): the last answer, marked updating;
    a query never answered before says busy at once."""
    warehouse = marts["warehouse"]
    reader = data.MartReader(warehouse, ttl_seconds=0)
    before = data.latest_forecast(reader, "KO")
    with duckdb_lock_held(warehouse.path):
        started = time.perf_counter()
        during = data.latest_forecast(reader, "KO")
        assert time.perf_counter() - started < 2
        pd.testing.assert_frame_equal(during, before)
        assert reader.updating_since is not None
        with pytest.raises(WarehouseBusyError, match="being written by"):
            data.latest_forecast(reader, "MSFT")
    assert len(data.latest_forecast(reader, "MSFT")) == 10
    assert reader.updating_since is None


def test_the_reader_never_keeps_the_file_open(marts):
    """A writer can take the file right after a read: the dashboard holds no connection."""
    warehouse = marts["warehouse"]
    data.tickers(data.MartReader(warehouse))
    with duckdb.connect(str(warehouse.path)) as con:  # would fail on a lingering reader
        assert con.execute("select count(*) from marts.fct_ticker_data_quality").fetchone() == (2,)


def test_latest_forecast_is_the_newest_as_of_in_horizon_order(marts):
    reader = data.MartReader(marts["warehouse"])
    forecast = data.latest_forecast(reader, "KO")
    assert forecast["horizon"].tolist() == list(range(1, 11))
    assert (forecast["as_of_date"] == AS_OF).all()
    assert forecast["target_date"].tolist() == list(TARGETS)


def test_overview_has_one_row_per_ticker_with_the_forecast_change(marts):
    frame = data.overview(data.MartReader(marts["warehouse"]))
    assert frame["ticker"].tolist() == TICKERS
    ko = frame.set_index("ticker").loc["KO"]
    expected = marts["forecasts"].query("ticker == 'KO' and horizon == 10").iloc[0]
    assert ko["forecast_change_pct"] == pytest.approx(
        100 * (expected["predicted_close"] / expected["as_of_close"] - 1)
    )
    assert ko["interval_width_80_pct"] == pytest.approx(
        100 * (expected["upper_80"] - expected["lower_80"]) / expected["as_of_close"]
    )
    assert ko["rows_refused"] == 3 and not ko["is_clean"]
    msft = frame.set_index("ticker").loc["MSFT"]
    assert msft["rows_refused"] == 0 and msft["is_clean"]
    # MSFT's last two bars are missing: it is behind KO by the calendar days between them.
    last = marts["indicators"].groupby("ticker")["trade_date"].max()
    assert msft["days_behind"] == (last["KO"] - last["MSFT"]).days > 0
    assert ko["days_behind"] == 0
    assert ko["rsi_state"] == data.rsi_state(ko["rsi_14"])


def test_rsi_state_and_overview_filter():
    assert [data.rsi_state(v) for v in (75, 70, 50, 30, 12, None)] == [
        "overbought", "overbought", "neutral", "oversold", "oversold", "n/a",
    ]  # fmt: skip
    frame = pd.DataFrame({"ticker": ["AAPL", "AMZN", "KO"], "rsi_state": ["neutral",
                          "overbought", "neutral"]})  # fmt: skip
    assert data.filter_overview(frame, " a")["ticker"].tolist() == ["AAPL", "AMZN"]
    assert data.filter_overview(frame, "", ["neutral"])["ticker"].tolist() == ["AAPL", "KO"]
    assert data.filter_overview(frame, "am", ["neutral"]).empty


def test_marts_not_built_yet_are_named_with_their_fix(ctx):
    reader = data.MartReader(ctx.warehouse)
    with pytest.raises(data.MartMissingError, match="stockcast run"):
        data.tickers(reader)
    with pytest.raises(data.MartMissingError, match="stockcast backtest"):
        data.backtest_skill(reader)
    assert data.latest_forecast(reader, "KO").empty
    assert data.backtest_forecasts(reader, "KO", date(2020, 1, 1), date(2021, 1, 1), 1).empty


def test_promotion_kind_and_mlflow_link():
    assert data.promotion_kind({}, {"gate_alias": "champion", "gate_forced": "False",
                                    "gate_reason": "beats"}) == ("gated promotion", "beats")  # fmt: skip
    assert data.promotion_kind({}, {"gate_alias": "champion", "gate_forced": "True"})[0] == (
        "bootstrap (forced past the gate)"
    )
    kind, why = data.promotion_kind(
        {"champion_set_by": "ann@host", "champion_set_reason": "rollback"}, {"gate_alias": "x"}
    )
    assert (kind, why) == ("set by hand", "rollback (ann@host)")
    assert data.mlflow_ui_url("sqlite:////tmp/m.db") == "http://127.0.0.1:5000"
    assert data.mlflow_ui_url("http://mlflow:5000/") == "http://mlflow:5000"
    assert data.mlflow_ui_url("sqlite:///x", "https://ui.example/") == "https://ui.example"


# -- figures --------------------------------------------------------------------------------


def _traces(figure, kind=None):
    return [t for t in figure.data if kind is None or t.type == kind]


@needs_data
def test_ticker_figure_has_candles_bands_and_indicator_panels_on_one_axis(marts):
    bars = marts["indicators"].query("ticker == 'KO' and trade_date >= '2021-06-01'")
    forecast = marts["forecasts"].query("ticker == 'KO'")
    figure = figures.ticker_figure("KO", bars, forecast, overlays=("sma_20", "ema_12"))
    (candles,) = _traces(figure, "candlestick")
    assert list(candles.close) == pytest.approx(bars["close"].tolist())
    names = [t.name for t in figure.data]
    assert {"SMA 20", "EMA 12", "80% interval", "95% interval", "forecast (v3)"} <= set(names)
    band = next(t for t in figure.data if t.name == "80% interval")
    # Closed polygon: from the as-of close out along the lower bounds and back on the upper.
    assert len(band.x) == 22 and band.fill == "toself"
    assert band.y[0] == band.y[-1] == pytest.approx(forecast["as_of_close"].iloc[0])
    assert list(band.y[1:11]) == pytest.approx(forecast["lower_80"].tolist())
    assert list(band.y[11:21]) == pytest.approx(forecast["upper_80"].tolist()[::-1])

    # RSI with its 30/70 lines, MACD line, signal and histogram, sharing the date axis.
    rsi = next(t for t in figure.data if t.name == "RSI 14")
    assert rsi.yaxis == "y3"
    lines = {shape.y0 for shape in figure.layout.shapes if shape.yref == "y3"}
    assert lines == {30.0, 70.0}
    macd = [t for t in figure.data if t.yaxis == "y4"]
    assert sorted(t.name for t in macd) == ["MACD", "MACD histogram", "signal"]
    assert [figure.layout[axis].matches for axis in ("xaxis", "xaxis2", "xaxis3")] == ["x4"] * 3


@needs_data
def test_the_baseline_forecast_is_named_as_such_not_as_a_version(marts):
    bars = marts["indicators"].query("ticker == 'KO' and trade_date >= '2021-06-01'")
    forecast = marts["forecasts"].query("ticker == 'KO'").assign(model_version="baseline")
    names = [t.name for t in figures.ticker_figure("KO", bars, forecast).data]
    assert "forecast (baseline)" in names and not any(n.startswith("forecast (v") for n in names)


def test_published_forecasts_draw_in_sample_ones_apart():
    from helpers import random_walk_prices

    bars = indicator_frame(random_walk_prices(60, seed=4), "ZZZ")
    published = pd.DataFrame(
        {
            "target_date": bars["trade_date"].iloc[-4:].to_numpy(),
            "predicted_close": [1.0, 2.0, 3.0, 4.0],
            "is_in_sample": [True, True, False, False],
        }
    )
    figure = figures.ticker_figure("ZZZ", bars, None, published, None, (), horizon=2)
    traces = {t.name: t for t in figure.data}
    assert list(traces["backfilled in-sample, 2 d ahead"].y) == [1.0, 2.0]
    assert list(traces["published forecasts, 2 d ahead"].y) == [3.0, 4.0]
    assert traces["backfilled in-sample, 2 d ahead"].marker.symbol == "diamond-open"


def test_closed_days_hide_holidays_not_trading_days():
    shown = pd.Series(pd.to_datetime(["2019-07-02", "2019-07-03", "2019-07-05", "2019-07-08"]))
    assert figures.closed_days(shown) == ["2019-07-04"]
    assert figures.closed_days(pd.Series([], dtype="datetime64[ns]")) == []


def test_ticker_figure_without_forecast_or_history_of_forecasts():
    from helpers import random_walk_prices

    prices = random_walk_prices(80, seed=3)
    bars = indicator_frame(prices, "ZZZ")
    figure = figures.ticker_figure("ZZZ", bars, pd.DataFrame(), None, None)
    assert not [t for t in figure.data if t.name and "interval" in t.name]
    assert len(_traces(figure, "candlestick")) == 1


def test_backtest_forecasts_are_drawn_at_their_target_bar():
    dates = pd.Series(pd.bdate_range("2021-01-04", periods=6))
    backtest = pd.DataFrame(
        {"model": "lstm", "as_of_date": dates[:3], "predicted_close": [1.0, 2.0, 3.0]}
    )
    targets = figures._backtest_targets(backtest, dates, horizon=2)
    assert targets.tolist() == dates[2:5].tolist()


def test_skill_figure_leaves_naive_out_and_fills_significant_points():
    metrics = pd.DataFrame(
        {
            "model": ["naive", "lstm", "lstm", "ewma"],
            "horizon": [1, 1, 2, 1],
            "rel_mae": [1.0, 0.95, 1.02, 1.0],
            "dm_pvalue": [None, 0.01, 0.4, 0.9],
            "is_significant_at_5pct": [None, True, False, False],
            "coverage_80": [None, 0.78, 0.81, 0.8],
            "coverage_95": [None, 0.93, 0.95, 0.96],
        }
    )
    skill = figures.skill_figure(metrics)
    assert sorted(t.name for t in skill.data) == ["ewma", "lstm"]
    lstm = next(t for t in skill.data if t.name == "lstm")
    assert list(lstm.marker.symbol) == ["circle", "circle-open"]
    coverage = figures.coverage_figure(metrics)
    assert sorted(t.name for t in coverage.data) == ["ewma 80%", "ewma 95%", "lstm 80%",
                                                      "lstm 95%"]  # fmt: skip
    assert {shape.y0 for shape in coverage.layout.shapes} == {0.8, 0.95}


def test_dm_pvalues_say_when_a_model_equals_naive():
    metrics = pd.DataFrame(
        {
            "model": ["naive", "lstm", "lstm", "ewma", "ewma"],
            "horizon": [1, 1, 2, 1, 2],
            "rel_mae": [1.0, 1.0, 0.97, 1.01, 1.0],
            "dm_pvalue": [None, None, 0.0123, None, 0.5],
        }
    )
    table = data.dm_pvalue_table(metrics)
    assert table.loc["lstm"].tolist() == ["= naive", "0.012"]
    assert table.loc["ewma"].tolist() == ["n/a", "0.500"]
    assert "naive" not in table.index


# -- pages ----------------------------------------------------------------------------------


def _model_page():
    from ml.dashboard.pages import model_page

    model_page()


def _overview_page():
    from ml.dashboard.pages import overview_page

    overview_page()


@pytest.mark.parametrize("page", [_overview_page, _model_page])
def test_pages_on_a_fresh_warehouse_say_what_to_run(ctx, page):
    """No marts, no MLflow store: each section says what is missing and what to run."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_function(page, default_timeout=60).run()
    assert not app.exception, app.exception
    shown = " ".join(element.value for element in app.info)
    assert "is not built yet" in shown
    if page is _model_page:
        assert "No champion yet" in shown
        assert "stockcast backtest" in shown
    assert not app.error


# -- command line ---------------------------------------------------------------------------


def test_dashboard_help_is_instant_and_loads_no_heavy_library():
    import subprocess
    import sys

    code = (
        "import sys; from click.testing import CliRunner; from ml.cli import main; "
        "r = CliRunner().invoke(main, ['dashboard', '--help']); assert r.exit_code == 0; "
        "assert '--port' in r.output; print(sorted(m for m in ('tensorflow', 'mlflow', "
        "'streamlit', 'plotly', 'duckdb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("port", ["80", "65536", "x"])
def test_dashboard_refuses_a_bad_port_before_any_work(port, stockcast_home):
    from click.testing import CliRunner

    from ml.cli import main

    result = CliRunner().invoke(main, ["dashboard", "--port", port])
    assert result.exit_code == 2
    assert result.output.startswith("error: Invalid value for '--port'")
    assert not (stockcast_home / "warehouse").exists()


def test_dashboard_refuses_a_port_in_use(stockcast_home):
    import socket

    from click.testing import CliRunner

    from ml.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["dashboard", "--port", str(port)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: port {port} on 127.0.0.1 is not free (Address already in use): pick another "
        "with --port"
    )

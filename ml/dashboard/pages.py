"""The dashboard's pages (Streamlit): overview, ticker and model.

Each section catches what it can explain (a mart not built yet, the warehouse being written, a
configuration problem) and says it in one line with the fix, instead of a traceback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta

import pandas as pd
import streamlit as st

from ml.dashboard import data, figures
from ml.warehouse import WarehouseBusyError, WarehouseError

TTL_SECONDS = float(os.environ.get("STOCKCAST_DASHBOARD_TTL_SECONDS", "60"))
DEFAULT_DAYS_SHOWN = 270
BUSY_NOTICE = (
    "The warehouse is being updated by a flow: showing the data read before it started. "
    "Reload in a moment for the new data."
)


@st.cache_resource
def reader() -> data.MartReader:
    from ml.context import build_context

    return data.MartReader(build_context().warehouse, ttl_seconds=TTL_SECONDS)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def champion() -> data.Champion | None:
    return data.champion(reader().warehouse.settings, os.environ.get("STOCKCAST_MLFLOW_UI_URL"))


@contextlib.contextmanager
def explained(what: str) -> Iterator[None]:
    """Show an expected failure of one section as one line, and let the page go on."""
    try:
        yield
    except data.MartMissingError as exc:
        st.info(f"{what}: `{exc.mart}` is not built yet — {exc.fix}.")
    except WarehouseBusyError:
        st.warning(f"{what}: updating — a flow is writing the warehouse; reload in a moment.")
    except (WarehouseError, LookupError, ValueError) as exc:
        st.error(f"{what}: {str(exc).splitlines()[0]}")


def busy_notice() -> None:
    if reader().updating_since is not None:
        st.warning(BUSY_NOTICE, icon="⏳")


# -- overview -------------------------------------------------------------------------------


def overview_page() -> None:
    st.title("Overview")
    st.caption(
        "Every ticker: last close, the published forecast's change over 10 trading days and "
        "its 80% interval width (percent of the as-of close), RSI state, data freshness and "
        "rows refused at ingest. Select a row to open its ticker page."
    )
    with explained("Overview"):
        frame = data.overview(reader())
        left, right = st.columns([1, 2])
        search = left.text_input("Ticker contains", key="overview_search")
        states = right.multiselect(
            "RSI state", ["overbought", "neutral", "oversold", "n/a"], key="overview_rsi"
        )
        shown = data.filter_overview(frame, search, states).reset_index(drop=True)
        st.caption(f"{len(shown)} of {len(frame)} tickers")
        event = st.dataframe(
            shown,
            hide_index=True,
            width="stretch",
            on_select="rerun",
            selection_mode="single-row",
            key="overview_table",
            column_config={
                "last_trade_date": st.column_config.DateColumn("last bar"),
                "last_close": st.column_config.NumberColumn("last close", format="%.2f"),
                "forecast_as_of": st.column_config.DateColumn("forecast as of"),
                "forecast_change_pct": st.column_config.NumberColumn(
                    "forecast 10 d (%)", format="%+.2f"
                ),
                "interval_width_80_pct": st.column_config.NumberColumn(
                    "80% width 10 d (%)", format="%.2f"
                ),
                "rsi_14": st.column_config.NumberColumn("RSI 14", format="%.1f"),
                "rsi_state": "RSI state",
                "days_behind": st.column_config.NumberColumn(
                    "days behind", help="Calendar days behind the newest bar of any ticker."
                ),
                "rows_refused": st.column_config.NumberColumn("rows refused"),
                "is_clean": st.column_config.CheckboxColumn("clean data"),
            },
        )
        selected = event.selection.rows if event is not None else []
        if selected:
            st.session_state["ticker"] = shown.loc[selected[0], "ticker"]
            st.switch_page(PAGES["ticker"])
    busy_notice()


# -- ticker ---------------------------------------------------------------------------------


def _chosen_ticker(options: list[str]) -> str:
    asked = st.query_params.get("ticker") or st.session_state.get("ticker")
    asked = str(asked).upper() if asked else None
    return asked if asked in options else options[0]


def ticker_page() -> None:
    with explained("Ticker"):
        options = data.tickers(reader())
        if not options:
            st.info("No prices loaded yet: run `stockcast run PATH...` first.")
            return
        with st.sidebar:
            current = _chosen_ticker(options)
            ticker = st.selectbox("Ticker", options, index=options.index(current))
        st.session_state["ticker"] = ticker
        st.query_params["ticker"] = ticker
        st.title(ticker)
        span = data.date_span(reader(), ticker)
        forecast = data.latest_forecast(reader(), ticker)
        with st.sidebar:
            default_start = max(span.first, span.last - timedelta(days=DEFAULT_DAYS_SHOWN))
            chosen = st.date_input(
                "Dates",
                value=(default_start, span.last),
                min_value=span.first,
                max_value=span.last,
                key=f"dates_{ticker}",
            )
            overlays = st.multiselect(
                "Overlays",
                list(figures.OVERLAYS),
                default=["sma_20", "sma_50"],
                format_func=lambda c: figures.OVERLAYS[c][0],
            )
            horizon = st.select_slider(
                "Past forecasts, days ahead", options=list(range(1, 11)), value=1
            )
        start, end = (chosen[0], chosen[-1]) if chosen else (default_start, span.last)
        bars = data.bars(reader(), ticker, start, end)
        published = data.past_forecasts(reader(), ticker, start, end + timedelta(days=1), horizon)
        if not forecast.empty:
            published = published[published["as_of_date"] < forecast["as_of_date"].iloc[0]]
        backtest = data.backtest_forecasts(reader(), ticker, start, end, horizon)
        backtest_model = None
        if not backtest.empty:
            models = sorted(backtest["model"].unique())
            with st.sidebar:
                backtest_model = st.selectbox(
                    "Backtest model",
                    models,
                    index=models.index("lstm") if "lstm" in models else 0,
                )
            backtest = backtest[backtest["model"] == backtest_model]
        # The forecast is drawn when the range reaches its as-of date.
        shown_forecast = forecast
        if forecast.empty or pd.Timestamp(forecast["as_of_date"].iloc[0]).date() > end:
            shown_forecast = forecast.iloc[0:0]
        figure = figures.ticker_figure(
            ticker, bars, shown_forecast, published, backtest, tuple(overlays), horizon
        )
        st.plotly_chart(figure, width="stretch", key="ticker_chart")
        _forecast_table(forecast)
        if backtest_model:
            st.caption(
                f"Dotted: the latest walk-forward backtest's {backtest_model} forecasts "
                f"{horizon} trading days ahead; diamonds: published forecasts for those dates "
                "(open: backfilled inside the champion's training data, in-sample)."
            )
    busy_notice()


def _version(version) -> str:
    """``v3`` for a registered version; the baseline's ``baseline`` as it is."""
    return f"v{version}" if str(version).isdigit() else str(version)


def _forecast_table(forecast: pd.DataFrame) -> None:
    st.subheader("Latest forecast")
    if forecast.empty:
        st.info(f"No forecast published for this ticker yet: {data.SCORE_FIX}.")
        return
    first = forecast.iloc[0]
    st.caption(
        f"As of {pd.Timestamp(first['as_of_date']).date()} (close {first['as_of_close']:.2f}), "
        f"model {first['model_name']} {_version(first['model_version'])}; bounds of the 80% "
        "and 95% prediction intervals, on trading days."
    )
    table = forecast[
        ["horizon", "target_date", "predicted_close", "lower_80", "upper_80", "lower_95",
         "upper_95", "actual_close"]
    ].copy()  # fmt: skip
    table["target_date"] = pd.to_datetime(table["target_date"]).dt.date
    st.dataframe(table.round(2), hide_index=True, width="stretch")


# -- model ----------------------------------------------------------------------------------


def model_page() -> None:
    st.title("Model")
    st.header("Champion")
    with explained("Champion"):
        current = champion()
        if current is None:
            st.info(
                "No champion yet: forecasts are published from the naive_ewma baseline until "
                "a model passes the promotion gate (`stockcast train`)."
            )
        else:
            link = f"{current.ui_url}/#/models/stockcast-lstm/versions/{current.version}"
            st.markdown(
                f"**stockcast-lstm v{current.version}** — {current.promotion}, registered "
                f"{current.registered_at}  \nMLflow run `{current.run_id}` — "
                f"[open in the MLflow UI]({link})"
            )
            if current.reason:
                st.caption(f"Gate: {current.reason}")
    st.header("Backtest skill against naive")
    with explained("Backtest"):
        metrics = data.backtest_skill(reader())
        if metrics.empty:
            st.info(f"No backtest stored yet: {data.BACKTEST_FIX}.")
        else:
            first = metrics.iloc[0]
            st.caption(
                f"Latest walk-forward backtest (MLflow run `{first['backtest_run_id']}`), "
                f"{int(first['n_folds'])} folds, as-of "
                f"{pd.Timestamp(first['first_as_of']).date()}.."
                f"{pd.Timestamp(first['last_as_of']).date()}, all tickers pooled. Below 1 "
                "beats naive; filled markers: Diebold-Mariano p < 0.05 with smaller errors."
            )
            st.plotly_chart(figures.skill_figure(metrics), width="stretch")
            st.markdown("Diebold-Mariano p-values against naive, by horizon")
            st.dataframe(data.dm_pvalue_table(metrics), width="stretch")
            st.subheader("Interval coverage against nominal")
            st.plotly_chart(figures.coverage_figure(metrics), width="stretch")
    st.header("Realized accuracy")
    with explained("Realized accuracy"):
        versions = data.champion_accuracy(reader())
        rolling = data.realized_accuracy(reader())
        if versions.empty or rolling.empty:
            st.info(
                "No out-of-sample forecast has come due yet: realized accuracy appears once the "
                "bars of the forecast dates are loaded (forecasts backfilled with `stockcast "
                "score --since` whose target dates the champion was fitted on are in-sample "
                "and not counted)."
            )
        else:
            st.plotly_chart(figures.realized_accuracy_figure(rolling), width="stretch")
        if not versions.empty:
            st.dataframe(versions, hide_index=True, width="stretch")
    busy_notice()


PAGES: dict[str, st.Page] = {}


def main() -> None:
    st.set_page_config(page_title="Stockcast", layout="wide", page_icon="📈")
    PAGES.update(
        overview=st.Page(overview_page, title="Overview", default=True),
        ticker=st.Page(ticker_page, title="Ticker", url_path="ticker"),
        model=st.Page(model_page, title="Model", url_path="model"),
    )
    try:
        reader()
    except (WarehouseError, ValueError) as exc:  # ConfigError is a ValueError
        st.error(f"Cannot open the warehouse: {str(exc).splitlines()[0]}")
        return
    st.navigation(list(PAGES.values())).run()

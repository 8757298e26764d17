"""Plotly figures of the dashboard: pure functions, DataFrames (as :mod:`ml.dashboard.data`
returns them) in, a figure out. No I/O, no Streamlit."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ml.dashboard.data import RSI_OVERBOUGHT, RSI_OVERSOLD

OVERLAYS = {
    "sma_20": ("SMA 20", "#1f77b4"),
    "sma_50": ("SMA 50", "#ff7f0e"),
    "ema_12": ("EMA 12", "#2ca02c"),
    "ema_26": ("EMA 26", "#9467bd"),
}
FORECAST_COLOR = "#d62728"
BAND_95 = "rgba(214, 39, 40, 0.12)"
BAND_80 = "rgba(214, 39, 40, 0.28)"
BACKTEST_COLOR = "#8c564b"
PUBLISHED_COLOR = "#e377c2"
PRICE_ROW, VOLUME_ROW, RSI_ROW, MACD_ROW = 1, 2, 3, 4


def _dates(values) -> pd.Series:
    return pd.to_datetime(pd.Series(values)).reset_index(drop=True)


def closed_days(shown: pd.Series) -> list[str]:
    """Weekdays between the first and the last date shown that are not shown: the exchange's
    holidays (and missing bars), hidden from the date axis as weekends are."""
    shown = pd.to_datetime(pd.Series(shown)).dropna()
    if shown.empty:
        return []
    weekdays = pd.bdate_range(shown.min(), shown.max())
    return [d.strftime("%Y-%m-%d") for d in weekdays.difference(pd.DatetimeIndex(shown))]


def _band(x: pd.Series, lower: pd.Series, upper: pd.Series, name: str, color: str) -> go.Scatter:
    """A closed polygon from the lower bound forwards and the upper bound back."""
    return go.Scatter(
        x=pd.concat([x, x[::-1]]),
        y=pd.concat([lower, upper[::-1]]),
        fill="toself",
        fillcolor=color,
        line={"width": 0},
        hoverinfo="skip",
        name=name,
        legendgroup="forecast",
    )


def forecast_traces(forecast: pd.DataFrame) -> list[go.Scatter]:
    """The forecast from its as-of close over the target (trading) dates, with the 95% and
    80% bands; nothing when the frame is empty."""
    if forecast.empty:
        return []
    rows = forecast.sort_values("horizon")
    as_of = pd.Timestamp(rows["as_of_date"].iloc[0])
    start = pd.Series([as_of])
    close = pd.Series([float(rows["as_of_close"].iloc[0])])
    x = pd.concat([start, _dates(rows["target_date"])], ignore_index=True)
    traces = []
    for level, color in (("95", BAND_95), ("80", BAND_80)):
        lower, upper = rows[f"lower_{level}"], rows[f"upper_{level}"]
        if lower.notna().all() and upper.notna().all():
            traces.append(
                _band(
                    x,
                    pd.concat([close, lower.astype(float)], ignore_index=True),
                    pd.concat([close, upper.astype(float)], ignore_index=True),
                    f"{level}% interval",
                    color,
                )
            )
    version = rows["model_version"].iloc[0] if "model_version" in rows else None
    if version is None or pd.isna(version) or not str(version):
        label = "forecast"
    elif str(version).isdigit():
        label = f"forecast (v{version})"
    else:  # the naive_ewma baseline's version is "baseline"
        label = f"forecast ({version})"
    traces.append(
        go.Scatter(
            x=x,
            y=pd.concat([close, rows["predicted_close"].astype(float)], ignore_index=True),
            mode="lines+markers",
            line={"color": FORECAST_COLOR, "width": 2},
            marker={"size": 5},
            name=label,
            legendgroup="forecast",
        )
    )
    return traces


def ticker_figure(
    ticker: str,
    bars: pd.DataFrame,
    forecast: pd.DataFrame | None = None,
    published: pd.DataFrame | None = None,
    backtest: pd.DataFrame | None = None,
    overlays: tuple[str, ...] = ("sma_20", "sma_50"),
    horizon: int = 1,
) -> go.Figure:
    """Candlesticks with moving-average overlays, the forecast and its bands, past forecasts
    ``horizon`` days ahead (published, and the latest backtest's walk-forward ones) against
    the closes; volume, RSI(14) with its 30/70 lines and MACD on the same date axis."""
    forecast = forecast if forecast is not None else pd.DataFrame()
    figure = make_subplots(
        rows=4,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.03,
        row_heights=[0.52, 0.12, 0.16, 0.20],
        subplot_titles=("", "volume", "RSI (14)", "MACD (12, 26, 9)"),
    )
    dates = _dates(bars["trade_date"])
    figure.add_trace(
        go.Candlestick(
            x=dates,
            open=bars["open"],
            high=bars["high"],
            low=bars["low"],
            close=bars["close"],
            name=ticker,
        ),
        row=PRICE_ROW,
        col=1,
    )
    for column in overlays:
        label, color = OVERLAYS[column]
        figure.add_trace(
            go.Scatter(x=dates, y=bars[column], mode="lines", name=label, line={"color": color,
                       "width": 1.2}),
            row=PRICE_ROW,
            col=1,
        )  # fmt: skip
    for trace in forecast_traces(forecast):
        figure.add_trace(trace, row=PRICE_ROW, col=1)
    if published is not None and not published.empty:
        in_sample = published.get("is_in_sample", pd.Series(False, index=published.index))
        in_sample = in_sample.fillna(False).astype(bool)
        for rows, symbol, label in (
            (published[~in_sample], "diamond", "published forecasts"),
            (published[in_sample], "diamond-open", "backfilled in-sample"),
        ):
            if rows.empty:
                continue
            figure.add_trace(
                go.Scatter(
                    x=_dates(rows["target_date"]),
                    y=rows["predicted_close"],
                    mode="markers",
                    marker={"color": PUBLISHED_COLOR, "size": 6, "symbol": symbol},
                    name=f"{label}, {horizon} d ahead",
                ),
                row=PRICE_ROW,
                col=1,
            )
    if backtest is not None and not backtest.empty:
        # Plotted at the as-of date plus the horizon in bars: the walk-forward target.
        figure.add_trace(
            go.Scatter(
                x=_backtest_targets(backtest, dates, horizon),
                y=backtest["predicted_close"],
                mode="lines",
                line={"color": BACKTEST_COLOR, "width": 1.5, "dash": "dot"},
                name=f"backtest {backtest['model'].iloc[0]}, {horizon} d ahead",
            ),
            row=PRICE_ROW,
            col=1,
        )
    figure.add_trace(
        go.Bar(x=dates, y=bars["volume"], name="volume", marker={"color": "#7f7f7f"},
               showlegend=False),
        row=VOLUME_ROW,
        col=1,
    )  # fmt: skip
    figure.add_trace(
        go.Scatter(x=dates, y=bars["rsi_14"], mode="lines", name="RSI 14",
                   line={"color": "#17becf"}, showlegend=False),
        row=RSI_ROW,
        col=1,
    )  # fmt: skip
    for level in (RSI_OVERBOUGHT, RSI_OVERSOLD):
        figure.add_hline(y=level, line={"dash": "dash", "color": "#999", "width": 1},
                         row=RSI_ROW, col=1)  # fmt: skip
    histogram = bars["macd_hist"]
    figure.add_trace(
        go.Bar(
            x=dates,
            y=histogram,
            name="MACD histogram",
            marker={"color": ["#2ca02c" if v >= 0 else "#d62728" for v in histogram.fillna(0)]},
            showlegend=False,
        ),
        row=MACD_ROW,
        col=1,
    )
    figure.add_trace(
        go.Scatter(x=dates, y=bars["macd"], mode="lines", name="MACD", line={"color": "#1f77b4"},
                   showlegend=False),
        row=MACD_ROW,
        col=1,
    )  # fmt: skip
    figure.add_trace(
        go.Scatter(x=dates, y=bars["macd_signal"], mode="lines", name="signal",
                   line={"color": "#ff7f0e"}, showlegend=False),
        row=MACD_ROW,
        col=1,
    )  # fmt: skip
    shown = dates
    if not forecast.empty:
        shown = pd.concat([dates, _dates(forecast["target_date"])], ignore_index=True)
    figure.update_xaxes(
        rangebreaks=[{"bounds": ["sat", "mon"]}, {"values": closed_days(shown)}],
        rangeslider_visible=False,
    )
    figure.update_yaxes(range=[0, 100], row=RSI_ROW, col=1)
    figure.update_layout(
        height=820,
        margin={"l": 50, "r": 20, "t": 40, "b": 30},
        legend={"orientation": "h", "y": 1.04, "x": 0},
        hovermode="x unified",
        bargap=0,
    )
    return figure


def _backtest_targets(backtest: pd.DataFrame, dates: pd.Series, horizon: int) -> pd.Series:
    """The bar ``horizon`` sessions after each as-of date (the date that was forecast), or the
    as-of date itself past the last bar shown."""
    position = pd.Series(range(len(dates)), index=pd.DatetimeIndex(dates))
    as_of = _dates(backtest["as_of_date"])
    targets = []
    for day in as_of:
        index = position.get(day)
        if index is not None and index + horizon < len(dates):
            targets.append(dates.iloc[index + horizon])
        else:
            targets.append(day)
    return pd.Series(targets)


def skill_figure(metrics: pd.DataFrame) -> go.Figure:
    """Relative MAE against naive by horizon per model (below 1 beats naive); a filled marker
    where the Diebold-Mariano test says the model's errors are significantly smaller."""
    figure = go.Figure()
    for model, rows in metrics[metrics["model"] != "naive"].groupby("model", sort=True):
        significant = [bool(v) if pd.notna(v) else False for v in rows["is_significant_at_5pct"]]
        figure.add_trace(
            go.Scatter(
                x=rows["horizon"],
                y=rows["rel_mae"],
                mode="lines+markers",
                name=model,
                marker={"size": 9, "symbol": ["circle" if s else "circle-open" for s in
                                              significant]},
                customdata=rows["dm_pvalue"],
                hovertemplate="h=%{x}: relative MAE %{y:.3f}, DM p %{customdata:.3f}",
            )
        )  # fmt: skip
    figure.add_hline(y=1.0, line={"dash": "dash", "color": "#555"},
                     annotation_text="naive", annotation_position="top left")  # fmt: skip
    figure.update_layout(
        xaxis_title="horizon (trading days)",
        yaxis_title="MAE / naive MAE",
        height=360,
        margin={"l": 50, "r": 20, "t": 30, "b": 40},
    )
    return figure


def coverage_figure(metrics: pd.DataFrame) -> go.Figure:
    """Share of actuals inside the 80% and 95% intervals by horizon, against the nominal."""
    figure = go.Figure()
    with_intervals = metrics[metrics["coverage_80"].notna()]
    for model, rows in with_intervals.groupby("model", sort=True):
        for level, dash in (("80", "solid"), ("95", "dot")):
            figure.add_trace(
                go.Scatter(
                    x=rows["horizon"],
                    y=rows[f"coverage_{level}"],
                    mode="lines+markers",
                    line={"dash": dash},
                    name=f"{model} {level}%",
                )
            )
    for nominal in (0.80, 0.95):
        figure.add_hline(y=nominal, line={"dash": "dash", "color": "#555"},
                         annotation_text=f"nominal {nominal:.0%}")  # fmt: skip
    figure.update_layout(
        xaxis_title="horizon (trading days)",
        yaxis_title="coverage",
        yaxis_range=[0, 1.02],
        height=360,
        margin={"l": 50, "r": 20, "t": 30, "b": 40},
    )
    return figure


def realized_accuracy_figure(rolling: pd.DataFrame) -> go.Figure:
    """Rolling relative MAE of the published forecasts (all tickers) and their 80% coverage,
    by target date, one line per model version."""
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                           subplot_titles=("relative MAE vs naive (rolling)",
                                           "80% interval coverage (rolling)"))  # fmt: skip
    for (model, version), rows in rolling.groupby(["model_name", "model_version"], sort=True):
        label = f"{model} v{version}"
        dates = _dates(rows["target_date"])
        figure.add_trace(go.Scatter(x=dates, y=rows["rel_mae"], mode="lines", name=label),
                         row=1, col=1)  # fmt: skip
        figure.add_trace(
            go.Scatter(x=dates, y=rows["coverage_80"], mode="lines", name=f"{label} coverage",
                       showlegend=False),
            row=2,
            col=1,
        )  # fmt: skip
    figure.add_hline(y=1.0, line={"dash": "dash", "color": "#555"}, row=1, col=1)
    figure.add_hline(y=0.8, line={"dash": "dash", "color": "#555"}, row=2, col=1)
    figure.update_layout(height=480, margin={"l": 50, "r": 20, "t": 40, "b": 30})
    return figure

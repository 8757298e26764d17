"""What the dashboard reads: the published marts, through :mod:`ml.warehouse` only.

Every query filters in SQL (a ticker, a date range, the latest backtest) so that a large
universe never travels whole to the browser, and every answer is cached for a short time
(:class:`MartReader`). While a flow holds the DuckDB file the reader answers from its cache
and says so; it never waits for, nor takes, the write lock.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from ml.config import CHAMPION_ALIAS, MARTS_SCHEMA, MODEL_NAME
from ml.warehouse import Warehouse, WarehouseBusyError

INDICATORS = "fct_daily_indicators"
FORECASTS = "fct_forecasts_vs_actuals"
BACKTEST_FORECASTS = "fct_backtest_forecasts"
BACKTEST_METRICS = "fct_backtest_metrics"
ACCURACY_BY_HORIZON = "fct_forecast_accuracy_by_horizon"
ACCURACY_ROLLING = "fct_forecast_accuracy_rolling"
CHAMPION_ACCURACY = "fct_champion_accuracy_latest"
DATA_QUALITY = "fct_ticker_data_quality"
REFUSED_ROWS = "fct_ticker_refused_rows"
POOLED = "__all__"
HORIZON = 10  # the forecast's last step, the overview's "change over 10 days"
RSI_OVERBOUGHT, RSI_OVERSOLD = 70.0, 30.0


class MartMissingError(LookupError):
    """A mart the page needs has not been built yet (a fresh warehouse, no backtest yet)."""

    def __init__(self, mart: str, fix: str):
        super().__init__(f"{mart} is not built yet: {fix}")
        self.mart = mart
        self.fix = fix


class MartReader:
    """Read-only, cached access to the marts of one warehouse; safe to share across sessions.

    Answers are kept ``ttl_seconds`` (a published mart changes once per flow run) and at most
    ``max_entries`` of them. While a writer holds the warehouse, an expired answer is served
    again and :attr:`updating_since` says since when; a query never answered before raises
    :class:`~ml.warehouse.WarehouseBusyError`.
    """

    def __init__(self, warehouse: Warehouse, ttl_seconds: float = 60.0, max_entries: int = 256):
        self.warehouse = warehouse
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.updating_since: float | None = None
        self.queries_run = 0
        self._answers: OrderedDict[tuple, tuple[float, pd.DataFrame]] = OrderedDict()
        self._lock = threading.Lock()

    def name(self, mart: str) -> str:
        return self.warehouse.table(f"{MARTS_SCHEMA}.{mart}")

    def frame(self, sql: str, params: dict[str, object] | None = None) -> pd.DataFrame:
        """The result of ``sql`` (marts written ``{fct_name}``, parameters ``@name``)."""
        key = (sql, tuple(sorted((params or {}).items())))
        now = time.monotonic()
        with self._lock:
            cached = self._answers.get(key)
            if cached is not None and now - cached[0] < self.ttl_seconds:
                self._answers.move_to_end(key)
                return cached[1].copy()
        names = {mart: self.name(mart) for mart in _marts_named(sql)}
        try:
            answer = self.warehouse.read_query(sql.format(**names), params)
        except WarehouseBusyError:
            with self._lock:
                self.updating_since = self.updating_since or now
            if cached is None:
                raise
            return cached[1].copy()
        with self._lock:
            self.updating_since = None
            self.queries_run += 1
            self._answers[key] = (now, answer)
            self._answers.move_to_end(key)
            while len(self._answers) > self.max_entries:
                self._answers.popitem(last=False)
        return answer.copy()

    def marts(self) -> set[str]:
        """The marts built so far (cached like any answer)."""
        names = self.frame_of_tables()
        return set(names["table_name"])

    def frame_of_tables(self) -> pd.DataFrame:
        key = ("tables", ())
        now = time.monotonic()
        with self._lock:
            cached = self._answers.get(key)
            if cached is not None and now - cached[0] < self.ttl_seconds:
                return cached[1]
        try:
            answer = pd.DataFrame({"table_name": sorted(self.warehouse.tables_in(MARTS_SCHEMA))})
        except WarehouseBusyError:
            with self._lock:
                self.updating_since = self.updating_since or now
            if cached is None:
                raise
            return cached[1]
        with self._lock:
            self._answers[key] = (now, answer)
        return answer

    def require(self, mart: str, fix: str) -> None:
        if mart not in self.marts():
            raise MartMissingError(mart, fix)


def _marts_named(sql: str) -> list[str]:
    import string

    return [field for _, field, _, _ in string.Formatter().parse(sql) if field]


BUILD_FIX = "run `stockcast run PATH...` (or `stockcast transform`) to build it"
SCORE_FIX = "run `stockcast score` (or `stockcast run PATH...`) to publish forecasts"
BACKTEST_FIX = "run `stockcast backtest` to add a walk-forward backtest"


# -- ticker page ----------------------------------------------------------------------------


def tickers(reader: MartReader) -> list[str]:
    reader.require(INDICATORS, BUILD_FIX)
    frame = reader.frame("select distinct ticker from {fct_daily_indicators} order by ticker")
    return frame["ticker"].tolist()


@dataclass(frozen=True)
class DateSpan:
    first: date
    last: date


def date_span(reader: MartReader, ticker: str) -> DateSpan:
    frame = reader.frame(
        "select min(trade_date) as first_date, max(trade_date) as last_date "
        "from {fct_daily_indicators} where ticker = @ticker",
        {"ticker": ticker},
    )
    first, last = frame["first_date"].iloc[0], frame["last_date"].iloc[0]
    if pd.isna(first):
        raise LookupError(f"no bars for {ticker} in {INDICATORS}")
    return DateSpan(pd.Timestamp(first).date(), pd.Timestamp(last).date())


BAR_COLUMNS = (
    "trade_date, open, high, low, close, volume, sma_20, sma_50, ema_12, ema_26, "
    "macd, macd_signal, macd_hist, rsi_14"
)


def bars(reader: MartReader, ticker: str, start: date, end: date) -> pd.DataFrame:
    """The ticker's bars and indicators from ``start`` to ``end``, by date."""
    return reader.frame(
        f"select {BAR_COLUMNS} from {{fct_daily_indicators}} where ticker = @ticker "
        "and trade_date between cast(@start as date) and cast(@end as date) order by trade_date",
        {"ticker": ticker, "start": start.isoformat(), "end": end.isoformat()},
    )


FORECAST_COLUMNS = (
    "as_of_date, horizon, target_date, model_name, model_version, mlflow_run_id, scored_at, "
    "as_of_close, predicted_close, lower_80, upper_80, lower_95, upper_95, actual_close"
)


def latest_forecast(reader: MartReader, ticker: str) -> pd.DataFrame:
    """The ticker's forecast from its newest as-of date, one row per horizon (empty if none)."""
    if FORECASTS not in reader.marts():
        return pd.DataFrame(columns=[c.strip() for c in FORECAST_COLUMNS.split(",")])
    return reader.frame(
        f"select {FORECAST_COLUMNS} from {{fct_forecasts_vs_actuals}} where ticker = @ticker "
        "and as_of_date = (select max(as_of_date) from {fct_forecasts_vs_actuals} "
        "where ticker = @ticker) order by horizon",
        {"ticker": ticker},
    )


def past_forecasts(
    reader: MartReader, ticker: str, start: date, end: date, horizon: int
) -> pd.DataFrame:
    """Published forecasts ``horizon`` days ahead whose target date is in the range, with
    ``is_in_sample`` (backfilled inside the model's training data)."""
    if FORECASTS not in reader.marts():
        columns = [c.strip() for c in FORECAST_COLUMNS.split(",")]
        return pd.DataFrame(columns=[*columns, "is_in_sample"])
    return reader.frame(
        f"select {FORECAST_COLUMNS}, is_in_sample from {{fct_forecasts_vs_actuals}} "
        "where ticker = @ticker and horizon = @horizon and target_date between cast(@start as date) "
        "and cast(@end as date) order by target_date",
        {"ticker": ticker, "horizon": horizon, "start": start.isoformat(), "end": end.isoformat()},
    )


def backtest_forecasts(
    reader: MartReader, ticker: str, start: date, end: date, horizon: int
) -> pd.DataFrame:
    """The latest backtest's walk-forward forecasts ``horizon`` days ahead for the ticker,
    every model, as-of dates in the range (empty before the first backtest)."""
    columns = (
        "model, as_of_date, horizon, as_of_close, actual_close, predicted_close, "
        "lower_80, upper_80, lower_95, upper_95"
    )
    if BACKTEST_FORECASTS not in reader.marts():
        return pd.DataFrame(columns=[c.strip() for c in columns.split(",")])
    return reader.frame(
        f"select {columns} from {{fct_backtest_forecasts}} where is_latest_backtest "
        "and ticker = @ticker and horizon = @horizon and as_of_date between "
        "cast(@start as date) and cast(@end as date) order by model, as_of_date",
        {"ticker": ticker, "horizon": horizon, "start": start.isoformat(), "end": end.isoformat()},
    )


# -- overview -------------------------------------------------------------------------------


def rsi_state(rsi: float | None) -> str:
    if rsi is None or pd.isna(rsi):
        return "n/a"
    if rsi >= RSI_OVERBOUGHT:
        return "overbought"
    if rsi <= RSI_OVERSOLD:
        return "oversold"
    return "neutral"


OVERVIEW_COLUMNS = [
    "ticker",
    "last_trade_date",
    "last_close",
    "forecast_as_of",
    "forecast_change_pct",
    "interval_width_80_pct",
    "rsi_14",
    "rsi_state",
    "days_behind",
    "rows_refused",
    "is_clean",
]


def overview(reader: MartReader) -> pd.DataFrame:
    """One row per ticker: last close, the forecast's change over 10 days and its 80% width
    (percent of the as-of close), RSI state, data freshness (calendar days behind the newest
    bar of any ticker) and rows refused at ingest. Each part is one grouped query."""
    reader.require(INDICATORS, BUILD_FIX)
    marts = reader.marts()
    frame = reader.frame(
        "select i.ticker, i.trade_date as last_trade_date, i.close as last_close, i.rsi_14 "
        "from {fct_daily_indicators} i join (select ticker, max(trade_date) as last_date "
        "from {fct_daily_indicators} group by ticker) l "
        "on i.ticker = l.ticker and i.trade_date = l.last_date order by i.ticker"
    )
    if FORECASTS in marts:
        forecasts = reader.frame(
            "select f.ticker, f.as_of_date as forecast_as_of, "
            "100 * (f.predicted_close / f.as_of_close - 1) as forecast_change_pct, "
            "100 * (f.upper_80 - f.lower_80) / f.as_of_close as interval_width_80_pct "
            "from {fct_forecasts_vs_actuals} f join (select ticker, max(as_of_date) as as_of "
            "from {fct_forecasts_vs_actuals} group by ticker) l "
            "on f.ticker = l.ticker and f.as_of_date = l.as_of where f.horizon = @horizon",
            {"horizon": HORIZON},
        )
        frame = frame.merge(forecasts, on="ticker", how="left")
    if DATA_QUALITY in marts:
        quality = reader.frame("select ticker, is_clean from {fct_ticker_data_quality}")
        frame = frame.merge(quality, on="ticker", how="left")
    if REFUSED_ROWS in marts:
        refused = reader.frame("select ticker, rows_refused from {fct_ticker_refused_rows}")
        frame = frame.merge(refused, on="ticker", how="left")
        frame["rows_refused"] = frame["rows_refused"].fillna(0).astype("int64")
    newest = pd.to_datetime(frame["last_trade_date"]).max()
    frame["days_behind"] = (newest - pd.to_datetime(frame["last_trade_date"])).dt.days
    frame["rsi_state"] = frame["rsi_14"].map(rsi_state)
    return frame.reindex(columns=OVERVIEW_COLUMNS)


def filter_overview(
    frame: pd.DataFrame, search: str = "", rsi_states: list[str] | None = None
) -> pd.DataFrame:
    """Rows whose ticker contains ``search`` (any case) and whose RSI state is listed."""
    keep = frame["ticker"].str.contains(search.strip().upper(), regex=False)
    if rsi_states:
        keep &= frame["rsi_state"].isin(rsi_states)
    return frame[keep]


# -- model page -----------------------------------------------------------------------------


def backtest_skill(reader: MartReader) -> pd.DataFrame:
    """The latest backtest's pooled rows: skill against naive and coverage by model and
    horizon."""
    reader.require(BACKTEST_METRICS, BACKTEST_FIX)
    return reader.frame(
        "select backtest_run_id, model, horizon, n_forecasts, rel_mae, dm_stat, dm_pvalue, "
        "is_significant_at_5pct, coverage_80, coverage_95, width_80, pinball, n_folds, "
        "first_as_of, last_as_of, created_at from {fct_backtest_metrics} "
        "where is_latest_backtest and is_pooled order by model, horizon"
    )


def dm_pvalue_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Diebold-Mariano p-values against naive, a row per model and a column per horizon, as
    text: a model whose errors equal naive's on every forecast (relative MAE exactly 1, the
    test undefined) reads "= naive", any other missing value "n/a"."""
    models = metrics[metrics["model"] != "naive"]
    identical = models["rel_mae"].eq(1.0) & models["dm_pvalue"].isna()
    shown = models["dm_pvalue"].map(lambda p: "n/a" if pd.isna(p) else f"{p:.3f}")
    shown = shown.mask(identical, "= naive")
    return (
        models.assign(shown=shown)
        .pivot(index="model", columns="horizon", values="shown")
        .rename_axis(index="model", columns="horizon")
    )


def realized_accuracy(reader: MartReader) -> pd.DataFrame:
    """Rolling realized accuracy over all tickers, by target date and model version."""
    reader.require(ACCURACY_ROLLING, SCORE_FIX)
    return reader.frame(
        "select model_name, model_version, target_date, window_forecasts, rel_mae, "
        "coverage_80, coverage_95 from {fct_forecast_accuracy_rolling} "
        "where ticker = @pooled order by target_date",
        {"pooled": POOLED},
    )


def realized_by_horizon(reader: MartReader) -> pd.DataFrame:
    reader.require(ACCURACY_BY_HORIZON, SCORE_FIX)
    return reader.frame(
        "select model_name, model_version, horizon, n_forecasts, rel_mae, mape, coverage_80, "
        "coverage_95 from {fct_forecast_accuracy_by_horizon} where ticker = @pooled "
        "order by model_version, horizon",
        {"pooled": POOLED},
    )


def champion_accuracy(reader: MartReader) -> pd.DataFrame:
    reader.require(CHAMPION_ACCURACY, SCORE_FIX)
    return reader.frame(
        "select model_name, model_version, is_current, first_as_of_date, last_as_of_date, "
        "n_forecasts_scored, n_realized_forecasts, rel_mae, coverage_80, coverage_95 "
        "from {fct_champion_accuracy_latest} order by model_version"
    )


@dataclass(frozen=True)
class Champion:
    version: str
    run_id: str
    promotion: str  # "gated", "bootstrap (forced past the gate)" or "set by hand"
    reason: str
    registered_at: str
    ui_url: str


def mlflow_ui_url(tracking_uri: str, ui_url: str | None = None) -> str:
    """Where a person opens MLflow: ``STOCKCAST_MLFLOW_UI_URL``, else an HTTP tracking server
    itself, else the address `mlflow ui` serves on by default."""
    if ui_url:
        return ui_url.rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


def promotion_kind(version_tags: dict[str, str], run_tags: dict[str, str]) -> tuple[str, str]:
    """How the champion got its alias, and why, from its version's and its run's tags."""
    if version_tags.get("champion_set_by"):
        who = version_tags["champion_set_by"]
        return "set by hand", f"{version_tags.get('champion_set_reason', '')} ({who})".strip()
    reason = run_tags.get("gate_reason", "")
    if run_tags.get("gate_forced") == "True":
        return "bootstrap (forced past the gate)", reason
    if run_tags.get("gate_alias") == "champion":
        return "gated promotion", reason
    return "unknown (no gate record)", reason


def champion(settings, ui_url: str | None = None) -> Champion | None:
    """The registered champion from MLflow's registry, or None when there is none."""
    from datetime import UTC, datetime

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None  # nothing trained yet; opening it would create the store
    # A client of its own, read-only: the dashboard neither creates the experiment nor
    # recovers runs (ml.registry.configure does both, for the commands that write).
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        version = client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    except MlflowException:
        return None
    run_tags = client.get_run(version.run_id).data.tags if version.run_id else {}
    kind, reason = promotion_kind(dict(version.tags or {}), dict(run_tags))
    created = datetime.fromtimestamp(int(version.creation_timestamp) / 1000, UTC)
    return Champion(
        version=str(version.version),
        run_id=version.run_id or "",
        promotion=kind,
        reason=reason,
        registered_at=created.strftime("%Y-%m-%d %H:%M UTC"),
        ui_url=mlflow_ui_url(settings.mlflow_tracking_uri, ui_url),
    )

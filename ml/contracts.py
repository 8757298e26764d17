"""Contracts of the tables the Python steps write: columns, types, keys, layout hints.

Defined once here and used by both warehouse engines' DDL, by the writers (which select and
order their columns from the contract), and checked against the dbt source YAML in a test. Types
are logical (``string``, ``date``, ``float64``, ``int64``, ``timestamp``); each engine maps them
to its own. Table names are logical (``raw.daily_prices``): the engine maps the schema to its
physical dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

TYPES = ("string", "date", "float64", "int64", "timestamp")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False  # NOT NULL

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"column {self.name}: unknown type {self.type!r}")


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    # Where the engine supports it (BigQuery): a date column to partition by, at month
    # granularity (decades of daily bars stay far below BigQuery's 4,000 partitions per
    # table), and the columns rows are usually filtered by.
    partition_by: str | None = None
    cluster_by: tuple[str, ...] = ()

    @property
    def full_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _columns(spec: str) -> tuple[Column, ...]:
    """``name type [required]`` per line."""
    out = []
    for line in spec.strip().splitlines():
        name, type_, *flags = line.split()
        out.append(Column(name, type_, required="required" in flags))
    return tuple(out)


PRICE_COLUMNS = ["open", "high", "low", "close", "adj_close", "volume"]

DAILY_PRICES = Table(
    "raw",
    "daily_prices",
    _columns(
        """
        ticker string required
        trade_date date required
        open float64 required
        high float64 required
        low float64 required
        close float64 required
        adj_close float64
        volume int64
        source_file string required
        ingested_at timestamp required
        """
    ),
    key=("ticker", "trade_date"),
    partition_by="trade_date",
    cluster_by=("ticker",),
)

REJECTED_ROWS = Table(
    "raw",
    "rejected_rows",
    _columns(
        """
        source_file string required
        line_number int64 required
        ticker string
        trade_date string
        column_name string
        reason string required
        raw_record string
        rejected_at timestamp required
        """
    ),
    key=("source_file", "line_number"),
    cluster_by=("source_file",),
)

INGESTED_FILES = Table(
    "raw",
    "ingested_files",
    _columns(
        """
        source_file string required
        content_sha256 string required
        layout string required
        tickers string required
        rows_read int64 required
        rows_inserted int64 required
        rows_updated int64 required
        rows_unchanged int64 required
        rows_refused int64 required
        ingested_at timestamp required
        """
    ),
    key=("source_file",),
)

PREDICTED_PRICES = Table(
    "ml",
    "predicted_prices",
    _columns(
        """
        ticker string required
        as_of_date date required
        target_date date required
        horizon int64 required
        predicted_close float64 required
        lower_80 float64
        upper_80 float64
        lower_95 float64
        upper_95 float64
        model_name string required
        model_version string required
        mlflow_run_id string required
        scored_at timestamp required
        model_data_end date
        """
    ),
    key=("ticker", "as_of_date", "horizon"),
    partition_by="as_of_date",
    cluster_by=("ticker",),
)

BACKTEST_METRICS = Table(
    "ml",
    "backtest_metrics",
    _columns(
        """
        backtest_run_id string required
        model string required
        ticker string required
        horizon int64 required
        n_forecasts int64 required
        mae float64
        rmse float64
        mape float64
        rel_mae float64
        mase float64
        directional_accuracy float64
        dm_stat float64
        dm_pvalue float64
        coverage_80 float64
        width_80 float64
        winkler_80 float64
        coverage_95 float64
        width_95 float64
        winkler_95 float64
        pinball float64
        n_folds int64 required
        first_as_of date required
        last_as_of date required
        created_at timestamp required
        """
    ),
    key=("backtest_run_id", "model", "ticker", "horizon"),
    cluster_by=("backtest_run_id", "model", "ticker"),
)

BACKTEST_FORECASTS = Table(
    "ml",
    "backtest_forecasts",
    _columns(
        """
        backtest_run_id string required
        model string required
        fold int64 required
        ticker string required
        as_of_date date required
        horizon int64 required
        as_of_close float64 required
        actual_log_return float64 required
        predicted_log_return float64 required
        lower_80 float64
        upper_80 float64
        lower_95 float64
        upper_95 float64
        """
    ),
    key=("backtest_run_id", "model", "ticker", "as_of_date", "horizon"),
    cluster_by=("backtest_run_id", "model", "ticker"),
)

DRIFT_SCORES = Table(
    "ml",
    "drift_scores",
    _columns(
        """
        as_of_date date required
        column_name string required
        column_kind string required
        model_name string required
        model_version string required
        mlflow_run_id string required
        monitor_run_id string required
        method string required
        threshold float64 required
        drift_score float64
        is_drifted int64 required
        reference_rows int64 required
        current_rows int64 required
        window_start date required
        window_end date required
        computed_at timestamp required
        """
    ),
    key=("as_of_date", "column_name"),
    cluster_by=("column_name",),
)

TABLES: tuple[Table, ...] = (
    DAILY_PRICES,
    REJECTED_ROWS,
    INGESTED_FILES,
    PREDICTED_PRICES,
    BACKTEST_METRICS,
    BACKTEST_FORECASTS,
    DRIFT_SCORES,
)
SCHEMAS: tuple[str, ...] = tuple(dict.fromkeys(t.schema for t in TABLES))

# Schemas dbt builds (the marts the ML steps and dashboards read).
MARTS_SCHEMA = "marts"
INDICATOR_MART = f"{MARTS_SCHEMA}.fct_daily_indicators"

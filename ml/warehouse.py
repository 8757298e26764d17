"""The only module that knows DuckDB from BigQuery.

Every other module talks to the warehouse through :class:`Warehouse`: tables are named
``schema.table`` and data moves as pandas DataFrames. The DuckDB engine is the embedded
default; the BigQuery engine is selected by the ``bigquery`` dbt target.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd

from ml.config import ML_SCHEMA, RAW_SCHEMA, Settings, load_settings

PRICE_COLUMNS = ["open", "high", "low", "close", "adj_close", "volume"]

DDL = {
    f"{RAW_SCHEMA}.daily_prices": """
        ticker varchar not null,
        trade_date date not null,
        open double not null,
        high double not null,
        low double not null,
        close double not null,
        adj_close double,
        volume bigint,
        source_file varchar not null,
        ingested_at timestamp not null,
        primary key (ticker, trade_date)
    """,
    f"{RAW_SCHEMA}.rejected_rows": """
        source_file varchar not null,
        line_number bigint not null,
        ticker varchar,
        trade_date varchar,
        column_name varchar,
        reason varchar not null,
        raw_record varchar,
        rejected_at timestamp not null
    """,
    f"{RAW_SCHEMA}.ingested_files": """
        source_file varchar not null primary key,
        content_sha256 varchar not null,
        layout varchar not null,
        tickers varchar not null,
        rows_read bigint not null,
        rows_inserted bigint not null,
        rows_updated bigint not null,
        rows_unchanged bigint not null,
        rows_refused bigint not null,
        ingested_at timestamp not null
    """,
    f"{ML_SCHEMA}.predicted_prices": """
        ticker varchar not null,
        as_of_date date not null,
        target_date date not null,
        horizon integer not null,
        predicted_close double not null,
        lower_80 double,
        upper_80 double,
        lower_95 double,
        upper_95 double,
        model_name varchar not null,
        model_version varchar not null,
        mlflow_run_id varchar not null,
        scored_at timestamp not null,
        primary key (ticker, as_of_date, horizon)
    """,
    f"{ML_SCHEMA}.backtest_metrics": """
        backtest_run_id varchar not null,
        model varchar not null,
        ticker varchar not null,
        horizon integer not null,
        n_forecasts bigint not null,
        mae double,
        rmse double,
        mape double,
        rel_mae double,
        mase double,
        directional_accuracy double,
        dm_stat double,
        dm_pvalue double,
        coverage_80 double,
        width_80 double,
        winkler_80 double,
        coverage_95 double,
        width_95 double,
        winkler_95 double,
        n_folds integer not null,
        first_as_of date not null,
        last_as_of date not null,
        created_at timestamp not null,
        primary key (backtest_run_id, model, ticker, horizon)
    """,
    f"{ML_SCHEMA}.backtest_forecasts": """
        backtest_run_id varchar not null,
        model varchar not null,
        fold integer not null,
        ticker varchar not null,
        as_of_date date not null,
        horizon integer not null,
        as_of_close double not null,
        actual_log_return double not null,
        predicted_log_return double not null,
        lower_80 double,
        upper_80 double,
        lower_95 double,
        upper_95 double,
        primary key (backtest_run_id, model, ticker, as_of_date, horizon)
    """,
}


# Columns added after a table's first release: added in place to warehouses created earlier.
ADDED_COLUMNS = {
    f"{ML_SCHEMA}.predicted_prices": [
        ("lower_80", "double"),
        ("upper_80", "double"),
        ("lower_95", "double"),
        ("upper_95", "double"),
    ],
}


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int
    updated: int
    unchanged: int
    # Rows this file changed that another file had loaded: a correction, or two vendors
    # disagreeing about the same (ticker, date). {other source_file: rows}
    replaced_from: dict[str, int] = field(default_factory=dict)


class WarehouseError(RuntimeError):
    pass


class Warehouse:
    """Thin engine-specific access. Connections are short-lived: dbt needs the DuckDB file lock."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or load_settings()
        if self.settings.adapter_type != "duckdb":
            raise WarehouseError(
                f"target {self.settings.target!r} uses {self.settings.adapter_type!r}: only the "
                "DuckDB engine is implemented in this version (BigQuery support is a planned issue)"
            )
        self.path = self.settings.duckdb_path

    # -- plumbing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator:
        import duckdb

        if read_only and not self.path.exists():
            raise WarehouseError(f"no warehouse at {self.path}: run `stockcast ingest` first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(self.path), read_only=read_only)
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator:
        with self.connect() as con:
            con.execute("begin transaction")
            try:
                yield con
            except BaseException:
                con.execute("rollback")
                raise
            con.execute("commit")

    def query_df(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.connect(read_only=self.path.exists()) as con:
            return con.execute(sql, params or []).df()

    def read_table(
        self,
        table: str,
        columns: list[str],
        filter_in: dict[str, list] | None = None,
        order_by: list[str] | None = None,
    ) -> pd.DataFrame:
        """Columns of a table, optionally restricted to rows whose column values are listed."""
        sql = f"select {', '.join(columns)} from {table}"
        params: list = []
        conditions = []
        for column, values in (filter_in or {}).items():
            if values:
                conditions.append(f"{column} in ({', '.join('?' for _ in values)})")
                params.extend(values)
        if conditions:
            sql += " where " + " and ".join(conditions)
        if order_by:
            sql += " order by " + ", ".join(order_by)
        return self.query_df(sql, params)

    def table_exists(self, table: str) -> bool:
        schema, name = table.split(".")
        if not self.path.exists():
            return False
        with self.connect(read_only=True) as con:
            found = con.execute(
                "select count(*) from information_schema.tables "
                "where table_schema = ? and table_name = ?",
                [schema, name],
            ).fetchone()[0]
        return bool(found)

    def ensure_schema(self) -> None:
        with self.connect() as con:
            for schema in (RAW_SCHEMA, ML_SCHEMA):
                con.execute(f"create schema if not exists {schema}")
            for table, columns in DDL.items():
                con.execute(f"create table if not exists {table} ({columns})")
            for table, added in ADDED_COLUMNS.items():
                for column, column_type in added:
                    con.execute(
                        f"alter table {table} add column if not exists {column} {column_type}"
                    )

    # -- ingest -----------------------------------------------------------------------------
    def load_price_file(
        self,
        prices: pd.DataFrame,
        rejected: pd.DataFrame,
        file_record: dict,
    ) -> UpsertCounts:
        """Atomically upsert one file's accepted rows and replace its refused-row records.

        ``prices`` has ticker, trade_date, open, high, low, close, adj_close, volume,
        source_file, ingested_at. Rows whose values equal the stored ones are left untouched
        (ingested_at included), so loading the same file twice changes nothing.
        """
        self.ensure_schema()
        source_file = file_record["source_file"]
        staged = prices[["ticker", "trade_date", *PRICE_COLUMNS, "source_file", "ingested_at"]]
        distinct = " or ".join(f"p.{c} is distinct from s.{c}" for c in PRICE_COLUMNS)
        with self.transaction() as con:
            con.register("staged_prices", staged)
            inserted, updated = con.execute(
                f"""
                select
                    count(*) filter (where p.ticker is null),
                    count(*) filter (where p.ticker is not null and ({distinct}))
                from staged_prices s
                left join {RAW_SCHEMA}.daily_prices p using (ticker, trade_date)
                """
            ).fetchone()
            replaced_from = dict(
                con.execute(
                    f"""
                    select p.source_file, count(*)
                    from staged_prices s
                    join {RAW_SCHEMA}.daily_prices p using (ticker, trade_date)
                    where p.source_file <> s.source_file and ({distinct})
                    group by p.source_file
                    order by p.source_file
                    """
                ).fetchall()
            )
            con.execute(
                f"""
                update {RAW_SCHEMA}.daily_prices p set
                    {", ".join(f"{c} = s.{c}" for c in PRICE_COLUMNS)},
                    source_file = s.source_file,
                    ingested_at = s.ingested_at
                from staged_prices s
                where p.ticker = s.ticker and p.trade_date = s.trade_date and ({distinct})
                """
            )
            con.execute(
                f"""
                insert into {RAW_SCHEMA}.daily_prices
                select s.* from staged_prices s
                where not exists (
                    select 1 from {RAW_SCHEMA}.daily_prices p
                    where p.ticker = s.ticker and p.trade_date = s.trade_date
                )
                """
            )
            con.unregister("staged_prices")
            con.execute(
                f"delete from {RAW_SCHEMA}.rejected_rows where source_file = ?", [source_file]
            )
            if len(rejected):
                con.register("staged_rejected", rejected)
                con.execute(
                    f"""insert into {RAW_SCHEMA}.rejected_rows
                    select source_file, line_number, ticker, trade_date, column_name, reason,
                           raw_record, rejected_at
                    from staged_rejected"""
                )
                con.unregister("staged_rejected")
            record = {
                **file_record,
                "rows_inserted": int(inserted),
                "rows_updated": int(updated),
                "rows_unchanged": int(len(staged) - inserted - updated),
            }
            con.execute(
                f"delete from {RAW_SCHEMA}.ingested_files where source_file = ?", [source_file]
            )
            columns = list(record)
            con.execute(
                f"insert into {RAW_SCHEMA}.ingested_files ({', '.join(columns)}) "
                f"values ({', '.join('?' for _ in columns)})",
                [record[c] for c in columns],
            )
        return UpsertCounts(
            int(inserted), int(updated), int(len(staged) - inserted - updated), replaced_from
        )

    # -- forecasts --------------------------------------------------------------------------
    def replace_predictions(self, predictions: pd.DataFrame) -> int:
        """Replace the forecasts for each (ticker, as_of_date) in ``predictions`` atomically."""
        self.ensure_schema()
        columns = [
            "ticker", "as_of_date", "target_date", "horizon", "predicted_close",
            "lower_80", "upper_80", "lower_95", "upper_95",
            "model_name", "model_version", "mlflow_run_id", "scored_at",
        ]  # fmt: skip
        # Interval bounds are optional (a model may give none): missing ones are stored NULL.
        predictions = predictions.reindex(columns=columns)
        with self.transaction() as con:
            con.register("staged_predictions", predictions)
            con.execute(
                f"""
                delete from {ML_SCHEMA}.predicted_prices p
                where exists (
                    select 1 from staged_predictions s
                    where s.ticker = p.ticker and s.as_of_date = p.as_of_date
                )
                """
            )
            con.execute(
                f"insert into {ML_SCHEMA}.predicted_prices ({', '.join(columns)}) "
                f"select {', '.join(columns)} from staged_predictions"
            )
            con.unregister("staged_predictions")
        return len(predictions)

    # -- backtests --------------------------------------------------------------------------
    def replace_backtest(self, run_id: str, metrics: pd.DataFrame, forecasts: pd.DataFrame, folds):
        """Store one backtest's metrics and forecasts under its MLflow run id (idempotent)."""
        self.ensure_schema()
        stamp = pd.Timestamp.now(tz="UTC").tz_localize(None)
        metrics = metrics.assign(
            backtest_run_id=run_id,
            n_folds=len(folds),
            first_as_of=folds[0].test_start.date(),
            last_as_of=folds[-1].test_end.date(),
            created_at=stamp,
        )
        forecasts = forecasts.assign(backtest_run_id=run_id)
        with self.transaction() as con:
            for table, frame in (("backtest_metrics", metrics), ("backtest_forecasts", forecasts)):
                columns = [
                    row[0]
                    for row in con.execute(
                        "select column_name from information_schema.columns "
                        "where table_schema = ? and table_name = ? order by ordinal_position",
                        [ML_SCHEMA, table],
                    ).fetchall()
                ]
                con.execute(f"delete from {ML_SCHEMA}.{table} where backtest_run_id = ?", [run_id])
                con.register("staged", frame[columns])
                con.execute(f"insert into {ML_SCHEMA}.{table} select * from staged")
                con.unregister("staged")

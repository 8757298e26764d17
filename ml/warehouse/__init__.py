"""The warehouse seam: the only package that knows DuckDB from BigQuery.

Every other module talks to the warehouse through :class:`Warehouse`. Tables are named by their
logical name (``raw.daily_prices``, see :mod:`ml.contracts`); each engine maps the schema to its
own physical name (DuckDB: the schema as named; BigQuery: the dataset ``<prefix>_<schema>``).
Data moves as pandas DataFrames. The engine is chosen by the dbt target's ``type``:
:func:`open_warehouse`.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from ml.config import ConfigError, Settings
from ml.contracts import (
    DAILY_PRICES,
    PREDICTED_PRICES,
    PRICE_COLUMNS,
    REJECTED_ROWS,
    SCHEMAS,
    Table,
)

if TYPE_CHECKING:
    import pandas as pd


# A stored bar `p` differs from a staged one `s` (portable SQL: DuckDB and BigQuery).
PRICE_CHANGED = " or ".join(f"p.{c} is distinct from s.{c}" for c in PRICE_COLUMNS)


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int
    updated: int
    unchanged: int
    # Rows this file changed that another file had loaded: a correction, or two vendors
    # disagreeing about the same (ticker, date). {other source_file: rows}
    replaced_from: dict[str, int] = field(default_factory=dict)


@dataclass
class PriceFileLoad:
    """One file's rows for :meth:`Warehouse.load_price_files` (see :meth:`load_price_file`)."""

    prices: pd.DataFrame
    rejected: pd.DataFrame
    file_record: dict
    drop_history: dict[str, list[str]] = field(default_factory=dict)


class WarehouseError(RuntimeError):
    pass


class WarehouseBusyError(WarehouseError):
    """Another process holds the warehouse (DuckDB allows one writer at a time)."""


# How DuckDB (and dbt-duckdb, which reports DuckDB's error) says another process holds the file.
LOCK_MARKERS = ("could not set lock", "conflicting lock")


def is_lock_conflict(message: str) -> bool:
    """Whether an error's text says another process held the warehouse (worth a retry)."""
    text = message.lower()
    return any(marker in text for marker in LOCK_MARKERS)


class Warehouse(abc.ABC):
    """What the stages need from a warehouse; one subclass per engine."""

    engine: str

    def __init__(self, settings: Settings):
        self.settings = settings

    # -- names and reads --------------------------------------------------------------------
    @abc.abstractmethod
    def table(self, logical_name: str) -> str:
        """The physical, quoted name of ``schema.table`` to write into this engine's SQL."""

    @abc.abstractmethod
    def table_exists(self, logical_name: str) -> bool: ...

    @abc.abstractmethod
    def query_df(self, sql: str) -> pd.DataFrame:
        """Run this engine's SQL (names from :meth:`table`) and return the result.

        Dates come back as ``datetime64`` and timestamps as naive UTC, whatever the engine.
        """

    @abc.abstractmethod
    def read_query(self, sql: str, params: dict[str, object] | None = None) -> pd.DataFrame:
        """A read-only query for readers that must never hold or wait for the write lock (the
        dashboard). Parameters are named ``@name`` in ``sql`` (str, int, float or bool values;
        dates as ISO strings, ``cast(@day as date)``).

        Raises :class:`WarehouseBusyError` at once while a writer holds the warehouse (DuckDB),
        so that the reader can show what it has instead of waiting.
        """

    @abc.abstractmethod
    def tables_in(self, schema: str) -> set[str]:
        """The names of the tables (and views) of a logical schema, read-only; empty if the
        schema does not exist yet. Raises :class:`WarehouseBusyError` as :meth:`read_query`."""

    @abc.abstractmethod
    def read_table(
        self,
        logical_name: str,
        columns: list[str],
        filter_in: dict[str, list] | None = None,
        order_by: list[str] | None = None,
    ) -> pd.DataFrame:
        """Columns of a table, optionally restricted to rows whose column values are listed."""

    def read_table_tail(
        self,
        logical_name: str,
        columns: list[str],
        *,
        partition_by: str,
        order_by: str,
        rows: int,
        kept_from: date | None = None,
        filter_in: dict[str, list] | None = None,
        common_start: bool = False,
    ) -> pd.DataFrame:
        """The last ``rows`` rows of each ``partition_by`` value (a ticker) in ``order_by``
        order (a date); with ``kept_from`` (a date), its last ``rows`` rows before it and every
        row from it on. Sorted by ``partition_by``, then ``order_by``.

        ``common_start``: instead, every partition's rows from the earliest row the rule above
        keeps, and each partition's last row before that: what a cross-section by date (a mean
        over tickers) needs to see every partition that had a row on each of those dates, with
        the row before its first one.
        """
        filters, params = [], {}
        for column, values in (filter_in or {}).items():
            if values:
                filters.append(self._in_parameter(column, f"{column}_values"))
                params[f"{column}_values"] = list(values)
        if kept_from is not None:
            params["kept_from"] = kept_from.isoformat()
        sql = tail_query(
            self.table(logical_name),
            columns,
            partition_by=partition_by,
            order_by=order_by,
            rows=int(rows),
            kept_from=kept_from is not None,
            filters=filters,
            common_start=common_start,
        )
        return self._query_named(sql, params)

    @abc.abstractmethod
    def _in_parameter(self, column: str, parameter: str) -> str:
        """This engine's SQL for "``column`` is in the list parameter ``@parameter``"."""

    @abc.abstractmethod
    def _query_named(self, sql: str, params: dict[str, object]) -> pd.DataFrame:
        """:meth:`query_df` with ``@name`` parameters (str values, or lists of str), on the
        connection a writing step may hold (unlike :meth:`read_query`)."""

    # -- writes -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self, who: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the warehouse for one writing step of a flow (a load, a dbt build, a score).

        Engines that let many processes write at once (BigQuery) need no turn-taking: this
        default does nothing. ``who`` names the step to the processes waiting for it;
        ``on_wait`` is told once when this one has to wait.
        """
        yield

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Reuse one connection for the many short steps inside (an ingest of many files).

        Each step still commits on its own; engines without per-connection cost (BigQuery)
        need nothing: this default does nothing."""
        yield

    @abc.abstractmethod
    def ensure_schema(self, schemas: tuple[str, ...] = SCHEMAS) -> None:
        """Create the schemas and contract tables if missing; add contract columns that an
        older warehouse lacks (nullable, so existing rows read NULL). Idempotent.

        ``schemas`` limits it to the schemas a step writes: in production each step's account
        may see only its own datasets (the upload function: ``raw``)."""

    def load_price_file(
        self,
        prices: pd.DataFrame,
        rejected: pd.DataFrame,
        file_record: dict,
        drop_history: dict[str, list[str]] | None = None,
    ) -> UpsertCounts:
        """Atomically upsert one file's accepted rows, replace its refused-row records and its
        ledger row. Rows equal to the stored ones are left untouched (``ingested_at``
        included), so loading the same file twice changes nothing.

        ``drop_history`` ({ticker: [source_file, ...]}): first, in the same transaction, delete
        every row of each ticker that one of those files loaded (the file replaces them).
        """
        self.ensure_schema((DAILY_PRICES.schema,))
        return self._load_price_file(
            conform(prices, DAILY_PRICES),
            conform(rejected, REJECTED_ROWS),
            file_record,
            {t: sorted(set(f)) for t, f in (drop_history or {}).items() if f},
        )

    def load_price_files(self, loads: list[PriceFileLoad]) -> list[UpsertCounts | Exception]:
        """Load several files, each all or nothing as :meth:`load_price_file`; a file that
        fails gets its exception in its place and the others still load.

        The files must not share a ticker: their upserts would then depend on their order.
        This default loads them one by one; an engine whose per-transaction cost matters loads
        them in one transaction and, if that fails, rolls it back and falls back to this.
        """
        outcomes: list[UpsertCounts | Exception] = []
        for load in loads:
            try:
                outcomes.append(
                    self.load_price_file(
                        load.prices, load.rejected, load.file_record, load.drop_history
                    )
                )
            except Exception as exc:  # one file's failure must not stop the others
                outcomes.append(exc)
        return outcomes

    @abc.abstractmethod
    def _load_price_file(
        self,
        prices: pd.DataFrame,
        rejected: pd.DataFrame,
        file_record: dict,
        drop_history: dict[str, list[str]],
    ) -> UpsertCounts:
        """:meth:`load_price_file` on rows already conformed to their contracts. Engine SQL
        compares stored rows ``p`` with staged rows ``s`` by :data:`PRICE_CHANGED`."""

    def replace_predictions(self, predictions: pd.DataFrame) -> int:
        """Replace the forecasts for each (ticker, as_of_date) in ``predictions`` atomically."""
        self.ensure_schema((PREDICTED_PRICES.schema,))
        frame = conform(predictions, PREDICTED_PRICES)
        self._replace_many([(PREDICTED_PRICES, frame)], ("ticker", "as_of_date"))
        return len(frame)

    def replace_backtest(self, run_id: str, metrics: pd.DataFrame, forecasts: pd.DataFrame) -> None:
        """Store one backtest's metrics and forecasts under its MLflow run id (idempotent)."""
        from ml.contracts import BACKTEST_FORECASTS, BACKTEST_METRICS

        self.ensure_schema((BACKTEST_METRICS.schema,))
        self._replace_many(
            [
                (
                    BACKTEST_METRICS,
                    conform(metrics.assign(backtest_run_id=run_id), BACKTEST_METRICS),
                ),
                (
                    BACKTEST_FORECASTS,
                    conform(forecasts.assign(backtest_run_id=run_id), BACKTEST_FORECASTS),
                ),
            ],
            ("backtest_run_id",),
        )

    def replace_drift_scores(self, scores: pd.DataFrame) -> int:
        """Replace the drift scores of each as_of_date in ``scores`` atomically (a monitor
        run for an as-of date that was monitored before replaces all its rows)."""
        from ml.contracts import DRIFT_SCORES

        self.ensure_schema((DRIFT_SCORES.schema,))
        frame = conform(scores, DRIFT_SCORES)
        self._replace_many([(DRIFT_SCORES, frame)], ("as_of_date",))
        return len(frame)

    @abc.abstractmethod
    def _replace_many(
        self, tables: list[tuple[Table, pd.DataFrame]], match: tuple[str, ...]
    ) -> None:
        """In one transaction, for each (table, frame): delete the rows of the table whose
        ``match`` columns equal those of any row of the frame, then insert the frame."""


def tail_query(
    table: str,
    columns: list[str],
    *,
    partition_by: str,
    order_by: str,
    rows: int,
    kept_from: bool,
    filters: list[str],
    common_start: bool,
) -> str:
    """Portable SQL (DuckDB and BigQuery) for :meth:`Warehouse.read_table_tail`: ``@kept_from``
    is the ISO date parameter when ``kept_from``; ``filters`` are conditions on ``table``'s
    rows. The window runs over the two key columns only, then the wanted rows are read by the
    first date kept per partition (sorting whole rows cost three times as much in DuckDB)."""
    newest_first = f"partition by {partition_by} order by {order_by} desc"
    if kept_from:
        # Counts only the rows before the date, so every row from it on counts 0 and is kept.
        rows_back = (
            f"sum(case when {order_by} < cast(@kept_from as date) then 1 else 0 end) over "
            f"({newest_first} rows between unbounded preceding and current row)"
        )
    else:
        rows_back = f"row_number() over ({newest_first})"
    where = f" where {' and '.join(filters)}" if filters else ""
    steps = [
        f"numbered as (select {partition_by}, {order_by}, {rows_back} as tail_rows_back "
        f"from {table}{where})",
        f"starts as (select {partition_by}, min({order_by}) as tail_from from numbered "
        f"where tail_rows_back <= {rows} group by {partition_by})",
    ]
    if common_start:
        # From the earliest start, or from a partition's last row before it (its first
        # difference needs that row).
        steps += [
            "common as (select min(tail_from) as tail_start from starts)",
            f"common_starts as (select {partition_by}, coalesce(max(case when {order_by} < "
            f"tail_start then {order_by} end), min(tail_start)) as tail_from "
            f"from numbered cross join common group by {partition_by})",
        ]
    return (
        f"with {', '.join(steps)} "
        f"select {', '.join(f't.{c}' for c in columns)} from {table} as t "
        f"join {'common_starts' if common_start else 'starts'} as s "
        f"on t.{partition_by} = s.{partition_by} where t.{order_by} >= s.tail_from "
        f"order by t.{partition_by}, t.{order_by}"
    )


def conform(frame: pd.DataFrame, table: Table) -> pd.DataFrame:
    """``frame`` with exactly the contract's columns in order (``frame`` itself, not a copy,
    when it has them already); optional ones missing are NULL.

    A required column that is missing or holds NULLs is a programming error: it is raised here,
    before anything is written.
    """
    missing = [c.name for c in table.columns if c.required and c.name not in frame.columns]
    if missing:
        raise WarehouseError(f"{table.full_name}: rows lack required columns {missing}")
    if list(frame.columns) == table.column_names:
        out = frame
    else:
        out = frame.reindex(columns=table.column_names)
    nulls = [c.name for c in table.columns if c.required and _has_nulls(out[c.name])]
    if nulls:
        raise WarehouseError(f"{table.full_name}: NULL in required columns {nulls}")
    return out


def _has_nulls(column: pd.Series) -> bool:
    from pandas.api.types import infer_dtype

    # A column of Python strings only (tickers, file names) is told from its value types, several
    # times faster than by isna's per-value check.
    if column.dtype == object and infer_dtype(column, skipna=False) == "string":
        return False
    return bool(column.isna().any())


def upsert_counts(by_previous_file, staged_rows: int, source_file: str) -> UpsertCounts:
    """Counts from ``(previous source_file or None, inserted, updated)`` rows."""
    inserted = sum(int(row[1]) for row in by_previous_file)
    updated = sum(int(row[2]) for row in by_previous_file)
    replaced_from = {
        str(row[0]): int(row[2])
        for row in by_previous_file
        if row[0] is not None and row[0] != source_file and int(row[2]) > 0
    }
    return UpsertCounts(inserted, updated, staged_rows - inserted - updated, replaced_from)


def ledger_record(file_record: dict, counts: UpsertCounts) -> dict:
    return {
        **file_record,
        "rows_inserted": counts.inserted,
        "rows_updated": counts.updated,
        "rows_unchanged": counts.unchanged,
    }


def open_warehouse(settings: Settings) -> Warehouse:
    """The engine the dbt target's ``type`` names."""
    if settings.engine == "duckdb":
        from ml.warehouse.duckdb_engine import DuckDBWarehouse

        return DuckDBWarehouse(settings)
    if settings.engine == "bigquery":
        try:
            from ml.warehouse.bigquery_engine import BigQueryWarehouse
        except ImportError as exc:
            raise ConfigError(
                f"target {settings.target!r} needs the BigQuery client ({exc.name} is missing): "
                "install the extra with `uv sync --extra bigquery`"
            ) from exc
        return BigQueryWarehouse(settings)
    raise ConfigError(
        f"target {settings.target!r} uses the {settings.engine!r} adapter: Stockcast supports "
        "duckdb and bigquery"
    )

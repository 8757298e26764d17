"""DuckDB engine: one local file, schemas named as the logical ones (``raw``, ``ml``, ...)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from ml.config import ConfigError
from ml.contracts import (
    DAILY_PRICES,
    INGESTED_FILES,
    PRICE_COLUMNS,
    REJECTED_ROWS,
    SCHEMAS,
    TABLES,
    Table,
)
from ml.warehouse import (
    PRICE_CHANGED,
    PriceFileLoad,
    UpsertCounts,
    Warehouse,
    WarehouseBusyError,
    WarehouseError,
    conform,
    is_lock_conflict,
    ledger_record,
    upsert_counts,
)

log = logging.getLogger("stockcast.warehouse")

# `@name` parameters (portable: BigQuery's syntax) as DuckDB's `$name`.
NAMED_PARAMETER = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")

TYPES = {
    "string": "varchar",
    "date": "date",
    "float64": "double",
    "int64": "bigint",
    "timestamp": "timestamp",
}


def create_table_sql(table: Table, name: str, with_key: bool = True) -> str:
    columns = [
        f"{c.name} {TYPES[c.type]}{' not null' if c.required else ''}" for c in table.columns
    ]
    if table.key and with_key:
        columns.append(_primary_key_sql(table))
    return f"create table if not exists {name} ({', '.join(columns)})"


def _primary_key_sql(table: Table) -> str:
    return f"primary key ({', '.join(table.key)})"


class DuckDBWarehouse(Warehouse):
    """Connections are short-lived: dbt needs the DuckDB file lock between steps."""

    engine = "duckdb"

    def __init__(self, settings):
        super().__init__(settings)
        path = settings.target_config.get("path")
        if not path:
            raise ConfigError(f"target {settings.target!r}: the DuckDB profile needs a `path`")
        self.path = Path(path).resolve()
        self.lock_wait_seconds = float(os.environ.get("STOCKCAST_LOCK_WAIT_SECONDS", "300"))
        self._session_connection = None
        self._session_schemas: set[str] = set()

    # -- plumbing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator:
        if self._session_connection is not None:
            yield self._session_connection
            return
        if read_only and not self.path.exists():
            raise WarehouseError(f"no warehouse at {self.path}: run `stockcast ingest` first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._open(read_only)
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """One read-write connection for every step inside: opening the file (and closing it,
        which checkpoints) per step cost more than loading a typical file."""
        if self._session_connection is not None:
            yield
            return
        with self.connect() as con:
            self._session_connection = con
            try:
                yield
            finally:
                self._session_connection = None
                self._session_schemas.clear()

    def _open(self, read_only: bool):
        """Connect, waiting (bounded) while another process holds the file's lock.

        DuckDB lets one process write a file at a time (and a writer excludes readers); the
        steps keep connections short, so two commands on one warehouse take turns instead of
        failing. After ``lock_wait_seconds`` it fails with who holds the lock.
        """
        import duckdb

        deadline = time.monotonic() + self.lock_wait_seconds
        delay, said = 0.05, False
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise WarehouseError(f"cannot open the warehouse {self.path}: {exc}") from exc
                holder = _lock_holder(str(exc))
                if time.monotonic() >= deadline:
                    raise WarehouseBusyError(
                        f"the warehouse {self.path} is in use by {holder} and stayed locked for "
                        f"{self.lock_wait_seconds:.0f} s: retry when it has finished "
                        "(STOCKCAST_LOCK_WAIT_SECONDS sets the wait)"
                    ) from exc
                if not said:
                    log.warning("waiting for the warehouse: %s is using %s", holder, self.path)
                    said = True
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    @contextlib.contextmanager
    def writing(self, who: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Take turns with other flows' writing steps (in any process) on this file.

        DuckDB's own lock is held per connection, and dbt opens the file from a child process:
        between a step's connections another process could slip in and make dbt fail. A lock
        file beside the warehouse (``<file>.writer.lock``, an advisory ``flock`` the kernel
        drops when its holder dies) is held for the whole step instead. The wait is bounded as
        for a connection (``STOCKCAST_LOCK_WAIT_SECONDS``), then :class:`WarehouseBusyError`.
        Readers never take it: they only wait for DuckDB's own lock, connection by connection.
        """
        import fcntl

        lock_path = self.path.with_name(self.path.name + ".writer.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a+") as handle:
            deadline = time.monotonic() + self.lock_wait_seconds
            delay, said = 0.05, False
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    handle.seek(0)
                    holder = handle.read().strip() or "another flow"
                    if time.monotonic() >= deadline:
                        raise WarehouseBusyError(
                            f"the warehouse {self.path} is in use by {holder} and stayed locked "
                            f"for {self.lock_wait_seconds:.0f} s: retry when it has finished "
                            "(STOCKCAST_LOCK_WAIT_SECONDS sets the wait)"
                        ) from None
                    if not said:
                        message = f"waiting for the warehouse: {holder} is writing to {self.path}"
                        (on_wait or log.warning)(message)
                        said = True
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
            handle.seek(0)
            handle.truncate()
            handle.write(f"{who} (PID {os.getpid()})")
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                handle.flush()
                fcntl.flock(handle, fcntl.LOCK_UN)

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

    # -- names and reads --------------------------------------------------------------------
    def table(self, logical_name: str) -> str:
        return logical_name

    def query_df(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.connect(read_only=self.path.exists()) as con:
            return con.execute(sql, params or []).df()

    def read_query(self, sql: str, params: dict[str, object] | None = None) -> pd.DataFrame:
        import duckdb

        if not self.path.exists():
            raise WarehouseError(f"no warehouse at {self.path}: run `stockcast ingest` first")
        try:
            # No wait and no retry: a writer has the file for a whole step, and the reader
            # shows what it read before instead. A read-only connection never blocks a writer
            # for longer than one query.
            con = duckdb.connect(str(self.path), read_only=True)
        except duckdb.IOException as exc:
            if is_lock_conflict(str(exc)):
                raise WarehouseBusyError(
                    f"the warehouse {self.path} is being written by {_lock_holder(str(exc))}"
                ) from exc
            raise WarehouseError(f"cannot open the warehouse {self.path}: {exc}") from exc
        try:
            return con.execute(NAMED_PARAMETER.sub(r"$\1", sql), params or {}).df()
        finally:
            con.close()

    def tables_in(self, schema: str) -> set[str]:
        if not self.path.exists():
            return set()
        names = self.read_query(
            "select table_name from information_schema.tables where table_schema = @schema",
            {"schema": schema},
        )
        return set(names["table_name"])

    def read_table(self, logical_name, columns, filter_in=None, order_by=None) -> pd.DataFrame:
        sql = f"select {', '.join(columns)} from {self.table(logical_name)}"
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

    def _in_parameter(self, column: str, parameter: str) -> str:
        return f"list_contains(${parameter}, {column})"

    def _query_named(self, sql: str, params: dict[str, object]) -> pd.DataFrame:
        with self.connect(read_only=self.path.exists()) as con:
            return con.execute(NAMED_PARAMETER.sub(r"$\1", sql), params).df()

    def table_exists(self, logical_name: str) -> bool:
        schema, name = logical_name.split(".")
        if not self.path.exists():
            return False
        with self.connect(read_only=True) as con:
            found = con.execute(
                "select count(*) from information_schema.tables "
                "where table_schema = ? and table_name = ?",
                [schema, name],
            ).fetchone()[0]
        return bool(found)

    # -- writes -----------------------------------------------------------------------------
    def ensure_schema(self, schemas: tuple[str, ...] = SCHEMAS) -> None:
        if self._session_connection is not None and self._session_schemas.issuperset(schemas):
            return  # created or checked earlier on this connection
        with self.connect() as con:
            for schema in schemas:
                con.execute(f"create schema if not exists {schema}")
            tables = [t for t in TABLES if t.schema in schemas]
            for table in tables:
                con.execute(create_table_sql(table, self.table(table.full_name)))
            present = {
                (schema, name, column)
                for schema, name, column in con.execute(
                    "select table_schema, table_name, column_name from information_schema.columns "
                    f"where table_schema in ({', '.join('?' for _ in schemas)})",
                    list(schemas),
                ).fetchall()
            }
            for table in tables:
                for column in table.columns:
                    if (table.schema, table.name, column.name) not in present:
                        con.execute(
                            f"alter table {self.table(table.full_name)} "
                            f"add column {column.name} {TYPES[column.type]}"
                        )
        if self._session_connection is not None:
            self._session_schemas.update(schemas)

    def load_price_files(self, loads: list[PriceFileLoad]) -> list[UpsertCounts | Exception]:
        """All the files in one transaction: a commit (and the statements of an upsert) costs
        more than loading a typical file. If the transaction fails, it is rolled back and the
        files are loaded one by one, so that one file's warehouse error does not stop the
        others."""
        if len(loads) > 1:
            try:
                self.ensure_schema((DAILY_PRICES.schema,))
                return self._load_price_batch(
                    [
                        PriceFileLoad(
                            load.prices,
                            load.rejected,
                            load.file_record,
                            {t: sorted(set(f)) for t, f in load.drop_history.items() if f},
                        )
                        for load in loads
                    ],
                    conform(_concat([load.prices for load in loads]), DAILY_PRICES),
                    conform(_concat([load.rejected for load in loads]), REJECTED_ROWS),
                )
            except Exception as exc:
                log.warning(
                    "loading %d files in one transaction failed (%s): loading them one by one",
                    len(loads),
                    exc,
                )
        return super().load_price_files(loads)

    def _load_price_file(self, staged, rejected, file_record, drop_history) -> UpsertCounts:
        (counts,) = self._load_price_batch(
            [PriceFileLoad(staged, rejected, file_record, drop_history)], staged, rejected
        )
        return counts

    def _load_price_batch(
        self, loads: list[PriceFileLoad], staged: pd.DataFrame, rejected: pd.DataFrame
    ) -> list[UpsertCounts]:
        """Upsert the files' rows (which share no ticker; ``staged``: all of them, conformed)
        with one statement of each kind, replace their refused-row records (``rejected``) and
        write their ledger rows, in one transaction."""
        sources = [load.file_record["source_file"] for load in loads]
        target = self.table(DAILY_PRICES.full_name)
        with self.transaction() as con:
            for load in loads:
                for ticker, files in load.drop_history.items():
                    con.execute(
                        f"delete from {target} where ticker = ? "
                        f"and source_file in ({', '.join('?' for _ in files)})",
                        [ticker, *files],
                    )
            con.register("staged_prices", _arrow_rows(staged))
            if not con.execute(f"select exists (select 1 from {target})").fetchone()[0]:
                # Nothing stored (a fresh warehouse): every row is new, no join is needed.
                by_file = [
                    (source, None, len(load.prices), 0)
                    for load, source in zip(loads, sources, strict=True)
                ]
                _fill_empty_table(con, DAILY_PRICES, target, "staged_prices")
            else:
                by_file = self._upsert_prices(con, target, staged)
            con.unregister("staged_prices")
            counts = [
                upsert_counts(
                    [row[1:] for row in by_file if row[0] == source], len(load.prices), source
                )
                for load, source in zip(loads, sources, strict=True)
            ]
            in_files = f"source_file in ({', '.join('?' for _ in sources)})"
            for table in (REJECTED_ROWS, INGESTED_FILES):
                con.execute(f"delete from {self.table(table.full_name)} where {in_files}", sources)
            self._insert(con, REJECTED_ROWS, rejected)
            # A ledger row per file, each the last write of its file.
            for load, file_counts in zip(loads, counts, strict=True):
                ledger = pd.DataFrame([ledger_record(load.file_record, file_counts)])
                self._insert(con, INGESTED_FILES, conform(ledger, INGESTED_FILES))
        return counts

    def _upsert_prices(self, con, target: str, staged: pd.DataFrame) -> list[tuple]:
        """Insert the new rows of ``staged_prices`` and update the changed ones; returns, per
        file and per file that last loaded the matched rows, how many are new and changed."""
        # The tickers as literals: DuckDB then skips the stored row groups of other
        # tickers (their min/max) instead of joining the whole table.
        tickers = sorted(staged["ticker"].unique())
        stored = (
            f"(select * from {target} where ticker in ({', '.join('?' for _ in tickers)}))"
            if tickers
            else target
        )
        # One pass: per file, and per file that last loaded the matched rows, how many
        # rows are new and how many change.
        by_file = con.execute(
            f"""
            select
                s.source_file,
                p.source_file,
                count(*) filter (where p.ticker is null),
                count(*) filter (where p.ticker is not null and ({PRICE_CHANGED}))
            from staged_prices s
            left join {stored} p using (ticker, trade_date)
            group by s.source_file, p.source_file
            order by s.source_file, p.source_file
            """,
            tickers,
        ).fetchall()
        if sum(int(row[3]) for row in by_file):
            con.execute(
                f"""
                update {target} p set
                    {", ".join(f"{c} = s.{c}" for c in PRICE_COLUMNS)},
                    source_file = s.source_file,
                    ingested_at = s.ingested_at
                from staged_prices s
                where p.ticker = s.ticker and p.trade_date = s.trade_date
                    and p.ticker in ({", ".join("?" for _ in tickers)})
                    and ({PRICE_CHANGED})
                """,
                tickers,
            )
        if sum(int(row[2]) for row in by_file) == len(staged):
            con.execute(f"insert into {target} select * from staged_prices")
        else:
            con.execute(
                f"""
                insert into {target}
                select s.* from staged_prices s
                anti join {stored} p using (ticker, trade_date)
                """,
                tickers,
            )
        return by_file

    def _insert(self, con, table: Table, frame: pd.DataFrame) -> None:
        if len(frame) == 0:
            return
        if len(frame) <= FEW_ROWS:
            # Binding a few rows as parameters is several times faster than registering a frame.
            rows = [[_parameter(v) for v in row] for row in frame.itertuples(index=False)]
            row_of_parameters = "(" + ", ".join("?" for _ in table.column_names) + ")"
            sql = (
                f"insert into {self.table(table.full_name)} ({', '.join(table.column_names)}) "
                f"values {', '.join([row_of_parameters] * len(rows))}"
            )
            con.execute(sql, [value for row in rows for value in row])
            return
        con.register("staged_rows", frame)
        con.execute(
            f"insert into {self.table(table.full_name)} ({', '.join(table.column_names)}) "
            f"select {', '.join(table.column_names)} from staged_rows"
        )
        con.unregister("staged_rows")

    def _replace_many(self, tables, match) -> None:
        with self.transaction() as con:
            for table, frame in tables:
                con.register("staged_keys", frame[list(match)].drop_duplicates())
                condition = " and ".join(f"k.{c} = t.{c}" for c in match)
                con.execute(
                    f"delete from {self.table(table.full_name)} t "
                    f"where exists (select 1 from staged_keys k where {condition})"
                )
                con.unregister("staged_keys")
                self._insert(con, table, frame)


FEW_ROWS = 10


def _fill_empty_table(con, table: Table, name: str, staged: str) -> None:
    """Insert every row of ``staged`` into the empty table ``name``, then build its key.

    Building the primary-key index once over the loaded rows costs less than half of
    maintaining it row by row during the insert; the key is checked all the same (a duplicate
    fails the statement and the transaction). DuckDB cannot drop a key, so the empty table is
    recreated without one.
    """
    con.execute(f"drop table {name}")
    con.execute(create_table_sql(table, name, with_key=False))
    con.execute(f"insert into {name} select * from {staged}")
    if table.key:
        con.execute(f"alter table {name} add {_primary_key_sql(table)}")


def _parameter(value):
    """A frame's value as a query parameter: Python scalars, None for a missing one."""
    if (
        value is None
        or value is pd.NaT
        or value is pd.NA
        or (isinstance(value, float) and value != value)
    ):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if hasattr(value, "item") else value


def _arrow_rows(frame: pd.DataFrame):
    """``frame`` as an Arrow table, its text columns dictionary-encoded (NaN and None as NULL);
    other columns (object columns of dates or numbers included) as Arrow infers them.

    DuckDB inserts Arrow rows about twice as fast as a pandas frame with columns of Python
    strings, even counting this conversion: 0.1 s less for the Kaggle file's 500k rows.
    """
    import numpy as np
    import pyarrow as pa
    from pandas.api.types import infer_dtype

    columns = {}
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object and infer_dtype(column, skipna=True) in ("string", "empty"):
            codes, values = pd.factorize(column)
            indices = pa.array(codes.astype(np.int32), mask=codes < 0)
            columns[name] = pa.DictionaryArray.from_arrays(indices, pa.array(values, pa.string()))
        else:
            columns[name] = pa.array(column, from_pandas=True)
    return pa.table(columns)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames, one after the other (the empty ones skipped: pandas would guess their
    dtypes)."""
    filled = [f for f in frames if len(f)]
    if len(filled) == 1:
        return filled[0]
    return pd.concat(filled or frames[:1], ignore_index=True)


def _lock_holder(message: str) -> str:
    """'stockcast transform (PID 1234)' from DuckDB's lock error, as far as it can be told."""
    match = re.search(r"PID (\d+)", message)
    if not match:
        return "another process"
    pid = match.group(1)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        words = [Path(a.decode()).name for a in argv if a]
        if words and words[0].startswith("python") and len(words) > 1:
            words = words[1:]  # `python .../stockcast ingest` reads as `stockcast ingest`
        command = " ".join(words[:3])
    except OSError:
        command = "a process"
    return f"{command} (PID {pid})"

"""BigQuery engine: datasets ``<prefix>_<schema>`` in the target's project.

Writes stage a DataFrame with one load job into a short-lived table, then apply it with one
multi-statement transaction (``MERGE`` / ``DELETE`` + ``INSERT``), so a file is loaded whole or
not at all and DML stays at a handful of statements per file (BigQuery's DML quotas). Tables are
partitioned by month on their date column and clustered by ticker where the contract says so.

The profile's ``api_endpoint`` (or ``BIGQUERY_EMULATOR_HOST``) points the client at a local
emulator; then anonymous credentials are used and the BigQuery Storage API is not.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from collections.abc import Iterator

import pandas as pd
from google.api_core import exceptions as google_exceptions
from google.cloud import bigquery

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
    UpsertCounts,
    Warehouse,
    WarehouseError,
    ledger_record,
    upsert_counts,
)

TYPES = {
    "string": "STRING",
    "date": "DATE",
    "float64": "FLOAT64",
    "int64": "INT64",
    "timestamp": "TIMESTAMP",
}
# Transient errors are retried for a minute, not BigQuery's default ten: an unreachable
# endpoint or a missing permission should stop a command quickly with its reason.
RETRY = bigquery.DEFAULT_RETRY.with_timeout(60)
# Staging tables vanish on their own if a process dies before dropping them.
STAGING_TTL_HOURS = 6


def _credentials(config: dict, emulated: bool):
    if emulated:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    method = config.get("method", "oauth")
    if method == "service-account":
        from google.oauth2 import service_account

        keyfile = config.get("keyfile")
        if not keyfile:
            raise ConfigError(
                "BigQuery method service-account needs GOOGLE_APPLICATION_CREDENTIALS (keyfile)"
            )
        return service_account.Credentials.from_service_account_file(keyfile)
    if method == "oauth-secrets":
        from google.oauth2.credentials import Credentials

        return Credentials(token=config.get("token") or None)
    return None  # oauth: application default credentials


class BigQueryWarehouse(Warehouse):
    engine = "bigquery"

    def __init__(self, settings):
        super().__init__(settings)
        config = settings.target_config
        self.project = str(config.get("project") or "")
        if not self.project or self.project.startswith("set-"):
            raise ConfigError(
                f"target {settings.target!r} needs a GCP project: set STOCKCAST_BQ_PROJECT"
            )
        self.prefix = str(config.get("dataset") or config.get("schema") or "stockcast")
        self.location = config.get("location") or None
        self.api_endpoint = config.get("api_endpoint") or os.environ.get("BIGQUERY_EMULATOR_HOST")
        self.emulated = bool(self.api_endpoint)
        self._client = None
        self._schemas_ready: set[str] = set()

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def client(self) -> bigquery.Client:
        if self._client is None:
            options = {}
            if self.api_endpoint:
                endpoint = self.api_endpoint
                if "://" not in endpoint:
                    endpoint = f"http://{endpoint}"
                options["client_options"] = {"api_endpoint": endpoint}
            if self.emulated:
                # The emulator rejects the client's generic upload content type on load jobs.
                from google.cloud.bigquery import client as client_module

                client_module._GENERIC_CONTENT_TYPE = "application/octet-stream"
            self._client = bigquery.Client(
                project=self.project,
                location=self.location,
                credentials=_credentials(self.settings.target_config, self.emulated),
                **options,
            )
        return self._client

    def dataset(self, schema: str) -> str:
        return f"{self.prefix}_{schema}"

    def table_id(self, logical_name: str) -> str:
        schema, name = logical_name.split(".")
        return f"{self.project}.{self.dataset(schema)}.{name}"

    def table(self, logical_name: str) -> str:
        # Each part quoted on its own (as dbt does): the emulator refuses any SQL whose text
        # contains "ML.PREDICT", which `..._ml.predicted_prices` in one quoted path would.
        return ".".join(f"`{part}`" for part in self.table_id(logical_name).split("."))

    def _run(self, sql: str, params: list | None = None):
        with self._errors("query"):
            job = self.client.query(
                sql, job_config=bigquery.QueryJobConfig(query_parameters=params or []), retry=RETRY
            )
        try:
            return job.result(retry=RETRY)
        except google_exceptions.GoogleAPICallError as exc:
            raise WarehouseError(
                f"BigQuery: {exc.message if hasattr(exc, 'message') else exc}"
            ) from exc

    # -- names and reads --------------------------------------------------------------------
    def query_df(self, sql: str, params: list | None = None) -> pd.DataFrame:
        rows = self._run(sql, params)
        table = rows.to_arrow(create_bqstorage_client=not self.emulated)
        frame = table.to_pandas(date_as_object=False)
        return _normalise(frame)

    def read_query(self, sql: str, params: dict[str, object] | None = None) -> pd.DataFrame:
        return self.query_df(
            sql,
            [
                bigquery.ScalarQueryParameter(name, _param_type(value), value)
                for name, value in (params or {}).items()
            ],
        )

    def tables_in(self, schema: str) -> set[str]:
        with self._errors("list tables"):
            try:
                listed = self.client.list_tables(
                    f"{self.project}.{self.dataset(schema)}", retry=RETRY
                )
                return {table.table_id for table in listed}
            except google_exceptions.NotFound:
                return set()

    def read_table(self, logical_name, columns, filter_in=None, order_by=None) -> pd.DataFrame:
        sql = f"select {', '.join(columns)} from {self.table(logical_name)}"
        params, conditions = [], []
        for column, values in (filter_in or {}).items():
            if values:
                conditions.append(f"{column} in unnest(@{column}_values)")
                params.append(
                    bigquery.ArrayQueryParameter(
                        f"{column}_values", _param_type(values[0]), list(values)
                    )
                )
        if conditions:
            sql += " where " + " and ".join(conditions)
        if order_by:
            sql += " order by " + ", ".join(order_by)
        return self.query_df(sql, params)

    def _in_parameter(self, column: str, parameter: str) -> str:
        return f"{column} in unnest(@{parameter})"

    def _query_named(self, sql: str, params: dict[str, object]) -> pd.DataFrame:
        return self.query_df(
            sql,
            [
                bigquery.ArrayQueryParameter(name, _param_type(value[0]), value)
                if isinstance(value, list)
                else bigquery.ScalarQueryParameter(name, _param_type(value), value)
                for name, value in params.items()
            ],
        )

    def table_exists(self, logical_name: str) -> bool:
        try:
            self.client.get_table(self.table_id(logical_name), retry=RETRY)
        except google_exceptions.NotFound:
            return False
        return True

    # -- writes -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Google client errors (unreachable endpoint, credentials, permissions) as one-line
        WarehouseErrors that say where and what."""
        from google.auth import exceptions as auth_exceptions

        where = self.api_endpoint or "bigquery.googleapis.com"
        try:
            yield
        except (google_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as exc:
            message = getattr(exc, "message", None) or str(exc).splitlines()[0]
            cause = getattr(exc, "cause", None)
            if cause is not None:
                message += f" ({str(cause).splitlines()[0][:200]})"
            raise WarehouseError(
                f"BigQuery {doing} failed (project {self.project} at {where}): {message}"
            ) from exc
        except OSError as exc:
            raise WarehouseError(f"BigQuery at {where} cannot be reached: {exc}") from exc

    def ensure_schema(self, schemas: tuple[str, ...] = SCHEMAS) -> None:
        with self._errors("schema check"):
            self._ensure_schema(schemas)

    def _ensure_schema(self, schemas: tuple[str, ...]) -> None:
        schemas = tuple(s for s in schemas if s not in self._schemas_ready)
        # Look before creating: creating needs project-level rights that a step's account
        # (least privilege) lacks even when the dataset or table already exists.
        for schema in schemas:
            dataset_id = f"{self.project}.{self.dataset(schema)}"
            try:
                self.client.get_dataset(dataset_id, retry=RETRY)
            except google_exceptions.NotFound:
                dataset = bigquery.Dataset(dataset_id)
                if self.location:
                    dataset.location = self.location
                self.client.create_dataset(dataset, exists_ok=True, retry=RETRY)
        for contract in (t for t in TABLES if t.schema in schemas):
            try:
                existing = self.client.get_table(self.table_id(contract.full_name), retry=RETRY)
            except google_exceptions.NotFound:
                self.client.create_table(
                    _table_definition(contract, self.table_id(contract.full_name))
                )
                continue
            present = {field.name for field in existing.schema}
            missing = [c for c in contract.columns if c.name not in present]
            if missing:
                existing.schema = [
                    *existing.schema,
                    *(
                        bigquery.SchemaField(c.name, TYPES[c.type], mode="NULLABLE")
                        for c in missing
                    ),
                ]
                self.client.update_table(existing, ["schema"], retry=RETRY)
        self._schemas_ready.update(schemas)

    @contextlib.contextmanager
    def _staged(self, contract: Table, frame: pd.DataFrame) -> Iterator[str]:
        """Load ``frame`` into a new staging table (one load job); drop it afterwards."""
        name = f"{self.dataset(contract.schema)}._staging_{contract.name}_{uuid.uuid4().hex[:12]}"
        table_id = f"{self.project}.{name}"
        schema = [bigquery.SchemaField(c.name, TYPES[c.type]) for c in contract.columns]
        table = bigquery.Table(table_id, schema=schema)
        table.expires = pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=STAGING_TTL_HOURS)
        self.client.create_table(table, retry=RETRY)
        try:
            if len(frame):
                job = self.client.load_table_from_file(
                    _parquet(frame, contract),
                    table_id,
                    job_config=bigquery.LoadJobConfig(
                        schema=schema,
                        source_format=bigquery.SourceFormat.PARQUET,
                        write_disposition="WRITE_APPEND",
                    ),
                )
                try:
                    job.result()
                except google_exceptions.GoogleAPICallError as exc:
                    raise WarehouseError(f"BigQuery load into {table_id}: {exc}") from exc
            yield ".".join(f"`{part}`" for part in table_id.split("."))
        finally:
            self.client.delete_table(table_id, not_found_ok=True, retry=RETRY)

    def _load_price_file(self, staged_prices, rejected, file_record, drop_history) -> UpsertCounts:
        source_file = file_record["source_file"]
        target = self.table(DAILY_PRICES.full_name)
        # The file's tickers and date range on the target side let BigQuery prune partitions
        # and clusters instead of scanning the whole price history for every file.
        tickers = ", ".join(_literal(t, "string") for t in sorted(staged_prices["ticker"].unique()))
        dates = pd.to_datetime(staged_prices["trade_date"])
        on = "p.ticker = s.ticker and p.trade_date = s.trade_date" + (
            f" and p.ticker in ({tickers}) and p.trade_date between "
            f"{_literal(dates.min(), 'date')} and {_literal(dates.max(), 'date')}"
            if len(staged_prices)
            else ""
        )
        # Rows the file replaces: deleted first in the transaction, so not "matched" before.
        dropped = " or ".join(
            f"(ticker = {_literal(ticker, 'string')} and source_file in "
            f"({', '.join(_literal(f, 'string') for f in files)}))"
            for ticker, files in drop_history.items()
        )
        kept = f"(select * from {target} where not ({dropped}))" if dropped else target
        drop_statement = f"delete from {target} where {dropped};" if dropped else ""
        with (
            self._staged(DAILY_PRICES, staged_prices) as prices_stage,
            self._staged(REJECTED_ROWS, rejected) as rejected_stage,
        ):
            by_previous_file = [
                tuple(row.values())
                for row in self._run(
                    f"""
                    select
                        p.source_file,
                        countif(p.ticker is null),
                        countif(p.ticker is not null and ({PRICE_CHANGED}))
                    from {prices_stage} s
                    left join {kept} p on {on}
                    group by p.source_file
                    """
                )
            ]
            counts = upsert_counts(by_previous_file, len(staged_prices), source_file)
            record = ledger_record(file_record, counts)
            columns = INGESTED_FILES.column_names
            # Literals, not query parameters: parameters do not reach the statements of a
            # multi-statement script on every BigQuery implementation (the emulator's).
            ledger_values = ", ".join(
                _literal(record.get(c.name), c.type) for c in INGESTED_FILES.columns
            )
            source = _literal(source_file, "string")
            updates = ", ".join(
                f"{c} = s.{c}" for c in [*PRICE_COLUMNS, "source_file", "ingested_at"]
            )
            price_columns = ", ".join(DAILY_PRICES.column_names)
            rejected_columns = ", ".join(REJECTED_ROWS.column_names)
            self._run(
                f"""
                begin transaction;
                {drop_statement}
                merge {target} p
                using {prices_stage} s
                on {on}
                when matched and ({PRICE_CHANGED}) then update set {updates}
                when not matched then insert ({price_columns}) values ({price_columns});
                delete from {self.table(REJECTED_ROWS.full_name)} where source_file = {source};
                insert into {self.table(REJECTED_ROWS.full_name)} ({rejected_columns})
                select {rejected_columns} from {rejected_stage};
                delete from {self.table(INGESTED_FILES.full_name)} where source_file = {source};
                insert into {self.table(INGESTED_FILES.full_name)} ({", ".join(columns)})
                values ({ledger_values});
                commit transaction;
                """
            )
        return counts

    def _replace_many(self, tables, match) -> None:
        with contextlib.ExitStack() as stack:
            statements = []
            for contract, frame in tables:
                stage = stack.enter_context(self._staged(contract, frame))
                target = self.table(contract.full_name)
                condition = " and ".join(f"s.{c} = t.{c}" for c in match)
                columns = ", ".join(contract.column_names)
                statements += [
                    f"delete from {target} t where exists (select 1 from {stage} s where {condition});",
                    f"insert into {target} ({columns}) select {columns} from {stage};",
                ]
            self._run("begin transaction;\n" + "\n".join(statements) + "\ncommit transaction;")


def _table_definition(contract: Table, table_id: str) -> bigquery.Table:
    table = bigquery.Table(
        table_id,
        schema=[
            bigquery.SchemaField(
                c.name, TYPES[c.type], mode="REQUIRED" if c.required else "NULLABLE"
            )
            for c in contract.columns
        ],
    )
    if contract.partition_by:
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.MONTH, field=contract.partition_by
        )
    if contract.cluster_by:
        table.clustering_fields = list(contract.cluster_by)
    return table


def _arrow_type(type_: str):
    import pyarrow as pa

    return {
        "string": pa.string(),
        "date": pa.date32(),
        "float64": pa.float64(),
        "int64": pa.int64(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }[type_]


def _parquet(frame: pd.DataFrame, contract: Table) -> io.BytesIO:
    """``frame`` as a Parquet file whose column types are exactly the contract's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {}
    for column in contract.columns:
        values = frame[column.name]
        if column.type == "int64":
            values = pd.to_numeric(values).round().astype("Int64")
        elif column.type == "float64":
            values = pd.to_numeric(values).astype("float64")
        elif column.type == "date":
            values = pd.to_datetime(values).dt.date
        elif column.type == "timestamp":
            stamps = pd.to_datetime(values)
            values = stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps
        else:
            values = values.astype("string")
        columns[column.name] = pa.array(values, type=_arrow_type(column.type), from_pandas=True)
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    buffer.seek(0)
    return buffer


def _literal(value, type_: str) -> str:
    """A GoogleSQL literal of a contract type; strings are escaped, so any file name is safe."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return f"cast(null as {TYPES[type_]})"
    if type_ == "timestamp":
        stamp = pd.Timestamp(value)
        stamp = stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")
        return f"timestamp '{stamp.strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"
    if type_ == "date":
        return f"date '{pd.Timestamp(value).strftime('%Y-%m-%d')}'"
    if type_ == "int64":
        return str(int(value))
    if type_ == "float64":
        return repr(float(value))
    escaped = "".join(_ESCAPES.get(ch, ch) for ch in str(value))
    return f"'{escaped}'"


_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r"}


def _param_type(value) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    return "STRING"


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Dates as datetime64 and timestamps as naive UTC, as the DuckDB engine returns them."""
    for column in frame.columns:
        dtype = str(frame[column].dtype)
        if dtype == "dbdate":
            frame[column] = pd.to_datetime(frame[column].astype("object"))
        elif dtype.startswith("datetime64[") and "UTC" in dtype:
            frame[column] = frame[column].dt.tz_convert("UTC").dt.tz_localize(None)
    return frame

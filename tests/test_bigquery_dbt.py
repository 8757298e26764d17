"""dbt on the BigQuery adapter, against the local BigQuery emulator (scripts/emulators.sh).

One session builds every model, data test and unit test with ``dbt build --target bigquery`` on
a real slice of prices (3 tickers x 300 bars) and consistent ml tables, and the same rows are
built on DuckDB: the indicator marts must agree to 1e-9 (relative). The last tests pin each
fidelity gap found in the emulator (bqemulator 1.4.0): what it does today, and what real
BigQuery does instead, so that a gap that closes (or a new emulator version) fails loudly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from emulators import (
    DBT_PROJECT_DIR,
    REPO,
    dbt_env,
    load_prices,
    ml_frames,
    new_dataset_prefix,
    parse_exports,
    price_slice,
    run_dbt,
    run_script,
    seed_sources,
    warehouse_for,
)
from helpers import TAIL_READS, YAHOO, tail_days, tail_days_frame

pytestmark = pytest.mark.slow

TICKERS = ("AAPL", "MSFT", "KO")
INDICATORS = [
    "open",
    "high",
    "low",
    "close",
    "adj_close",
    "volume",
    "sma_5",
    "sma_15",
    "sma_20",
    "sma_50",
    "ema_12",
    "ema_26",
    "macd",
    "macd_signal",
    "macd_hist",
    "rsi_14",
]
LAYERS = ("staging", "intermediate", "marts")
QUALITY_MARTS = ("fct_price_gaps", "fct_extreme_returns", "fct_source_changes")


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    if not YAHOO.is_dir():
        pytest.skip(f"shared developer data not found at {YAHOO}")
    return pd.concat([price_slice(YAHOO, t, "2019-01-01", 300) for t in TICKERS], ignore_index=True)


@pytest.fixture(scope="module")
def client(emulator_env):
    return warehouse_for(emulator_env).client  # the product's own emulator client


@pytest.fixture(scope="module")
def bigquery_build(emulator_env, client, prices, tmp_path_factory):
    """Sources seeded in datasets of a fresh prefix, then ``dbt build --target bigquery``."""
    prefix = new_dataset_prefix()
    seed_sources(
        warehouse_for(emulator_env, STOCKCAST_BQ_DATASET=prefix), prices, ml_frames(prices)
    )
    env = dbt_env(emulator_env, prefix)
    result = run_dbt(["build"], env, tmp_path_factory.mktemp("dbt_bigquery"))
    yield prefix, result
    _drop_datasets(client, prefix)


@pytest.fixture(scope="module")
def duckdb_build(prices, tmp_path_factory) -> Path:
    """The same rows built on the default DuckDB target (every node, tests included)."""
    folder = tmp_path_factory.mktemp("dbt_duckdb")
    path = folder / "stockcast.duckdb"
    seed_sources(
        warehouse_for({"STOCKCAST_TARGET": "dev", "STOCKCAST_DUCKDB_PATH": str(path)}),
        prices,
        ml_frames(prices),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCAST_")}
    env.update(STOCKCAST_TARGET="dev", STOCKCAST_DUCKDB_PATH=str(path))
    result = run_dbt(["build"], env, folder)
    assert result.returncode == 0, result.stdout[-6000:]
    return path


def _duckdb_table(path: Path, name: str) -> pd.DataFrame:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(f"select * from {name}").df()
    finally:
        con.close()


@pytest.fixture(scope="module")
def duckdb_mart(duckdb_build) -> pd.DataFrame:
    return _duckdb_table(duckdb_build, "marts.fct_daily_indicators")


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.assign(
        trade_date=pd.to_datetime(frame["trade_date"]), price_index=frame["price_index"].astype(int)
    )
    return frame.sort_values(["ticker", "trade_date"]).reset_index(drop=True)


def _drop_datasets(client, prefix: str) -> None:
    for dataset in client.list_datasets():
        if dataset.dataset_id.startswith(prefix + "_") or dataset.dataset_id == prefix:
            client.delete_dataset(dataset.dataset_id, delete_contents=True, not_found_ok=True)


def _assert_same_mart(bigquery: pd.DataFrame, duckdb_mart: pd.DataFrame, rows: int) -> None:
    """The indicator marts of both engines: the same rows, indicators within 1e-9 (relative),
    NULL in the same places."""
    bigquery, duck = _sorted(bigquery), _sorted(duckdb_mart)
    assert len(bigquery) == len(duck) == rows
    assert (bigquery[["ticker", "price_index"]] == duck[["ticker", "price_index"]]).all().all()
    for column in INDICATORS:
        left = bigquery[column].astype(float).to_numpy()
        right = duck[column].astype(float).to_numpy()
        assert (np.isnan(left) == np.isnan(right)).all(), column
        np.testing.assert_allclose(left, right, rtol=1e-9, atol=0, equal_nan=True, err_msg=column)


# -- the emulator script ----------------------------------------------------------------------
def test_emulators_script_prints_only_exports(emulator_env) -> None:
    assert emulator_env["STOCKCAST_TARGET"] == "bigquery"
    assert emulator_env["STOCKCAST_BQ_METHOD"] == "oauth-secrets"
    assert emulator_env["STOCKCAST_BQ_API_ENDPOINT"] == emulator_env["BIGQUERY_EMULATOR_HOST"]
    assert emulator_env["STORAGE_EMULATOR_HOST"].startswith("http://127.0.0.1:")
    # `up` again is a no-op that prints the same exports (idempotent), and so does `env`.
    again = run_script("up")
    assert again.returncode == 0, again.stderr
    assert parse_exports(again.stdout) == emulator_env
    assert parse_exports(run_script("env").stdout) == emulator_env


def test_gcs_emulator_has_the_upload_bucket(emulator_env) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    os.environ.setdefault("STORAGE_EMULATOR_HOST", emulator_env["STORAGE_EMULATOR_HOST"])
    gcs = storage.Client(
        project=emulator_env["STOCKCAST_BQ_PROJECT"],
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator_env["STORAGE_EMULATOR_HOST"]},
    )
    bucket = gcs.bucket(emulator_env["STOCKCAST_GCS_BUCKET"])
    blob = bucket.blob("uploads/test.csv")
    blob.upload_from_string("Date,Close\n2024-01-02,1.0\n")
    assert bucket.blob("uploads/test.csv").download_as_text().startswith("Date,Close")


# -- dbt build on BigQuery --------------------------------------------------------------------
def test_dbt_build_passes_on_bigquery(bigquery_build) -> None:
    _, result = bigquery_build
    assert result.returncode == 0, result.stdout[-8000:]
    assert "ERROR=0" in result.stdout and "WARN=0" in result.stdout
    # unit tests ran too (the TA-Lib fixtures among them), not only models and data tests
    assert "int_ema_computed::test_ema_matches_talib" in result.stdout


def test_datasets_carry_the_target_prefix(bigquery_build, client) -> None:
    prefix, result = bigquery_build
    assert result.returncode == 0
    datasets = {d.dataset_id for d in client.list_datasets() if d.dataset_id.startswith(prefix)}
    assert datasets == {f"{prefix}_{name}" for name in ("raw", "ml", *LAYERS)}
    marts = {t.table_id for t in client.list_tables(f"{prefix}_marts")}
    assert "fct_daily_indicators" in marts


def test_indicator_mart_equals_duckdb(bigquery_build, client, duckdb_mart, prices) -> None:
    prefix, result = bigquery_build
    assert result.returncode == 0
    bigquery = client.query(f"select * from `{prefix}_marts`.`fct_daily_indicators`").to_dataframe()
    _assert_same_mart(bigquery, duckdb_mart, len(prices))


def test_incremental_runs_equal_the_full_build(
    emulator_env, client, prices, duckdb_mart, tmp_path_factory
) -> None:
    # The mart is built on the first 250 bars of each ticker, one of them wrong (a vendor
    # error); then the last 50 bars and the corrected bar arrive in a later load. The
    # incremental run on BigQuery (pre-hook delete from each ticker's change point, then merge)
    # must give the mart that DuckDB builds in one go from the final prices.
    prefix = new_dataset_prefix()
    warehouse = warehouse_for(emulator_env, STOCKCAST_BQ_DATASET=prefix)
    warehouse.ensure_schema()
    position = prices.groupby("ticker").cumcount()
    first, later = prices[position < 250].copy(), prices[position >= 250].copy()
    wrong = first.index[(first["ticker"] == "MSFT") & (position[first.index] == 120)]
    corrected = first.loc[wrong].assign(source_file="MSFT-corrected.csv.gz")
    first.loc[wrong, "close"] = first.loc[wrong, "low"]  # a valid bar, but not the real one
    assert (first.loc[wrong, "close"] != corrected["close"]).all()
    later = pd.concat([later, corrected]).assign(ingested_at=pd.Timestamp("2024-01-02"))
    env = dbt_env(emulator_env, prefix)
    select = ["--select", "stg_raw__daily_prices", "fct_daily_indicators"]
    try:
        load_prices(warehouse, first)
        built = run_dbt(["run", *select], env, tmp_path_factory.mktemp("dbt_bq_first"))
        assert built.returncode == 0, built.stdout[-6000:]
        load_prices(warehouse, later)
        resumed_in = tmp_path_factory.mktemp("dbt_bq_incremental")
        resumed = run_dbt(["run", *select], env, resumed_in)
        assert resumed.returncode == 0, resumed.stdout[-6000:]
        ran = resumed_in / "target" / "run" / "stockcast" / "models" / "marts"
        assert "merge into" in (ran / "fct_daily_indicators.sql").read_text().lower()
        bigquery = client.query(
            f"select * from `{prefix}_marts`.`fct_daily_indicators`"
        ).to_dataframe()
    finally:
        _drop_datasets(client, prefix)
    _assert_same_mart(bigquery, duckdb_mart, len(prices))


@pytest.fixture(scope="module")
def bigquery_warehouse(emulator_env, bigquery_build, client):
    """The product's BigQuery engine on the built datasets, with ``tails.days`` added (the
    rows of :func:`helpers.tail_days_frame`; a dataset of its own, kept out of the marts)."""
    prefix, result = bigquery_build
    assert result.returncode == 0
    warehouse = warehouse_for(emulator_env, STOCKCAST_BQ_DATASET=prefix)
    client.create_dataset(warehouse.dataset("tails"), exists_ok=True)
    rows = ", ".join(
        f"struct('{row.ticker}' as ticker, date '{row.trade_date}' as trade_date, {row.day} as day)"
        for row in tail_days_frame().itertuples()
    )
    warehouse.query_df(
        f"create table {warehouse.table('tails.days')} as select * from unnest([{rows}])"
    )
    return warehouse


@pytest.mark.parametrize(("rows", "options", "kept"), TAIL_READS)
def test_tail_reads_keep_the_same_rows_on_bigquery(bigquery_warehouse, rows, options, kept):
    assert tail_days(bigquery_warehouse, "tails.days", rows, **options) == kept


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"kept_from": dt.date(2019, 12, 2), "filter_in": {"ticker": ["KO", "MSFT"]}},
        {"kept_from": dt.date(2019, 12, 2), "common_start": True},
    ],
    ids=["last rows", "from a date", "common start"],
)
def test_tail_reads_of_the_indicator_mart_equal_duckdb(
    bigquery_warehouse, duckdb_build, options
) -> None:
    from ml.features import INDICATOR_COLUMNS

    duck = warehouse_for({"STOCKCAST_TARGET": "dev", "STOCKCAST_DUCKDB_PATH": str(duckdb_build)})
    left, right = (
        warehouse.read_table_tail(
            "marts.fct_daily_indicators",
            INDICATOR_COLUMNS,
            partition_by="ticker",
            order_by="trade_date",
            rows=40,
            **options,
        )
        for warehouse in (bigquery_warehouse, duck)
    )
    assert len(left) > 0
    pd.testing.assert_frame_equal(left, right, check_dtype=False, rtol=1e-9, atol=0)


def test_quality_marts_equal_duckdb(bigquery_build, client, duckdb_build) -> None:
    # The data-quality marts on the same slice: clean Yahoo bars (2019-01 .. 2020-03, no gap,
    # no move beyond 40%, one file per ticker); the calendar built from the seed on both
    # engines (generate_series, dateadd); the summary per ticker equal on both.
    prefix, result = bigquery_build
    assert result.returncode == 0

    def bigquery(sql: str) -> pd.DataFrame:
        return client.query(sql.format(p=prefix)).to_dataframe()

    calendar = bigquery(
        "select count(*) as days, countif(is_session) as sessions, min(calendar_date) as first,"
        " max(calendar_date) as last, max(session_number) as last_number"
        " from `{p}_intermediate`.`int_calendar_days_numbered`"
    ).iloc[0]
    first, last = pd.Timestamp("1990-01-02"), pd.Timestamp("2027-12-31")
    assert pd.Timestamp(calendar["first"]) == first and pd.Timestamp(calendar["last"]) == last
    assert calendar["days"] == (last - first).days + 1
    assert calendar["sessions"] == calendar["last_number"] == 9569
    for mart in QUALITY_MARTS:
        assert bigquery(f"select count(*) as n from `{{p}}_marts`.`{mart}`")["n"][0] == 0, mart
        assert _duckdb_table(duckdb_build, f"marts.{mart}").empty, mart

    def by_ticker(frame: pd.DataFrame) -> list[dict]:
        frame = frame.assign(
            first_trade_date=pd.to_datetime(frame["first_trade_date"]),
            last_trade_date=pd.to_datetime(frame["last_trade_date"]),
        )
        return frame.sort_values("ticker").astype(str).to_dict("records")

    summary = bigquery("select * from `{p}_marts`.`fct_ticker_data_quality`")
    duck = _duckdb_table(duckdb_build, "marts.fct_ticker_data_quality")
    assert len(summary) == len(TICKERS) and summary["is_clean"].all()
    assert (summary["bars"] == 300).all()
    assert by_ticker(summary) == by_ticker(duck)


def test_table_descriptions_are_persisted(bigquery_build, client) -> None:
    prefix, result = bigquery_build
    assert result.returncode == 0
    table = client.get_table(f"{prefix}_marts.fct_daily_indicators")
    assert table.description and "TA-Lib" in table.description


# -- emulator fidelity gaps (bqemulator 1.4.0) ------------------------------------------------
# Each test asserts the emulator's CURRENT behaviour; the comment says what BigQuery does.
def _query_error(client, sql: str) -> str | None:
    try:
        client.query(sql).result()
    except Exception as error:  # the emulator answers with google.api_core exceptions
        return str(error)
    return None


@pytest.fixture(scope="module")
def gap_dataset(client):
    name = new_dataset_prefix() + "_gaps"
    client.create_dataset(name)
    yield name
    client.delete_dataset(name, delete_contents=True, not_found_ok=True)


def test_gap_ml_predict_substring_rejected(client, gap_dataset) -> None:
    # Any SQL text containing `ml.predict` is refused as BigQuery ML's ML.PREDICT (501), even a
    # table path like `x_ml.predicted_prices` in one pair of backticks or a string literal.
    # BigQuery accepts both. dbt quotes project, dataset and table separately, so it is not hit;
    # Python code must quote `dataset`.`table` part by part too.
    dataset = gap_dataset + "_ml"
    client.create_dataset(dataset)
    try:
        client.query(f"create table `{dataset}`.`predicted_prices` (a int64)").result()
        assert "ML.PREDICT" in _query_error(client, f"select * from `{dataset}.predicted_prices`")
        assert "ML.PREDICT" in _query_error(client, "select 'x_ml.predicted_prices' as s")
        assert _query_error(client, f"select * from `{dataset}`.`predicted_prices`") is None
    finally:
        client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)


def test_gap_partitioning_and_clustering_not_reported(client, gap_dataset) -> None:
    # DDL with PARTITION BY / CLUSTER BY is accepted but tables.get reports neither (BigQuery
    # returns timePartitioning and clustering), so the marts' layout can only be checked in
    # the compiled SQL here, not on the tables.
    client.query(
        f"create table `{gap_dataset}`.`p` (d date, t string) "
        "partition by date_trunc(d, month) cluster by t"
    ).result()
    table = client.get_table(f"{gap_dataset}.p")
    assert table.time_partitioning is None
    assert table.clustering_fields is None


def test_gap_partition_limit_not_enforced(client, gap_dataset) -> None:
    # 5,001 daily partitions: BigQuery refuses more than 4,000 partitions per table (why the
    # marts use MONTH granularity); the emulator creates the table.
    sql = (
        f"create table `{gap_dataset}`.`daily` partition by d as "
        "select date_add(date '1990-01-01', interval x day) as d "
        "from unnest(generate_array(0, 5000)) as x"
    )
    assert _query_error(client, sql) is None


def test_gap_recursion_not_capped(client) -> None:
    # BigQuery stops a recursive CTE after 500 iterations (why the EMA is not recursive); the
    # emulator runs 1,000.
    rows = client.query(
        "with recursive r as (select 1 as n union all select n + 1 from r where n < 1000) "
        "select max(n) as n from r"
    ).result()
    assert next(iter(rows))["n"] == 1000


def test_gap_duckdb_functions_accepted(client) -> None:
    # Functions that exist only in DuckDB pass through (BigQuery: "Function not found"), so a
    # green build on the emulator does not prove portability: the models are also linted in
    # the BigQuery dialect (make lint).
    assert _query_error(client, "select list_value(1, 2) as a, epoch_ms(1000) as b") is None


def test_gap_primary_key_not_enforced_rejected(client, gap_dataset) -> None:
    # BigQuery accepts unenforced primary keys in DDL; the emulator's translation fails.
    error = _query_error(
        client, f"create table `{gap_dataset}`.`pk` (a int64, primary key (a) not enforced)"
    )
    assert error is not None and "ENFORCED" in error


def test_gap_column_descriptions_via_ddl_ignored(client, gap_dataset) -> None:
    # ALTER COLUMN ... SET OPTIONS(description=...) succeeds but stores nothing (BigQuery sets
    # it). dbt-bigquery's persist_docs sets column descriptions through tables.patch instead.
    client.query(f"create table `{gap_dataset}`.`c` (a int64)").result()
    client.query(
        f"alter table `{gap_dataset}`.`c` alter column a set options (description = 'x')"
    ).result()
    assert client.get_table(f"{gap_dataset}.c").schema[0].description is None


def test_gap_load_jobs_need_generic_content_type(emulator_env) -> None:
    # google-cloud-bigquery sends load jobs as multipart/related; bqemulator only reads them as
    # application/octet-stream (the BigQuery engine sets it on its client). Checked in a fresh
    # interpreter, without the patch.
    code = f"""
import pandas as pd
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
client = bigquery.Client(project={emulator_env["STOCKCAST_BQ_PROJECT"]!r},
    credentials=AnonymousCredentials(),
    client_options=ClientOptions(api_endpoint={emulator_env["STOCKCAST_BQ_API_ENDPOINT"]!r}))
name = "stockcast_gap_load"
client.create_dataset(name, exists_ok=True)
try:
    client.load_table_from_dataframe(pd.DataFrame({{"a": [1]}}), name + ".t").result()
    print("LOADED")
except Exception as error:
    print("FAILED", type(error).__name__)
finally:
    client.delete_dataset(name, delete_contents=True, not_found_ok=True)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert "FAILED" in result.stdout, result.stdout + result.stderr


def test_profile_renders_for_the_emulator(emulator_env) -> None:
    """dbt resolves the emulator target from profiles.yml alone (dbt debug connects)."""
    env = dbt_env(emulator_env, "stockcast")
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), "debug", "--project-dir", str(DBT_PROJECT_DIR),
         "--profiles-dir", str(REPO)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    assert "All checks passed" in result.stdout


MONITORING_MARTS = {
    "fct_forecast_accuracy_by_horizon": ["model_name", "model_version", "ticker", "horizon"],
    "fct_forecast_accuracy_rolling": ["model_name", "model_version", "ticker", "target_date"],
    "fct_champion_accuracy_latest": ["model_name", "model_version"],
    "fct_feature_drift": ["as_of_date", "column_name"],
}


@pytest.mark.parametrize("mart", sorted(MONITORING_MARTS))
def test_monitoring_marts_equal_duckdb(bigquery_build, client, duckdb_build, mart) -> None:
    """The realized-accuracy and drift marts (window frames over session numbers, ln, ratios)
    give the same rows on both engines."""
    prefix, result = bigquery_build
    assert result.returncode == 0
    keys = MONITORING_MARTS[mart]
    bigquery = client.query(f"select * from `{prefix}_marts`.`{mart}`").to_dataframe()
    duck = _duckdb_table(duckdb_build, f"marts.{mart}")
    assert len(bigquery) == len(duck) > 0
    assert sorted(bigquery.columns) == sorted(duck.columns)

    def normal(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame[sorted(frame.columns)].copy()
        for column in frame.columns:
            if "date" in column or column.endswith("_at"):
                frame[column] = pd.to_datetime(frame[column]).dt.tz_localize(None)
            elif frame[column].dtype == object and column not in keys:
                with contextlib.suppress(ValueError, TypeError):  # text stays text
                    frame[column] = pd.to_numeric(frame[column])
        return frame.sort_values(keys).reset_index(drop=True)

    left, right = normal(bigquery), normal(duck)
    for column in left.columns:
        a, b = left[column], right[column]
        if pd.api.types.is_numeric_dtype(b) and not pd.api.types.is_bool_dtype(b):
            np.testing.assert_allclose(
                a.astype(float), b.astype(float), rtol=1e-9, equal_nan=True, err_msg=column
            )
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), column


def test_the_dashboard_reads_the_same_marts_from_bigquery(
    emulator_env, bigquery_build, duckdb_build
) -> None:
    """The dashboard's reader over the BigQuery target (what Looker Studio sees too): named
    parameters, the marts listed per dataset, and the same answers as on the DuckDB file."""
    from datetime import date

    from ml.dashboard import data

    prefix, _ = bigquery_build
    bigquery = data.MartReader(warehouse_for(emulator_env, STOCKCAST_BQ_DATASET=prefix))
    duck = data.MartReader(
        warehouse_for({"STOCKCAST_TARGET": "dev", "STOCKCAST_DUCKDB_PATH": str(duckdb_build)})
    )
    assert {"fct_daily_indicators", "fct_forecasts_vs_actuals"} <= bigquery.marts()
    assert bigquery.marts() == duck.marts()
    assert data.tickers(bigquery) == data.tickers(duck) == sorted(TICKERS)
    start, end = date(2019, 6, 1), date(2019, 9, 30)
    left, right = data.bars(bigquery, "KO", start, end), data.bars(duck, "KO", start, end)
    assert len(left) == len(right) > 60
    np.testing.assert_allclose(left["close"].astype(float), right["close"].astype(float))
    np.testing.assert_allclose(
        left["rsi_14"].astype(float), right["rsi_14"].astype(float), rtol=1e-9
    )
    overview = data.overview(bigquery).set_index("ticker")
    expected = data.overview(duck).set_index("ticker")
    assert overview["last_trade_date"].astype(str).tolist() == (
        expected["last_trade_date"].astype(str).tolist()
    )
    np.testing.assert_allclose(overview["last_close"], expected["last_close"])

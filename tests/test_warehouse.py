"""The warehouse seam: contracts drive the DDL, migrations and writers; engines are chosen by
the dbt target's type."""

import duckdb
import pandas as pd
import pytest
from helpers import TAIL_READS, tail_days, tail_days_frame

from ml.config import ConfigError, load_settings
from ml.contracts import PREDICTED_PRICES, TABLES
from ml.warehouse import WarehouseError, open_warehouse
from ml.warehouse.duckdb_engine import DuckDBWarehouse


def test_ensure_schema_adds_new_contract_columns_to_an_older_warehouse(stockcast_home):
    warehouse = open_warehouse(load_settings())
    warehouse.path.parent.mkdir(parents=True)
    with duckdb.connect(str(warehouse.path)) as con:  # predicted_prices as first released
        con.execute("create schema ml")
        con.execute(
            "create table ml.predicted_prices (ticker varchar, as_of_date date, target_date date,"
            " horizon integer, predicted_close double, model_name varchar, model_version varchar,"
            " mlflow_run_id varchar, scored_at timestamp)"
        )
        con.execute(
            "insert into ml.predicted_prices values ('KO', '2022-01-28', '2022-01-31', 1, 60.1,"
            " 'stockcast-lstm', '1', 'abc', '2022-01-28 20:00')"
        )
    warehouse.ensure_schema()
    warehouse.ensure_schema()  # idempotent
    rows = warehouse.query_df("select * from ml.predicted_prices")
    added = ["lower_80", "upper_80", "lower_95", "upper_95"]
    assert sorted(rows.columns) == sorted(PREDICTED_PRICES.column_names)
    assert len(rows) == 1 and rows[added].isna().all().all()


def test_the_target_type_chooses_the_engine(stockcast_home, monkeypatch):
    assert isinstance(open_warehouse(load_settings()), DuckDBWarehouse)
    monkeypatch.setenv("STOCKCAST_TARGET", "bigquery")
    monkeypatch.setenv("STOCKCAST_BQ_PROJECT", "my-project")
    monkeypatch.setenv("STOCKCAST_BQ_DATASET", "stockcast_prod")
    bigquery = open_warehouse(load_settings())
    assert bigquery.engine == "bigquery"
    assert bigquery.table("raw.daily_prices") == "`my-project`.`stockcast_prod_raw`.`daily_prices`"
    monkeypatch.delenv("STOCKCAST_BQ_PROJECT")
    with pytest.raises(ConfigError, match="STOCKCAST_BQ_PROJECT"):
        open_warehouse(load_settings())


def test_writers_refuse_rows_missing_required_columns_before_writing(warehouse):
    rows = pd.DataFrame(
        {
            "ticker": ["KO"],
            "as_of_date": [pd.Timestamp("2022-01-28").date()],
            "target_date": [pd.Timestamp("2022-01-31").date()],
            "horizon": [1],
            "predicted_close": [None],
            "model_name": ["m"],
            "model_version": ["1"],
            "mlflow_run_id": ["r"],
            "scored_at": [pd.Timestamp("2022-01-28 20:00")],
        }
    )
    with pytest.raises(WarehouseError, match="predicted_close"):
        warehouse.replace_predictions(rows)
    with pytest.raises(WarehouseError, match="model_name"):
        warehouse.replace_predictions(rows.drop(columns="model_name").assign(predicted_close=1.0))
    assert warehouse.query_df("select count(*) as n from ml.predicted_prices")["n"].iloc[0] == 0


@pytest.fixture
def days_table(warehouse):
    """``tails.days`` (ticker, trade_date, day) over the :data:`helpers.TAIL_DAYS`."""
    with duckdb.connect(str(warehouse.path)) as con:
        con.execute("create schema tails")
        con.register("rows", tail_days_frame())
        con.execute("create table tails.days as select * from rows")
    return warehouse


@pytest.mark.parametrize(("rows", "options", "kept"), TAIL_READS)
def test_a_tail_read_keeps_each_tickers_last_rows(days_table, rows, options, kept):
    """Per ticker its last rows (before a date, and all from it on); with a common start,
    every ticker from the earliest of those, and its bar before (see helpers.TAIL_READS)."""
    assert tail_days(days_table, "tails.days", rows, **options) == kept


def _source_tables() -> dict[str, dict]:
    import yaml

    from ml.config import DBT_PROJECT_DIR

    tables = {}
    for path in (DBT_PROJECT_DIR / "models").rglob("_*__sources.yml"):
        for source in yaml.safe_load(path.read_text())["sources"]:
            for table in source["tables"]:
                tables[f"{source['name']}.{table['name']}"] = table
    return tables


@pytest.mark.parametrize("contract", TABLES, ids=lambda t: t.full_name)
def test_dbt_source_yaml_declares_each_contract(contract):
    """dbt reads what Python writes: same columns in the same order, same key, NOT NULL key."""
    declared = _source_tables().get(contract.full_name)
    assert declared is not None, f"{contract.full_name} is not a dbt source"
    assert [c["name"] for c in declared["columns"]] == contract.column_names
    keys = [
        tuple(test["unique_combination_of_columns"]["arguments"]["combination_of_columns"])
        for test in declared.get("data_tests", [])
        if isinstance(test, dict) and "unique_combination_of_columns" in test
    ]
    keys += [
        (column["name"],)
        for column in declared["columns"]
        if "unique" in column.get("data_tests", [])
    ]
    assert keys == [contract.key]
    for column in declared["columns"]:
        if column["name"] in contract.key:
            assert "not_null" in column.get("data_tests", []), column["name"]
            assert contract.column(column["name"]).required


def test_a_price_file_loads_with_dates_as_python_dates_or_timestamps(warehouse):
    """The loader takes the frames its callers build: dates as ``datetime.date`` objects (an
    object column) as well as ``datetime64``; text columns with a missing value stay NULL."""
    from ml.contracts import REJECTED_ROWS

    def prices(ticker: str, dates) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "ticker": ticker,
                "trade_date": dates,
                "open": [10.0, 11.0],
                "high": [11.0, 12.0],
                "low": [9.0, 10.0],
                "close": [10.5, 11.5],
                "adj_close": [10.4, None],
                "volume": [1000, 2000],
                "source_file": f"{ticker}.csv",
                "ingested_at": pd.Timestamp("2024-01-05 12:00"),
            }
        )

    days = pd.to_datetime(["2024-01-02", "2024-01-03"])
    for ticker, dates in (("AAA", [d.date() for d in days]), ("BBB", days)):
        counts = warehouse.load_price_file(
            prices(ticker, dates),
            pd.DataFrame(columns=REJECTED_ROWS.column_names),
            {
                "source_file": f"{ticker}.csv",
                "content_sha256": "0" * 64,
                "layout": "yahoo",
                "tickers": ticker,
                "rows_read": 2,
                "rows_refused": 0,
                "ingested_at": pd.Timestamp("2024-01-05 12:00"),
            },
        )
        assert counts.inserted == 2
    stored = warehouse.query_df(
        "select ticker, cast(trade_date as varchar) as day, adj_close from raw.daily_prices "
        "order by ticker, trade_date"
    )
    assert stored["day"].tolist() == ["2024-01-02", "2024-01-03"] * 2
    assert stored["ticker"].tolist() == ["AAA", "AAA", "BBB", "BBB"]
    assert stored["adj_close"].isna().tolist() == [False, True] * 2

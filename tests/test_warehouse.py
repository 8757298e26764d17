import duckdb

from ml.warehouse import ADDED_COLUMNS, Warehouse


def test_ensure_schema_adds_new_columns_to_an_older_warehouse(stockcast_home):
    warehouse = Warehouse()
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
    added = [column for column, _ in ADDED_COLUMNS["ml.predicted_prices"]]
    assert set(added) <= set(rows.columns)
    assert len(rows) == 1 and rows[added].isna().all().all()

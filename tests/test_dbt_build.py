"""`dbt build` on a small real warehouse: schemas land as named, and the forecast mart joins
forecasts with actuals and the as-of date's indicators."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers import SHARED_DATA, isolated_home

duckdb = pytest.importorskip("duckdb")

HWM = SHARED_DATA / "yahoo_sp500_daily" / "HWM.csv.gz"
AS_OF_OFFSET = 5  # the forecast is made 5 bars before the last loaded bar


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not HWM.is_file():
        pytest.skip(f"shared developer data not found under {SHARED_DATA}")
    with isolated_home(tmp_path_factory.mktemp("dbt_build")):
        from ml.context import build_context
        from ml.ingest import ingest_paths
        from ml.transform import transform

        ctx = build_context()
        warehouse = ctx.warehouse
        db_path = warehouse.path
        assert ingest_paths(ctx, [HWM]).ok
        dates = [
            d.date()
            for d in warehouse.query_df(
                "select trade_date from raw.daily_prices order by trade_date"
            )["trade_date"]
        ]
        as_of = dates[-1 - AS_OF_OFFSET]
        future = list(pd.bdate_range(dates[-1], periods=11).date[1:])
        targets = (dates[-AS_OF_OFFSET:] + future)[:10]
        predictions = pd.DataFrame(
            {
                "ticker": "HWM",
                "as_of_date": as_of,
                "target_date": targets,
                "horizon": range(1, 11),
                "predicted_close": [50.0 + h for h in range(10)],
                "model_name": "stockcast-lstm",
                "model_version": "1",
                "mlflow_run_id": "test-run",
                "scored_at": pd.Timestamp("2022-01-28 18:00"),
            }
        )
        warehouse.replace_predictions(predictions)
        transform(ctx)  # the product's `dbt build`
    return db_path


def _query(db_path: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(db_path), read_only=True) as con:
        return con.execute(sql).df()


@pytest.mark.slow
def test_schemas_land_as_named(built: Path) -> None:
    tables = _query(
        built, "select table_schema, table_name, table_type from information_schema.tables"
    )
    found = set(zip(tables["table_schema"], tables["table_name"], strict=True))
    assert ("marts", "fct_daily_indicators") in found
    assert ("marts", "fct_forecasts_vs_actuals") in found
    assert ("intermediate", "int_rsi_computed") in found
    assert ("staging", "stg_raw__daily_prices") in found
    assert not any(schema.startswith("main_") for schema, _ in found)


@pytest.mark.slow
def test_forecasts_joined_with_actuals(built: Path) -> None:
    mart = _query(built, "select * from marts.fct_forecasts_vs_actuals order by horizon")
    prices = _query(built, "select * from marts.fct_daily_indicators").set_index("trade_date")
    assert list(mart["horizon"]) == list(range(1, 11))
    as_of = mart["as_of_date"].iloc[0]
    as_of_row = prices.loc[as_of]
    assert (mart["as_of_close"] == as_of_row["close"]).all()
    assert (mart["rsi_14"] == as_of_row["rsi_14"]).all()
    assert (mart["macd_hist"] == as_of_row["macd_hist"]).all()

    known = mart[mart["horizon"] <= AS_OF_OFFSET]
    assert known["is_actual_known"].all()
    actual = prices.loc[known["target_date"], "close"].to_numpy()
    assert (known["actual_close"].to_numpy() == actual).all()
    error = known["predicted_close"] - known["actual_close"]
    assert (known["forecast_error"] == error).all()
    assert (known["abs_error"] == error.abs()).all()
    assert known["pct_error"].to_numpy() == pytest.approx(
        (100 * error / known["actual_close"]).to_numpy()
    )
    assert (known["naive_error"] == known["as_of_close"] - known["actual_close"]).all()

    pending = mart[mart["horizon"] > AS_OF_OFFSET]
    assert not pending["is_actual_known"].any()
    assert pending[["actual_close", "forecast_error", "abs_error", "pct_error"]].isna().all().all()

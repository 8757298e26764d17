"""The main job end to end on real files: real DuckDB, real dbt build, real MLflow, tiny LSTM."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import YAHOO, isolated_home, tiny_train_config

pytest.importorskip("tensorflow")

from ml.config import CHAMPION_ALIAS, MODEL_NAME
from ml.fitting import TrainConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not YAHOO.exists(), reason="../shared/data is not beside the repo"),
]

# A long history, a short one (HWM), one with 7 years of flat placeholder bars and zero volumes
# (AMCR), and one with a 5-business-day gap (every file also carries Yahoo's null bar).
TICKERS = ["KO", "HWM", "AMCR", "NVDA"]
TINY = tiny_train_config(max_train_samples=3000)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    inputs = tmp_path_factory.mktemp("inputs")
    for ticker in TICKERS:
        shutil.copy(YAHOO / f"{ticker}.csv.gz", inputs / f"{ticker}.csv.gz")
    with isolated_home(home):
        from ml.context import build_context
        from ml.pipeline import run_pipeline

        ctx = build_context()
        messages: list[str] = []
        # A one-epoch model need not pass the promotion gate (there is no bootstrap): forced,
        # so that the tests below have a champion to check.
        report = run_pipeline(ctx, [inputs], train_config=TINY, say=messages.append, force=True)
        yield {
            "report": report,
            "messages": messages,
            "inputs": inputs,
            "ctx": ctx,
            "warehouse": ctx.warehouse,
            "settings": ctx.settings,
        }


def test_run_writes_ten_forecasts_per_ticker_on_trading_days(pipeline_run):
    import exchange_calendars as xc

    warehouse = pipeline_run["warehouse"]
    assert pipeline_run["report"].ingest_ok
    predictions = warehouse.query_df("select * from ml.predicted_prices")
    last_bars = warehouse.query_df(
        "select ticker, max(trade_date) as last_bar from raw.daily_prices group by ticker"
    )
    assert sorted(predictions["ticker"].unique()) == sorted(TICKERS)
    assert predictions.groupby("ticker")["horizon"].apply(sorted).map(list).tolist() == [
        list(range(1, 11))
    ] * len(TICKERS)
    merged = predictions.merge(last_bars, on="ticker")
    assert (merged["as_of_date"] == merged["last_bar"]).all()
    calendar = xc.get_calendar("XNYS", start="2021-01-01", end="2022-12-31")
    sessions = {d.date() for d in calendar.sessions}
    for _, group in merged.groupby("ticker"):
        group = group.sort_values("horizon")
        as_of = pd.Timestamp(group["as_of_date"].iloc[0]).date()
        expected = sorted(d for d in sessions if d > as_of)[:10]
        assert [pd.Timestamp(d).date() for d in group["target_date"]] == expected
    assert (predictions["predicted_close"] > 0).all()
    assert predictions["model_name"].eq(MODEL_NAME).all()


def test_forecasts_carry_nested_prediction_intervals_that_widen(pipeline_run):
    p = pipeline_run["warehouse"].query_df(
        "select * from ml.predicted_prices order by ticker, horizon"
    )
    assert p[["lower_80", "upper_80", "lower_95", "upper_95"]].notna().all().all()
    assert (p["lower_95"] < p["lower_80"]).all() and (p["lower_80"] < p["predicted_close"]).all()
    assert (p["predicted_close"] < p["upper_80"]).all() and (p["upper_80"] < p["upper_95"]).all()
    width = (p["upper_80"] - p["lower_80"]) / p["predicted_close"]
    by_horizon = width.groupby(p["horizon"]).mean()
    assert by_horizon.loc[10] > by_horizon.loc[1]


def test_promotion_is_its_own_stage_after_training(pipeline_run):
    """Train registers the model; the promote stage (the gate) then decides its alias, showing
    the walk-forward folds and models as they finish."""
    messages, report = pipeline_run["messages"], pipeline_run["report"]
    assert list(report.stage_seconds) == ["ingest", "transform", "train", "promote", "score",
                                          "publish"]  # fmt: skip
    train, promote = messages.index("== train"), messages.index("== promote (promotion gate)")
    assert any(m.startswith("epoch 1/") for m in messages[train:promote])
    gate = messages[promote + 1 :]
    assert gate[0] == (
        "promotion gate: walk-forward over 2 folds of 21 days, candidate vs the ewma baseline, "
        "beside naive"
    )
    assert any(m.startswith("  fold 2/2 candidate: done in") for m in gate)
    assert any(m.startswith("  fold 2/2 ewma: done in") for m in gate)
    assert report.gate.alias == "champion" and report.gate.forced  # see the fixture
    assert report.gate.reason.startswith("promoted by --force (pinball ")
    assert any(m.startswith(f"gate: champion: {report.gate.reason}") for m in gate)


def test_null_bars_are_refused_not_fatal(pipeline_run):
    refused = pipeline_run["warehouse"].query_df(
        "select source_file, line_number, reason from raw.rejected_rows"
    )
    # Every Yahoo file carries one `null` bar (2022-01-27): refused with its line, the rest loads.
    assert len(refused) == len(TICKERS)
    assert refused["reason"].str.contains("null", case=False).all()
    loaded = pipeline_run["warehouse"].query_df(
        "select count(*) as n from raw.daily_prices where trade_date = date '2022-01-27'"
    )
    assert loaded["n"].iloc[0] == 0


def test_champion_is_registered_with_metrics_and_signature(pipeline_run):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(pipeline_run["settings"].mlflow_tracking_uri)
    client = MlflowClient()
    version = client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    run = client.get_run(version.run_id)
    for h in range(1, 11):
        assert f"val_rel_mae_h{h}" in run.data.metrics
        assert f"val_naive_mae_h{h}" in run.data.metrics
    assert run.data.params["window"] == "10"
    assert run.data.params["validation_start"] > run.data.params["fit_as_of_end"]
    info = mlflow.models.get_model_info(f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}")
    assert info.signature is not None

    n_inputs = len(TrainConfig().features)  # the default inputs: base and every group
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 10, n_inputs]
    predictions = pipeline_run["warehouse"].query_df("select * from ml.predicted_prices")
    assert predictions["mlflow_run_id"].eq(version.run_id).all()
    assert predictions["model_version"].eq(str(version.version)).all()


def test_forecast_mart_joins_every_forecast(pipeline_run):
    warehouse = pipeline_run["warehouse"]
    mart = warehouse.query_df("select * from marts.fct_forecasts_vs_actuals")
    assert len(mart) == len(TICKERS) * 10
    indicators = warehouse.query_df("select count(*) as n from marts.fct_daily_indicators")
    raw = warehouse.query_df("select count(*) as n from raw.daily_prices")
    assert indicators["n"].iloc[0] == raw["n"].iloc[0]


def test_rescoring_replaces_rows_and_a_failed_write_keeps_them(pipeline_run):
    from ml.score import score

    warehouse = pipeline_run["warehouse"]
    before = warehouse.query_df("select * from ml.predicted_prices order by ticker, horizon")
    result = score(pipeline_run["ctx"])
    after = warehouse.query_df("select * from ml.predicted_prices order by ticker, horizon")
    assert result.rows_written == len(before) == len(after)
    pd.testing.assert_series_equal(before["predicted_close"], after["predicted_close"])
    assert (after["scored_at"] >= before["scored_at"]).all()

    broken = after.copy()
    broken.loc[broken.index[-1], "predicted_close"] = None  # violates NOT NULL mid-batch
    with pytest.raises(Exception):  # noqa: B017 - any engine error must abort the whole write
        warehouse.replace_predictions(broken)
    kept = warehouse.query_df("select * from ml.predicted_prices order by ticker, horizon")
    pd.testing.assert_frame_equal(kept, after)


def test_second_run_with_same_input_skips_training_and_changes_nothing(pipeline_run):
    from ml.pipeline import run_pipeline

    warehouse = pipeline_run["warehouse"]
    prices_before = warehouse.query_df("select * from raw.daily_prices order by ticker, trade_date")
    report = run_pipeline(
        pipeline_run["ctx"], [pipeline_run["inputs"]], train_config=TINY, say=lambda m: None
    )
    assert report.trained_version is None  # a champion exists: no retraining
    prices_after = warehouse.query_df("select * from raw.daily_prices order by ticker, trade_date")
    pd.testing.assert_frame_equal(prices_before, prices_after)
    counts = warehouse.query_df(
        "select count(*) as n, count(distinct (ticker, as_of_date, horizon)) as k "
        "from ml.predicted_prices"
    )
    assert counts["n"].iloc[0] == counts["k"].iloc[0] == len(TICKERS) * 10
    assert max(pd.to_datetime(prices_after["trade_date"])).date() < dt.date.today()


def test_a_run_with_tickers_the_champion_never_saw_retrains_and_says_so(pipeline_run, tmp_path):
    """The documented rule: new tickers trigger a retrain; the gate decides the champion."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from ml.pipeline import run_pipeline

    mlflow.set_tracking_uri(pipeline_run["settings"].mlflow_tracking_uri)
    champion = MlflowClient().get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    meta = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/model_meta.json")
    assert meta["tickers"] == sorted(TICKERS)

    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(YAHOO / "ALB.csv.gz", new / "ALB.csv.gz")
    messages: list[str] = []
    report = run_pipeline(pipeline_run["ctx"], [new], train_config=TINY, say=messages.append)
    assert report.trained_version is not None
    assert any(
        m.startswith(f"retraining: champion v{champion.version} was not trained on 1 of the")
        and "(ALB)" in m
        for m in messages
    )
    assert report.forecasts_written == (len(TICKERS) + 1) * 10


@pytest.fixture
def home_copy(pipeline_run, tmp_path):
    """A run context on a copy of the pipeline's home (warehouse and MLflow store; the
    champion's artifacts stay where they are), so that what a test scores stays its own."""
    original = pipeline_run["warehouse"].path.parents[1]  # <home>/warehouse/stockcast.duckdb
    home = tmp_path / "home"
    shutil.copytree(original, home)
    store = Path(pipeline_run["settings"].mlflow_tracking_uri.removeprefix("sqlite:///"))
    tracking = f"sqlite:///{home / store.relative_to(original)}"
    with isolated_home(home, {"MLFLOW_TRACKING_URI": tracking}):
        from ml.context import build_context

        yield build_context()


def _published_then_cleared(ctx) -> pd.DataFrame:
    """The forecasts in ``ml.predicted_prices``, which is emptied (a backfill would keep them)."""
    import duckdb

    rows = ctx.warehouse.query_df("select * from ml.predicted_prices")
    with duckdb.connect(str(ctx.warehouse.path)) as con:
        con.execute("delete from ml.predicted_prices")
    return rows.sort_values(["ticker", "as_of_date", "horizon"]).reset_index(drop=True)


def _assert_same_forecasts(short: pd.DataFrame, whole: pd.DataFrame) -> None:
    keys = ["ticker", "as_of_date", "target_date", "horizon", "model_name", "model_version"]
    assert len(short) > 0
    pd.testing.assert_frame_equal(short[keys], whole[keys])
    for column in ["predicted_close", "lower_80", "upper_80", "lower_95", "upper_95"]:
        assert short[column].notna().all(), column
        np.testing.assert_allclose(short[column], whole[column], rtol=1e-9, err_msg=column)


@pytest.mark.parametrize("path", ["champion", "baseline"])
def test_forecasts_from_each_tickers_last_bars_equal_those_from_its_whole_history(home_copy, path):
    """Score reads only the bars a forecast depends on (features.history_rows per ticker,
    from the earliest date any ticker needs with the champion's market features): its
    forecasts, as of the last bar and backfilled, are those of the whole history. KO's bars
    go back decades, NVDA's have a gap, AMCR's start with years of flat placeholder bars."""
    from ml.data import load_indicators, load_recent_indicators
    from ml.features import history_rows
    from ml.score import score, score_baseline

    ctx = home_copy
    run = score if path == "champion" else score_baseline
    whole = load_indicators(ctx.warehouse)
    short = load_recent_indicators(ctx.warehouse, history_rows(10), common_start=True)
    assert len(short) < len(whole) / 3  # the short read is much shorter
    _published_then_cleared(ctx)
    days = sorted(whole.loc[whole["ticker"] == "KO", "trade_date"])
    since = days[-25].date()
    for kwargs in ({}, {"since": since}):
        ctx.tracking()
        first = run(ctx, whole_history=True, **kwargs)
        reference = _published_then_cleared(ctx)
        second = run(ctx, **kwargs)
        assert second.model_name == first.model_name == ("naive_ewma" if path == "baseline"
                                                         else MODEL_NAME)  # fmt: skip
        assert (second.tickers_scored, second.tickers_skipped) == (
            first.tickers_scored, first.tickers_skipped
        )  # fmt: skip
        _assert_same_forecasts(_published_then_cleared(ctx), reference)
    assert len(reference) == whole["ticker"].nunique() * 25 * 10  # 25 days x 10 horizons

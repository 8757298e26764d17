"""Score with an empty registry: the naive_ewma baseline is published, in a real DuckDB
warehouse (prices ingested, the indicator mart written directly: no dbt, no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import indicator_frame, random_walk_prices

pytest.importorskip("mlflow")

TICKERS = {"AAA": 1, "BBB": 2}  # ticker -> seed
LAMBDA = 0.94
Z80, Z95 = 1.2815516, 1.9599640


@pytest.fixture
def home(stockcast_home, monkeypatch, tmp_path):
    """A home with prices and the indicator mart of two tickers (and one too short to
    forecast), and an empty MLflow store."""
    import duckdb

    from ml.context import build_context
    from ml.ingest import ingest_paths

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = build_context()
    ctx.warehouse.ensure_schema()
    prices = {t: random_walk_prices(300, seed=s) for t, s in TICKERS.items()}
    prices["CCC"] = random_walk_prices(30, seed=3)  # no 50-day average yet: skipped
    paths = []
    for ticker, frame in prices.items():
        path = tmp_path / f"{ticker}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    assert ingest_paths(ctx, paths).ok
    mart = pd.concat([indicator_frame(frame, t) for t, frame in prices.items()])
    with duckdb.connect(str(ctx.warehouse.path)) as con:
        con.execute("create schema if not exists marts")
        con.register("mart", mart)
        con.execute("create table marts.fct_daily_indicators as select * from mart")
    return ctx, mart


def _ewma_sigma(closes: np.ndarray) -> float:
    """RiskMetrics daily volatility after the last close, written out independently."""
    weighted = weights = 0.0
    for r in np.diff(np.log(closes)):
        weighted, weights = LAMBDA * weighted + r * r, LAMBDA * weights + 1
    return float(np.sqrt(weighted / weights))


def test_score_with_no_champion_publishes_the_naive_ewma_baseline(home):
    from ml import registry
    from ml.score import score

    ctx, mart = home
    ctx.tracking()
    assert registry.champion_version() is None
    messages: list[str] = []
    result = score(ctx, progress=messages.append)

    assert result.baseline and result.model_name == "naive_ewma"
    assert (result.model_version, result.run_id) == ("baseline", "")
    assert result.tickers_scored == 2 and result.tickers_skipped == ["CCC"]
    assert result.rows_written == 20
    assert messages == ["forecasting 2 tickers with the naive_ewma baseline (no model has "
                        "passed the promotion gate)"]  # fmt: skip
    # The scoring is an MLflow run of its own, saying what it published.
    from mlflow.tracking import MlflowClient

    run = MlflowClient().get_run(result.scoring_run_id)
    assert run.data.tags["stage"] == "score" and run.data.tags["model_name"] == "naive_ewma"
    assert run.data.metrics == {"tickers_scored": 2, "tickers_skipped": 1, "rows_written": 20}

    p = ctx.warehouse.query_df("select * from ml.predicted_prices order by ticker, horizon")
    assert len(p) == 20 and sorted(p["ticker"].unique()) == sorted(TICKERS)
    assert p["model_name"].eq("naive_ewma").all()
    assert p["model_version"].eq("baseline").all() and p["mlflow_run_id"].eq("").all()
    for ticker, rows in p.groupby("ticker"):
        history = mart[mart["ticker"] == ticker].sort_values("trade_date")
        last = history.iloc[-1]
        assert (pd.to_datetime(rows["as_of_date"]) == last["trade_date"]).all()
        assert (pd.to_datetime(rows["target_date"]) > last["trade_date"]).all()
        # Naive: the forecast is the last close, at every horizon.
        np.testing.assert_allclose(rows["predicted_close"], last["close"], rtol=1e-12)
        # Nested intervals around it, widening with the horizon as sqrt(h) EWMA volatility.
        assert (rows["lower_95"] < rows["lower_80"]).all()
        assert (rows["lower_80"] < rows["predicted_close"]).all()
        assert (rows["predicted_close"] < rows["upper_80"]).all()
        assert (rows["upper_80"] < rows["upper_95"]).all()
        assert (np.diff(rows["upper_80"] - rows["lower_80"]) > 0).all()
        assert (np.diff(rows["upper_95"] - rows["lower_95"]) > 0).all()
        sd = _ewma_sigma(history["close"].to_numpy()) * np.sqrt(rows["horizon"].to_numpy())
        np.testing.assert_allclose(rows["upper_80"], last["close"] * np.exp(Z80 * sd), rtol=1e-6)
        np.testing.assert_allclose(rows["lower_95"], last["close"] * np.exp(-Z95 * sd), rtol=1e-6)


def test_the_score_command_says_it_published_the_baseline(home):
    from ml.cli import main

    ctx, _ = home
    result = CliRunner().invoke(main, ["score"])
    assert result.exit_code == 0, result.output
    assert (
        "no model has passed the promotion gate: published the naive_ewma baseline for 2 "
        "tickers (20 rows in ml.predicted_prices; `stockcast train` trains and gates a model)"
    ) in result.stdout
    assert "skipped, too little history: CCC" in result.stdout
    written = ctx.warehouse.query_df("select distinct model_name from ml.predicted_prices")
    assert written["model_name"].tolist() == ["naive_ewma"]


def test_a_backfill_with_no_champion_publishes_the_baseline_as_of_every_day_once(home):
    """`score --since` before any model passed the gate: the baseline as of every trading day
    since the date (what was due is judged at once), none of it in-sample, and a rerun adds
    nothing."""
    from ml.score import score

    ctx, mart = home
    ctx.tracking()
    first = score(ctx)  # the latest as-of date is published already: kept as it is
    kept = ctx.warehouse.query_df("select scored_at from ml.predicted_prices")["scored_at"]
    days = sorted(mart.loc[mart["ticker"] == "AAA", "trade_date"])
    since = pd.Timestamp(days[-30]).date()
    messages: list[str] = []
    result = score(ctx, progress=messages.append, since=since)

    assert result.baseline and result.tickers_scored == 2
    assert result.rows_written == 2 * 29 * 10  # 30 days since, the last one published before
    assert messages[0] == f"keeping 2 forecasts already published since {since}"
    rows = ctx.warehouse.query_df(
        "select ticker, as_of_date, horizon, predicted_close, model_data_end, scored_at "
        "from ml.predicted_prices"
    )
    assert len(rows) == first.rows_written + result.rows_written
    per_day = rows.groupby(["ticker", "as_of_date"]).size()
    assert (per_day == 10).all() and len(per_day) == 2 * 30
    assert rows["model_data_end"].isna().all()  # the baseline fits nothing: never in-sample
    assert set(kept) <= set(rows["scored_at"])  # the earlier forecasts were not rewritten
    for (ticker, as_of), group in rows.groupby(["ticker", "as_of_date"]):
        close = mart.set_index(["ticker", "trade_date"]).loc[(ticker, as_of), "close"]
        np.testing.assert_allclose(group["predicted_close"], close, rtol=1e-12)
    with pytest.raises(ValueError, match=f"nothing to backfill since {since}"):
        score(ctx, since=since)

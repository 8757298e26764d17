"""The monitor loop on real prices: a tiny LSTM trained on 2015-01..2019-06, its forecasts
replayed day by day as a daily job would have written them, real dbt marts, real Evidently,
real MLflow, and the real train + promote stages as the retrain.

One warehouse, two periods, in order (the second builds on the first):

* calm: forecasts as of 2019-07-01..2019-12-31; nothing crosses, nothing retrains;
* regime change: the same champion's forecasts as of 2020-01-02..2020-03-31 (the COVID crash):
  the inputs drift and the realized accuracy breaks down; the retrain runs and the promotion
  gate's decision is recorded on the monitor's MLflow run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, YAHOO, indicator_frame, isolated_home, tiny_train_config

pytest.importorskip("tensorflow")
pytest.importorskip("evidently")


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not YAHOO.exists(), reason="../shared/data is not beside the repo"),
]

TICKERS = ["AAPL", "JPM", "CVX", "KO"]
START = "2015-01-02"
TRAINED_TO = "2019-06-28"
CALM = ("2019-07-01", "2019-12-31")
CRASH = ("2020-01-02", "2020-03-31")
TINY = tiny_train_config(gate_folds=1, use_tuned=False)
ACCURACY_WINDOW = 63  # dbt var accuracy_window_sessions


def _prices(end: str) -> dict[str, pd.DataFrame]:
    out = {}
    for ticker in TICKERS:
        frame = pd.read_csv(YAHOO / f"{ticker}.csv.gz", na_values="null")
        out[ticker] = frame[(frame["Date"] >= START) & (frame["Date"] <= end)]
    return out


def _load(ctx, prices: dict[str, pd.DataFrame], folder) -> None:
    """Ingest the slices (the same file names each time: a later slice extends the history)."""
    from ml.ingest import ingest_paths

    folder.mkdir(exist_ok=True)
    paths = []
    for ticker, frame in prices.items():
        path = folder / f"{ticker}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    assert ingest_paths(ctx, paths).ok


def _indicators(prices: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The indicator mart's columns (TA-Lib, which the mart equals: tests/test_indicator_parity)."""
    frames = []
    for ticker, frame in prices.items():
        bars = frame.dropna().reset_index(drop=True)
        bars["Date"] = pd.to_datetime(bars["Date"])
        frames.append(indicator_frame(bars, ticker))
    return pd.concat(frames, ignore_index=True)


def _replay(ctx, prices: dict[str, pd.DataFrame], start: str, end: str) -> int:
    """The champion's forecasts as of every session in start..end, written as `score` writes
    them (what a daily job would have stored): the real model on the real windows."""
    from ml import registry
    from ml.features import HORIZONS, build_feature_frame, make_windows
    from ml.score import next_trading_days

    champion = registry.load_champion()
    frame = build_feature_frame(_indicators(prices))
    windows = make_windows(
        frame,
        int(champion.meta["window"]),
        features=champion.meta["features"],
        require_targets=False,
        as_of_from=pd.Timestamp(start),
        as_of_to=pd.Timestamp(end),
    )
    log_returns, bounds = champion.model.unwrap_python_model().forecast(windows.x)
    as_of = [pd.Timestamp(d) for d in windows.as_of_dates]
    targets = next_trading_days(as_of, HORIZONS)
    close = np.asarray(windows.as_of_close, dtype=np.float64)[:, None]
    columns = {
        "ticker": np.repeat(windows.tickers, HORIZONS),
        "as_of_date": np.repeat([d.date() for d in as_of], HORIZONS),
        "target_date": [day for d in as_of for day in targets[d]],
        "horizon": np.tile(np.arange(1, HORIZONS + 1), len(windows)),
        "predicted_close": (close * np.exp(log_returns)).ravel(),
    }
    for column in ("lower_80", "upper_80", "lower_95", "upper_95"):
        columns[column] = (close * np.exp(bounds[column])).ravel()
    predictions = pd.DataFrame(columns).assign(
        model_name="stockcast-lstm",
        model_version=champion.version,
        mlflow_run_id=champion.run_id,
        scored_at=pd.Timestamp.now(tz="UTC").tz_localize(None),
    )
    return ctx.warehouse.replace_predictions(predictions)


def _build_marts(ctx) -> None:
    from ml.transform import transform

    transform(
        ctx,
        select="+fct_champion_accuracy_latest +fct_forecast_accuracy_by_horizon",
        echo=lambda line: None,
    )


def _train_and_promote(ctx, messages):
    from ml.promote import promote
    from ml.train import train

    return promote(ctx, train(ctx, TINY, progress=messages.append), progress=messages.append)


def _monitor_runs(ctx, as_of: str):
    from mlflow.tracking import MlflowClient

    experiment = ctx.tracking()
    return MlflowClient().search_runs(
        [experiment],
        filter_string=f"tags.stage = 'monitor' and tags.monitor_as_of_date = '{as_of}'",
    )


def _versions(ctx) -> list[str]:
    from mlflow.tracking import MlflowClient

    from ml.config import MODEL_NAME

    ctx.tracking()
    return sorted(
        str(v.version) for v in MlflowClient().search_model_versions(f"name = '{MODEL_NAME}'")
    )


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """A champion trained to 2019-06 (forced: a one-epoch model need not pass the gate)."""
    import duckdb

    home = tmp_path_factory.mktemp("monitor_home")
    inputs = tmp_path_factory.mktemp("monitor_inputs")
    with isolated_home(home):
        from ml.context import build_context
        from ml.promote import promote
        from ml.train import train

        ctx = build_context()
        ctx.warehouse.ensure_schema()
        trained = _prices(TRAINED_TO)
        _load(ctx, trained, inputs)
        # Training reads only the indicator mart: written directly (TA-Lib, the mart's
        # reference), so that the one dbt build per period below does all the dbt work.
        with duckdb.connect(str(ctx.warehouse.path)) as con:
            con.execute("create schema if not exists marts")
            con.register("mart", _indicators(trained))
            con.execute("create table marts.fct_daily_indicators as select * from mart")
        result = train(ctx, TINY)
        promote(ctx, result, force=True)
        yield {"ctx": ctx, "inputs": inputs, "home": home, "champion": result}


@pytest.fixture(scope="module")
def calm(loop):
    with isolated_home(loop["home"]):
        ctx = loop["ctx"]
        prices = _prices(CALM[1])
        _load(ctx, prices, loop["inputs"])
        written = _replay(ctx, prices, *CALM)
        _build_marts(ctx)
        from ml.monitor import monitor

        messages: list[str] = []
        report = monitor(ctx, progress=messages.append, publish=False)
        yield {**loop, "report": report, "prices": prices, "written": written}


@pytest.fixture(scope="module")
def crash(calm):
    with isolated_home(calm["home"]):
        ctx = calm["ctx"]
        prices = _prices(CRASH[1])
        _load(ctx, prices, calm["inputs"])
        _replay(ctx, prices, *CRASH)
        _build_marts(ctx)
        from ml.monitor import monitor

        report = monitor(ctx)  # publishes fct_feature_drift
        yield {**calm, "report": report}


def test_calm_period_crosses_nothing_and_does_not_retrain(calm):
    from ml.monitor import retrain_if_needed

    ctx, report = calm["ctx"], calm["report"]
    t = ctx.settings.monitor
    assert report.status == "monitored"
    assert (report.as_of_date, report.model_version) == (
        "2019-12-31",
        calm["champion"].model_version,
    )
    # Drift: every input and the three forecast horizons compared over the last 21 sessions.
    drift = report.drift
    assert drift is not None and drift.window_end == "2019-12-31"
    assert set(drift.scores["column_kind"]) == {"input", "prediction"}
    assert len(drift.scores) == len(TINY.features) + 3
    assert drift.scores["drift_score"].notna().all()
    assert drift.share < t.drift_share
    # Realized accuracy: enough forecasts are due, and judged.
    accuracy = report.accuracy
    assert accuracy.window_forecasts >= t.min_realized
    assert accuracy.rel_mae is not None and accuracy.coverage_80 is not None
    assert report.retrain_reasons == [], report.lines()

    calls = []
    decision = retrain_if_needed(ctx, report, retrain=lambda: calls.append(1))
    assert not decision.retrained and calls == []
    assert _versions(ctx) == [calm["champion"].model_version]
    (run,) = _monitor_runs(ctx, "2019-12-31")
    assert run.data.tags["retrain_decision"] == "none"
    assert run.data.tags["retrain_advised"] == "false"
    print("\ncalm:", *report.lines(), f"monitor took {report.seconds:.1f} s", sep="\n  ")


def test_realized_relative_mae_above_its_threshold_advises_a_retrain(calm):
    """The calm period's real realized accuracy, judged against thresholds set just below and
    at its relative MAE: only a strictly higher MAE is a reason (coverage is kept out)."""
    import dataclasses

    from ml.monitor import MonitorReport, _judge_accuracy

    accuracy = calm["report"].accuracy
    loose = dataclasses.replace(calm["ctx"].settings.monitor, coverage_gap=1.0)

    def judged(rel_mae_threshold: float) -> list[str]:
        thresholds = dataclasses.replace(loose, rel_mae=rel_mae_threshold)
        report = MonitorReport(thresholds=thresholds, accuracy=accuracy)
        _judge_accuracy(report)
        return report.retrain_reasons

    (reason,) = judged(accuracy.rel_mae - 0.001)
    assert reason.startswith(f"realized relative MAE vs naive {accuracy.rel_mae:.3f} is above")
    assert f"over {accuracy.window_forecasts} forecasts due {accuracy.window_start}" in reason
    assert judged(accuracy.rel_mae) == []
    too_few = dataclasses.replace(loose, rel_mae=0.0, min_realized=accuracy.window_forecasts + 1)
    report = MonitorReport(thresholds=too_few, accuracy=accuracy)
    _judge_accuracy(report)
    assert report.retrain_reasons == [] and report.notes[0].startswith("accuracy not judged")


def test_the_accuracy_marts_agree_with_pandas_on_the_replayed_forecasts(calm):
    """The rolling relative MAE and coverage the monitor read, recomputed from the forecasts and
    the closes with pandas: the last 63 sessions of target dates up to 2019-12-31."""
    ctx, report = calm["ctx"], calm["report"]
    wh = ctx.warehouse
    forecasts = wh.query_df("select * from ml.predicted_prices")
    closes = pd.concat(
        frame.dropna().assign(ticker=ticker) for ticker, frame in calm["prices"].items()
    )
    closes["Date"] = pd.to_datetime(closes["Date"])
    close = closes.set_index(["ticker", "Date"])["Close"]
    forecasts["target_date"] = pd.to_datetime(forecasts["target_date"])
    forecasts["as_of_date"] = pd.to_datetime(forecasts["as_of_date"])
    forecasts["actual"] = close.reindex(
        pd.MultiIndex.from_frame(forecasts[["ticker", "target_date"]])
    ).to_numpy()
    forecasts["as_of_close"] = close.reindex(
        pd.MultiIndex.from_frame(forecasts[["ticker", "as_of_date"]])
    ).to_numpy()
    realized = forecasts.dropna(subset=["actual"])
    sessions = np.sort(closes["Date"].unique())
    window = realized[realized["target_date"] >= sessions[-ACCURACY_WINDOW]]
    error = np.abs(np.log(window["predicted_close"] / window["actual"]))
    naive = np.abs(np.log(window["as_of_close"] / window["actual"]))
    covered = (window["actual"] >= window["lower_80"]) & (window["actual"] <= window["upper_80"])
    a = report.accuracy
    assert a.window_forecasts == len(window)
    assert a.n_realized == len(realized)
    assert a.rel_mae == pytest.approx(error.mean() / naive.mean(), rel=1e-9)
    assert a.coverage_80 == pytest.approx(covered.mean(), rel=1e-9)
    by_horizon = wh.query_df(
        "select horizon, n_forecasts, rel_mae from marts.fct_forecast_accuracy_by_horizon "
        "where ticker = '__all__' order by horizon"
    )
    assert by_horizon["horizon"].tolist() == list(range(1, 11))
    assert by_horizon["n_forecasts"].sum() == len(realized)


def test_monitoring_again_replaces_its_rows_and_loads_no_tensorflow(calm):
    """A second monitor of the same forecasts, in a fresh process: the same drift rows (replaced,
    not appended), the same MLflow run, and TensorFlow never imported."""
    ctx, report = calm["ctx"], calm["report"]
    before = ctx.warehouse.query_df("select * from ml.drift_scores order by column_name")
    code = (
        "import json, sys; from ml.context import build_context; from ml.monitor import monitor; "
        "r = monitor(build_context(), publish=False); "
        "print(json.dumps({'share': r.drift_share, 'run': r.monitor_run_id, "
        "'tf': sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)}))"
    )
    env = {**os.environ, "STOCKCAST_HOME": str(calm["home"])}
    for name in ("STOCKCAST_DUCKDB_PATH", "MLFLOW_TRACKING_URI", "STOCKCAST_TARGET"):
        env.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    again = json.loads(out.stdout.strip().splitlines()[-1])
    assert again == {"share": report.drift_share, "run": report.monitor_run_id, "tf": []}
    after = ctx.warehouse.query_df("select * from ml.drift_scores order by column_name")
    assert len(after) == len(before) == len(report.drift.scores)
    keep = ["as_of_date", "column_name", "drift_score", "is_drifted", "monitor_run_id"]
    pd.testing.assert_frame_equal(after[keep], before[keep])
    assert len(_monitor_runs(ctx, "2019-12-31")) == 1
    assert report.report_path is not None and report.report_path.is_file()
    assert "<html" in report.report_path.read_text()[:2000].lower()


def test_a_champion_without_a_logged_reference_is_compared_with_its_rebuilt_fit_period(calm):
    """A model trained before train logged the reference sample: the monitor rebuilds the
    reference from the warehouse for the fit period in its meta, and says so."""
    import shutil

    import mlflow

    from ml.monitor import REFERENCE_INPUTS, monitor

    ctx, report = calm["ctx"], calm["report"]
    ctx.tracking()
    logged = mlflow.artifacts.download_artifacts(f"runs:/{report.mlflow_run_id}/{REFERENCE_INPUTS}")
    run = mlflow.get_run(report.mlflow_run_id)
    stored = Path(run.info.artifact_uri.removeprefix("file://")) / REFERENCE_INPUTS
    assert stored.is_file()
    aside = stored.with_suffix(".aside")
    shutil.move(stored, aside)
    try:
        again = monitor(ctx, publish=False)
    finally:
        shutil.move(aside, stored)
    assert any("rebuilt from the warehouse for its fit period" in n for n in again.notes)
    # Another sample of the same period: about the same verdict, column by column.
    assert again.drift.share == pytest.approx(report.drift.share, abs=0.1)
    assert set(again.drift.scores["column_name"]) == set(report.drift.scores["column_name"])
    # The logged sample is the fit period's inputs: nothing from early stopping or validation.
    meta = mlflow.artifacts.load_dict(f"runs:/{report.mlflow_run_id}/model_meta.json")
    dates = pd.read_parquet(logged)["trade_date"]
    assert dates.min() >= pd.Timestamp(meta["fit_as_of_start"])
    assert dates.max() <= pd.Timestamp(meta["fit_as_of_end"]) < pd.Timestamp(meta["stop_start"])
    monitor(ctx, publish=False)  # back to the logged reference for the tests that follow


def test_regime_change_crosses_thresholds_and_the_retrain_is_gated(crash):
    from ml.gate import GateDecision
    from ml.monitor import retrain_if_needed

    ctx, report = crash["ctx"], crash["report"]
    t = ctx.settings.monitor
    assert (report.as_of_date, report.model_version) == (
        "2020-03-31",
        crash["champion"].model_version,
    )
    assert report.drift.share >= t.drift_share
    assert any(reason.startswith("input drift share") for reason in report.retrain_reasons)
    accuracy = report.accuracy
    assert accuracy.window_forecasts >= t.min_realized
    # The COVID crash broke the intervals calibrated on 2019: far fewer actuals inside.
    assert accuracy.coverage_80 < 0.80 - t.coverage_gap
    assert any("80% intervals covered" in reason for reason in report.retrain_reasons)

    # The drift mart was rebuilt over the new rows.
    mart = ctx.warehouse.query_df(
        "select * from marts.fct_feature_drift where as_of_date = date '2020-03-31'"
    )
    assert len(mart) == len(report.drift.scores)
    assert mart["input_drift_share"].iloc[0] == pytest.approx(report.drift.share)
    assert set(mart["monitor_run_id"]) == {report.monitor_run_id}

    messages: list[str] = []
    versions = _versions(ctx)
    decision = retrain_if_needed(
        ctx, report, retrain=lambda: _train_and_promote(ctx, messages), progress=messages.append
    )
    assert decision.retrained and decision.reasons == report.retrain_reasons
    gate = decision.result
    assert isinstance(gate, GateDecision) and gate.alias in ("champion", "challenger")
    assert len(_versions(ctx)) == len(versions) + 1
    (run,) = _monitor_runs(ctx, "2020-03-31")
    tags = run.data.tags
    assert tags["retrain_decision"] == "retrained"
    assert tags["retrain_gate_alias"] == gate.alias
    assert tags["retrain_gate_reason"] == gate.reason
    assert run.data.metrics["drift_share"] == pytest.approx(report.drift.share)
    artifacts = {a.path for a in _artifacts(run.info.run_id)}
    assert {"monitoring/drift_scores.csv", f"monitoring/{report.report_path.name}"} <= artifacts
    print("\nregime change:", *report.lines(), f"gate: {gate.alias}: {gate.reason}", sep="\n  ")


def _artifacts(run_id: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient().list_artifacts(run_id, "monitoring")


def test_monitor_command_before_any_champion_or_due_forecast(stockcast_home, monkeypatch, tmp_path):
    """A newcomer's first `stockcast monitor`: real prices loaded, the naive_ewma baseline
    published (no champion), nothing due yet and no marts built. It says what it cannot judge
    and why, advises nothing and exits 0."""
    import duckdb
    from click.testing import CliRunner

    from ml.cli import main
    from ml.context import build_context

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = build_context()
    ctx.warehouse.ensure_schema()
    prices = {"KO": _prices("2019-12-31")["KO"]}
    _load(ctx, prices, tmp_path / "in")
    with duckdb.connect(str(ctx.warehouse.path)) as con:
        con.execute("create schema if not exists marts")
        con.register("mart", _indicators(prices))
        con.execute("create table marts.fct_daily_indicators as select * from mart")
    runner = CliRunner()
    assert runner.invoke(main, ["score"]).exit_code == 0
    result = runner.invoke(main, ["monitor", "--fail-on-alert"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "monitored naive_ewma vbaseline, forecasts as of 2019-12-31" in out
    assert "no realized accuracy: marts.fct_champion_accuracy_latest is not built" in out
    assert "no drift check: the forecasts are the naive_ewma baseline's" in out
    assert "no retrain advised" in out
    assert (
        not ctx.warehouse.table_exists("ml.drift_scores")
        or ctx.warehouse.query_df("select count(*) as n from ml.drift_scores")["n"].iloc[0] == 0
    )

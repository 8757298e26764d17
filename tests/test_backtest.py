"""Walk-forward backtest: same origins for every model, fold models blind to their test block,
results stored in the warehouse and MLflow. Tiny model settings on small real slices."""

from __future__ import annotations

import os
import shutil
import socket

import numpy as np
import pandas as pd
import pytest
from helpers import YAHOO, indicator_frame, isolated_home, read_yahoo

pytest.importorskip("tensorflow")

from ml.backtest import BacktestConfig, run_backtest
from ml.evaluate import POOLED
from ml.features import build_feature_frame
from ml.fitting import TrainConfig
from ml.model import ModelParams

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not YAHOO.exists(), reason="../shared/data is not beside the repo"),
]
TICKERS = ["KO", "JNJ", "CVX"]
TINY = BacktestConfig(
    n_folds=2,
    test_days=5,
    models=("lstm", "lstm_raw", "naive", "drift", "ewma", "garch"),
    train=TrainConfig(
        params=ModelParams(window=10, units=4, dropout=0.0, epochs=1, batch_size=256, seed=3),
        stop_days=40,
        train_years=None,
        max_train_samples=2000,
    ),
)


def _indicators(scale_after: pd.Timestamp | None = None) -> pd.DataFrame:
    frames = []
    for ticker in TICKERS:
        prices = read_yahoo(ticker).tail(700).reset_index(drop=True)
        if scale_after is not None:
            later = prices["Date"] > scale_after
            prices.loc[later, ["Open", "High", "Low", "Close"]] *= 3.0
        frames.append(indicator_frame(prices, ticker))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def result():
    return run_backtest(build_feature_frame(_indicators()), TINY)


def test_every_model_forecasts_the_same_origins(result):
    keys = ["fold", "ticker", "as_of_date", "horizon"]
    by_model = {
        model: group[keys].sort_values(keys).reset_index(drop=True)
        for model, group in result.forecasts.groupby("model")
    }
    assert set(by_model) == set(TINY.models)
    reference = by_model["naive"]
    assert len(reference) == 2 * 5 * len(TICKERS) * 10
    for frame in by_model.values():
        pd.testing.assert_frame_equal(frame, reference)


def test_metrics_are_relative_to_naive_on_the_same_rows(result):
    pooled = result.pooled().set_index(["model", "horizon"])
    assert (pooled.loc["naive", "rel_mae"] == 1.0).all()
    assert pooled.loc["lstm", "coverage_80"].between(0, 1).all()
    assert pooled.loc["drift", "coverage_80"].isna().all()  # no intervals claimed
    assert pooled.loc["drift", "pinball"].isna().all()
    for model in ("ewma", "garch"):  # naive point forecasts with volatility intervals
        assert (pooled.loc[model, "rel_mae"] == 1.0).all()
        assert pooled.loc[model, "coverage_95"].between(0, 1).all()
        assert (pooled.loc[model, "width_80"] < pooled.loc[model, "width_95"]).all()
        assert (pooled.loc[model, "pinball"] > 0).all()
    per_ticker = result.metrics[result.metrics["ticker"] != POOLED]
    assert set(per_ticker["ticker"]) == set(TICKERS)


@pytest.mark.parametrize("fold", [0, 1])
def test_fold_models_never_see_their_test_block(result, fold):
    """Tripling every price after a fold's first as-of date leaves that date's forecasts as
    they were: the fold's model was fit, scaled and calibrated on earlier data only (fold 1
    reuses fold 0's network and is recalibrated on the block just before it)."""
    first = result.folds[fold].test_start
    perturbed = run_backtest(build_feature_frame(_indicators(scale_after=first)), TINY)

    def at_first_origin(frame):
        rows = frame[(frame["fold"] == fold) & (frame["as_of_date"] == first)]
        return rows.sort_values(["model", "ticker", "horizon"]).reset_index(drop=True)

    before, after = at_first_origin(result.forecasts), at_first_origin(perturbed.forecasts)
    for column in ("predicted_log_return", "lower_80", "upper_95"):
        np.testing.assert_allclose(after[column], before[column], rtol=1e-5, atol=1e-7)
    # ...while the actuals did change: the perturbation is real.
    assert not np.allclose(after["actual_log_return"], before["actual_log_return"])


def test_the_published_lstm_is_the_raw_one_shrunk_toward_naive_per_fold_and_horizon(result):
    forecasts = result.forecasts.set_index(["fold", "ticker", "as_of_date", "horizon"])
    published = forecasts[forecasts["model"] == "lstm"]["predicted_log_return"]
    raw = forecasts[forecasts["model"] == "lstm_raw"]["predicted_log_return"]
    ratio = (published / raw.reindex(published.index)).groupby(["fold", "horizon"])
    assert (ratio.max() - ratio.min()).max() < 1e-9  # one weight per fold and horizon
    assert ratio.max().between(0, 1).all()
    pooled = result.pooled().set_index(["model", "horizon"])["rel_mae"]
    shrunk = ratio.max() < 1  # where the weight is 0 the forecast is exactly naive
    assert shrunk.any()
    for fold, horizon in ratio.max()[ratio.max() == 0].index:
        rows = published.xs((fold, horizon), level=("fold", "horizon"))
        assert (rows == 0).all()
    assert pooled.loc["lstm"].notna().all()


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """The backtest stage on a real warehouse: ingest -> dbt -> backtest -> MLflow + tables."""
    home = tmp_path_factory.mktemp("home")
    inputs = tmp_path_factory.mktemp("inputs")
    for ticker in TICKERS:
        shutil.copy(YAHOO / f"{ticker}.csv.gz", inputs)
    with isolated_home(home):
        from ml.backtest import backtest
        from ml.context import build_context
        from ml.ingest import ingest_paths
        from ml.transform import transform

        ctx = build_context()
        assert ingest_paths(ctx, [inputs]).ok
        transform(ctx)
        config = BacktestConfig(
            n_folds=2,
            test_days=5,
            models=("lstm", "naive", "drift", "ets", "peer_lstm"),
            train=TINY.train,
            peer_epochs=1,
        )
        first = backtest(ctx, config)
        second = backtest(ctx, config)
        yield first, second, ctx


def test_backtest_results_are_stored_per_run(stored):
    first, second, ctx = stored
    warehouse = ctx.warehouse
    metrics = warehouse.query_df("select * from ml.backtest_metrics")
    assert set(metrics["backtest_run_id"]) == {first.run_id, second.run_id}
    one = metrics[metrics["backtest_run_id"] == first.run_id]
    assert len(one) == 5 * (len(TICKERS) + 1) * 10  # models x (tickers + pooled) x horizons
    forecasts = warehouse.query_df(
        "select count(*) as n from ml.backtest_forecasts where backtest_run_id = ?",
        [first.run_id],
    )
    assert forecasts["n"].iloc[0] == len(first.forecasts)


def test_backtest_runs_carry_their_process_so_a_killed_one_is_recovered(stored):
    import mlflow

    from ml.registry import HOST_TAG, PID_TAG

    first, _, ctx = stored
    ctx.tracking()
    tags = mlflow.get_run(first.run_id).data.tags
    assert tags[PID_TAG] == str(os.getpid()) and tags[HOST_TAG] == socket.gethostname()


def test_same_seed_same_data_same_metrics(stored):
    first, second, _ = stored
    a = first.metrics.sort_values(["model", "ticker", "horizon"]).reset_index(drop=True)
    b = second.metrics.sort_values(["model", "ticker", "horizon"]).reset_index(drop=True)
    numeric = a.select_dtypes("number").columns
    np.testing.assert_allclose(a[numeric].to_numpy(), b[numeric].to_numpy(), rtol=1e-6, atol=1e-9)


def test_backtest_run_is_in_mlflow_with_plots(stored):
    import mlflow
    from mlflow.tracking import MlflowClient

    first, _, ctx = stored
    settings = ctx.settings
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = MlflowClient()
    run = client.get_run(first.run_id)
    assert run.data.tags["stage"] == "backtest"
    assert "lstm/rel_mae_h1" in run.data.metrics and "ets/coverage_95_h10" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"error_by_horizon.png", "fan_charts.png", "backtest_metrics.csv"} <= artifacts
    # The last fold starts in January 2022: a regime fold, so the per-regime table is logged.
    assert [f.regime for f in first.folds] == [None, "2022 bear"]
    assert "regimes.csv" in artifacts


def test_tuning_runs_nested_trials_and_train_starts_from_the_best(stored):
    import mlflow
    from mlflow.tracking import MlflowClient

    from ml.promote import promote
    from ml.train import train
    from ml.tune import tune
    from ml.tuned import best_params

    _, _, ctx = stored
    settings = ctx.settings

    def tiny_search(trial, base):
        from dataclasses import replace

        return replace(base, units=trial.suggest_categorical("units", [2, 4]), epochs=1)

    result = tune(ctx, 2, TINY.train, n_folds=1, test_days=5, search=tiny_search)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = MlflowClient()
    children = client.search_runs(
        [client.get_run(result.run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'",
    )
    assert len(children) == 2
    assert all("walk_forward_rel_mae" in c.data.metrics for c in children)
    scores = [c.data.metrics["walk_forward_pinball_vs_ewma"] for c in children]
    assert min(scores) == pytest.approx(result.best_score)
    assert all(0.5 < score < 2 for score in scores)  # a ratio to the EWMA baseline's loss

    tuned, run_id = best_params()
    assert run_id == result.run_id and tuned.units == result.best_params.units
    # The backtest starts from the tuned settings too (nothing is fit here: naive only), unless
    # told to ignore them.
    from ml.backtest import backtest
    from ml.fitting import TrainConfig

    for use_tuned in (True, False):
        config = BacktestConfig(
            n_folds=1, test_days=5, models=("naive",), train=TrainConfig(use_tuned=use_tuned)
        )
        tested = client.get_run(backtest(ctx, config).run_id)
        assert tested.data.tags.get("tuned_from_run") == (result.run_id if use_tuned else None)
        expected = tuned.units if use_tuned else TrainConfig().params.units
        assert tested.data.params["lstm_units"] == str(expected)
    trained = train(ctx, TINY.train)  # TINY sets units=4: explicit still wins
    run = client.get_run(trained.run_id)
    assert run.data.tags["tuned_from_run"] == result.run_id
    assert run.data.params["units"] == "4"
    assert trained.config.params.units == 4 and trained.config.params.epochs == 1
    # Training registers and stops there: the promotion stage gives the version its alias.
    assert "gate_alias" not in run.data.tags
    assert not client.get_model_version("stockcast-lstm", trained.model_version).aliases
    messages: list[str] = []
    decision = promote(ctx, trained, progress=messages.append)
    run = client.get_run(trained.run_id)
    # The gate decided and recorded why; a forced promotion is recorded as such.
    assert run.data.tags["gate_alias"] == decision.alias
    assert decision.alias in {"champion", "challenger"}
    assert run.data.tags["gate_reason"] == decision.reason
    assert float(run.data.tags["gate_candidate_rel_mae"]) > 0
    assert run.data.metrics["gate_candidate_rel_mae"] == decision.candidate_rel_mae
    version = client.get_model_version("stockcast-lstm", trained.model_version)
    assert version.aliases == [decision.alias]
    # Progress as it goes: the gate's folds and models, with the time taken.
    assert messages[0].startswith("promotion gate: walk-forward over")
    assert any(m.startswith("  fold 1/") and "candidate: done in" in m for m in messages)
    assert messages[-1].startswith(f"gate: {decision.alias}: ")
    forced = train(ctx, TINY.train)
    forced_decision = promote(ctx, forced, force=True)
    forced_run = client.get_run(forced.run_id)
    assert forced_run.data.tags["gate_forced"] == "True"
    assert forced_decision.alias == "champion"
    champion = client.get_model_version_by_alias("stockcast-lstm", "champion")
    assert str(champion.version) == forced.model_version


def test_lstms_with_different_windows_forecast_the_same_origins():
    """A tuned candidate may use another window than the champion: both are judged on the
    origins of the longest window, each reading its own window of history."""
    from dataclasses import replace

    config = replace(
        TINY,
        n_folds=1,
        models=("lstm", "short", "naive"),
        variants={"short": replace(TINY.train.params, window=5)},
    )
    forecasts = run_backtest(build_feature_frame(_indicators()), config).forecasts
    keys = ["ticker", "as_of_date", "horizon"]
    by_model = {
        m: g[keys].sort_values(keys).reset_index(drop=True) for m, g in forecasts.groupby("model")
    }
    assert len(by_model["short"]) == len(TICKERS) * 5 * 10
    pd.testing.assert_frame_equal(by_model["short"], by_model["lstm"])
    # Really a different model: its intervals differ (the point forecasts of both may be shrunk
    # all the way to naive).
    short = forecasts[forecasts["model"] == "short"]["lower_80"].to_numpy()
    long = forecasts[forecasts["model"] == "lstm"]["lower_80"].to_numpy()
    assert np.isfinite(short).all() and not np.allclose(short, long)


def test_the_regime_table_is_backtest_metrics_on_each_regimes_rows(result):
    from dataclasses import replace

    from ml.evaluate import REGIME_METRICS, backtest_metrics, regime_metrics

    folds = [replace(result.folds[0], regime="calm"), replace(result.folds[1], regime=None)]
    table = regime_metrics(result.forecasts, folds).set_index(["regime", "model"])
    assert list(table.index.unique("regime")) == ["calm", "other"]  # in time order
    for regime, fold in (("calm", 0), ("other", 1)):
        rows = result.forecasts[result.forecasts["fold"] == fold]
        pooled = backtest_metrics(rows, pd.DataFrame(columns=["fold", "ticker", "scale"]))
        expected = pooled[pooled["ticker"] == POOLED].groupby("model")[list(REGIME_METRICS)]
        got = table.loc[regime, list(REGIME_METRICS)].sort_index()
        pd.testing.assert_frame_equal(got, expected.mean().sort_index(), check_names=False)
        assert (table.loc[regime, "n_folds"] == 1).all()
    assert (table.xs("naive", level="model")["rel_mae"] == 1).all()
    assert table.xs("drift", level="model")["coverage_80"].isna().all()  # no intervals
    assert table.xs("garch", level="model")["winkler_95"].gt(0).all()
    unlabelled = [replace(fold, regime=None) for fold in result.folds]
    assert regime_metrics(result.forecasts, unlabelled).empty


def test_regime_folds_test_each_reached_regime_and_say_which_were_skipped():
    from dataclasses import replace

    from ml.backtest import regime_table

    said: list[str] = []
    config = replace(TINY, models=("naive", "ewma"), regimes=True)
    regimes = run_backtest(build_feature_frame(_indicators()), config, progress=said.append)
    # The slices start in 2019 and end in January 2022 (5 as-of days of 2022 have actuals).
    assert [f.regime for f in regimes.folds] == ["2020 crash", "2022 bear"]
    assert regimes.folds[0].test_start == pd.Timestamp("2020-02-20")
    skipped = [m for m in said if m.startswith("regime ")]
    assert len(skipped) == 4 and skipped[0].startswith("regime 2008 crisis skipped: the data")
    table = regime_table(regimes)
    assert list(table["regime"].unique()) == ["2020 crash", "2022 bear"]
    ewma = table[table["model"] == "ewma"]
    assert ewma["coverage_95"].between(0, 1).all() and (ewma["rel_mae"] == 1).all()
    with pytest.raises(ValueError, match="leave out start and end"):
        run_backtest(build_feature_frame(_indicators()), replace(config, start="2020-01-01"))


def test_baseline_fits_serve_consecutive_folds_and_never_see_them(monkeypatch):
    """peer_lstm and GARCH fit once for folds within ``refit_days`` of the fit, each fit
    knowing only closes before its cutoff (a fit on the frame cut there is the same); with
    ``refit_days=0`` every fold refits and GARCH is the one-call forecast of each fold."""
    from dataclasses import replace

    import ml.baselines
    from ml.features import make_windows

    fits: list[tuple[str, pd.Timestamp]] = []
    real_peer, real_garch = ml.baselines.fit_peer_lstm, ml.baselines.fit_garch_models

    def peer(frame, cutoff, **kwargs):
        fit = real_peer(frame, cutoff, **kwargs)
        blind = real_peer(frame[frame["trade_date"] < cutoff], cutoff, **kwargs)
        assert blind.scalers == fit.scalers
        for a, b in zip(blind.network.get_weights(), fit.network.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        fits.append(("peer_lstm", cutoff))
        return fit

    def garch(frame, cutoff, tickers=None, **kwargs):
        fit = real_garch(frame, cutoff, tickers, **kwargs)
        assert real_garch(frame[frame["trade_date"] < cutoff], cutoff, tickers, **kwargs) == fit
        fits.append(("garch", cutoff))
        return fit

    monkeypatch.setattr(ml.baselines, "fit_peer_lstm", peer)
    monkeypatch.setattr(ml.baselines, "fit_garch_models", garch)
    frame = build_feature_frame(_indicators())
    config = replace(
        TINY, n_folds=3, models=("garch", "peer_lstm"), peer_epochs=1, peer_samples=500
    )
    reused = run_backtest(frame, config)
    first = reused.folds[0].test_start
    assert fits == [("garch", first), ("peer_lstm", first)]
    fits.clear()
    fresh = run_backtest(frame, replace(config, refit_days=0))
    assert fits == [(m, f.test_start) for f in fresh.folds for m in ("garch", "peer_lstm")]
    keys = ["model", "fold", "ticker", "as_of_date", "horizon"]
    a = reused.forecasts.sort_values(keys).reset_index(drop=True)
    b = fresh.forecasts.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[a["fold"] == 0], b[b["fold"] == 0])  # the same first fit
    assert not np.allclose(a["upper_95"], b["upper_95"])  # later folds: another fit
    for fold in fresh.folds:
        origins = make_windows(frame, 10, as_of_from=fold.test_start, as_of_to=fold.test_end)
        _, expected = ml.baselines.garch_forecasts(frame, fold, origins)
        rows = fresh.forecasts[fresh.forecasts["model"] == "garch"]
        rows = rows[rows["fold"] == fold.index]
        np.testing.assert_array_equal(rows["upper_95"], expected["upper_95"].reshape(-1))

import numpy as np
import pytest

from ml.evaluate import horizon_metrics


def _sample(seed=0, n=400, horizons=3):
    rng = np.random.default_rng(seed)
    close = np.where(np.arange(n) % 2 == 0, 10.0, 1000.0)  # two price levels
    tickers = np.where(np.arange(n) % 2 == 0, "LOW", "HIGH")
    actual = rng.normal(0, 0.02, (n, horizons))
    return close, actual, tickers


def test_naive_forecast_has_relative_mae_one():
    close, actual, tickers = _sample()
    metrics = horizon_metrics(close, actual, np.zeros_like(actual), tickers)
    assert metrics["rel_mae"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert metrics["mae"].tolist() == pytest.approx(metrics["naive_mae"].tolist())


def test_perfect_forecast_has_zero_error_and_full_direction():
    close, actual, tickers = _sample()
    metrics = horizon_metrics(close, actual, actual.copy(), tickers)
    assert metrics["mae"].max() == pytest.approx(0.0, abs=1e-9)
    assert metrics["rel_mae"].max() == pytest.approx(0.0, abs=1e-9)
    assert metrics["directional_accuracy"].min() == 1.0


def test_relative_mae_is_a_geometric_mean_over_tickers():
    close, actual, tickers = _sample()
    # Half the naive error on the cheap stock, double on the expensive one: geometric mean 1.
    predicted = np.where((tickers == "LOW")[:, None], actual * 0.5, -actual)
    metrics = horizon_metrics(close, actual, predicted, tickers)
    assert metrics["rel_mae"].iloc[0] == pytest.approx(1.0, rel=0.05)
    # The arithmetic pooled MAE is dominated by the expensive stock instead.
    assert metrics["mae"].iloc[0] > 1.5 * metrics["naive_mae"].iloc[0]


def test_diebold_mariano_detects_a_real_difference_and_not_a_fake_one():
    from ml.evaluate import diebold_mariano

    rng = np.random.default_rng(5)
    same = rng.normal(0, 1, 500)
    stat, p_value = diebold_mariano(same, horizon=1)
    assert p_value > 0.01
    better = rng.normal(-0.3, 1, 500)  # first model's losses lower on average
    stat, p_value = diebold_mariano(better, horizon=5)
    assert stat < 0 and p_value < 0.001


def test_backtest_metrics_pool_and_compare_with_naive_on_the_same_rows():
    import pandas as pd

    from ml.evaluate import POOLED, backtest_metrics
    from ml.folds import forecast_frame

    rng = np.random.default_rng(7)
    n = 300
    tickers = np.where(np.arange(n) % 2 == 0, "LOW", "HIGH")
    dates = np.repeat(pd.bdate_range("2021-01-04", periods=n // 2).to_numpy(), 2)
    close = np.where(tickers == "LOW", 10.0, 1000.0)
    actual = rng.normal(0, 0.02, (n, 2))
    frames = [
        forecast_frame("naive", 0, tickers, dates, close, actual, np.zeros_like(actual)),
        forecast_frame("oracle", 0, tickers, dates, close, actual, actual * 0.5),
    ]
    scales = pd.DataFrame({"fold": [0, 0], "ticker": ["LOW", "HIGH"], "scale": [0.2, 20.0]})
    metrics = backtest_metrics(pd.concat(frames), scales)
    pooled = metrics[metrics["ticker"] == POOLED].set_index(["model", "horizon"])
    assert pooled.loc[("naive", 1), "rel_mae"] == pytest.approx(1.0)
    assert np.isnan(pooled.loc[("naive", 1), "directional_accuracy"])
    assert pooled.loc[("oracle", 1), "rel_mae"] == pytest.approx(0.5, rel=0.02)
    assert pooled.loc[("oracle", 1), "directional_accuracy"] == 1.0
    assert pooled.loc[("oracle", 1), "mase"] < pooled.loc[("naive", 1), "mase"]
    assert pooled.loc[("oracle", 2), "dm_pvalue"] < 0.001
    per_ticker = metrics[(metrics["ticker"] == "LOW") & (metrics["model"] == "oracle")]
    assert len(per_ticker) == 2 and (per_ticker["n_forecasts"] == n // 2).all()

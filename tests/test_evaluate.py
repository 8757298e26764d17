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

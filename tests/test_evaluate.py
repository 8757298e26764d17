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


def test_winkler_and_pinball_by_hand():
    from ml.evaluate import pinball_loss, winkler_score

    y = np.array([0.0, 0.05, -0.05])
    # 80% interval [-0.02, 0.03]: width 0.05, plus 2 / 0.2 = 10 times the miss.
    np.testing.assert_allclose(
        winkler_score(y, -0.02, 0.03, 80), [0.05, 0.05 + 10 * 0.02, 0.05 + 10 * 0.03]
    )
    # 95%: 2 / 0.05 = 40 times the miss.
    np.testing.assert_allclose(winkler_score(y, -0.02, 0.03, 95), [0.05, 0.85, 1.25])
    # tau * (y - q) at or above q, (1 - tau) * (q - y) below it.
    np.testing.assert_allclose(pinball_loss(y, 0.03, 0.9), [0.1 * 0.03, 0.9 * 0.02, 0.1 * 0.08])
    np.testing.assert_allclose(pinball_loss(y, -0.02, 0.1), [0.1 * 0.02, 0.1 * 0.07, 0.9 * 0.03])


def test_interval_metrics_by_hand_skip_rows_without_bounds():
    import pandas as pd

    from ml.evaluate import POOLED, backtest_metrics
    from ml.folds import forecast_frame

    dates = pd.bdate_range("2021-01-04", periods=4).to_numpy()
    actual = np.array([[0.0], [0.05], [-0.05], [0.0]])
    bounds = {  # the same bounds on every row; the last row has none (e.g. a fallback)
        "lower_95": np.array([[-0.04]] * 3 + [[np.nan]]),
        "lower_80": np.array([[-0.02]] * 3 + [[np.nan]]),
        "upper_80": np.array([[0.03]] * 3 + [[np.nan]]),
        "upper_95": np.array([[0.04]] * 3 + [[np.nan]]),
    }
    tickers = np.array(["A"] * 4)
    keys = (tickers, dates, np.full(4, 10.0), actual)
    forecasts = pd.concat(
        [
            forecast_frame("naive", 0, *keys, np.zeros_like(actual)),
            forecast_frame("vol", 0, *keys, np.zeros_like(actual), bounds),
        ]
    )
    metrics = backtest_metrics(forecasts, pd.DataFrame(columns=["fold", "ticker", "scale"]))
    row = metrics[(metrics["ticker"] == POOLED) & (metrics["model"] == "vol")].iloc[0]
    assert row["coverage_80"] == pytest.approx(1 / 3)  # only y = 0 is inside (NaN row left out)
    assert row["coverage_95"] == pytest.approx(1 / 3)  # 0.05 and -0.05 are outside +-0.04
    assert row["width_80"] == pytest.approx(5.0)  # percent of the as-of close
    assert row["width_95"] == pytest.approx(8.0)
    assert row["winkler_80"] == pytest.approx(100 * (0.05 + 0.25 + 0.35) / 3)
    assert row["winkler_95"] == pytest.approx(100 * (0.08 + 0.48 + 0.48) / 3)
    # Mean over the 4 quantiles and 3 rows of the pinball losses, by hand:
    losses = [
        [0.025 * 0.04, 0.1 * 0.02, 0.1 * 0.03, 0.025 * 0.04],  # y = 0
        [0.025 * 0.09, 0.1 * 0.07, 0.9 * 0.02, 0.975 * 0.01],  # y = 0.05
        [0.975 * 0.01, 0.9 * 0.03, 0.1 * 0.08, 0.025 * 0.09],  # y = -0.05
    ]
    assert row["pinball"] == pytest.approx(100 * np.mean(losses))
    # ...which is the interval scores' identity (0.1 * W80 + 0.025 * W95) / 4.
    assert row["pinball"] == pytest.approx(
        (0.1 * row["winkler_80"] + 0.025 * row["winkler_95"]) / 4
    )
    naive = metrics[(metrics["ticker"] == POOLED) & (metrics["model"] == "naive")].iloc[0]
    assert np.isnan(naive["pinball"]) and np.isnan(naive["coverage_80"])

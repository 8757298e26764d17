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


def _per_group_backtest_metrics(forecasts, naive_scale):
    """backtest_metrics as first written, one (model, horizon) and scope at a time: the
    definition the column-wise implementation must reproduce."""
    import pandas as pd

    from ml.evaluate import POOLED, _interval_scores, _pinball, diebold_mariano

    frame = forecasts.merge(naive_scale, on=["fold", "ticker"], how="left")
    close = frame["as_of_close"]
    actual = close * np.exp(frame["actual_log_return"])
    frame["error"] = close * np.exp(frame["predicted_log_return"]) - actual
    frame["abs_error"] = frame["error"].abs()
    frame["naive_abs_error"] = (close - actual).abs()
    frame["ape"] = frame["abs_error"] / actual * 100
    frame["scaled_error"] = frame["abs_error"] / frame["scale"]
    frame["scaled_naive_error"] = frame["naive_abs_error"] / frame["scale"]
    moved = frame["actual_log_return"] != 0
    frame["direction_hit"] = np.where(
        moved, np.sign(frame["predicted_log_return"]) == np.sign(frame["actual_log_return"]), np.nan
    )
    rows = []
    for (model, horizon), group in frame.groupby(["model", "horizon"], sort=True):
        gives_direction = (group["predicted_log_return"] != 0).any()
        per_ticker = group.groupby("ticker")
        ratios = per_ticker["abs_error"].mean() / per_ticker["naive_abs_error"].mean()
        ratios = ratios[np.isfinite(ratios)]
        for ticker, part in [(POOLED, group), *per_ticker]:
            daily = part.groupby("as_of_date")[["scaled_error", "scaled_naive_error"]].mean()
            dm_stat, dm_p = diebold_mariano(
                (daily["scaled_error"] - daily["scaled_naive_error"]).to_numpy(), int(horizon)
            )
            naive_mae = part["naive_abs_error"].mean()
            if ticker == POOLED:
                with np.errstate(divide="ignore"):
                    rel_mae = float(np.exp(np.log(ratios).mean()))
            else:
                rel_mae = float(part["abs_error"].mean() / naive_mae) if naive_mae > 0 else np.nan
            rows.append(
                {
                    "model": model,
                    "ticker": ticker,
                    "horizon": int(horizon),
                    "n_forecasts": len(part),
                    "mae": float(part["abs_error"].mean()),
                    "rmse": float(np.sqrt((part["error"] ** 2).mean())),
                    "mape": float(part["ape"].mean()),
                    "rel_mae": rel_mae,
                    "mase": float(part["scaled_error"].mean()),
                    "directional_accuracy": float(part["direction_hit"].mean())
                    if gives_direction
                    else np.nan,
                    "dm_stat": dm_stat if model != "naive" else np.nan,
                    "dm_pvalue": dm_p if model != "naive" else np.nan,
                    **_interval_scores(part, 80),
                    **_interval_scores(part, 95),
                    "pinball": _pinball(part),
                }
            )
    return pd.DataFrame(rows)


def test_backtest_metrics_column_wise_equal_the_per_group_definition():
    """Several folds, models with, without and with partial intervals, a never-moving model
    (no direction), a ticker naive forecasts perfectly, (fold, ticker)s without a MASE scale."""
    import pandas as pd

    from ml.evaluate import backtest_metrics
    from ml.folds import forecast_frame

    rng = np.random.default_rng(5)
    tickers = np.array(["AAA", "BBB", "CCC", "DDD"])
    frames, scales = [], []
    for fold in range(3):
        n = 12 * len(tickers)
        who = np.repeat(tickers, 12)
        dates = np.tile(pd.bdate_range(f"2021-0{fold + 1}-04", periods=12).to_numpy(), 4)
        close = np.repeat(rng.uniform(10, 500, len(tickers)), 12)
        actual = rng.normal(0, 0.02, (n, 3))
        actual[who == "DDD"] = 0.0  # never moves: naive is perfect there
        keys = (who, dates, close, actual)
        sd = np.abs(rng.normal(0.02, 0.005, (n, 1))) * np.sqrt([1, 2, 3])
        bounds = {"lower_80": -1.28 * sd, "upper_80": 1.28 * sd, "lower_95": -2 * sd,
                  "upper_95": 2 * sd}  # fmt: skip
        partial = {key: value.copy() for key, value in bounds.items()}
        partial["lower_80"][who == "AAA"] = np.nan
        partial["upper_95"][who == "BBB"] = np.nan
        frames += [
            forecast_frame("naive", fold, *keys, np.zeros_like(actual)),
            forecast_frame("model", fold, *keys, actual + rng.normal(0, 0.02, actual.shape)),
            forecast_frame("ewma", fold, *keys, np.zeros_like(actual), bounds),
            forecast_frame("partial", fold, *keys, rng.normal(0, 0.01, actual.shape), partial),
        ]
        scales += [{"fold": fold, "ticker": t, "scale": rng.uniform(0.5, 2)} for t in tickers[1:]]
    forecasts = pd.concat(frames, ignore_index=True)
    for scale in (pd.DataFrame(scales), pd.DataFrame(columns=["fold", "ticker", "scale"])):
        expected = _per_group_backtest_metrics(forecasts, scale)
        got = backtest_metrics(forecasts, scale)
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12, atol=1e-15)
    assert got["pinball"].notna().any() and got["directional_accuracy"].isna().any()

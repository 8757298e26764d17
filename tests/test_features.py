import numpy as np
import pandas as pd
import pytest
from helpers import YAHOO, indicator_frame, random_walk_prices, read_yahoo

from ml.features import FEATURES, HORIZONS, build_feature_frame, make_windows


@pytest.fixture(scope="module")
def frame():
    if YAHOO.exists():
        prices = read_yahoo("KO").tail(600)
        ticker = "KO"
    else:  # pragma: no cover - only without ../shared
        prices, ticker = random_walk_prices(600, seed=1), "SYN"
    return indicator_frame(prices.reset_index(drop=True), ticker)


def test_features_are_stationary_not_price_levels(frame):
    features = build_feature_frame(frame)
    complete = features.dropna(subset=FEATURES)
    assert len(complete) > 400
    # Scale-free: multiplying every price by 1000 leaves every feature unchanged.
    scaled = frame.copy()
    price_columns = ["open", "high", "low", "close", "sma_5", "sma_20", "sma_50", "ema_12",
                     "ema_26", "macd", "macd_signal", "macd_hist"]  # fmt: skip
    scaled[price_columns] = scaled[price_columns] * 1000
    rescaled = build_feature_frame(scaled)
    np.testing.assert_allclose(
        rescaled[FEATURES].to_numpy(), features[FEATURES].to_numpy(), rtol=1e-9, atol=1e-12
    )


def test_feature_rows_use_only_bars_on_or_before_their_date(frame):
    """Rebuilding on history truncated at each cut gives identical feature rows up to the cut."""
    full = build_feature_frame(frame).set_index("trade_date")
    for cut in (120, 300, 599):
        truncated = build_feature_frame(frame.iloc[: cut + 1]).set_index("trade_date")
        pd.testing.assert_frame_equal(
            truncated[FEATURES], full.loc[truncated.index, FEATURES], check_exact=False, rtol=1e-12
        )


def test_targets_are_future_log_returns(frame):
    features = build_feature_frame(frame)
    close = frame["close"].to_numpy()
    i = 200
    for h in (1, 5, HORIZONS):
        assert features[f"target_{h}"].iloc[i] == pytest.approx(np.log(close[i + h] / close[i]))
    assert features[f"target_{HORIZONS}"].iloc[-HORIZONS:].isna().all()
    assert features["target_end_date"].iloc[i] == frame["trade_date"].iloc[i + HORIZONS]


def test_windows_hold_consecutive_complete_rows(frame):
    features = build_feature_frame(frame)
    windows = make_windows(features, window=20)
    assert windows.x.shape[1:] == (20, len(FEATURES))
    assert np.isfinite(windows.x).all() and np.isfinite(windows.y).all()
    # The last row of each window is the as-of row's features.
    as_of = windows.as_of_dates[7]
    row = features.loc[features["trade_date"] == as_of, FEATURES].to_numpy(np.float32)[0]
    np.testing.assert_array_equal(windows.x[7, -1], row)
    first = features.loc[features["trade_date"] < as_of].tail(19)[FEATURES].to_numpy(np.float32)
    np.testing.assert_array_equal(windows.x[7, :-1], first)


def test_purging_keeps_targets_before_the_cutoff(frame):
    features = build_feature_frame(frame)
    cutoff = features["trade_date"].iloc[400]
    windows = make_windows(features, window=20, targets_before=cutoff)
    assert (windows.target_end_dates < np.datetime64(cutoff)).all()
    assert windows.as_of_dates.max() == features["trade_date"].iloc[400 - HORIZONS - 1]


def test_scoring_window_ends_at_last_bar(frame):
    features = build_feature_frame(frame)
    latest = make_windows(features, window=20, require_targets=False, last_only=True)
    assert len(latest) == 1
    assert latest.as_of_dates[0] == features["trade_date"].iloc[-1]
    assert latest.as_of_close[0] == frame["close"].iloc[-1]


def test_sampling_draws_a_seeded_subset_of_the_same_windows(frame):
    features = build_feature_frame(frame)
    everything = make_windows(features, window=20)
    sample = make_windows(features, window=20, max_samples=50, seed=3)
    again = make_windows(features, window=20, max_samples=50, seed=3)
    assert len(sample) == 50
    np.testing.assert_array_equal(sample.x, again.x)
    positions = np.searchsorted(everything.as_of_dates, sample.as_of_dates)
    np.testing.assert_array_equal(everything.x[positions], sample.x)
    np.testing.assert_array_equal(everything.y[positions], sample.y)

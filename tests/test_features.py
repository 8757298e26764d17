import numpy as np
import pandas as pd
import pytest
from helpers import YAHOO, indicator_frame, random_walk_prices, read_yahoo

from ml.features import (
    ALL_FEATURES,
    EWMA_LAMBDA,
    FEATURE_GROUPS,
    FEATURES,
    HORIZONS,
    VOL_FLOOR,
    VOLATILITY,
    build_feature_frame,
    feature_index,
    feature_set,
    make_windows,
)


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
    complete = features.dropna(subset=ALL_FEATURES)
    assert len(complete) > 400
    # Scale-free: multiplying every price by 1000 leaves every feature unchanged.
    scaled = frame.copy()
    price_columns = ["open", "high", "low", "close", "sma_5", "sma_20", "sma_50", "ema_12",
                     "ema_26", "macd", "macd_signal", "macd_hist"]  # fmt: skip
    scaled[price_columns] = scaled[price_columns] * 1000
    rescaled = build_feature_frame(scaled)
    np.testing.assert_allclose(
        rescaled[ALL_FEATURES].to_numpy(), features[ALL_FEATURES].to_numpy(), rtol=1e-9, atol=1e-12
    )


def test_feature_rows_use_only_bars_on_or_before_their_date(frame):
    """Rebuilding on history truncated at each cut gives identical feature rows up to the cut."""
    full = build_feature_frame(frame).set_index("trade_date")
    for cut in (120, 300, 599):
        truncated = build_feature_frame(frame.iloc[: cut + 1]).set_index("trade_date")
        pd.testing.assert_frame_equal(
            truncated[ALL_FEATURES],
            full.loc[truncated.index, ALL_FEATURES],
            check_exact=False,
            rtol=1e-12,
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


# -- candidate feature groups ------------------------------------------------------------------


def test_feature_sets_are_the_base_then_the_named_groups_in_a_fixed_order():
    volatility, market, volume = (FEATURE_GROUPS[g] for g in ("volatility", "market", "volume"))
    assert FEATURE_GROUPS["base"] == FEATURES and len(FEATURES) == 15
    assert (
        FEATURES[VOLATILITY] == "volatility_20" and feature_index(FEATURES, "volatility_20") == 13
    )
    assert feature_set([]) == feature_set(["base"]) == FEATURES
    assert feature_set(["volume", "volatility", "volume"]) == FEATURES + volatility + volume
    assert feature_set("market") == FEATURES + market
    assert FEATURES + volatility + market + volume == ALL_FEATURES
    assert len(set(ALL_FEATURES)) == len(ALL_FEATURES)
    chosen = feature_set(["market"])
    assert chosen[feature_index(chosen, "excess_ret_1")] == "excess_ret_1"
    with pytest.raises(ValueError, match=r"'sentiment'.*base, volatility, market, volume"):
        feature_set(["market", "sentiment"])
    with pytest.raises(ValueError, match="log_vol_5"):
        feature_index(FEATURES, "log_vol_5")


def _trailing(values: np.ndarray, i: int, n: int) -> np.ndarray:
    return values[i - n + 1 : i + 1]


def test_volatility_group_matches_a_direct_computation(frame):
    """Each row against plain numpy on the trailing bars of the raw prices."""
    features = build_feature_frame(frame)
    close, high, low = (frame[c].to_numpy() for c in ("close", "high", "low"))
    returns = np.concatenate([[np.nan], np.diff(np.log(close))])
    ranges = np.log(high / low)
    rows = range(60, len(frame), 7)
    for n in (5, 60):
        expected = [np.log(np.std(_trailing(returns, i, n), ddof=1)) for i in rows]
        np.testing.assert_allclose(features[f"log_vol_{n}"].to_numpy()[rows], expected, rtol=1e-9)
    for n in (5, 20):
        expected = [
            0.5 * np.log(np.mean(_trailing(ranges, i, n) ** 2) / (4 * np.log(2))) for i in rows
        ]
        np.testing.assert_allclose(features[f"log_park_{n}"].to_numpy()[rows], expected, rtol=1e-9)
    # RiskMetrics with normalised start-up weights: a weighted mean of squared returns.
    expected = []
    for i in rows:
        weights = EWMA_LAMBDA ** np.arange(i - 1, -1, -1)  # returns 1..i, the latest weight 1
        expected.append(0.5 * np.log(np.sum(weights * returns[1 : i + 1] ** 2) / weights.sum()))
    np.testing.assert_allclose(features["log_ewma_vol"].to_numpy()[rows], expected, rtol=1e-9)
    # The 20-row volatility of the base set is the exponent of neither: it stays as it was.
    assert features["volatility_20"].iloc[100] == pytest.approx(
        np.std(_trailing(returns, 100, 20), ddof=1), rel=1e-9
    )


def test_ewma_volatility_is_the_interval_baselines_ewma(frame):
    from ml.baselines import _log_returns, ewma_variance

    features = build_feature_frame(frame)
    reference = 0.5 * np.log(ewma_variance(_log_returns(frame["close"].to_numpy())))
    reported = features["log_ewma_vol"].to_numpy()
    np.testing.assert_allclose(reported[20:], reference[20:], rtol=1e-12)


def test_candidate_warm_up_rows(frame):
    features = build_feature_frame(frame)
    first_valid = {c: int(np.flatnonzero(features[c].notna())[0]) for c in ALL_FEATURES}
    assert first_valid == {
        **dict.fromkeys(FEATURES, 49),  # SMA 50 (and the row rule: all base columns together)
        "log_vol_5": 5,
        "log_vol_60": 60,
        "log_park_5": 4,
        "log_park_20": 19,
        "log_ewma_vol": 20,
        "mkt_ret_1": 1,
        "mkt_vol_20": 20,
        "excess_ret_1": 1,
        "volume_change": 1,
    }
    assert features[ALL_FEATURES].iloc[60:].notna().all().all()


def test_volume_change_is_the_clipped_log_volume_difference(frame):
    features = build_feature_frame(frame)
    volume = frame["volume"].to_numpy()
    expected = np.log1p(volume[1:]) - np.log1p(volume[:-1])
    assert np.abs(expected).max() < 10  # the real slice never reaches the clip
    np.testing.assert_allclose(features["volume_change"].to_numpy()[1:], expected, rtol=1e-12)
    spiked = frame.copy()
    spiked.loc[300, "volume"] = 0.0  # a halted day: log1p(0) - log1p(~1e7) is about -16
    changed = build_feature_frame(spiked)["volume_change"].to_numpy()
    assert (changed[300], changed[301]) == (-10.0, 10.0)


def test_a_flat_stretch_gives_the_volatility_floor_not_minus_infinity(frame):
    flat = frame.copy()
    stale = slice(200, 290)  # rows 200..290 at row 199's close: no return, no range
    for column in ("open", "high", "low", "close"):
        flat.loc[stale, column] = frame.loc[199, "close"]
    features = build_feature_frame(flat)
    floor = np.log(VOL_FLOOR)
    for column, first_flat_row in [("log_vol_5", 204), ("log_vol_60", 259),
                                   ("log_park_5", 204), ("log_park_20", 219)]:  # fmt: skip
        values = features[column].to_numpy()
        assert values[first_flat_row - 1] > floor + 1  # one bar still moved
        np.testing.assert_allclose(values[first_flat_row:291], floor, atol=1e-9)
        assert values[291] > floor + 1  # the first real bar after the stretch
    ewma = features.loc[200:290, "log_ewma_vol"]
    assert np.isfinite(ewma).all() and ewma.is_monotonic_decreasing  # decays, never -inf
    # Those rows stay complete: a floored volatility is a value, not a gap.
    assert features.loc[200:290, ALL_FEATURES].notna().all().all()


@pytest.fixture(scope="module")
def universe():
    """Three real tickers; the third starts later, so the market's membership changes."""
    names, lengths = ["KO", "JNJ", "CVX"], [600, 600, 450]
    parts = []
    for seed, (name, length) in enumerate(zip(names, lengths, strict=True)):
        if YAHOO.exists():
            prices = read_yahoo(name).tail(length)
        else:  # pragma: no cover - only without ../shared
            prices = random_walk_prices(600, seed=seed).tail(length)
        parts.append(indicator_frame(prices.reset_index(drop=True), name))
    return pd.concat(parts, ignore_index=True)


def test_market_group_is_the_same_date_cross_section(universe):
    features = build_feature_frame(universe)
    wide_close = universe.pivot(index="trade_date", columns="ticker", values="close")
    wide_returns = np.log(wide_close).diff()  # NaN before a ticker's first bar
    assert wide_returns["CVX"].notna().sum() == 449  # CVX joins for the last 449 returns
    dates = wide_close.index.to_numpy()
    market = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan
                       for row in wide_returns.to_numpy()])  # fmt: skip
    market_vol = np.full(len(market), np.nan)
    for k in range(20, len(market)):
        market_vol[k] = np.std(market[k - 19 : k + 1], ddof=1)
    position = np.searchsorted(dates, features["trade_date"].to_numpy())
    np.testing.assert_allclose(features["mkt_ret_1"], market[position], rtol=1e-12)
    np.testing.assert_allclose(features["mkt_vol_20"], market_vol[position], rtol=1e-9)
    own = np.array([wide_returns.at[d, t] for d, t in features[["trade_date", "ticker"]].values])
    np.testing.assert_allclose(features["excess_ret_1"], own - market[position], atol=1e-15)
    # Every ticker sees the same market on a date, and the excess returns sum to zero there.
    per_date = features.groupby("trade_date")
    assert (per_date["mkt_ret_1"].nunique(dropna=False) == 1).all()
    assert per_date["excess_ret_1"].sum().abs().max() < 1e-15
    # Before CVX joins, the market is the mean of the other two; afterwards of all three.
    assert np.isnan(wide_returns["CVX"].iloc[100])
    assert wide_returns[["KO", "JNJ"]].iloc[100].mean() == pytest.approx(market[100], rel=1e-12)
    assert wide_returns.iloc[300].mean() == pytest.approx(market[300], rel=1e-12)


def test_windows_of_a_feature_subset(frame):
    features = build_feature_frame(frame)
    base = make_windows(features, window=20)
    assert base.x.shape[2] == len(FEATURES)
    default = make_windows(features, window=20, features=FEATURES)
    np.testing.assert_array_equal(default.x, base.x)

    # Groups whose columns are complete wherever the base set is: the very same samples.
    chosen = feature_set(["market", "volume"])
    wider = make_windows(features, window=20, features=chosen)
    assert wider.x.shape == (*base.x.shape[:2], len(chosen))
    np.testing.assert_array_equal(wider.as_of_dates, base.as_of_dates)
    np.testing.assert_array_equal(wider.x[:, :, : len(FEATURES)], base.x)
    np.testing.assert_array_equal(wider.y, base.y)
    as_of = wider.as_of_dates[5]
    row = features.loc[features["trade_date"] == as_of, chosen].to_numpy(np.float32)[0]
    np.testing.assert_array_equal(wider.x[5, -1], row)

    # log_vol_60's longer warm-up only removes the windows that reach into it.
    everything = make_windows(features, window=20, features=ALL_FEATURES)
    first_complete = features["trade_date"].iloc[60 + 19]
    assert everything.as_of_dates[0] == first_complete
    kept = base.as_of_dates >= np.datetime64(first_complete)
    np.testing.assert_array_equal(everything.as_of_dates, base.as_of_dates[kept])
    np.testing.assert_array_equal(everything.x[:, :, : len(FEATURES)], base.x[kept])

    # Any columns, in the order given.
    pair = make_windows(features, window=20, features=["volume_change", "ret_1"])
    assert pair.x.shape[2] == 2
    np.testing.assert_array_equal(pair.x[..., 1], wider.x[..., feature_index(chosen, "ret_1")])
    np.testing.assert_array_equal(
        pair.x[..., 0], wider.x[..., feature_index(chosen, "volume_change")]
    )
    with pytest.raises(ValueError, match="log_vol_7"):
        make_windows(features, window=20, features=["ret_1", "log_vol_7"])

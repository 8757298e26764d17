"""Leakage tests: no feature sees the future, and the model has no skill without real targets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import (
    YAHOO,
    indicator_frame,
    mean_reverting_prices,
    random_walk_prices,
    read_yahoo,
)

from ml.features import (
    ALL_FEATURES,
    FEATURE_GROUPS,
    WindowSet,
    build_feature_frame,
    make_windows,
)


def lookahead_rows(build, indicators: pd.DataFrame, cuts: list[int]) -> list[int]:
    """Cuts at which features built on history up to the cut differ from the full-history ones.

    A pipeline that uses only bars on or before each row's date gives identical rows however
    much later history exists; any difference means a row looked ahead. Every column is
    checked: the base set and each candidate group.
    """
    full = build(indicators).set_index("trade_date")[ALL_FEATURES]
    leaking = []
    for cut in cuts:
        truncated = build(indicators.iloc[: cut + 1]).set_index("trade_date")[ALL_FEATURES]
        a = truncated.to_numpy()
        b = full.loc[truncated.index].to_numpy()
        same = np.isclose(a, b, rtol=1e-12, atol=1e-15) | (np.isnan(a) & np.isnan(b))
        if not same.all():
            leaking.append(cut)
    return leaking


def leaky_build(indicators: pd.DataFrame) -> pd.DataFrame:
    """The real pipeline with one feature shifted a day into the future (a classic bug)."""
    frame = build_feature_frame(indicators)
    frame["ret_1"] = frame.groupby("ticker")["ret_1"].shift(-1)
    return frame


@pytest.fixture(scope="module")
def indicators():
    prices = read_yahoo("JNJ").tail(700) if YAHOO.exists() else random_walk_prices(700, 4)
    return indicator_frame(prices.reset_index(drop=True), "JNJ")


CUTS = [150, 301, 452, 699]


def test_the_feature_pipeline_never_looks_ahead(indicators):
    assert lookahead_rows(build_feature_frame, indicators, CUTS) == []


def test_a_feature_shifted_one_day_into_the_future_is_detected(indicators):
    assert lookahead_rows(leaky_build, indicators, CUTS) == CUTS[:-1]  # the last cut has no future


@pytest.mark.parametrize("column", ["log_vol_60", "log_ewma_vol", "mkt_vol_20", "volume_change"])
def test_a_candidate_column_shifted_into_the_future_is_detected(indicators, column):
    def leaky(frame):
        built = build_feature_frame(frame)
        built[column] = built.groupby("ticker")[column].shift(-1)
        return built

    assert lookahead_rows(leaky, indicators, CUTS) == CUTS[:-1]


def test_every_window_for_an_as_of_date_uses_only_bars_up_to_it(indicators):
    full = build_feature_frame(indicators)
    for features in (FEATURE_GROUPS["base"], ALL_FEATURES):
        for cut in (200, 450):
            as_of = full["trade_date"].iloc[cut]
            from_full = make_windows(
                full, 20, features=features, require_targets=False, as_of_from=as_of, as_of_to=as_of
            )
            history = build_feature_frame(indicators.iloc[: cut + 1])
            from_history = make_windows(
                history, 20, features=features, require_targets=False, last_only=True
            )
            assert from_history.x.shape == (1, 20, len(features))
            np.testing.assert_array_equal(from_full.x, from_history.x)
            assert from_history.as_of_dates[0] == as_of


# -- across tickers: the market group reads every ticker's bars on a date, none after it ------


@pytest.fixture(scope="module")
def universe():
    """Four real tickers over the same stretch; one starts later and one ends earlier."""
    spans = {"JNJ": (-700, None), "KO": (-700, None), "CVX": (-520, None), "MSFT": (-700, -90)}
    parts = []
    for seed, (name, (start, stop)) in enumerate(spans.items()):
        prices = read_yahoo(name) if YAHOO.exists() else random_walk_prices(900, seed + 10)
        parts.append(indicator_frame(prices.iloc[start:stop].reset_index(drop=True), name))
    return pd.concat(parts, ignore_index=True)


PRICE_COLUMNS = ["open", "high", "low", "close", "sma_5", "sma_20", "sma_50", "ema_12",
                 "ema_26", "macd", "macd_signal", "macd_hist"]  # fmt: skip


def rewrite_after(indicators: pd.DataFrame, cut, tickers, seed: int) -> pd.DataFrame:
    """``indicators`` with every bar of ``tickers`` dated after ``cut`` replaced by noise:
    prices scaled by a random factor per bar, volume and RSI redrawn."""
    rng = np.random.default_rng(seed)
    changed = indicators.copy()
    later = (changed["trade_date"] > cut) & changed["ticker"].isin(tickers)
    n = int(later.sum())
    changed.loc[later, PRICE_COLUMNS] = changed.loc[later, PRICE_COLUMNS].mul(
        np.exp(rng.normal(0, 0.05, n)), axis=0
    )
    changed.loc[later, "volume"] = rng.integers(0, 10**8, n).astype(float)
    changed.loc[later, "rsi_14"] = rng.uniform(0, 100, n)
    return changed


def columns_changed_up_to(build, before: pd.DataFrame, after: pd.DataFrame, cut) -> list[str]:
    """Feature columns with any row dated on or before ``cut`` that differs between the two
    builds (NaN equals NaN)."""
    a, b = (
        build(frame).set_index(["ticker", "trade_date"]).sort_index() for frame in (before, after)
    )
    a, b = (frame[frame.index.get_level_values("trade_date") <= cut] for frame in (a, b))
    assert a.index.equals(b.index)
    changed = []
    for column in ALL_FEATURES:
        x, y = a[column].to_numpy(), b[column].to_numpy()
        if not ((x == y) | (np.isnan(x) & np.isnan(y))).all():
            changed.append(column)
    return changed


@pytest.mark.parametrize("position", [120, 300, 560])
def test_no_feature_row_changes_when_any_later_bar_of_any_ticker_changes(universe, position):
    cut = np.sort(universe["trade_date"].unique())[position]
    tickers = list(universe["ticker"].unique())
    rewritten = rewrite_after(universe, cut, tickers, seed=position)
    assert columns_changed_up_to(build_feature_frame, universe, rewritten, cut) == []
    # Dropping the later bars altogether is the same: the rows up to the cut stand as they were.
    truncated = universe[universe["trade_date"] <= cut]
    full = build_feature_frame(universe).set_index(["ticker", "trade_date"]).sort_index()
    short = build_feature_frame(truncated).set_index(["ticker", "trade_date"]).sort_index()
    np.testing.assert_array_equal(short[ALL_FEATURES], full.loc[short.index, ALL_FEATURES])
    # The check has teeth: the rewrite does move every column after the cut.
    assert (
        columns_changed_up_to(
            build_feature_frame, universe, rewritten, universe["trade_date"].max()
        )
        == ALL_FEATURES
    )


def test_one_tickers_later_bars_reach_no_other_tickers_earlier_rows(universe):
    dates = np.sort(universe["trade_date"].unique())
    cut = dates[400]
    rewritten = rewrite_after(universe, cut, ["KO"], seed=1)
    assert columns_changed_up_to(build_feature_frame, universe, rewritten, cut) == []

    # ...while the same rewrite does reach JNJ's market columns after the cut (and only those).
    def jnj_after_cut(frame):
        built = build_feature_frame(frame)
        return built.loc[(built["ticker"] == "JNJ") & (built["trade_date"] > cut), ALL_FEATURES]

    before, after = jnj_after_cut(universe), jnj_after_cut(rewritten)
    moved = [c for c in ALL_FEATURES if not np.allclose(before[c], after[c], equal_nan=True)]
    assert moved == FEATURE_GROUPS["market"]


def test_a_market_normalised_over_the_whole_sample_is_detected(universe):
    """A classic cross-sectional bug: centring the market return on its full-sample mean."""

    def leaky(frame):
        built = build_feature_frame(frame)
        built["mkt_ret_1"] -= built["mkt_ret_1"].mean()
        return built

    cut = np.sort(universe["trade_date"].unique())[300]
    rewritten = rewrite_after(universe, cut, ["CVX"], seed=2)
    assert columns_changed_up_to(leaky, universe, rewritten, cut) == ["mkt_ret_1"]


@pytest.mark.slow
def test_shuffled_targets_drive_skill_to_zero():
    """On prices with real (mean-reverting) structure the LSTM beats naive; trained on the same
    inputs with targets shuffled across samples it cannot."""
    pytest.importorskip("tensorflow")
    from ml.evaluate import horizon_metrics
    from ml.model import ModelParams, fit_forecaster

    prices = mean_reverting_prices(3000, coefficient=-0.6, seed=0)
    frame = build_feature_frame(indicator_frame(prices, "SYN"))
    cutoff = frame["trade_date"].iloc[2300]
    train = make_windows(frame, 10, targets_before=cutoff)
    test = make_windows(frame, 10, as_of_from=frame["trade_date"].iloc[2320])
    params = ModelParams(window=10, units=16, dropout=0.0, learning_rate=0.005, epochs=12,
                         batch_size=128, seed=1)  # fmt: skip
    stop = slice(len(train) - 300, len(train))
    fit = slice(0, len(train) - 300)

    def rel_mae_h1(y_fit, y_stop):
        model = fit_forecaster(train.x[fit], y_fit, train.x[stop], y_stop, params)
        predicted = model.predict(test.x)
        metrics = horizon_metrics(test.as_of_close, test.y, predicted, test.tickers)
        return metrics.loc[0, "rel_mae"]

    real = rel_mae_h1(train.y[fit], train.y[stop])
    permutation = np.random.default_rng(1).permutation(len(train))
    shuffled_y = train.y[permutation]
    shuffled = rel_mae_h1(shuffled_y[fit], shuffled_y[stop])
    # Measured: real 0.83 (the AR(1) optimum is sqrt(1 - 0.6**2) = 0.80), shuffled 1.01.
    assert real < 0.9  # the structure is learnable
    assert shuffled > 0.98  # without it there is no skill left


# -- the volatility baselines: an origin's intervals use no bar after it ----------------------


def vol_baseline_lookahead(indicators: pd.DataFrame, model: str) -> list[str]:
    """As-of dates whose ``model`` intervals change when every bar after a mid-fold cut is
    dropped. The fold (and so the GARCH fit) is the full history's; origins up to the cut are
    forecast from the truncated history and must equal the full-history forecasts."""
    from ml.baselines import INTERVAL_KEYS, ewma_forecasts, garch_forecasts
    from ml.folds import make_folds

    def forecast(frame, origins):
        if model == "ewma":
            return ewma_forecasts(frame, origins)[1]
        return garch_forecasts(frame, fold, origins)[1]

    full = build_feature_frame(indicators)
    fold = make_folds(full["trade_date"], 2)[0]
    origins = make_windows(full, 30, as_of_from=fold.test_start, as_of_to=fold.test_end)
    reference = forecast(full, origins)
    leaking = []
    for cut in np.unique(origins.as_of_dates)[[0, 7, 20]]:
        keep = np.flatnonzero(origins.as_of_dates <= cut)
        subset = WindowSet(*(getattr(origins, f)[keep] for f in WindowSet.__dataclass_fields__))
        history = build_feature_frame(indicators[indicators["trade_date"] <= cut])
        truncated = forecast(history, subset)
        for key in INTERVAL_KEYS:
            if not np.allclose(truncated[key], reference[key][keep], rtol=1e-10, atol=0):
                leaking.append(str(pd.Timestamp(cut).date()))
                break
    return leaking


@pytest.mark.parametrize("model", ["ewma", "garch"])
def test_volatility_baselines_use_no_bar_after_the_as_of_date(indicators, model):
    assert vol_baseline_lookahead(indicators, model) == []


@pytest.mark.parametrize("model", ["ewma", "garch"])
def test_a_volatility_baseline_reading_the_next_bar_is_detected(indicators, model, monkeypatch):
    """The same check on a deliberately leaky variant: daily returns shifted a bar early, so
    the return into the next close counts as known at the as-of date."""
    import ml.baselines

    returns = ml.baselines._log_returns
    monkeypatch.setattr(
        ml.baselines, "_log_returns", lambda closes: np.append(returns(closes)[1:], np.nan)
    )
    assert len(vol_baseline_lookahead(indicators, model)) == 3

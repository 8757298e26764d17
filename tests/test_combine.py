"""The published point forecast: the LSTM shrunk toward naive per horizon (ml.combine)."""

import numpy as np
import pytest

from ml.combine import Calibration, calibrate, combine, fit_weights, publish

N_DATES, N_TICKERS = 120, 20


def _block(signal_strength, horizons=3, seed=0):
    """Actual and predicted log returns on a block: the forecast carries ``signal_strength``
    of the true predictable part plus noise of its own."""
    rng = np.random.default_rng(seed)
    n = N_DATES * N_TICKERS
    dates = np.repeat(np.arange(N_DATES), N_TICKERS)
    predictable = rng.normal(0, 0.01, (n, horizons))
    actual = signal_strength * predictable + rng.standard_t(5, (n, horizons)) * 0.01
    predicted = predictable + rng.normal(0, 0.005, (n, horizons))
    return actual, predicted, dates


def test_a_forecast_without_skill_gets_weight_zero_so_the_combination_is_naive():
    actual, predicted, dates = _block(signal_strength=0.0, seed=1)
    weights = fit_weights(actual, predicted, dates)
    np.testing.assert_array_equal(weights, 0.0)
    np.testing.assert_array_equal(combine(predicted, weights), 0.0)


def test_a_forecast_with_skill_keeps_a_weight_and_beats_naive_on_new_data():
    actual, predicted, dates = _block(signal_strength=1.0, seed=2)
    weights = fit_weights(actual, predicted, dates)
    assert (weights > 0.3).all()
    fresh_actual, fresh_predicted, _ = _block(signal_strength=1.0, seed=3)
    combined = combine(fresh_predicted, weights)
    assert (np.abs(fresh_actual - combined).mean(0) < np.abs(fresh_actual).mean(0)).all()


def test_market_timing_alone_keeps_no_weight():
    """A forecast that knows each date's market move (the same for every ticker, in a block
    trending up) beats naive on the block, but tells the tickers nothing apart: its weight is
    0. A single ticker has no cross-section: the time-series test alone decides for it."""
    rng = np.random.default_rng(6)
    dates = np.repeat(np.arange(N_DATES), N_TICKERS)
    market = np.repeat(0.004 + rng.normal(0, 0.002, N_DATES), N_TICKERS)[:, None]
    actual = market + rng.standard_t(5, (len(dates), 2)) * 0.01
    predicted = market + rng.normal(0, 0.0005, (len(dates), 2))
    assert (np.abs(actual - predicted).mean(0) < np.abs(actual).mean(0)).all()
    assert (fit_weights(actual, predicted, dates, significance=1.0) == 0).all()

    skilled_actual, skilled_predicted, _ = _block(signal_strength=1.0, seed=7)
    one_ticker = np.arange(len(skilled_actual))  # every sample a date of its own
    assert (fit_weights(skilled_actual, skilled_predicted, one_ticker) > 0.3).all()


def test_weights_shrink_a_forecast_that_overshoots():
    # The forecast is twice as large as the part of the move it knows: the best weight is
    # well below 1, and the combination beats both the raw forecast and naive.
    actual, predicted, dates = _block(signal_strength=0.5, horizons=1, seed=4)
    weights = fit_weights(actual, predicted, dates)
    assert 0.2 <= weights[0] <= 0.8
    fresh_actual, fresh_predicted, _ = _block(signal_strength=0.5, horizons=1, seed=5)
    mae = lambda p: np.abs(fresh_actual - p).mean()  # noqa: E731
    assert mae(combine(fresh_predicted, weights)) < min(mae(fresh_predicted), mae(0.0))


def test_calibration_round_trips_and_publishes_bounds_around_the_combined_forecast():
    actual, predicted, dates = _block(signal_strength=1.0, seed=6)
    scale = np.full_like(actual, 0.01)
    calibration = calibrate(actual, predicted, scale, dates)
    assert Calibration.from_dict(calibration.to_dict()) == calibration
    point, bounds = publish(predicted, scale, calibration)
    np.testing.assert_allclose(point, predicted * np.asarray(calibration.weights))
    assert (bounds["lower_95"] < bounds["lower_80"]).all()
    assert (bounds["lower_80"] < point).all() and (point < bounds["upper_80"]).all()
    fresh_actual, fresh_predicted, _ = _block(signal_strength=1.0, seed=7)
    point, bounds = publish(fresh_predicted, scale, calibration)
    inside = (fresh_actual >= bounds["lower_80"]) & (fresh_actual <= bounds["upper_80"])
    assert inside.mean() == pytest.approx(0.80, abs=0.03)


def test_raw_calibration_keeps_the_lstm_as_it_is():
    actual, predicted, dates = _block(signal_strength=0.0, seed=8)
    calibration = calibrate(actual, predicted, np.ones_like(actual), dates, shrink=False)
    assert calibration.weights == (1.0, 1.0, 1.0)


def test_the_fast_scale_is_an_ewma_of_the_window_returns_growing_with_the_root_of_the_horizon():
    from ml.combine import FAST_LAMBDA, fast_scale

    rng = np.random.default_rng(9)
    x = rng.normal(0, 0.01, (4, 30, 3))
    scale = fast_scale(x, returns_column=1, horizons=3)
    weights = FAST_LAMBDA ** np.arange(29, -1, -1)
    expected = np.sqrt((x[:, :, 1] ** 2 * weights).sum(axis=1) / weights.sum())
    np.testing.assert_allclose(scale[:, 0], expected)
    np.testing.assert_allclose(scale[:, 2], expected * np.sqrt(3))
    shocked = x.copy()
    shocked[:, -1, 1] = 0.08  # yesterday's 8% move: the fast scale jumps at once
    assert (fast_scale(shocked, 1, 1)[:, 0] > 2 * scale[:, 0]).all()


def test_pooling_picks_the_scale_that_tracks_the_spread_and_publishes_with_it():
    """The true spread is the fast scale's; the network's is flat. Calibration should put the
    exponent on the fast one, and the pooled intervals should score better than the flat ones."""
    from ml.combine import SCALE_EXPONENTS

    rng = np.random.default_rng(10)
    n, horizons = 3000, 2
    spread = np.exp(rng.normal(-4.5, 0.5, n))[:, None] * np.sqrt([1, 2])[None, :]
    actual = rng.normal(0, 1, (n, horizons)) * spread
    dates = np.repeat(np.arange(n // 20), 20)
    flat, zero = np.full_like(actual, 0.01), np.zeros_like(actual)
    calibration = calibrate(actual, zero, flat, dates, fast=spread)
    assert calibration.scale_exponents == (SCALE_EXPONENTS[0],) * horizons  # all on fast
    assert Calibration.from_dict(calibration.to_dict()) == calibration
    fresh_spread = np.exp(rng.normal(-4.5, 0.5, n))[:, None] * np.sqrt([1, 2])[None, :]
    fresh = rng.normal(0, 1, (n, horizons)) * fresh_spread
    _, pooled = publish(zero, flat, calibration, fast=fresh_spread)
    _, plain = publish(zero, flat, calibrate(actual, zero, flat, dates))
    from ml.evaluate import winkler_score

    def score(bounds):
        return winkler_score(fresh, bounds["lower_80"], bounds["upper_80"], 80).mean()

    assert score(pooled) < 0.9 * score(plain)
    with pytest.raises(ValueError, match="fast"):
        publish(zero, flat, calibration)

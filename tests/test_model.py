"""The pure model code with tiny settings: arrays in, arrays out."""

import random
import threading
import time

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from ml.model import ModelParams, Standardizer, fit_forecaster

TINY = ModelParams(
    window=8, units=8, dropout=0.0, learning_rate=0.01, epochs=15, batch_size=64, seed=7
)


def _learnable(n=1500, seed=0):
    """Targets are a known linear function of the last feature row plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, TINY.window, 3)).astype(np.float32)
    y = np.stack([0.5 * x[:, -1, 0], -0.3 * x[:, -1, 1]], axis=1).astype(np.float32)
    return x, y + rng.normal(0, 0.05, y.shape).astype(np.float32)


def test_standardizer_is_fit_on_training_data_only():
    train = np.array([[1.0, 10.0], [3.0, 30.0]])
    scaler = Standardizer.fit(train)
    assert scaler.mean.tolist() == [2.0, 20.0]
    later = np.array([[100.0, 100.0]])  # a later regime must not move the statistics
    np.testing.assert_allclose(scaler.transform(later), [[98.0, 8.0]])
    np.testing.assert_allclose(scaler.inverse(scaler.transform(train)), train, rtol=1e-6)
    constant = Standardizer.fit(np.ones((5, 1)))
    assert np.isfinite(constant.transform(np.ones((2, 1)))).all()


def test_tiny_lstm_learns_a_signal_and_beats_predicting_zero():
    x, y = _learnable()
    fitted = fit_forecaster(x[:1200], y[:1200], x[1200:1350], y[1200:1350], TINY)
    predicted = fitted.predict(x[1350:])
    assert predicted.shape == (150, 2)
    model_mae = np.abs(predicted - y[1350:]).mean()
    zero_mae = np.abs(y[1350:]).mean()
    assert model_mae < 0.6 * zero_mae
    assert "val_loss" in fitted.history


def test_same_seed_same_predictions_while_other_threads_draw_random_numbers():
    # A process that trains also runs other threads (Prefect's, a server's) that may draw from
    # Python's and NumPy's global generators at any time: the seed alone must fix the network.
    x, y = _learnable(n=400)
    params = ModelParams(window=8, units=4, dropout=0.2, epochs=2, batch_size=64, seed=3)
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            random.random()
            np.random.random()
            time.sleep(1e-4)
            time.sleep(1e-4)

    drawing = threading.Thread(target=draw, daemon=True)
    drawing.start()
    try:
        fits = [
            fit_forecaster(x[:300], y[:300], x[300:350], y[300:350], params).predict(x[350:])
            for _ in range(2)
        ]
    finally:
        stop.set()
        drawing.join()
    np.testing.assert_allclose(fits[0], fits[1], rtol=1e-6, atol=1e-7)


def test_the_scale_head_learns_where_the_spread_is_wide():
    """Targets are pure noise whose spread is set by the last row's third feature: the
    location should stay near zero, the scale should follow the true spread."""
    rng = np.random.default_rng(11)
    n = 3000
    x = rng.normal(0, 1, (n, TINY.window, 3)).astype(np.float32)
    spread = np.exp(0.8 * x[:, -1, 2])[:, None]
    y = (rng.normal(0, 1, (n, 2)) * spread * 0.01).astype(np.float32)
    fitted = fit_forecaster(x[:2400], y[:2400], x[2400:2600], y[2400:2600], TINY)
    location, scale = fitted.predict_distribution(x[2600:])
    assert location.shape == scale.shape == (400, 2)
    assert (scale > 0).all()
    for h in range(2):
        assert np.corrcoef(np.log(scale[:, h]), np.log(spread[2600:, 0]))[0, 1] > 0.7
    # The location is the mean: small next to the spread it cannot predict.
    assert np.abs(location).mean() < 0.3 * np.abs(y[2600:]).mean()

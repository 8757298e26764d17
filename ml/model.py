"""The forecasting model: one global Keras LSTM across all tickers, with a location-scale head.

Pure: arrays in, arrays out, no I/O. Inputs are (samples, window, features) windows from
:mod:`ml.features`; for horizons 1..H the network gives the expected log return from the
as-of close (the location) and the log of the spread of the return around it (the scale).
Normalisation statistics are fit on training arrays only and travel with the model.

Why a scale head: daily returns are close to unpredictable, their volatility is not. The
location is trained by squared error; the scale by the Gaussian negative log-likelihood of the
location's residual (the residual held fixed, so the scale never pulls the location). The
scale's level is later calibrated conformally (:mod:`ml.intervals`), so it only has to rank
and shape the spread well, not be Gaussian.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ModelParams:
    window: int = 30
    units: int = 64
    layers: int = 1
    dropout: float = 0.1
    learning_rate: float = 1e-3
    epochs: int = 8
    batch_size: int = 512
    patience: int = 2
    seed: int = 42
    # How the scale head learns: "pinball" (the interval score of location +- z * scale at the
    # 2.5/10/90/97.5% quantiles, the score the intervals are judged by) or "gaussian" (NLL).
    scale_loss: str = "pinball"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Standardizer:
    """Per-column mean/std, fit on training data only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Standardizer:
        flat = values.reshape(-1, values.shape[-1])  # a view: no float64 copy of the data
        std = flat.std(axis=0, dtype=np.float64)
        return cls(flat.mean(axis=0, dtype=np.float64), np.where(std > 1e-12, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        # float32 arithmetic: a float64 intermediate would double training memory.
        return (values - self.mean.astype(np.float32)) / self.std.astype(np.float32)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Standardizer:
        return cls(np.asarray(data["mean"]), np.asarray(data["std"]))


def set_seeds(seed: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@contextmanager
def keras_seeds_from(seed: int) -> Iterator[None]:
    """Layers built inside draw their unseeded initializers' and dropouts' seeds from a private
    generator seeded with ``seed``, not from Python's global ``random`` (where Keras draws
    them), which another thread of the process (Prefect's) can advance between
    :func:`set_seeds` and the build: the same seed then gave a different network (seen in a
    CI run). The private generator repeats the global one's draws after ``set_seeds``: the
    same networks as before, whatever else runs."""
    from keras.src.random import seed_generator

    shared = seed_generator.python_random
    seed_generator.python_random = random.Random(seed)
    try:
        yield
    finally:
        seed_generator.python_random = shared


# Keep exp(log_scale) finite in float32 on the standardized target scale.
LOG_SCALE_BOUND = 7.0


# Quantiles of the interval bounds the scale head is trained on (80% and 95% central), with the
# standard normal's z for each: the bounds are location + z * scale.
PINBALL_QUANTILES = ((0.025, -1.959964), (0.10, -1.281552), (0.90, 1.281552), (0.975, 1.959964))


def location_scale_loss(horizons: int, scale_loss: str = "pinball"):
    """Squared error of the location plus the scale's loss on the location's residual (held
    fixed, so the scale never pulls the location): the pinball loss of the bounds
    ``location + z * scale`` at the interval quantiles, or the Gaussian NLL.

    ``y_pred`` is ``[location (H), log_scale (H)]`` on the standardized target scale."""
    from keras import ops

    if scale_loss not in ("pinball", "gaussian"):
        raise ValueError(f"scale_loss must be 'pinball' or 'gaussian', not {scale_loss!r}")

    def loss(y_true, y_pred):
        location = y_pred[:, :horizons]
        log_scale = ops.clip(y_pred[:, horizons:], -LOG_SCALE_BOUND, LOG_SCALE_BOUND)
        residual = y_true - location
        fixed = ops.stop_gradient(residual)
        if scale_loss == "gaussian":
            spread = log_scale + 0.5 * ops.square(fixed) * ops.exp(-2.0 * log_scale)
        else:
            scale = ops.exp(log_scale)
            spread = 0.0
            for q, z in PINBALL_QUANTILES:
                miss = fixed - z * scale
                spread = spread + ops.maximum(q * miss, (q - 1.0) * miss)
        return ops.mean(ops.square(residual), axis=-1) + ops.mean(spread, axis=-1)

    return loss


def build_network(window: int, n_features: int, horizons: int, params: ModelParams):
    import keras
    from keras import layers

    inputs = keras.Input(shape=(window, n_features), name="features")
    x = inputs
    for i in range(params.layers):
        x = layers.LSTM(params.units, return_sequences=i < params.layers - 1, name=f"lstm_{i}")(x)
        if params.dropout > 0:
            x = layers.Dropout(params.dropout, name=f"dropout_{i}")(x)
    outputs = layers.Dense(2 * horizons, name="location_log_scale")(x)
    model = keras.Model(inputs, outputs, name="stockcast_lstm")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=params.learning_rate),
        loss=location_scale_loss(horizons, params.scale_loss),
    )
    return model


@dataclass
class FittedForecaster:
    network: object
    x_scaler: Standardizer
    y_scaler: Standardizer
    history: dict

    def predict_distribution(
        self, x: np.ndarray, batch_size: int = 4096
    ) -> tuple[np.ndarray, np.ndarray]:
        """Expected log returns and their scales, each (samples, horizons), for raw windows."""
        horizons = self.y_scaler.mean.shape[0]
        if len(x) == 0:
            return np.empty((0, horizons)), np.empty((0, horizons))
        out = self.network.predict(self.x_scaler.transform(x), batch_size=batch_size, verbose=0)
        location = self.y_scaler.inverse(out[:, :horizons])
        log_scale = np.clip(out[:, horizons:], -LOG_SCALE_BOUND, LOG_SCALE_BOUND)
        return location, np.exp(log_scale) * self.y_scaler.std

    def predict(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Expected log returns (samples, horizons) for raw feature windows."""
        return self.predict_distribution(x, batch_size)[0]


def fit_forecaster(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_stop: np.ndarray,
    y_stop: np.ndarray,
    params: ModelParams,
    on_epoch=None,
) -> FittedForecaster:
    """Fit scalers on the training arrays, then the network with early stopping on ``*_stop``.

    ``x_stop``/``y_stop`` must come after the training period in time (never shuffled in).
    """
    import keras

    set_seeds(params.seed)
    x_scaler = Standardizer.fit(x_train)
    y_scaler = Standardizer.fit(y_train)
    with keras_seeds_from(params.seed):
        network = build_network(x_train.shape[1], x_train.shape[2], y_train.shape[1], params)
    callbacks = []
    validation = None
    if len(x_stop):
        validation = (x_scaler.transform(x_stop), y_scaler.transform(y_stop))
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=params.patience, restore_best_weights=True
            )
        )
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=on_epoch))
    history = network.fit(
        x_scaler.transform(x_train),
        y_scaler.transform(y_train),
        validation_data=validation,
        epochs=params.epochs,
        batch_size=params.batch_size,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    return FittedForecaster(network, x_scaler, y_scaler, dict(history.history))

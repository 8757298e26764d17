"""Shrinking the LSTM's point forecast toward the random walk, horizon by horizon.

The published forecast for horizon ``h`` is ``weight[h] * lstm[h]`` in log returns, i.e. a
combination of the LSTM and naive ("tomorrow = today", a log return of 0). Each weight is
fit on forecasts the network did not train on (a block after its training period) by least
absolute error over a grid in [0, 1], and is kept only when the gain over naive on that block
is significant with all ten horizons tested at once (Diebold-Mariano on per-date mean absolute
errors, which allows for the overlap of multi-day targets, at 1% / 10 horizons) and holds in
both halves of the block; otherwise it is 0 and the forecast *is* naive. The bar is high on
purpose: walk-forward backtests (38 unseen tickers, 4 folds, 2021) that kept weights at a
plain 5% level published forecasts 0.1-0.4% worse than naive at three horizons, and at
0.5% (Bonferroni 5%) still 0.5% worse at one. So a model without skill
publishes the random walk instead of noise: the combination is not worse than naive by
construction, and the walk-forward backtest checks that on blocks the weights never saw.

Pure numpy: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml import intervals
from ml.evaluate import diebold_mariano

GRID = np.linspace(0.0, 1.0, 21)
# Two-sided DM p-value below which a weight > 0 is kept: 1%, Bonferroni over the 10 horizons.
SIGNIFICANCE = 0.001


def _per_date_mean(values: np.ndarray, dates: np.ndarray) -> np.ndarray:
    return pd.Series(values).groupby(pd.Index(dates)).mean().to_numpy()


def fit_weights(
    actual: np.ndarray,
    predicted: np.ndarray,
    as_of_dates: np.ndarray,
    significance: float = SIGNIFICANCE,
) -> np.ndarray:
    """Per-horizon weights in [0, 1] on the LSTM's forecast (the rest on naive).

    ``actual`` and ``predicted`` are (samples, horizons) log returns on a block the model was
    not fit on; ``as_of_dates`` the samples' as-of dates (errors are averaged per date before
    the significance test, as the tickers of one date share their market's move)."""
    actual = np.asarray(actual, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    weights = np.zeros(actual.shape[1])
    for h in range(actual.shape[1]):
        y, p = actual[:, h], predicted[:, h]
        ok = np.isfinite(y) & np.isfinite(p)
        if ok.sum() < 30:
            continue
        y, p, dates = y[ok], p[ok], np.asarray(as_of_dates)[ok]
        errors = np.abs(y[:, None] - GRID[None, :] * p[:, None]).mean(axis=0)
        best = int(np.argmin(errors))
        if best == 0:
            continue
        gain = _per_date_mean(np.abs(y) - np.abs(y - GRID[best] * p), dates)
        halves = np.array_split(gain, 2)
        if len(gain) < 10 or min(half.mean() for half in halves) <= 0:
            continue
        _, p_value = diebold_mariano(gain, h + 1)
        if np.isfinite(p_value) and p_value < significance:
            weights[h] = GRID[best]
    return weights


def combine(predicted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The published point forecast: each horizon's LSTM log return times its weight."""
    return np.asarray(predicted) * np.asarray(weights)[None, :]


@dataclass(frozen=True)
class Calibration:
    """What turns the network's location and scale into the published forecast: the
    per-horizon combination weights and the conformal quantiles of the intervals."""

    weights: tuple[float, ...]
    quantiles: dict[int, tuple[float, ...]]
    n_samples: int

    def to_dict(self) -> dict:
        return {
            "combination_weights": list(self.weights),
            "interval_quantiles": {str(k): list(v) for k, v in self.quantiles.items()},
            "calibration_samples": self.n_samples,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        return cls(
            tuple(data["combination_weights"]),
            {int(k): tuple(v) for k, v in data["interval_quantiles"].items()},
            int(data.get("calibration_samples", 0)),
        )


def calibrate(
    actual: np.ndarray,
    location: np.ndarray,
    scale: np.ndarray,
    as_of_dates: np.ndarray,
    *,
    shrink: bool = True,
) -> Calibration:
    """Fit the combination weights, then the intervals around the combined forecast, on a
    block the network was not fit on. ``shrink=False`` keeps the raw LSTM (weights 1)."""
    weights = fit_weights(actual, location, as_of_dates) if shrink else np.ones(actual.shape[1])
    point = combine(location, weights)
    quantiles = intervals.calibrate(actual - point, scale)
    return Calibration(
        tuple(float(w) for w in weights),
        {level: tuple(q) for level, q in quantiles.items()},
        len(actual),
    )


def publish(
    location: np.ndarray, scale: np.ndarray, calibration: Calibration
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The published point forecast and its ``lower_80 .. upper_95`` bounds, in log returns."""
    point = combine(location, np.asarray(calibration.weights))
    return point, intervals.apply(point, scale, calibration.quantiles)

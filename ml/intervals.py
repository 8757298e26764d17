"""Split-conformal prediction intervals around a point forecast, scaled per origin and horizon.

Scores are absolute log-return residuals divided by a scale known at the as-of date: the
model's own forecast of the spread (the LSTM's scale head), or, for models without one, the
recent volatility ``volatility_20 * sqrt(h)`` (:func:`volatility_scale`). One set of
per-horizon quantiles of the scores then gives narrow intervals where the scale is small and
wide ones where it is large. Calibrate on residuals the model did not train on; apply to new
forecasts. Pure numpy.
"""

from __future__ import annotations

import numpy as np

LEVELS = (80, 95)


def volatility_scale(volatility: np.ndarray, horizons: int) -> np.ndarray:
    """(samples, horizons) random-walk scale from each origin's daily volatility."""
    vol = np.where(np.isfinite(volatility) & (volatility > 0), volatility, np.nan)
    return vol[:, None] * np.sqrt(np.arange(1, horizons + 1))[None, :]


def _checked(scale: np.ndarray) -> np.ndarray:
    scale = np.asarray(scale, dtype=np.float64)
    return np.where(np.isfinite(scale) & (scale > 0), scale, np.nan)


def calibrate(
    residuals: np.ndarray, scale: np.ndarray, levels: tuple[int, ...] = LEVELS
) -> dict[int, list[float]]:
    """Per-level, per-horizon conformal quantiles of ``|residual| / scale``.

    Uses the finite-sample quantile ceil((n + 1) * level) / n, so coverage on exchangeable new
    data is at least the nominal level.
    """
    scores = np.abs(residuals) / _checked(scale)
    quantiles = {}
    for level in levels:
        per_horizon = []
        for h in range(residuals.shape[1]):
            column = scores[:, h][np.isfinite(scores[:, h])]
            if len(column) == 0:
                raise ValueError("no finite residuals to calibrate intervals on")
            rank = min(1.0, np.ceil((len(column) + 1) * level / 100) / len(column))
            per_horizon.append(float(np.quantile(column, rank, method="higher")))
        quantiles[level] = per_horizon
    return quantiles


def apply(predicted: np.ndarray, scale: np.ndarray, quantiles: dict) -> dict[str, np.ndarray]:
    """``lower_<level>``/``upper_<level>`` log-return bounds around ``predicted``."""
    half = _checked(scale)
    bounds = {}
    for level, per_horizon in quantiles.items():
        width = half * np.asarray(per_horizon)[None, :]
        bounds[f"lower_{int(level)}"] = predicted - width
        bounds[f"upper_{int(level)}"] = predicted + width
    return bounds

"""Split-conformal prediction intervals, scaled by each origin's recent volatility.

Scores are absolute log-return residuals divided by ``volatility_20 * sqrt(h)`` (known at the
as-of date), so one set of per-horizon quantiles gives narrow intervals for calm stocks and wide
ones for volatile stocks. Calibrate on residuals the model did not train on; apply to new
forecasts. Pure numpy.
"""

from __future__ import annotations

import numpy as np

LEVELS = (80, 95)


def _scale(volatility: np.ndarray, horizons: int) -> np.ndarray:
    vol = np.where(np.isfinite(volatility) & (volatility > 0), volatility, np.nan)
    return vol[:, None] * np.sqrt(np.arange(1, horizons + 1))[None, :]


def calibrate(
    residuals: np.ndarray, volatility: np.ndarray, levels: tuple[int, ...] = LEVELS
) -> dict[int, list[float]]:
    """Per-level, per-horizon conformal quantiles of scaled absolute residuals.

    Uses the finite-sample quantile ceil((n + 1) * level) / n, so coverage on exchangeable new
    data is at least the nominal level.
    """
    scores = np.abs(residuals) / _scale(volatility, residuals.shape[1])
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


def apply(predicted: np.ndarray, volatility: np.ndarray, quantiles: dict) -> dict[str, np.ndarray]:
    """``lower_<level>``/``upper_<level>`` log-return bounds around ``predicted``."""
    half = _scale(volatility, predicted.shape[1])
    bounds = {}
    for level, per_horizon in quantiles.items():
        width = half * np.asarray(per_horizon)[None, :]
        bounds[f"lower_{int(level)}"] = predicted - width
        bounds[f"upper_{int(level)}"] = predicted + width
    return bounds

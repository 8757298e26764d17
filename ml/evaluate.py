"""Forecast accuracy on price levels, always beside the naive "tomorrow = today" baseline.

Pure numpy/pandas. Inputs are per-sample as-of closes, actual log returns and predicted log
returns for horizons 1..H (as produced by :mod:`ml.features` and :mod:`ml.model`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def horizon_metrics(
    as_of_close: np.ndarray,
    actual_log_returns: np.ndarray,
    predicted_log_returns: np.ndarray,
    tickers: np.ndarray,
) -> pd.DataFrame:
    """One row per horizon: model and naive MAE/RMSE/MAPE, relative MAE and direction hits.

    ``rel_mae`` is the model's MAE over the naive MAE on the same forecasts, pooled as the
    geometric mean of per-ticker ratios so that high-priced stocks do not dominate.
    """
    close = as_of_close[:, None]
    actual = close * np.exp(actual_log_returns)
    predicted = close * np.exp(predicted_log_returns)
    model_err = predicted - actual
    naive_err = close - actual
    rows = []
    for h in range(actual.shape[1]):
        frame = pd.DataFrame(
            {
                "ticker": tickers,
                "model_abs": np.abs(model_err[:, h]),
                "naive_abs": np.abs(naive_err[:, h]),
            }
        )
        per_ticker = frame.groupby("ticker")[["model_abs", "naive_abs"]].mean()
        per_ticker = per_ticker[per_ticker["naive_abs"] > 0]
        with np.errstate(divide="ignore"):  # a perfect ticker gives log(0) = -inf -> ratio 0
            rel = float(np.exp(np.log(per_ticker["model_abs"] / per_ticker["naive_abs"]).mean()))
        moved = actual_log_returns[:, h] != 0
        rows.append(
            {
                "horizon": h + 1,
                "n": len(actual),
                "mae": float(np.mean(np.abs(model_err[:, h]))),
                "rmse": float(np.sqrt(np.mean(model_err[:, h] ** 2))),
                "mape": float(np.mean(np.abs(model_err[:, h] / actual[:, h])) * 100),
                "naive_mae": float(np.mean(np.abs(naive_err[:, h]))),
                "naive_rmse": float(np.sqrt(np.mean(naive_err[:, h] ** 2))),
                "naive_mape": float(np.mean(np.abs(naive_err[:, h] / actual[:, h])) * 100),
                "rel_mae": rel,
                "directional_accuracy": float(
                    np.mean(
                        np.sign(predicted_log_returns[moved, h])
                        == np.sign(actual_log_returns[moved, h])
                    )
                )
                if moved.any()
                else float("nan"),
            }
        )
    return pd.DataFrame(rows)

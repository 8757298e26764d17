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
    as_of_dates: np.ndarray | None = None,
    naive_scale: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One set of (samples, horizons) forecasts beside naive: one row per horizon.

    The pooled rows of :func:`backtest_metrics` for the model, with naive's MAE, RMSE and MAPE
    alongside as ``naive_*``: one definition of every metric for training and backtests.
    MASE and the Diebold-Mariano test need ``as_of_dates`` and ``naive_scale`` (fold 0).
    """
    from ml.folds import forecast_frame

    dates = np.arange(len(tickers)) if as_of_dates is None else as_of_dates
    keys = (tickers, dates, as_of_close, actual_log_returns)
    forecasts = pd.concat(
        [
            forecast_frame("model", 0, *keys, predicted_log_returns),
            forecast_frame("naive", 0, *keys, np.zeros_like(predicted_log_returns)),
        ],
        ignore_index=True,
    )
    if naive_scale is None:
        naive_scale = pd.DataFrame(columns=["fold", "ticker", "scale"])
    metrics = backtest_metrics(forecasts, naive_scale)
    pooled = metrics[metrics["ticker"] == POOLED].set_index(["model", "horizon"])
    model = pooled.loc["model"]
    naive = pooled.loc["naive", ["mae", "rmse", "mape"]].add_prefix("naive_")
    columns = ["n_forecasts", "mae", "rmse", "mape", "rel_mae", "mase", "directional_accuracy",
               "dm_stat", "dm_pvalue"]  # fmt: skip
    return model[columns].join(naive).rename(columns={"n_forecasts": "n"}).reset_index()


POOLED = "__all__"


def diebold_mariano(loss_differential: np.ndarray, horizon: int) -> tuple[float, float]:
    """Diebold-Mariano test that a loss differential series has mean zero.

    Newey-West variance with ``horizon - 1`` lags (h-step forecasts overlap), the
    Harvey-Leybourne-Newbold small-sample correction, and a two-sided Student-t p-value.
    Negative statistics mean the first model's losses are lower.
    """
    from scipy import stats

    d = np.asarray(loss_differential, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 3:
        return float("nan"), float("nan")
    centred = d - d.mean()
    variance = centred @ centred / n
    for lag in range(1, min(horizon, n)):
        variance += 2 * (centred[lag:] @ centred[:-lag]) / n
    if variance <= 0:
        return float("nan"), float("nan")
    statistic = d.mean() / np.sqrt(variance / n)
    correction = np.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n)
    statistic *= correction
    p_value = 2 * stats.t.sf(abs(statistic), df=n - 1)
    return float(statistic), float(p_value)


LEVELS = (80, 95)
# The quantile each interval bound stands for (central intervals).
BOUND_QUANTILES = {"lower_95": 0.025, "lower_80": 0.10, "upper_80": 0.90, "upper_95": 0.975}
INTERVAL_METRICS = (
    *(f"{name}_{level}" for level in LEVELS for name in ("coverage", "width", "winkler")),
    "pinball",
)


def winkler_score(y, lower, upper, level: int):
    """Winkler (interval) score of a central ``level``% interval: its width plus
    ``2 / alpha`` times the distance by which ``y`` falls outside it (``alpha = 1 - level/100``);
    lower is better, the minimum expected score is reached by the true quantiles."""
    alpha = 1 - level / 100
    below = np.maximum(lower - y, 0)
    above = np.maximum(y - upper, 0)
    return (upper - lower) + (2 / alpha) * (below + above)


def pinball_loss(y, q, tau: float):
    """Pinball (quantile) loss of ``q`` as the ``tau`` quantile: ``tau * (y - q)`` when ``y`` is
    at or above ``q``, ``(1 - tau) * (q - y)`` below it."""
    diff = y - q
    return np.maximum(tau * diff, (tau - 1) * diff)


def _interval_scores(group: pd.DataFrame, level: int) -> dict:
    lower, upper = group[f"lower_{level}"], group[f"upper_{level}"]
    given = lower.notna() & upper.notna()  # a model may give intervals for some tickers only
    if not given.any():
        return {f"coverage_{level}": np.nan, f"width_{level}": np.nan, f"winkler_{level}": np.nan}
    y, lower, upper = group["actual_log_return"][given], lower[given], upper[given]
    return {
        f"coverage_{level}": float(((y >= lower) & (y <= upper)).mean()),
        # Widths and Winkler scores in percent of the as-of close (log-return points x 100).
        f"width_{level}": float((upper - lower).mean() * 100),
        f"winkler_{level}": float(winkler_score(y, lower, upper, level).mean() * 100),
    }


def _pinball(group: pd.DataFrame) -> float:
    """Mean pinball loss over the four quantiles the 80% and 95% bounds imply (0.025, 0.1,
    0.9, 0.975), in percent of the as-of close; rows without all four bounds are left out.
    Equals ``(0.1 * winkler_80 + 0.025 * winkler_95) / 4`` on the same rows."""
    bounds = group[list(BOUND_QUANTILES)]
    given = bounds.notna().all(axis=1)
    if not given.any():
        return np.nan
    y = group.loc[given, "actual_log_return"]
    losses = [pinball_loss(y, bounds.loc[given, key], tau) for key, tau in BOUND_QUANTILES.items()]
    return float(np.mean(losses) * 100)


def backtest_metrics(forecasts: pd.DataFrame, naive_scale: pd.DataFrame) -> pd.DataFrame:
    """Per (model, ticker, horizon) and pooled (ticker ``__all__``) walk-forward metrics.

    ``forecasts`` is the long format of :mod:`ml.folds`; ``naive_scale`` gives, per (fold,
    ticker), the mean absolute one-day change of the close over the year of trading days
    before the fold (MASE's denominator). Every model is compared with the naive forecast on
    the same (fold, ticker, as-of date, horizon) rows.
    """
    frame = forecasts.merge(naive_scale, on=["fold", "ticker"], how="left")
    close = frame["as_of_close"]
    actual = close * np.exp(frame["actual_log_return"])
    frame["error"] = close * np.exp(frame["predicted_log_return"]) - actual
    frame["abs_error"] = frame["error"].abs()
    frame["naive_abs_error"] = (close - actual).abs()
    frame["ape"] = frame["abs_error"] / actual * 100
    frame["scaled_error"] = frame["abs_error"] / frame["scale"]
    frame["scaled_naive_error"] = frame["naive_abs_error"] / frame["scale"]
    moved = frame["actual_log_return"] != 0
    frame["direction_hit"] = np.where(
        moved,
        np.sign(frame["predicted_log_return"]) == np.sign(frame["actual_log_return"]),
        np.nan,
    )

    rows = []
    for (model, horizon), group in frame.groupby(["model", "horizon"], sort=True):
        gives_direction = (group["predicted_log_return"] != 0).any()
        per_ticker = group.groupby("ticker")
        ratios = per_ticker["abs_error"].mean() / per_ticker["naive_abs_error"].mean()
        ratios = ratios[np.isfinite(ratios)]  # a ticker naive forecast perfectly has no ratio
        scopes = [(POOLED, group), *per_ticker]
        for ticker, part in scopes:
            # DM on the daily mean of scale-free losses, so each date counts once.
            daily = part.groupby("as_of_date")[["scaled_error", "scaled_naive_error"]].mean()
            dm_stat, dm_p = diebold_mariano(
                (daily["scaled_error"] - daily["scaled_naive_error"]).to_numpy(), int(horizon)
            )
            naive_mae = part["naive_abs_error"].mean()
            if ticker == POOLED:  # geometric mean over tickers: price levels do not weigh in
                with np.errstate(divide="ignore"):  # a perfect ticker: log(0) = -inf -> 0
                    rel_mae = float(np.exp(np.log(ratios).mean()))
            else:
                rel_mae = float(part["abs_error"].mean() / naive_mae) if naive_mae > 0 else np.nan
            rows.append(
                {
                    "model": model,
                    "ticker": ticker,
                    "horizon": int(horizon),
                    "n_forecasts": len(part),
                    "mae": float(part["abs_error"].mean()),
                    "rmse": float(np.sqrt((part["error"] ** 2).mean())),
                    "mape": float(part["ape"].mean()),
                    "rel_mae": rel_mae,
                    "mase": float(part["scaled_error"].mean()),
                    "directional_accuracy": float(part["direction_hit"].mean())
                    if gives_direction
                    else np.nan,
                    "dm_stat": dm_stat if model != "naive" else np.nan,
                    "dm_pvalue": dm_p if model != "naive" else np.nan,
                    **_interval_scores(part, 80),
                    **_interval_scores(part, 95),
                    "pinball": _pinball(part),
                }
            )
    return pd.DataFrame(rows)


def skill_by_model(metrics: pd.DataFrame) -> pd.Series:
    """Per model, the pooled relative MAE vs naive averaged over horizons (below 1 beats
    naive): the single score that tuning, the promotion gate and backtest summaries use."""
    return metrics[metrics["ticker"] == POOLED].groupby("model")["rel_mae"].mean()


def naive_scales(frame: pd.DataFrame, folds, lookback: int = 252) -> pd.DataFrame:
    """MASE denominators: per (fold, ticker), mean |close_t - close_(t-1)| over the
    ``lookback`` trading days before the fold's first as-of date."""
    rows = []
    for fold in folds:
        before = frame[frame["trade_date"] < fold.test_start]
        for ticker, group in before.groupby("ticker"):
            changes = group["close"].diff().abs().dropna().tail(lookback)
            if len(changes) and changes.mean() > 0:
                rows.append({"fold": fold.index, "ticker": ticker, "scale": changes.mean()})
    return pd.DataFrame(rows, columns=["fold", "ticker", "scale"])

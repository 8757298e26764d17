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

    Per scope (a ticker, or all of them pooled) of each (model, horizon): MAE, RMSE, MAPE and
    MASE over its rows; relative MAE = MAE / naive MAE (pooled: the geometric mean of the
    tickers' ratios, a ticker naive forecast perfectly left out, a perfect ticker counting
    0); the direction hit rate over rows where the price moved (NaN for a model that never
    predicts a move); the Diebold-Mariano test vs naive on the daily mean of the scaled
    losses; coverage, width and Winkler score of each interval level over the rows that have
    that interval (NaN when none do), and the mean pinball loss (:func:`_pinball`). Computed
    column-wise over all scopes at once (rows in the order (model, horizon), pooled first,
    then tickers).
    """
    frame = forecasts.merge(naive_scale, on=["fold", "ticker"], how="left")
    close = frame["as_of_close"]
    y = frame["actual_log_return"]
    actual = close * np.exp(y)
    frame["error"] = close * np.exp(frame["predicted_log_return"]) - actual
    frame["sq_error"] = frame["error"] ** 2
    frame["abs_error"] = frame["error"].abs()
    frame["naive_abs_error"] = (close - actual).abs()
    frame["ape"] = frame["abs_error"] / actual * 100
    frame["scaled_error"] = frame["abs_error"] / frame["scale"]
    frame["scaled_naive_error"] = frame["naive_abs_error"] / frame["scale"]
    moved = y != 0
    frame["direction_hit"] = np.where(
        moved, np.sign(frame["predicted_log_return"]) == np.sign(y), np.nan
    )
    frame["moves"] = frame["predicted_log_return"] != 0
    interval_columns = []
    for level in LEVELS:
        lower, upper = frame[f"lower_{level}"], frame[f"upper_{level}"]
        given = lower.notna() & upper.notna()  # a model may give intervals for some tickers only
        frame[f"given_{level}"] = given.astype(float)
        frame[f"covered_{level}"] = (given & (y >= lower) & (y <= upper)).astype(float)
        frame[f"width_{level}"] = (upper - lower).where(given)
        frame[f"winkler_{level}"] = winkler_score(y, lower, upper, level).where(given)
        interval_columns += [f"given_{level}", f"covered_{level}"]
    bounds = frame[list(BOUND_QUANTILES)]
    all_bounds = bounds.notna().all(axis=1)
    losses = sum(pinball_loss(y, bounds[key], tau) for key, tau in BOUND_QUANTILES.items())
    frame["pinball_row"] = (losses / len(BOUND_QUANTILES)).where(all_bounds)
    frame["pinball_given"] = all_bounds.astype(float)
    frame["pinball_nan"] = (all_bounds & frame["pinball_row"].isna()).astype(float)

    means = ["abs_error", "naive_abs_error", "sq_error", "ape", "scaled_error", "direction_hit",
             "width_80", "winkler_80", "width_95", "winkler_95", "pinball_row"]  # fmt: skip
    sums = [*interval_columns, "pinball_given", "pinball_nan"]
    keys = ["model", "horizon"]
    per_ticker = _scope_table(frame, [*keys, "ticker"], means, sums)
    pooled = _scope_table(frame, keys, means, sums)
    pooled.insert(2, "ticker", POOLED)

    # Relative MAE: per ticker its ratio; pooled the geometric mean of the finite ratios.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = per_ticker["abs_error"] / per_ticker["naive_abs_error"]
        per_ticker["rel_mae"] = np.where(per_ticker["naive_abs_error"] > 0, ratio, np.nan).astype(
            float
        )
        finite = ratio[np.isfinite(ratio)]
        log_ratio = np.log(finite)  # a perfect ticker: log(0) = -inf -> 0
    geometric = np.exp(log_ratio.groupby([per_ticker.loc[finite.index, k] for k in keys]).mean())
    pooled["rel_mae"] = geometric.reindex(pd.MultiIndex.from_frame(pooled[keys])).to_numpy()

    # Diebold-Mariano on the daily mean of scale-free losses, so each date counts once.
    for table, scope in ((per_ticker, [*keys, "ticker"]), (pooled, keys)):
        table["dm_stat"], table["dm_pvalue"] = _dm_by_scope(frame, scope, table)

    gives_direction = frame.groupby(keys, sort=True)["moves"].any()
    out = pd.concat([pooled, per_ticker], ignore_index=True)
    out["scope_order"] = (out["ticker"] != POOLED).astype(int)
    out = out.sort_values([*keys, "scope_order", "ticker"], kind="stable").reset_index(drop=True)
    direction = pd.Series(
        gives_direction.reindex(pd.MultiIndex.from_frame(out[keys])).to_numpy(dtype=bool)
    )
    naive = out["model"] == "naive"
    result = pd.DataFrame(
        {
            "model": out["model"],
            "ticker": out["ticker"],
            "horizon": out["horizon"].astype(int),
            "n_forecasts": out["n"].astype(int),
            "mae": out["abs_error"],
            "rmse": np.sqrt(out["sq_error"]),
            "mape": out["ape"],
            "rel_mae": out["rel_mae"],
            "mase": out["scaled_error"],
            "directional_accuracy": out["direction_hit"].where(direction),
            "dm_stat": out["dm_stat"].mask(naive),
            "dm_pvalue": out["dm_pvalue"].mask(naive),
        }
    )
    for level in LEVELS:
        none = out[f"given_{level}"] == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            coverage = out[f"covered_{level}"] / out[f"given_{level}"]
        result[f"coverage_{level}"] = coverage.mask(none)
        result[f"width_{level}"] = (out[f"width_{level}"] * 100).mask(none)
        result[f"winkler_{level}"] = (out[f"winkler_{level}"] * 100).mask(none)
    result["pinball"] = (out["pinball_row"] * 100).mask(
        (out["pinball_given"] == 0) | (out["pinball_nan"] > 0)
    )
    return result.astype({c: float for c in result.columns[4:]})


def _scope_table(frame: pd.DataFrame, keys: list[str], means: list[str], sums: list[str]):
    """Per group of ``keys``: its row count ``n``, the NaN-skipping means of ``means`` and the
    sums of ``sums``, in sorted key order."""
    groups = frame.groupby(keys, sort=True)
    table = groups[means].mean()
    table[sums] = groups[sums].sum()
    table["n"] = groups.size()
    return table.reset_index()


def _dm_by_scope(frame: pd.DataFrame, scope: list[str], table: pd.DataFrame):
    """:func:`diebold_mariano` of each scope's daily mean loss differential (scaled model
    minus scaled naive error), aligned with ``table``'s rows (which have the ``scope`` keys)."""
    daily = frame.groupby([*scope, "as_of_date"], sort=True)[
        ["scaled_error", "scaled_naive_error"]
    ].mean()
    differential = (daily["scaled_error"] - daily["scaled_naive_error"]).to_numpy()
    index = daily.index.droplevel("as_of_date")
    # The groups are sorted, so each scope's dates are one contiguous run of rows.
    boundaries = np.flatnonzero(~index.duplicated(keep="first"))
    ends = np.append(boundaries[1:], len(index))
    position = {index[b]: (b, e) for b, e in zip(boundaries, ends, strict=True)}
    stats, pvalues = [], []
    for key, horizon in zip(pd.MultiIndex.from_frame(table[scope]), table["horizon"], strict=True):
        b, e = position[key]
        statistic, p_value = diebold_mariano(differential[b:e], int(horizon))
        stats.append(statistic)
        pvalues.append(p_value)
    return stats, pvalues


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


REGIME_METRICS = ("rel_mae", "coverage_80", "coverage_95", "winkler_80", "winkler_95")
OTHER_REGIME = "other"  # folds outside every named regime


def regime_metrics(
    forecasts: pd.DataFrame, folds, naive_scale: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Pooled metrics per named regime and model, by :func:`backtest_metrics` on each regime's
    rows (the same definitions as the whole backtest's), averaged over horizons.

    ``folds`` are :class:`ml.folds.Fold`; a fold's ``regime`` decides its rows (folds without
    one are pooled as ``"other"``). One row per (regime, model) in the folds' time order, with
    the regime's fold count and first and last as-of dates, the relative MAE vs naive and, for
    models with intervals, coverage and Winkler scores at 80 and 95% (NaN otherwise). Empty
    when no fold carries a regime.
    """
    columns = ["regime", "model", "n_folds", "first_as_of", "last_as_of", "n_forecasts",
               *REGIME_METRICS]  # fmt: skip
    if not any(fold.regime for fold in folds):
        return pd.DataFrame(columns=columns)
    if naive_scale is None:
        naive_scale = pd.DataFrame(columns=["fold", "ticker", "scale"])
    by_regime: dict[str, list] = {}
    for fold in folds:
        by_regime.setdefault(fold.regime or OTHER_REGIME, []).append(fold)
    rows = []
    for regime, members in by_regime.items():
        indices = [fold.index for fold in members]
        part = forecasts[forecasts["fold"].isin(indices)]
        if part.empty:
            continue
        scale = naive_scale[naive_scale["fold"].isin(indices)]
        pooled = backtest_metrics(part, scale)
        pooled = pooled[pooled["ticker"] == POOLED]
        means = pooled.groupby("model", sort=False)[list(REGIME_METRICS)].mean()
        counts = pooled.groupby("model", sort=False)["n_forecasts"].sum()
        for model, values in means.iterrows():
            rows.append(
                {
                    "regime": regime,
                    "model": model,
                    "n_folds": len(members),
                    "first_as_of": min(f.test_start for f in members).date(),
                    "last_as_of": max(f.test_end for f in members).date(),
                    "n_forecasts": int(counts[model]),
                    **values.to_dict(),
                }
            )
    return pd.DataFrame(rows, columns=columns)

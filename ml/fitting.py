"""Fitting windows for the LSTM, shared by every stage that fits one: the training config and
the purged time split into fit / early-stopping (/ validation) windows.

Train, the walk-forward backtest, the promotion gate and tuning all build on this module; it
imports none of them.

Time split, never shuffled across time: the last ``validation_days`` trading dates are held
out for the reported metrics; the ``stop_days`` before them drive early stopping. Samples are
purged so that no training target reaches into the early-stopping or validation period.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml.features import HORIZONS, WindowSet, feature_set, make_windows
from ml.model import ModelParams

DEFAULT_FEATURE_GROUPS = ("volatility", "market", "volume")


@dataclass(frozen=True)
class TrainConfig:
    params: ModelParams = field(default_factory=ModelParams)
    validation_days: int = 126
    # The latest part of the held-out block, on which the published forecast (combination
    # weights, interval quantiles) is calibrated. Walk-forward on the design set, intervals
    # calibrated on the latest 63 days covered within 2 points of nominal in 3 of 4 periods,
    # on all 126 in 1 of 4: the nearer the calibration, the better it matches the next month.
    calibration_days: int = 63
    stop_days: int = 63
    train_years: float | None = 10.0
    max_train_samples: int | None = 200_000
    tickers: tuple[str, ...] | None = None
    # The model's inputs, in order (``ml.features.feature_set`` builds them from groups). The
    # default adds every candidate group: each lowered the walk-forward pinball loss on the
    # design set and all three together the most (docs/forecast-quality.md, ablation).
    features: tuple[str, ...] = tuple(feature_set(DEFAULT_FEATURE_GROUPS))
    # Start from the best parameters of the latest `stockcast tune` run; settings given here
    # that differ from the defaults still win.
    use_tuned: bool = True
    # The promotion gate's walk-forward comparison with naive and the champion.
    gate_folds: int = 2
    gate_test_days: int = 21


@dataclass
class Split:
    fit: WindowSet
    stop: WindowSet
    validation: WindowSet
    bounds: dict


def fit_and_stop_windows(
    frame: pd.DataFrame, config: TrainConfig, before: pd.Timestamp
) -> tuple[WindowSet, WindowSet, pd.Timestamp]:
    """Fit and early-stopping windows for a model that must know nothing from ``before`` on.

    The ``stop_days`` trading dates before ``before`` drive early stopping; fit samples are
    purged so their targets end before that block, and stop samples so theirs end before
    ``before``. Returns (fit, stop, stop_start).
    """
    dates = np.sort(frame.loc[frame["trade_date"] < before, "trade_date"].unique())
    needed = config.stop_days + config.params.window + 2 * HORIZONS
    if len(dates) < needed:
        raise ValueError(
            f"only {len(dates)} trading dates before {before.date()}; a fit needs at least "
            f"{needed} (window {config.params.window} + early-stopping {config.stop_days} + "
            "purge gaps)"
        )
    stop_start = pd.Timestamp(dates[-config.stop_days])
    fit_from = None
    if config.train_years:
        fit_from = stop_start - pd.DateOffset(days=round(365.25 * config.train_years))
    window = config.params.window
    features = config.features
    stop = make_windows(
        frame, window, features=features, as_of_from=stop_start, targets_before=before
    )
    fit_set = make_windows(
        frame,
        window,
        as_of_from=fit_from,
        targets_before=stop_start,
        max_samples=config.max_train_samples,
        seed=config.params.seed,
        features=features,
    )
    if len(fit_set) == 0:
        raise ValueError(f"no complete training windows before {stop_start.date()}")
    return fit_set, stop, stop_start


def _calibration_start(dates: np.ndarray, config: TrainConfig, before) -> pd.Timestamp:
    if not 0 < config.calibration_days <= config.validation_days:
        raise ValueError(
            f"calibration_days ({config.calibration_days}) must be within the held-out "
            f"validation_days ({config.validation_days})"
        )
    if len(dates) <= config.validation_days:
        raise ValueError(
            f"only {len(dates)} trading dates before {pd.Timestamp(before).date()}; the "
            f"held-out block alone needs {config.validation_days}"
        )
    return pd.Timestamp(dates[-config.calibration_days])


def calibration_windows(
    frame: pd.DataFrame, config: TrainConfig, before: pd.Timestamp
) -> tuple[pd.Timestamp, WindowSet]:
    """(fit_before, windows) for a model that forecasts from ``before`` on, held out as
    :func:`split_windows` holds out the end of the data: the network is fit on data before
    ``fit_before``, the ``validation_days``-th trading date before ``before``, and calibrated on
    the windows of the last ``calibration_days`` dates before ``before`` (targets purged at it).
    """
    dates = np.sort(frame.loc[frame["trade_date"] < before, "trade_date"].unique())
    start = _calibration_start(dates, config, before)
    windows = make_windows(
        frame,
        config.params.window,
        features=config.features,
        as_of_from=start,
        targets_before=before,
    )
    return pd.Timestamp(dates[-config.validation_days]), windows


def split_windows(frame: pd.DataFrame, config: TrainConfig) -> Split:
    """Purged time split of all windows into fit / early-stopping / validation sets."""
    dates = np.sort(frame["trade_date"].unique())
    if len(dates) <= config.validation_days:
        raise ValueError(
            f"only {len(dates)} trading dates in the mart; validation alone needs "
            f"{config.validation_days}"
        )
    val_start = pd.Timestamp(dates[-config.validation_days])
    calibration_start = _calibration_start(dates, config, dates[-1] + np.timedelta64(1, "D"))
    fit, stop, stop_start = fit_and_stop_windows(frame, config, before=val_start)
    validation = make_windows(
        frame, config.params.window, features=config.features, as_of_from=val_start
    )
    if len(validation) == 0:
        raise ValueError("not enough complete windows to validate")
    bounds = {
        "data_start": str(pd.Timestamp(dates[0]).date()),
        "data_end": str(pd.Timestamp(dates[-1]).date()),
        "fit_as_of_start": str(pd.Timestamp(fit.as_of_dates.min()).date()),
        "fit_as_of_end": str(pd.Timestamp(fit.as_of_dates.max()).date()),
        "stop_start": str(stop_start.date()),
        "validation_start": str(val_start.date()),
        "calibration_start": str(calibration_start.date()),
    }
    return Split(fit, stop, validation, bounds)

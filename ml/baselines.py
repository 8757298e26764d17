"""Baselines scored next to the Stockcast model on the same walk-forward folds.

Every function takes the long feature frame from :func:`ml.features.build_feature_frame`, a
:class:`ml.folds.Fold` and the fold's forecast origins (the ``WindowSet`` from
``make_windows(frame, 30, as_of_from=fold.test_start, as_of_to=fold.test_end)``), and returns
predicted log returns from each origin's close for horizons 1..10 as an array of shape
``(len(origins), 10)``, row-aligned with the origins.

Leakage rules (the same as the model's): anything *fit* for a fold (ETS/ARIMA parameters, the
peer's scalers and weights) uses only closes dated strictly before ``fold.test_start``; a
forecast as of an origin uses closes up to and including the origin date, never later.

- :func:`naive_forecasts`: zeros (tomorrow's close is today's close).
- :func:`drift_forecasts`: ``h`` times the trailing mean daily log return.
- :func:`ewma_forecasts`: naive, with intervals from RiskMetrics EWMA volatility (no fit).
- :func:`garch_forecasts`: naive, with intervals from a GARCH(1,1)-t fit per ticker and fold
  (``arch``, :func:`fit_garch_models`) and filtered forward through the test block; a fit made
  before an earlier fold may serve a later one (filtered forward through the gap).
- :func:`classical_forecasts`: StatsForecast ``AutoETS`` (or ``AutoARIMA``) per ticker on log
  closes, fit once per fold and rolled forward through the test block without refitting.
- :func:`peer_lstm_forecasts`: the approach of the project Stockcast replaces (an LSTM on
  min-max-scaled raw closes predicting the next 10 closes), done without leakage; in two steps,
  :func:`fit_peer_lstm` (scalers and network on closes before a cutoff) and
  :func:`predict_peer_lstm` (any later origins), so one fit may serve several folds.

Pure: arrays and frames in, arrays out, no I/O. TensorFlow, statsforecast and arch are imported
lazily inside the functions that need them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.features import HORIZONS, WindowSet
from ml.folds import Fold

INTERVAL_KEYS = ("lower_80", "upper_80", "lower_95", "upper_95")
MIN_CLASSICAL_HISTORY = 60  # closes before test_start needed to fit a classical model


@dataclass(frozen=True)
class _Series:
    """One ticker's full close history from the feature frame, sorted by date."""

    dates: np.ndarray  # datetime64[ns]
    closes: np.ndarray  # float64


def _series_by_ticker(frame: pd.DataFrame, tickers) -> dict[str, _Series]:
    wanted = set(tickers)
    out = {}
    for ticker, group in frame[frame["ticker"].isin(wanted)].groupby("ticker", sort=False):
        group = group.sort_values("trade_date")
        out[ticker] = _Series(
            group["trade_date"].to_numpy("datetime64[ns]"),
            group["close"].to_numpy(np.float64),
        )
    return out


def _origin_positions(series: dict[str, _Series], origins: WindowSet) -> np.ndarray:
    """Row index of each origin's date inside its ticker's series (raises if absent)."""
    positions = np.empty(len(origins), np.int64)
    dates = origins.as_of_dates.astype("datetime64[ns]")
    for ticker in pd.unique(origins.tickers):
        rows = np.flatnonzero(origins.tickers == ticker)
        s = series.get(ticker)
        if s is None:
            raise ValueError(f"origin {ticker} {dates[rows[0]]} is not a row of the feature frame")
        found = np.searchsorted(s.dates, dates[rows])
        inside = found < len(s.dates)
        matched = inside & (s.dates[np.minimum(found, len(s.dates) - 1)] == dates[rows])
        if not matched.all():
            date = dates[rows[np.flatnonzero(~matched)[0]]]
            raise ValueError(f"origin {ticker} {date} is not a row of the feature frame")
        positions[rows] = found
    return positions


def _check_origins(fold: Fold, origins: WindowSet) -> None:
    if len(origins) and (origins.as_of_dates < np.datetime64(fold.test_start)).any():
        raise ValueError(f"origins before fold {fold.index}'s test_start {fold.test_start.date()}")


def naive_forecasts(origins: WindowSet) -> np.ndarray:
    """The random walk: every horizon's predicted log return is zero."""
    return np.zeros((len(origins), HORIZONS))


def drift_forecasts(frame: pd.DataFrame, origins: WindowSet, *, lookback: int = 252) -> np.ndarray:
    """Random walk with drift: ``h`` times the mean daily log return over the trailing window.

    The window is the ``lookback`` closes up to and including the origin, i.e. ``lookback - 1``
    daily returns, so the drift is ``(log c_t - log c_{t-lookback+1}) / (lookback - 1)``. With
    a shorter history every available close is used; with a single close the drift is zero.
    """
    if lookback < 2:
        raise ValueError("lookback must be at least 2 closes")
    series = _series_by_ticker(frame, origins.tickers)
    positions = _origin_positions(series, origins)
    drift = np.zeros(len(origins))
    for i, (ticker, pos) in enumerate(zip(origins.tickers, positions, strict=True)):
        start = max(0, pos - lookback + 1)
        if pos > start:
            closes = series[ticker].closes
            drift[i] = (np.log(closes[pos]) - np.log(closes[start])) / (pos - start)
    return drift[:, None] * np.arange(1, HORIZONS + 1)[None, :]


# -- volatility baselines: naive point forecast, intervals from a volatility forecast ----------

EWMA_LAMBDA = 0.94  # RiskMetrics (1996) daily decay
QUANTILES = {"lower_95": 0.025, "lower_80": 0.10, "upper_80": 0.90, "upper_95": 0.975}
MIN_GARCH_HISTORY = 250  # training returns needed to fit a GARCH(1,1)
_STEPS = np.arange(1, HORIZONS + 1)


def _log_returns(closes: np.ndarray) -> np.ndarray:
    """``r[p] = log(c[p] / c[p-1])`` at close position ``p``; ``r[0]`` and returns touching a
    non-positive or non-finite close are NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_close = np.where(np.isfinite(closes) & (closes > 0), np.log(closes), np.nan)
    return np.concatenate([[np.nan], np.diff(log_close)])


def ewma_variance(returns: np.ndarray, lam: float = EWMA_LAMBDA) -> np.ndarray:
    """RiskMetrics EWMA variance of zero-mean returns, causal: ``out[t]`` uses ``returns[:t+1]``.

    ``out[t] = S_t / W_t`` with ``S_t = lam * S_(t-1) + r_t**2`` and ``W_t = lam * W_(t-1) + 1``,
    i.e. the RiskMetrics recursion ``sigma2_t = lam * sigma2_(t-1) + (1 - lam) * r_t**2`` with
    its start-up weights normalised to sum to one (no seed value to choose; after 100 returns
    the two differ by a factor ``1 / (1 - lam**t)`` < 1.002). NaN returns get no weight; before
    the first finite return the variance is NaN. ``out[t]`` is the variance forecast for the
    return after ``t``.
    """
    from scipy.signal import lfilter

    r = np.asarray(returns, dtype=np.float64)
    finite = np.isfinite(r)
    squares = np.where(finite, r, 0.0) ** 2
    weight_sum = lfilter([1.0], [1.0, -lam], finite.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight_sum > 0, lfilter([1.0], [1.0, -lam], squares) / weight_sum, np.nan)


def _normal_bounds(cumulative_variance: np.ndarray) -> dict[str, np.ndarray]:
    """Log-return bounds around zero from the normal quantiles of each h-step variance."""
    from scipy import stats

    sd = np.sqrt(cumulative_variance)
    return {key: stats.norm.ppf(q) * sd for key, q in QUANTILES.items()}


def ewma_forecasts(
    frame: pd.DataFrame, origins: WindowSet, *, lam: float = EWMA_LAMBDA
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Naive point forecast with RiskMetrics EWMA volatility intervals.

    Per ticker, :func:`ewma_variance` runs once over the whole series of daily log returns
    (``lam`` = 0.94) and is read at each origin's position, so the variance as of an origin
    uses returns up to and including the origin's close, never a later one. Random-walk
    scaling: the ``h``-step log-return variance is ``h * sigma2``; bounds are the normal
    quantiles (80%: +-1.2816 sd, 95%: +-1.9600 sd) in log-return space, i.e. prices
    ``close * exp(bound)``. Needs nothing fit per fold. Origins with no past return get NaN
    intervals.
    """
    n = len(origins)
    variance = np.full(n, np.nan)
    series = _series_by_ticker(frame, origins.tickers)
    positions = _origin_positions(series, origins)
    for ticker in pd.unique(origins.tickers):
        rows = np.flatnonzero(origins.tickers == ticker)
        path = ewma_variance(_log_returns(series[ticker].closes), lam)
        variance[rows] = path[positions[rows]]
    return naive_forecasts(origins), _normal_bounds(variance[:, None] * _STEPS[None, :])


@dataclass(frozen=True)
class GarchFit:
    """GARCH(1,1) parameters on percent log returns with standardised Student-t innovations.

    ``last_variance`` is the conditional variance of the last training return (percent^2),
    where the forward filter starts."""

    omega: float
    alpha: float
    beta: float
    nu: float
    last_variance: float

    def one_step_variances(self, returns: np.ndarray) -> np.ndarray:
        """``out[k]``: variance of the return after ``returns[k]`` given returns up to ``k``
        (percent^2), filtered forward from the fit's last training return: ``returns[0]`` must
        be that return. ``sigma2_(t+1) = omega + alpha * r_t**2 + beta * sigma2_t``."""
        from scipy.signal import lfilter

        drive = self.omega + self.alpha * np.asarray(returns, dtype=np.float64) ** 2
        return lfilter([1.0], [1.0, -self.beta], drive, zi=[self.beta * self.last_variance])[0]

    def cumulative_variances(self, one_step: np.ndarray) -> np.ndarray:
        """Variance of the ``h``-step log return, ``h`` = 1..10, from each one-step variance:
        ``sum_{j=1..h} sigma2_(t+j)`` with ``sigma2_(t+j) = omega * sum_{i<j-1} p**i +
        p**(j-1) * sigma2_(t+1)`` and persistence ``p = alpha + beta`` (any ``p``)."""
        p = self.alpha + self.beta
        powers = p ** (_STEPS - 1)  # p^(j-1), j = 1..H
        constant = self.omega * np.concatenate([[0.0], np.cumsum(powers[:-1])])
        step = constant[None, :] + powers[None, :] * np.asarray(one_step)[:, None]
        return np.cumsum(step, axis=1)

    def scale(self, q: float) -> float:
        """The ``q`` quantile of the Student-t with ``nu`` degrees of freedom scaled to unit
        variance (the innovations' distribution)."""
        from scipy import stats

        return float(stats.t.ppf(q, self.nu) * np.sqrt((self.nu - 2) / self.nu))


def fit_garch(percent_returns: np.ndarray) -> GarchFit | str:
    """GARCH(1,1)-t with zero mean on percent log returns (``arch``); the reason as a string
    when there is no usable fit (too short, non-finite data, no convergence)."""
    r = np.asarray(percent_returns, dtype=np.float64)
    if len(r) < MIN_GARCH_HISTORY:
        return f"{len(r)} training returns (< {MIN_GARCH_HISTORY})"
    if not np.isfinite(r).all():
        return "non-finite training returns"
    from arch import arch_model

    model = arch_model(r, mean="Zero", vol="GARCH", p=1, q=1, dist="t", rescale=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = model.fit(disp="off", show_warning=False)
    except Exception as error:  # a failed fit falls back; it must not sink the backtest
        return f"fit failed: {error}"
    if result.convergence_flag != 0:
        return f"no convergence (optimizer flag {result.convergence_flag})"
    params = result.params
    fit = GarchFit(
        omega=float(params["omega"]),
        alpha=float(params["alpha[1]"]),
        beta=float(params["beta[1]"]),
        nu=float(params["nu"]),
        last_variance=float(np.asarray(result.conditional_volatility)[-1] ** 2),
    )
    values = np.array([fit.omega, fit.alpha, fit.beta, fit.nu, fit.last_variance])
    if not np.isfinite(values).all() or fit.nu <= 2 or fit.omega <= 0:
        return f"unusable parameters {params.round(4).to_dict()}"
    return fit


@dataclass(frozen=True)
class GarchFits:
    """Per-ticker :func:`fit_garch` results on returns whose closes are dated before ``cutoff``
    (a :class:`GarchFit`, or the reason there is none). Serves any fold starting on or after
    ``cutoff``: the variance is filtered forward from the last training return."""

    cutoff: pd.Timestamp
    by_ticker: dict[str, GarchFit | str]


def fit_garch_models(
    frame: pd.DataFrame, cutoff, tickers=None, *, train_days: int = 1000
) -> GarchFits:
    """:func:`fit_garch` per ticker (default: every ticker of ``frame``) on its last
    ``train_days`` daily log returns, in percent, whose closes are dated before ``cutoff``."""
    cutoff = pd.Timestamp(cutoff)
    tickers = frame["ticker"].unique() if tickers is None else pd.unique(np.asarray(tickers))
    series = _series_by_ticker(frame, tickers)
    by_ticker = {ticker: _fit_before(s, cutoff, train_days) for ticker, s in series.items()}
    return GarchFits(cutoff, by_ticker)


def _fit_before(s: _Series, cutoff: pd.Timestamp, train_days: int) -> GarchFit | str:
    returns = _log_returns(s.closes) * 100
    n_train = int(np.searchsorted(s.dates, np.datetime64(cutoff, "ns")))  # closes < cutoff
    return fit_garch(returns[max(1, n_train - train_days) : n_train])


def garch_forecasts(
    frame: pd.DataFrame,
    fold: Fold,
    origins: WindowSet,
    *,
    train_days: int = 1000,
    lam: float = EWMA_LAMBDA,
    fits: GarchFits | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Naive point forecast with GARCH(1,1)-t volatility intervals.

    Per ticker and fold, a zero-mean GARCH(1,1) with standardised Student-t innovations is fit
    (:func:`fit_garch`, ``arch``) on the last ``train_days`` daily log returns, in percent,
    whose closes are dated before ``fold.test_start``. Its parameters are then frozen and the
    variance recursion is filtered forward through the test block (no refit per origin), so
    the one-step variance as of an origin uses returns up to and including the origin's close.
    The ``h``-step variance is the sum of the GARCH variance forecasts for steps 1..h; bounds
    are the unit-variance Student-t quantiles with the fitted degrees of freedom times its
    square root, in log-return space (prices ``close * exp(bound)``).

    ``fits`` (from :func:`fit_garch_models` with a cutoff on or before ``fold.test_start``)
    replaces the fold's own fits: the recursion is filtered forward from the fits' last
    training return through the gap and the test block, so nothing dated on or after the
    cutoff is fit on. Tickers missing from ``fits`` are fit at its cutoff and added to it. With
    ``fits`` made at ``fold.test_start`` the result is the same as without.

    Fallback: a ticker without a usable fit (fewer than 250 training returns, non-finite
    returns, no convergence) gets :func:`ewma_forecasts`' intervals; one warning per call
    names those tickers and the reason.
    """
    _check_origins(fold, origins)
    if fits is not None and fits.cutoff > fold.test_start:
        raise ValueError(
            f"GARCH fits made before {fits.cutoff.date()} cannot serve fold {fold.index} "
            f"starting {fold.test_start.date()}"
        )
    cutoff = fold.test_start if fits is None else fits.cutoff
    n = len(origins)
    bounds = {key: np.full((n, HORIZONS), np.nan) for key in INTERVAL_KEYS}
    series = _series_by_ticker(frame, origins.tickers)
    positions = _origin_positions(series, origins)
    fallbacks: dict[str, str] = {}
    for ticker in pd.unique(origins.tickers):
        rows = np.flatnonzero(origins.tickers == ticker)
        s = series[ticker]
        returns = _log_returns(s.closes) * 100
        n_train = int(np.searchsorted(s.dates, np.datetime64(cutoff, "ns")))  # closes < cutoff
        last_train = n_train - 1  # position of the last training close (and return)
        if fits is None:
            fit = fit_garch(returns[max(1, n_train - train_days) : n_train])
        else:
            if ticker not in fits.by_ticker:
                fits.by_ticker[ticker] = _fit_before(s, cutoff, train_days)
            fit = fits.by_ticker[ticker]
        if isinstance(fit, str):
            fallbacks[ticker] = fit
            variance = ewma_variance(returns / 100, lam)[positions[rows]]
            for key, value in _normal_bounds(variance[:, None] * _STEPS[None, :]).items():
                bounds[key][rows] = value
            continue
        # out[k] = one-step variance as of close position last_train + k.
        one_step = fit.one_step_variances(returns[last_train : int(positions[rows].max()) + 1])
        cumulative = fit.cumulative_variances(one_step[positions[rows] - last_train]) / 1e4
        for key, q in QUANTILES.items():
            bounds[key][rows] = fit.scale(q) * np.sqrt(cumulative)
    if fallbacks:
        reasons = "; ".join(f"{t}: {why}" for t, why in fallbacks.items())
        warnings.warn(
            f"GARCH fell back to EWMA for {len(fallbacks)} of {len(pd.unique(origins.tickers))} "
            f"tickers in fold {fold.index} ({reasons})",
            stacklevel=2,
        )
    return naive_forecasts(origins), bounds


def _classical_model(model: str):
    from statsforecast.models import AutoARIMA, AutoETS

    if model == "AutoETS":
        return AutoETS(season_length=1)
    if model == "AutoARIMA":
        return AutoARIMA(season_length=1)
    raise ValueError(f"unknown classical model {model!r}; use 'AutoETS' or 'AutoARIMA'")


def classical_forecasts(
    frame: pd.DataFrame,
    fold: Fold,
    origins: WindowSet,
    *,
    model: str = "AutoETS",
    train_days: int = 756,
    levels: tuple[int, int] = (80, 95),
    refit: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A StatsForecast classical model per ticker on log closes, with prediction intervals.

    Each ticker is fit once per fold (``AutoETS(season_length=1)``, or ``AutoARIMA``) on its
    last ``train_days`` log closes dated before ``fold.test_start``. For each origin the fitted
    model is run forward, with its parameters (and ETS initial state) frozen, over the same
    series extended through the origin date (``model.forward``), and forecasts 1..10 steps;
    only the state and the residual variance are updated from the test-block closes up to the
    origin. ``refit=True`` instead re-estimates the model on the ``train_days`` closes ending at
    the origin (slower; kept to compare).

    Returns predicted log returns (mean forecast minus the origin's log close) and a dict with
    ``lower_80, upper_80, lower_95, upper_95`` on the same log-return scale and shape.

    Fallback: a ticker with fewer than 60 closes before ``test_start``, non-finite or
    non-positive closes in the series, or a fit that statsforecast rejects (warned) gets the
    naive forecast (zeros) with NaN intervals.
    """
    if tuple(sorted(levels)) != (80, 95):
        raise ValueError("levels must be (80, 95): the interval keys are fixed")
    _check_origins(fold, origins)
    n = len(origins)
    predicted = np.zeros((n, HORIZONS))
    intervals = {key: np.full((n, HORIZONS), np.nan) for key in INTERVAL_KEYS}
    series = _series_by_ticker(frame, origins.tickers)
    positions = _origin_positions(series, origins)
    test_start = np.datetime64(fold.test_start, "ns")
    level_list = [80, 95]

    for ticker in pd.unique(origins.tickers):
        rows = np.flatnonzero(origins.tickers == ticker)
        s = series[ticker]
        n_train = int(np.searchsorted(s.dates, test_start))  # closes dated < test_start
        start = max(0, n_train - train_days)
        last = int(positions[rows].max())
        with np.errstate(divide="ignore", invalid="ignore"):
            log_close = np.log(s.closes[start : last + 1])
        if n_train - start < MIN_CLASSICAL_HISTORY or not np.isfinite(log_close).all():
            continue
        fitted = _classical_model(model)
        if not refit:
            try:
                fitted.fit(log_close[: n_train - start])
            except Exception as error:  # a failed fit must not sink the whole backtest
                warnings.warn(f"{model} fit failed for {ticker}: {error}", stacklevel=2)
                continue
        for row in rows:
            end = positions[row] - start + 1  # log_close[:end] ends at the origin
            try:
                if refit:
                    y = log_close[max(0, end - train_days) : end]
                    out = fitted.forecast(y, h=HORIZONS, level=level_list)
                else:
                    out = fitted.forward(log_close[:end], h=HORIZONS, level=level_list)
            except Exception as error:
                warnings.warn(f"{model} forecast failed for {ticker}: {error}", stacklevel=2)
                continue
            base = log_close[end - 1]
            predicted[row] = np.asarray(out["mean"]) - base
            for level in level_list:
                intervals[f"lower_{level}"][row] = np.asarray(out[f"lo-{level}"]) - base
                intervals[f"upper_{level}"][row] = np.asarray(out[f"hi-{level}"]) - base
    return predicted, intervals


@dataclass(frozen=True)
class MinMax:
    """A per-ticker min-max scaler for raw closes (fit on training closes only)."""

    low: float
    high: float

    @classmethod
    def fit(cls, closes: np.ndarray) -> MinMax:
        low, high = float(np.min(closes)), float(np.max(closes))
        return cls(low, high if high > low else low + 1.0)

    def transform(self, closes: np.ndarray) -> np.ndarray:
        return (closes - self.low) / (self.high - self.low)

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        return scaled * (self.high - self.low) + self.low


def peer_scalers(frame: pd.DataFrame, fold: Fold, tickers=None) -> dict[str, MinMax]:
    """Each ticker's MinMax fit on its closes dated before ``fold.test_start`` (none if none)."""
    return _scalers_before(frame, fold.test_start, tickers)


def _scalers_before(frame: pd.DataFrame, cutoff, tickers=None) -> dict[str, MinMax]:
    before = frame[frame["trade_date"] < pd.Timestamp(cutoff)]
    if tickers is not None:
        before = before[before["ticker"].isin(set(tickers))]
    return {
        ticker: MinMax.fit(group["close"].to_numpy(np.float64))
        for ticker, group in before.groupby("ticker", sort=False)
        if np.isfinite(group["close"].to_numpy(np.float64)).all()
    }


def _peer_network(window: int, units: int, layers: int):
    import keras

    inputs = keras.Input(shape=(window, 1), name="scaled_closes")
    x = inputs
    for i in range(layers):
        x = keras.layers.LSTM(units, return_sequences=i < layers - 1, name=f"lstm_{i}")(x)
    outputs = keras.layers.Dense(HORIZONS, name="scaled_next_closes")(x)
    model = keras.Model(inputs, outputs, name="peer_close_lstm")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="mse")
    return model


@dataclass(frozen=True)
class PeerFit:
    """The peer LSTM fit on closes dated before ``cutoff``: the per-ticker scalers of the
    tickers it has training windows for (fit on those same closes) and the network (``None``
    when no ticker yielded a training window). Serves any origin dated on or after ``cutoff``;
    its scalers are the ones the network was trained with, whatever the origin's date."""

    cutoff: pd.Timestamp
    window: int
    scalers: dict[str, MinMax]
    network: object | None


def fit_peer_lstm(
    frame: pd.DataFrame,
    cutoff,
    *,
    window: int = 60,
    units: int = 50,
    layers: int = 2,
    epochs: int = 5,
    batch_size: int = 256,
    seed: int = 42,
    max_train_samples: int = 100_000,
) -> PeerFit:
    """The fit half of :func:`peer_lstm_forecasts`: scalers and network on closes dated before
    ``cutoff`` (see there)."""
    cutoff = pd.Timestamp(cutoff)
    stop = np.datetime64(cutoff, "ns")
    series = _series_by_ticker(frame, frame["ticker"].unique())
    scalers = _scalers_before(frame, cutoff)

    # Training windows: start index j covers closes j..j+window-1 (inputs) and
    # j+window..j+window+9 (targets); all must be dated before the cutoff.
    span = window + HORIZONS
    scaled_train, counts = {}, {}
    for ticker, s in series.items():
        n_train = int(np.searchsorted(s.dates, stop))
        if n_train >= span and ticker in scalers:
            scaled_train[ticker] = scalers[ticker].transform(s.closes[:n_train]).astype(np.float32)
            counts[ticker] = n_train - span + 1
    trained = {ticker: scalers[ticker] for ticker in scaled_train}
    total = sum(counts.values())
    if total == 0:
        return PeerFit(cutoff, window, trained, None)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, min(total, max_train_samples), replace=False))
    x_parts, y_parts, offset = [], [], 0
    for ticker, count in counts.items():
        local = chosen[(chosen >= offset) & (chosen < offset + count)] - offset
        offset += count
        if len(local):
            view = np.lib.stride_tricks.sliding_window_view(scaled_train[ticker], span)
            x_parts.append(view[local, :window])
            y_parts.append(view[local, window:])
    x_train = np.concatenate(x_parts)[..., None]
    y_train = np.concatenate(y_parts)

    from ml.model import keras_seeds_from, set_seeds

    set_seeds(seed)
    with keras_seeds_from(seed):
        network = _peer_network(window, units, layers)
    network.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    return PeerFit(cutoff, window, trained, network)


def predict_peer_lstm(
    fit: PeerFit, frame: pd.DataFrame, fold: Fold, origins: WindowSet
) -> np.ndarray:
    """The predict half of :func:`peer_lstm_forecasts`: ``fit`` (made on or before
    ``fold.test_start``) forecasts the fold's origins, each from the ``window`` closes ending
    at it, scaled with the fit's scalers."""
    _check_origins(fold, origins)
    if fit.cutoff > fold.test_start:
        raise ValueError(
            f"a peer fit on closes before {fit.cutoff.date()} cannot serve fold {fold.index} "
            f"starting {fold.test_start.date()}"
        )
    predicted = np.zeros((len(origins), HORIZONS))
    if len(origins) == 0 or fit.network is None:
        return predicted
    window = fit.window
    series = _series_by_ticker(frame, origins.tickers)
    positions = _origin_positions(series, origins)
    usable = np.zeros(len(origins), bool)
    x_origin = np.zeros((len(origins), window, 1), np.float32)
    for i, (ticker, pos) in enumerate(zip(origins.tickers, positions, strict=True)):
        if ticker in fit.scalers and pos + 1 >= window:
            closes = series[ticker].closes[pos - window + 1 : pos + 1]
            x_origin[i, :, 0] = fit.scalers[ticker].transform(closes)
            usable[i] = True
    if not usable.any():
        return predicted
    scaled = fit.network.predict(x_origin[usable], batch_size=4096, verbose=0)
    scaled = np.asarray(scaled, dtype=np.float64)
    for k, i in enumerate(np.flatnonzero(usable)):
        scaler = fit.scalers[origins.tickers[i]]
        origin_close = series[origins.tickers[i]].closes[positions[i]]
        closes = np.maximum(scaler.inverse(scaled[k]), 1e-6 * origin_close)
        predicted[i] = np.log(closes / origin_close)
    return predicted


def peer_lstm_forecasts(
    frame: pd.DataFrame,
    fold: Fold,
    origins: WindowSet,
    *,
    window: int = 60,
    units: int = 50,
    layers: int = 2,
    epochs: int = 5,
    batch_size: int = 256,
    seed: int = 42,
    max_train_samples: int = 100_000,
) -> np.ndarray:
    """The replaced project's approach as a named peer: an LSTM on min-max-scaled raw closes.

    One global Keras model (``layers`` stacked LSTMs of ``units``, a Dense of 10) maps the last
    ``window`` scaled closes to the next 10 scaled closes (MSE). Leakage-free version:

    - per-ticker :class:`MinMax` fit on that ticker's closes dated before ``fold.test_start``
      (see :func:`peer_scalers`);
    - training samples are ``window``-close windows of every ticker in the frame whose 10
      target closes are all dated before ``test_start``; at most ``max_train_samples`` of them,
      drawn with ``seed``;
    - at an origin the input is the ``window`` closes ending at the origin, scaled with the
      training scaler; test-block values may leave [0, 1] and are not clipped (faithful to the
      approach).

    Predicted closes are unscaled and turned into log returns against the origin close; a
    non-positive predicted close is floored at 1e-6 times the origin close (a huge loss, which
    is what that forecast deserves). Fallback to zeros (naive) for origins whose ticker has
    fewer than ``window + 10`` closes before ``test_start`` or fewer than ``window`` closes up
    to the origin, and for all origins if no ticker yields a training sample.

    :func:`fit_peer_lstm` at ``fold.test_start`` then :func:`predict_peer_lstm`; a fit made
    at an earlier cutoff may serve later folds the same way.
    """
    _check_origins(fold, origins)
    if len(origins) == 0:
        return np.zeros((0, HORIZONS))
    fit = fit_peer_lstm(
        frame,
        fold.test_start,
        window=window,
        units=units,
        layers=layers,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        max_train_samples=max_train_samples,
    )
    return predict_peer_lstm(fit, frame, fold, origins)

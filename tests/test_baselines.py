"""Baselines on real price slices: shapes, row alignment, no look-ahead, hand-checked values."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from helpers import YAHOO

from ml.baselines import (
    INTERVAL_KEYS,
    MinMax,
    classical_forecasts,
    drift_forecasts,
    naive_forecasts,
    peer_lstm_forecasts,
    peer_scalers,
)
from ml.features import HORIZONS, WindowSet, build_feature_frame, make_windows
from ml.folds import make_folds

TICKERS = ("KO", "AAPL", "CVX")
BARS = 800
ETS = {"train_days": 500}
PEER = {
    "window": 20,
    "units": 8,
    "layers": 1,
    "epochs": 10,
    "batch_size": 128,
    "seed": 3,
    "max_train_samples": 1500,
}


def _subset(origins: WindowSet, index: np.ndarray) -> WindowSet:
    return WindowSet(*(getattr(origins, name)[index] for name in WindowSet.__dataclass_fields__))


def _scale_after(frame: pd.DataFrame, date, factor: float = 3.0) -> pd.DataFrame:
    """Every close (and price column) dated after ``date`` multiplied by ``factor``."""
    out = frame.copy()
    later = out["trade_date"] > date
    out.loc[later, "close"] *= factor
    return out


@pytest.fixture(scope="module")
def data():
    if not YAHOO.is_dir():
        pytest.skip(f"shared developer data not found at {YAHOO}")
    pytest.importorskip("talib")
    from helpers import indicator_frame, read_yahoo

    frame = build_feature_frame(
        pd.concat([indicator_frame(read_yahoo(t).tail(BARS), t) for t in TICKERS])
    )
    fold = make_folds(frame["trade_date"], 2)[0]  # later closes exist after this fold
    origins = make_windows(frame, 30, as_of_from=fold.test_start, as_of_to=fold.test_end)
    dates = np.sort(np.unique(origins.as_of_dates))
    return frame, fold, origins, pd.Timestamp(dates[len(dates) // 2])


def test_naive_is_zero(data):
    _, _, origins, _ = data
    out = naive_forecasts(origins)
    assert out.shape == (len(origins), HORIZONS)
    assert not out.any()


def test_drift_is_h_times_the_trailing_mean_log_return(data):
    frame, _, origins, cut = data
    for lookback in (252, 15):
        out = drift_forecasts(frame, origins, lookback=lookback)
        assert out.shape == (len(origins), HORIZONS)
        for i in range(0, len(origins), 7):
            closes = frame.loc[
                (frame["ticker"] == origins.tickers[i])
                & (frame["trade_date"] <= origins.as_of_dates[i]),
                "close",
            ].to_numpy()[-lookback:]
            assert len(closes) == lookback
            mean = np.diff(np.log(closes)).mean()
            np.testing.assert_allclose(out[i], mean * np.arange(1, HORIZONS + 1), rtol=1e-10)
    # No look-ahead, and row alignment under a permutation of the origins.
    base = drift_forecasts(frame, origins)
    order = np.random.default_rng(0).permutation(len(origins))
    moved = drift_forecasts(_scale_after(frame, cut), _subset(origins, order))
    keep = origins.as_of_dates[order] <= np.datetime64(cut)
    np.testing.assert_allclose(moved[keep], base[order][keep], rtol=1e-12)
    assert not np.allclose(moved[~keep], base[order][~keep])


@pytest.fixture(scope="module")
def ets(data):
    frame, fold, origins, _ = data
    return classical_forecasts(frame, fold, origins, **ETS)


def test_ets_shapes_alignment_and_no_look_ahead(data, ets):
    frame, fold, origins, cut = data
    predicted, intervals = ets
    assert predicted.shape == (len(origins), HORIZONS)
    assert set(intervals) == set(INTERVAL_KEYS)
    assert all(v.shape == predicted.shape for v in intervals.values())
    assert np.isfinite(predicted).all() and all(np.isfinite(v).all() for v in intervals.values())
    # A subset in another order gets exactly its own rows of the full run.
    order = np.random.default_rng(1).permutation(len(origins))[:20]
    sub, sub_iv = classical_forecasts(frame, fold, _subset(origins, order), **ETS)
    np.testing.assert_allclose(sub, predicted[order], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sub_iv["upper_95"], intervals["upper_95"][order], atol=1e-14)
    # Closes after a mid-fold origin (and so inside the test block) tripled: origins up to it
    # are unchanged, which also shows the fit used no test-block close.
    moved, moved_iv = classical_forecasts(_scale_after(frame, cut), fold, origins, **ETS)
    keep = origins.as_of_dates <= np.datetime64(cut)
    assert keep.any() and (~keep).any()
    np.testing.assert_allclose(moved[keep], predicted[keep], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(moved_iv["lower_80"][keep], intervals["lower_80"][keep], atol=1e-12)
    assert not np.allclose(moved[~keep], predicted[~keep])


def test_ets_intervals_are_ordered_and_widen_with_horizon(ets):
    predicted, iv = ets
    tol = 1e-12
    assert (iv["lower_95"] <= iv["lower_80"] + tol).all()
    assert (iv["lower_80"] <= predicted + tol).all()
    assert (predicted <= iv["upper_80"] + tol).all()
    assert (iv["upper_80"] <= iv["upper_95"] + tol).all()
    width = (iv["upper_95"] - iv["lower_95"]).mean(axis=0)
    assert (np.diff(width) > 0).all()
    assert width[-1] > 2 * width[0]  # roughly sqrt(10) for a random walk


def test_ets_on_ko_is_close_to_naive(data, ets):
    _, _, origins, _ = data
    predicted, iv = ets
    ko = origins.tickers == "KO"
    assert ko.sum() == 21
    assert (np.abs(predicted[ko, 0]) < 0.05).all()
    assert (np.abs(predicted[ko, -1]) < 0.15).all()
    # A daily 95% band for a large-cap is a few percent wide, not tenths of a percent.
    width = iv["upper_95"][ko, 0] - iv["lower_95"][ko, 0]
    assert ((width > 0.01) & (width < 0.2)).all()


def test_classical_falls_back_to_naive_without_history(data):
    frame, fold, origins, _ = data
    # KO with only 25 closes before the test block.
    ko = frame[frame["ticker"] == "KO"]
    first = ko.index[ko["trade_date"] >= fold.test_start][0] - 25
    short = pd.concat([frame[frame["ticker"] != "KO"], ko.loc[first:]])
    predicted, intervals = classical_forecasts(short, fold, origins, **ETS)
    is_ko = origins.tickers == "KO"
    assert not predicted[is_ko].any()
    assert np.isnan(intervals["lower_95"][is_ko]).all()
    assert np.isfinite(predicted[~is_ko]).all() and predicted[~is_ko].any()
    peer = peer_lstm_forecasts(short, fold, origins, **{**PEER, "epochs": 1})
    assert not peer[is_ko].any() and peer[~is_ko].any()


def test_classical_rejects_origins_before_the_fold(data):
    frame, fold, origins, _ = data
    early = replace(fold, test_start=fold.test_start + pd.Timedelta(days=7))
    with pytest.raises(ValueError, match="before"):
        classical_forecasts(frame, early, origins, **ETS)


def test_peer_scaler_uses_training_closes_only(data):
    frame, fold, _, _ = data
    scalers = peer_scalers(frame, fold)
    for ticker in TICKERS:
        before = frame.loc[
            (frame["ticker"] == ticker) & (frame["trade_date"] < fold.test_start), "close"
        ]
        assert scalers[ticker] == MinMax(before.min(), before.max())
    # Tripling every close from the test block on does not move them, and is not clipped.
    moved = peer_scalers(_scale_after(frame, fold.test_start - pd.Timedelta(days=1)), fold)
    assert moved == scalers
    assert scalers["KO"].transform(np.array([3 * scalers["KO"].high]))[0] > 1.0


def test_peer_lstm_shapes_alignment_and_no_look_ahead(data):
    pytest.importorskip("tensorflow")
    frame, fold, origins, cut = data
    base = peer_lstm_forecasts(frame, fold, origins, **PEER)
    assert base.shape == (len(origins), HORIZONS)
    assert np.isfinite(base).all() and base.any()
    assert (np.abs(base) < 1.0).all()  # log returns, not prices
    # Reordered origins and a frame whose closes after a mid-fold origin are tripled: the
    # model is fit on pre-test windows only, and an origin's input ends at the origin.
    order = np.random.default_rng(2).permutation(len(origins))
    moved = peer_lstm_forecasts(_scale_after(frame, cut), fold, _subset(origins, order), **PEER)
    keep = origins.as_of_dates[order] <= np.datetime64(cut)
    np.testing.assert_allclose(moved[keep], base[order][keep], rtol=1e-5, atol=1e-6)
    assert not np.allclose(moved[~keep], base[order][~keep], atol=1e-3)


def test_auto_arima_and_refit_options(data, ets):
    frame, fold, origins, cut = data
    rows = np.flatnonzero(origins.tickers == "KO")
    ko = _subset(origins, rows)
    arima, iv = classical_forecasts(frame, fold, ko, model="AutoARIMA", **ETS)
    assert arima.shape == (len(rows), HORIZONS) and np.isfinite(arima).all()
    assert (iv["lower_95"] <= iv["lower_80"] + 1e-12).all()
    assert (iv["upper_80"] <= iv["upper_95"] + 1e-12).all()
    assert (np.abs(arima[:, 0]) < 0.05).all()
    moved, _ = classical_forecasts(_scale_after(frame, cut), fold, ko, model="AutoARIMA", **ETS)
    keep = ko.as_of_dates <= np.datetime64(cut)
    np.testing.assert_allclose(moved[keep], arima[keep], rtol=1e-8, atol=1e-10)
    # Re-estimating at every origin gives nearly the same forecasts as rolling forward.
    refit, _ = classical_forecasts(frame, fold, ko, refit=True, **ETS)
    assert np.abs(refit - ets[0][rows]).max() < 0.05
    with pytest.raises(ValueError, match="unknown classical model"):
        classical_forecasts(frame, fold, ko, model="Theta")

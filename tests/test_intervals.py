import itertools

import numpy as np
import pytest

from ml.evaluate import winkler_score
from ml.intervals import apply, calibrate, quantile_level, volatility_scale


def _residuals(n, horizons, seed):
    rng = np.random.default_rng(seed)
    volatility = rng.uniform(0.005, 0.04, n)  # calm and volatile stocks mixed
    noise = rng.standard_t(df=5, size=(n, horizons)) * volatility[:, None]
    return noise * np.sqrt(np.arange(1, horizons + 1))[None, :], volatility


def test_conformal_intervals_cover_at_least_nominal_on_new_data():
    calibration, vol_cal = _residuals(4000, 3, seed=1)
    quantiles = calibrate(calibration, volatility_scale(vol_cal, 3))
    fresh, vol_new = _residuals(20000, 3, seed=2)
    bounds = apply(np.zeros_like(fresh), volatility_scale(vol_new, 3), quantiles)
    for level in (80, 95):
        inside = (fresh >= bounds[f"lower_{level}"]) & (fresh <= bounds[f"upper_{level}"])
        coverage = inside.mean(axis=0)
        assert (coverage > level / 100 - 0.015).all() and (coverage < level / 100 + 0.025).all()


def test_intervals_scale_with_volatility_and_nest():
    calibration, vol_cal = _residuals(2000, 2, seed=3)
    quantiles = calibrate(calibration, volatility_scale(vol_cal, 2))
    bounds = apply(np.zeros((2, 2)), volatility_scale(np.array([0.01, 0.03]), 2), quantiles)
    width_80 = bounds["upper_80"] - bounds["lower_80"]
    width_95 = bounds["upper_95"] - bounds["lower_95"]
    np.testing.assert_allclose(width_80[1], 3 * width_80[0])
    assert (width_95 > width_80).all()
    assert (width_80[:, 1] > width_80[:, 0]).all()  # wider further out


def test_a_model_scale_that_tracks_the_spread_gives_better_interval_score_than_a_constant_one():
    # The spread of each residual is known to the "model" scale, not to the constant one: both
    # calibrated intervals cover, the informed one is narrower on average.
    calibration, vol_cal = _residuals(4000, 2, seed=4)
    fresh, vol_new = _residuals(20000, 2, seed=5)
    informed = apply(
        np.zeros_like(fresh),
        volatility_scale(vol_new, 2),
        calibrate(calibration, volatility_scale(vol_cal, 2)),
    )
    flat = apply(
        np.zeros_like(fresh), np.ones_like(fresh), calibrate(calibration, np.ones_like(calibration))
    )
    for bounds in (informed, flat):
        inside = (fresh >= bounds["lower_80"]) & (fresh <= bounds["upper_80"])
        assert abs(inside.mean() - 0.80) < 0.02
    score = {
        name: winkler_score(fresh, b["lower_80"], b["upper_80"], 80).mean()
        for name, b in (("informed", informed), ("flat", flat))
    }
    assert score["informed"] < 0.95 * score["flat"]


def test_a_non_positive_or_missing_scale_gives_no_interval_rather_than_a_wrong_one():
    quantiles = calibrate(np.array([[0.01], [0.02], [-0.03]]), np.array([[0.01], [0.0], [0.02]]))
    bounds = apply(np.zeros((3, 1)), np.array([[0.01], [0.0], [np.nan]]), quantiles)
    assert np.isfinite(bounds["lower_80"][0]).all()
    assert np.isnan(bounds["lower_80"][1:]).all()


def test_the_allowance_for_dependent_scores_shrinks_the_miss_rate_by_m_over_m_plus_1():
    assert quantile_level(80, 4000, independent=4) == pytest.approx(1 - 0.2 * 4 / 5)
    levels = [quantile_level(95, 4000, independent=m) for m in (1, 10, 100, 10_000)]
    assert all(a > b for a, b in itertools.pairwise(levels))
    assert levels[-1] == pytest.approx(0.95, abs=1e-5)
    assert quantile_level(80, 99) == 80 / 99  # exchangeable: the split-conformal rank


def test_pooled_scores_with_overlapping_targets_get_wider_intervals_further_out():
    # 126 as-of dates x 38 tickers: 10 days ahead about 12.6 independent outcomes, not 4,788.
    rng = np.random.default_rng(6)
    residuals = rng.standard_normal((126 * 38, 10))
    dates = np.repeat(np.arange(126), 38)
    plain = calibrate(residuals, np.ones_like(residuals))
    allowed = calibrate(residuals, np.ones_like(residuals), as_of_dates=dates)
    for level in (80, 95):
        for h in (0, 9):
            scores = np.abs(residuals[:, h])
            expected = quantile_level(level, len(scores), independent=126 / (h + 1))
            assert allowed[level][h] == np.quantile(scores, expected, method="higher")
        assert allowed[level][9] > plain[level][9]
        assert allowed[level][0] == pytest.approx(plain[level][0], rel=0.01)


def test_pooled_tails_keep_the_narrow_level_and_give_the_wide_one_the_median_tail_ratio():
    # Scale-mixed scores: the 80% quantile differs by horizon; the sample 95/80 ratio is noisy
    # per horizon on a short block, and pooled it is one shape for all.
    rng = np.random.default_rng(8)
    residuals = rng.standard_t(4, (63 * 20, 10)) * np.linspace(1, 3, 10)[None, :]
    dates = np.repeat(np.arange(63), 20)
    separate = calibrate(residuals, np.ones_like(residuals), as_of_dates=dates)
    pooled = calibrate(residuals, np.ones_like(residuals), as_of_dates=dates, pooled_tails=True)
    assert pooled[80] == separate[80]
    ratios = np.asarray(separate[95]) / np.asarray(separate[80])
    assert ratios.std() > 0
    np.testing.assert_allclose(np.asarray(pooled[95]) / np.asarray(pooled[80]), np.median(ratios))
    assert (np.asarray(pooled[95]) > np.asarray(pooled[80])).all()  # still nested

import numpy as np

from ml.intervals import apply, calibrate


def _residuals(n, horizons, seed):
    rng = np.random.default_rng(seed)
    volatility = rng.uniform(0.005, 0.04, n)  # calm and volatile stocks mixed
    noise = rng.standard_t(df=5, size=(n, horizons)) * volatility[:, None]
    return noise * np.sqrt(np.arange(1, horizons + 1))[None, :], volatility


def test_conformal_intervals_cover_at_least_nominal_on_new_data():
    calibration, vol_cal = _residuals(4000, 3, seed=1)
    quantiles = calibrate(calibration, vol_cal)
    fresh, vol_new = _residuals(20000, 3, seed=2)
    bounds = apply(np.zeros_like(fresh), vol_new, quantiles)
    for level in (80, 95):
        inside = (fresh >= bounds[f"lower_{level}"]) & (fresh <= bounds[f"upper_{level}"])
        coverage = inside.mean(axis=0)
        assert (coverage > level / 100 - 0.015).all() and (coverage < level / 100 + 0.025).all()


def test_intervals_scale_with_volatility_and_nest():
    calibration, vol_cal = _residuals(2000, 2, seed=3)
    quantiles = calibrate(calibration, vol_cal)
    bounds = apply(np.zeros((2, 2)), np.array([0.01, 0.03]), quantiles)
    width_80 = bounds["upper_80"] - bounds["lower_80"]
    width_95 = bounds["upper_95"] - bounds["lower_95"]
    np.testing.assert_allclose(width_80[1], 3 * width_80[0])
    assert (width_95 > width_80).all()
    assert (width_80[:, 1] > width_80[:, 0]).all()  # wider further out

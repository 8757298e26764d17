import itertools

import numpy as np
import pandas as pd
import pytest

from ml.features import HORIZONS
from ml.folds import FORECAST_COLUMNS, forecast_frame, make_folds


def test_folds_are_consecutive_blocks_ending_where_actuals_end():
    dates = pd.bdate_range("2020-01-01", periods=300)
    folds = make_folds(dates, n_folds=3, test_days=21)
    assert [f.index for f in folds] == [0, 1, 2]
    assert folds[-1].test_end == dates[-1 - HORIZONS]
    for earlier, later in itertools.pairwise(folds):
        assert later.test_start == dates[dates.get_loc(earlier.test_end) + 1]
    assert all(dates.get_loc(f.test_end) - dates.get_loc(f.test_start) == 20 for f in folds)


def test_too_short_history_is_refused():
    with pytest.raises(ValueError, match="cannot hold"):
        make_folds(pd.bdate_range("2020-01-01", periods=60), n_folds=3, test_days=21)


def test_forecast_frame_is_long_and_aligned():
    predicted = np.array([[0.1, 0.2], [0.3, 0.4]])
    frame = forecast_frame(
        "m", 1, np.array(["A", "B"]), np.array(["2021-01-04", "2021-01-05"], "datetime64[ns]"),
        np.array([10.0, 20.0]), predicted * 2, predicted,
        {"lower_80": predicted - 1, "upper_80": predicted + 1},
    )  # fmt: skip
    assert list(frame.columns) == FORECAST_COLUMNS
    assert frame["horizon"].tolist() == [1, 2, 1, 2]
    assert frame.loc[frame["ticker"] == "B", "predicted_log_return"].tolist() == [0.3, 0.4]
    assert frame["lower_95"].isna().all() and frame["upper_80"].iloc[3] == pytest.approx(1.4)

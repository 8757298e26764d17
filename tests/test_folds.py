import itertools

import numpy as np
import pandas as pd
import pytest

from ml.features import HORIZONS
from ml.folds import FORECAST_COLUMNS, REGIMES, forecast_frame, make_folds, regime_folds


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


# -- placing folds: --start/--end and named regimes ---------------------------------------------

DATES = pd.bdate_range("2007-01-01", "2021-06-30")


def _no_overlap_and_known_actuals(folds, dates):
    assert [f.index for f in folds] == list(range(len(folds)))
    for earlier, later in itertools.pairwise(folds):
        assert later.test_start > earlier.test_end
    assert folds[-1].test_end <= dates[-1 - HORIZONS]  # 10 days of actuals after every block
    assert folds[0].test_start > dates[0]  # something to fit on


def test_start_places_consecutive_blocks_from_the_first_date_on_or_after_it():
    folds = make_folds(DATES, 3, 21, start="2015-08-01")  # a Saturday
    assert folds[0].test_start == pd.Timestamp("2015-08-03")
    assert all(DATES.get_loc(f.test_end) - DATES.get_loc(f.test_start) == 20 for f in folds)
    for earlier, later in itertools.pairwise(folds):
        assert later.test_start == DATES[DATES.get_loc(earlier.test_end) + 1]
    _no_overlap_and_known_actuals(folds, DATES)


def test_end_places_the_blocks_ending_at_the_last_known_as_of_date_by_it():
    folds = make_folds(DATES, 2, 21, end="2018-12-31")
    assert folds[-1].test_end == pd.Timestamp("2018-12-31")
    assert len(folds) == 2
    _no_overlap_and_known_actuals(folds, DATES)
    # An end beyond the data stops where the actuals stop: the default placement.
    assert make_folds(DATES, 2, 21, end="2030-01-01") == make_folds(DATES, 2, 21)


def test_start_and_end_fill_the_range_with_whole_blocks():
    folds = make_folds(DATES, None, 21, start="2018-01-01", end="2018-12-31")
    weekdays = ((DATES >= "2018-01-01") & (DATES <= "2018-12-31")).sum()
    assert len(folds) == weekdays // 21 == 12
    assert folds[0].test_start == pd.Timestamp("2018-01-01")
    assert folds[-1].test_end <= pd.Timestamp("2018-12-31")
    _no_overlap_and_known_actuals(folds, DATES)
    assert len(make_folds(DATES, 2, 21, start="2018-01-01", end="2018-12-31")) == 2


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"n_folds": 3, "start": "2021-06-01"}, "from 2021-06-01 need 63"),
        ({"n_folds": 2, "start": "2006-01-01"}, "no trading date before"),
        ({"n_folds": 2, "start": "2007-01-01"}, "no trading date before"),
        ({"n_folds": 3, "end": "2007-02-15"}, "ending by 2007-02-15"),
        ({"n_folds": 3, "start": "2018-01-01", "end": "2018-02-15"}, "by 2018-02-15"),
        ({"n_folds": None, "start": "2018-01-01", "end": "2018-01-20"}, "fewer than one fold"),
        ({"n_folds": None, "start": "2018-01-01", "end": "2017-01-20"}, "before start"),
        ({"n_folds": None, "start": "2018-01-01"}, "both start and end"),
    ],
)
def test_a_range_that_cannot_hold_the_folds_is_refused(kwargs, says):
    with pytest.raises(ValueError, match=says):
        make_folds(DATES, test_days=21, **kwargs)


def test_folds_carry_the_regime_they_test_and_as_dict_says_it():
    folds = make_folds(DATES, 4, 21, start="2020-02-20")
    # Labelled by the first as-of date: the third block starts 2020-04-20, inside the crash.
    assert [f.regime for f in folds] == ["2020 crash"] * 3 + [None]
    assert folds[0].as_dict() == {
        "fold": 0, "test_start": "2020-02-20", "test_end": "2020-03-19", "regime": "2020 crash",
    }  # fmt: skip
    assert make_folds(DATES, 1, 21, start="2016-06-01")[0].regime is None


def test_regime_folds_start_each_reached_regime_and_report_the_others():
    folds, skipped = regime_folds(DATES, test_days=21)
    reached = [name for name in REGIMES if name not in skipped]
    assert [f.regime for f in folds] == reached
    assert list(skipped) == ["2022 bear"]  # the data ends in 2021
    assert "2022-01-01" in skipped["2022 bear"]
    for fold in folds:
        first, last = REGIMES[fold.regime]
        assert fold.test_start == DATES[DATES.searchsorted(first)]  # the regime's first date
        assert fold.test_end <= last
        assert DATES.get_loc(fold.test_end) - DATES.get_loc(fold.test_start) == 20
    _no_overlap_and_known_actuals(folds, DATES)
    assert folds[0].test_start == pd.Timestamp("2008-09-01")


def test_regime_folds_skip_regimes_before_the_data_or_too_short_for_the_folds():
    late = DATES[DATES >= "2010-01-01"]
    folds, skipped = regime_folds(late, test_days=21, folds_per_regime=2)
    assert "data starts 2010-01-01" in skipped["2008 crisis"]
    # 2020-02-20..2020-04-30 holds 50 weekdays: two folds of 21 fit, three do not.
    assert [f.regime for f in folds].count("2020 crash") == 2
    _no_overlap_and_known_actuals(folds, late)
    _, skipped = regime_folds(late, test_days=21, folds_per_regime=3)
    assert "need 63 as-of dates" in skipped["2020 crash"] and "2018 Q4" not in skipped
    # A regime whose first date is the data's first date leaves nothing to fit on.
    _, skipped = regime_folds(
        DATES[DATES >= "2017-01-02"], regimes={"a": ("2017-01-02", "2017-03-31")}
    )
    assert "not before" in skipped["a"]


def test_overlapping_custom_regimes_are_refused():
    regimes = {"a": ("2018-01-01", "2018-06-30"), "b": ("2018-01-15", "2018-03-31")}
    with pytest.raises(ValueError, match="overlaps"):
        regime_folds(DATES, test_days=21, regimes=regimes)

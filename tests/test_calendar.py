import datetime as dt

import pandas as pd

from ml.score import next_trading_days


def test_target_dates_skip_weekends_and_nyse_holidays():
    friday = pd.Timestamp("2021-12-23")  # Christmas observed on Friday 2021-12-24
    days = next_trading_days([friday], 10)[friday]
    assert days[0] == dt.date(2021, 12, 27)
    assert dt.date(2021, 12, 31) in days  # New Year's Day 2022 fell on a Saturday: no holiday
    mlk = pd.Timestamp("2022-01-14")
    assert next_trading_days([mlk], 1)[mlk] == [dt.date(2022, 1, 18)]  # MLK day skipped
    assert all(d.weekday() < 5 for d in days)
    assert days == sorted(set(days))


def test_target_dates_for_several_as_of_dates():
    a, b = pd.Timestamp("2022-01-28"), pd.Timestamp("2018-02-07")
    result = next_trading_days([a, b], 10)
    assert result[a][0] == dt.date(2022, 1, 31)
    assert result[b][0] == dt.date(2018, 2, 8)
    assert len(result[a]) == len(result[b]) == 10

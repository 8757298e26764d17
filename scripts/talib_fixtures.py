"""Generate the dbt unit tests of the indicator models, with expected values from TA-Lib.

The fixture prices are synthetic (a seeded random walk, a flat series, a series whose moves are
close to TA-Lib's 1e-8 zero threshold, and a too-short series); no vendor data is copied.
Expected values are computed by the real ``talib`` package on the same closes.

    .venv/bin/python scripts/talib_fixtures.py  # rewrites the YAML file below

dbt compares floating-point unit-test columns rounded to 9 decimals (see
dbt_project/macros/unit_testing/get_unit_test_sql.sql).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import talib

OUTPUT = (
    Path(__file__).resolve().parent.parent
    / "dbt_project"
    / "models"
    / "intermediate"
    / "_intermediate__unit_tests.yml"
)


def _business_days(n: int, start: dt.date = dt.date(2024, 1, 1)) -> list[dt.date]:
    days, day = [], start
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def _random_walk(n: int, seed: int = 7, start: float = 50.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = np.round(rng.normal(0.0, 0.8, n - 1), 2)
    return np.round(np.concatenate([[start], start + np.cumsum(steps)]), 2)


SERIES = {
    "WALK": _random_walk(60),
    "FLAT": np.full(16, 20.0),
    # Moves of 1e-7: the first Wilder average is 7.1e-9. TA-Lib's zero test is exact (only
    # averages of exactly 0 give RSI 0), so RSI is 100 here, not 0 as a 1e-8 tolerance would give.
    "TINY": np.array([1.0] * 14 + [1.0000001, 1.0000002, 1.0000002]),
    "SHORT": np.array([10.0, 10.5, 10.25]),
}


def _fmt(value: float) -> str:
    return "" if np.isnan(value) else repr(float(value))


def _csv(header: list[str], rows: list[list[str]], indent: int) -> str:
    pad = " " * indent
    lines = [",".join(header)] + [",".join(row) for row in rows]
    return "\n".join(pad + line for line in lines)


def _unit_test(name, model, description, tickers, lengths, outputs) -> str:
    input_rows, expected_rows = [], []
    for ticker in tickers:
        closes = SERIES[ticker][: lengths.get(ticker)]
        dates = _business_days(len(closes))
        values = {col: fn(closes) for col, fn in outputs.items()}
        for i, (day, close) in enumerate(zip(dates, closes, strict=True)):
            input_rows.append([ticker, day.isoformat(), str(i), repr(float(close))])
            expected_rows.append(
                [ticker, day.isoformat()] + [_fmt(values[col][i]) for col in outputs]
            )
    return f"""
  - name: {name}
    description: >
      {description}
    model: {model}
    given:
      - input: ref('int_prices_sequenced')
        format: csv
        rows: |
{_csv(["ticker", "trade_date", "price_index", "close"], input_rows, 10)}
    expect:
      format: csv
      rows: |
{_csv(["ticker", "trade_date", *outputs], expected_rows, 8)}
"""


def main() -> None:
    version = talib.__version__
    tests = [
        _unit_test(
            "test_sma_matches_talib",
            "int_moving_averages_computed",
            f"SMA 5/15/20/50 on a 60-bar random walk and a 3-bar series (NULL warm-up). "
            f"Expected values computed with TA-Lib {version} (talib.SMA) by "
            f"scripts/talib_fixtures.py.",
            ["WALK", "SHORT"],
            {},
            {f"sma_{n}": (lambda x, n=n: talib.SMA(x, n)) for n in (5, 15, 20, 50)},
        ),
        _unit_test(
            "test_ema_matches_talib",
            "int_ema_computed",
            f"EMA 12/26 (seeded with the SMA of the first n closes) on a 40-bar random walk, "
            f"a flat series and a 3-bar series. Expected values computed with TA-Lib "
            f"{version} (talib.EMA) by scripts/talib_fixtures.py.",
            ["WALK", "FLAT", "SHORT"],
            {"WALK": 40},
            {
                "ema_12": lambda x: talib.EMA(x, 12),
                "ema_26": lambda x: talib.EMA(x, 26),
            },
        ),
        _unit_test(
            "test_macd_matches_talib",
            "int_macd_computed",
            f"MACD(12, 26, 9): fast EMA seeded at bar 25 like TA-Lib, NULL before bar 33, on "
            f"a 45-bar random walk and a 3-bar series. Expected values computed with TA-Lib "
            f"{version} (talib.MACD) by scripts/talib_fixtures.py.",
            ["WALK", "SHORT"],
            {"WALK": 45},
            {
                "macd": lambda x: talib.MACD(x, 12, 26, 9)[0],
                "macd_signal": lambda x: talib.MACD(x, 12, 26, 9)[1],
                "macd_hist": lambda x: talib.MACD(x, 12, 26, 9)[2],
            },
        ),
        _unit_test(
            "test_rsi_matches_talib",
            "int_rsi_computed",
            f"RSI(14) with Wilder smoothing on a 40-bar random walk, a flat series (RSI 0), "
            f"1e-7 moves (RSI 100: TA-Lib's zero test is exact, not 1e-8) and a 3-bar series. Expected values "
            f"computed with TA-Lib {version} (talib.RSI) by scripts/talib_fixtures.py.",
            ["WALK", "FLAT", "TINY", "SHORT"],
            {"WALK": 40},
            {"rsi_14": lambda x: talib.RSI(x, 14)},
        ),
    ]
    header = (
        "# Generated by scripts/talib_fixtures.py: do not edit by hand.\n"
        "# Synthetic prices; expected values computed with TA-Lib.\n"
        "version: 2\n\nunit_tests:"
    )
    OUTPUT.write_text(header + "".join(tests))
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()

"""`dbt build` with stored backtests and interval forecasts: the backtest marts
(`fct_backtest_metrics`, `fct_backtest_forecasts`) and the interval columns of
`fct_forecasts_vs_actuals`, on a throwaway warehouse with real HWM prices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import SHARED_DATA, isolated_home

duckdb = pytest.importorskip("duckdb")

HWM = SHARED_DATA / "yahoo_sp500_daily" / "HWM.csv.gz"
HORIZONS = 10
AS_OF_OFFSET = 5  # the interval forecast is made 5 bars before the last loaded bar
HALF_WIDTH = {80: 0.02, 95: 0.035}  # LSTM interval half-widths (log return) at horizon 1
PRICE_BANDS = {80: 0.03, 95: 0.05}  # scored interval: predicted_close * (1 -/+ band)


def _ticker_forecasts(ticker: str, closes: pd.Series, folds) -> pd.DataFrame:
    """Long-format forecasts of naive and a noisy 'lstm' with intervals, from real closes."""
    dates = closes.index
    log_close = np.log(closes.to_numpy())
    rng = np.random.default_rng([ord(c) for c in ticker])
    frames = []
    for fold in folds:
        positions = np.flatnonzero((dates >= fold.test_start) & (dates <= fold.test_end))
        for position in positions:
            horizon = np.arange(1, HORIZONS + 1)
            actual = log_close[position + horizon] - log_close[position]
            base = {
                "fold": fold.index,
                "ticker": ticker,
                "as_of_date": dates[position].date(),
                "horizon": horizon,
                "as_of_close": closes.iloc[position],
                "actual_log_return": actual,
            }
            frames.append(pd.DataFrame({**base, "model": "naive", "predicted_log_return": 0.0}))
            predicted = 0.5 * actual + rng.normal(0, 0.01, HORIZONS)
            bounds = {
                f"{side}_{level}": predicted + sign * half * np.sqrt(horizon)
                for level, half in HALF_WIDTH.items()
                for side, sign in (("lower", -1), ("upper", 1))
            }
            frames.append(
                pd.DataFrame({**base, "model": "lstm", "predicted_log_return": predicted, **bounds})
            )
    return pd.concat(frames, ignore_index=True)


def _metrics(forecasts: pd.DataFrame, closes: dict[str, pd.Series], folds) -> pd.DataFrame:
    """The real metrics the backtest stage stores (so dbt checks them against the forecasts)."""
    from ml.evaluate import backtest_metrics, naive_scales

    prices = pd.concat(
        pd.DataFrame({"ticker": t, "trade_date": c.index, "close": c.to_numpy()})
        for t, c in closes.items()
    )
    return backtest_metrics(forecasts, naive_scales(prices, folds))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not HWM.is_file():
        pytest.skip(f"shared developer data not found under {SHARED_DATA}")
    with isolated_home(tmp_path_factory.mktemp("dbt_backtest")):
        from ml.backtest import with_fold_span
        from ml.context import build_context
        from ml.folds import make_folds
        from ml.ingest import ingest_paths
        from ml.transform import transform

        ctx = build_context()
        w = ctx.warehouse
        w.ensure_schema()
        assert ingest_paths(ctx, [HWM]).ok
        prices = w.query_df(
            "select trade_date, close from raw.daily_prices where ticker = 'HWM' order by trade_date"
        )
        hwm = pd.Series(prices["close"].to_numpy(), index=pd.to_datetime(prices["trade_date"]))
        # A second ticker on the same calendar: a smooth synthetic series near 40.
        other = pd.Series(40 * np.exp(0.02 * np.sin(np.arange(len(hwm)) / 3)), index=hwm.index)
        folds = make_folds(hwm.index, n_folds=2, test_days=5)
        forecasts = pd.concat(
            [_ticker_forecasts("HWM", hwm, folds), _ticker_forecasts("SYN", other, folds)],
            ignore_index=True,
        )
        # An older run (HWM only, first fold) stored before the latest one.
        old = forecasts[(forecasts["ticker"] == "HWM") & (forecasts["fold"] == 0)]
        closes = {"HWM": hwm, "SYN": other}
        w.replace_backtest(
            "old-run", with_fold_span(_metrics(old, closes, folds[:1]), folds[:1]), old
        )
        w.replace_backtest(
            "new-run", with_fold_span(_metrics(forecasts, closes, folds), folds), forecasts
        )

        # Scored forecasts with price-level intervals (one as-of date) and without (another).
        dates = [d.date() for d in hwm.index]
        future = list(pd.bdate_range(dates[-1], periods=HORIZONS + 1).date[1:])
        rows = []
        for as_of_index, with_intervals in ((-1 - AS_OF_OFFSET, True), (-2 - AS_OF_OFFSET, False)):
            as_of = dates[as_of_index]
            targets = (dates[as_of_index + 1 :] + future)[:HORIZONS]
            for h, target in enumerate(targets, start=1):
                predicted = float(hwm.iloc[as_of_index]) * (1 + 0.002 * (h - 5))
                row = {
                    "ticker": "HWM",
                    "as_of_date": as_of,
                    "target_date": target,
                    "horizon": h,
                    "predicted_close": predicted,
                }
                for level, band in PRICE_BANDS.items():
                    row[f"lower_{level}"] = predicted * (1 - band) if with_intervals else None
                    row[f"upper_{level}"] = predicted * (1 + band) if with_intervals else None
                rows.append(row)
        w.replace_predictions(
            pd.DataFrame(rows).assign(
                model_name="stockcast-lstm",
                model_version="1",
                mlflow_run_id="test-run",
                scored_at=pd.Timestamp("2022-01-28 18:00"),
            )
        )
        log = transform(ctx)  # the product's `dbt build`
    return {"db": w.path, "forecasts": forecasts, "hwm": hwm, "log": log}


def _query(db_path: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(db_path), read_only=True) as con:
        return con.execute(sql).df()


@pytest.mark.slow
def test_backtest_data_tests_pass_without_warnings(built) -> None:
    lines = [line for line in built["log"].splitlines() if "assert_backtest_metrics" in line]
    assert lines
    assert all("WARN" not in line and "FAIL" not in line for line in lines)


@pytest.mark.slow
def test_backtest_metrics_mart(built) -> None:
    mart = _query(built["db"], "select * from marts.fct_backtest_metrics")
    # old run: naive + lstm, HWM + pooled, 10 horizons; new run: 2 models x 3 scopes x 10.
    assert mart.groupby("backtest_run_id").size().to_dict() == {"old-run": 40, "new-run": 60}
    latest = mart.groupby("backtest_run_id")["is_latest_backtest"].agg(["min", "max"])
    assert latest.loc["new-run"].tolist() == [True, True]
    assert latest.loc["old-run"].tolist() == [False, False]

    assert (mart["is_pooled"] == (mart["ticker"] == "__all__")).all()
    pooled = mart[mart["is_pooled"] & (mart["backtest_run_id"] == "new-run")]
    assert sorted(pooled["model"].unique()) == ["lstm", "naive"]
    assert (
        pooled.groupby("model")["horizon"].apply(sorted).map(list).tolist()
        == [list(range(1, 11))] * 2
    )
    # 2 folds x 5 as-of dates x 2 tickers per pooled row, 10 per ticker row.
    assert (pooled["n_forecasts"] == 20).all()
    assert (
        mart.loc[~mart["is_pooled"] & (mart["backtest_run_id"] == "new-run"), "n_forecasts"] == 10
    ).all()
    assert (mart["n_folds"] == mart["backtest_run_id"].map({"old-run": 1, "new-run": 2})).all()

    naive = mart[mart["model"] == "naive"]
    assert naive["rel_mae"].to_numpy() == pytest.approx(np.ones(len(naive)))
    assert naive[["dm_pvalue", "is_significant_at_5pct", "coverage_gap_80"]].isna().all().all()
    lstm = mart[mart["model"] == "lstm"]
    assert (lstm["beats_naive"] == (lstm["rel_mae"] < 1)).all()
    tested = lstm["dm_pvalue"].notna()
    assert (lstm["is_significant_at_5pct"].notna() == tested).all()
    significant = (lstm["dm_pvalue"] < 0.05) & (lstm["dm_stat"] < 0)
    assert (lstm.loc[tested, "is_significant_at_5pct"].astype(bool) == significant[tested]).all()
    assert lstm["coverage_gap_80"].to_numpy() == pytest.approx(lstm["coverage_80"] - 0.80)
    assert lstm["coverage_gap_95"].to_numpy() == pytest.approx(lstm["coverage_95"] - 0.95)


@pytest.mark.slow
def test_backtest_forecasts_mart(built) -> None:
    mart = _query(
        built["db"],
        "select * from marts.fct_backtest_forecasts where backtest_run_id = 'new-run'",
    )
    expected = built["forecasts"]
    assert len(mart) == len(expected) == 2 * 2 * 2 * 5 * 10
    assert mart["is_latest_backtest"].all()
    keys = ["model", "ticker", "as_of_date", "horizon"]
    mart["as_of_date"] = pd.to_datetime(mart["as_of_date"]).dt.date
    merged = mart.merge(expected, on=keys, suffixes=("", "_log"))
    assert len(merged) == len(mart)

    close = merged["as_of_close"]
    assert merged["actual_close"].to_numpy() == pytest.approx(
        close * np.exp(merged["actual_log_return"])
    )
    # The stored actual of HWM is the real close `horizon` bars after the as-of date.
    hwm = built["hwm"]
    row = merged[(merged["ticker"] == "HWM") & (merged["model"] == "naive")].iloc[0]
    position = hwm.index.get_loc(pd.Timestamp(row["as_of_date"]))
    assert row["actual_close"] == pytest.approx(hwm.iloc[position + row["horizon"]])
    assert row["predicted_close"] == pytest.approx(row["as_of_close"])
    assert row["abs_error"] == pytest.approx(row["naive_abs_error"])

    lstm = merged[merged["model"] == "lstm"]
    naive = merged[merged["model"] == "naive"]
    for level in (80, 95):
        for side in ("lower", "upper"):
            assert lstm[f"{side}_{level}"].to_numpy() == pytest.approx(
                lstm["as_of_close"] * np.exp(lstm[f"{side}_{level}_log"])
            )
        y = lstm["actual_log_return"]
        covered = (y >= lstm[f"lower_{level}_log"]) & (y <= lstm[f"upper_{level}_log"])
        assert (lstm[f"is_covered_{level}"].astype(bool) == covered).all()
        assert naive[[f"lower_{level}", f"is_covered_{level}"]].isna().all().all()
    # Both outcomes occur, so the flags are really tested.
    assert lstm["is_covered_80"].astype(bool).any()
    assert not lstm["is_covered_80"].astype(bool).all()
    assert (lstm["abs_error"] == (lstm["predicted_close"] - lstm["actual_close"]).abs()).all()

    old = _query(
        built["db"], "select * from marts.fct_backtest_forecasts where backtest_run_id = 'old-run'"
    )
    assert len(old) == 2 * 5 * 10
    assert not old["is_latest_backtest"].any()


@pytest.mark.slow
def test_forecasts_vs_actuals_intervals(built) -> None:
    mart = _query(
        built["db"], "select * from marts.fct_forecasts_vs_actuals order by as_of_date, horizon"
    )
    assert len(mart) == 2 * HORIZONS
    with_intervals = mart[mart["lower_80"].notna()]
    without = mart[mart["lower_80"].isna()]
    assert len(with_intervals) == len(without) == HORIZONS
    assert without[["upper_95", "is_covered_80", "is_covered_95"]].isna().all().all()

    for level, band in PRICE_BANDS.items():
        predicted = with_intervals["predicted_close"]
        assert with_intervals[f"lower_{level}"].to_numpy() == pytest.approx(predicted * (1 - band))
        assert with_intervals[f"upper_{level}"].to_numpy() == pytest.approx(predicted * (1 + band))
        known = with_intervals[with_intervals["is_actual_known"]]
        assert len(known) == AS_OF_OFFSET
        inside = (known["actual_close"] >= known[f"lower_{level}"]) & (
            known["actual_close"] <= known[f"upper_{level}"]
        )
        assert (known[f"is_covered_{level}"].astype(bool) == inside).all()
        pending = with_intervals[~with_intervals["is_actual_known"]]
        assert pending[f"is_covered_{level}"].isna().all()

"""Histories stay whole: a file that disagrees with the stored history of a ticker is refused
with the evidence (or replaces it with --replace); gaps and jumps where a file meets the stored
history are reported. Pure checks on real files, then ingest on both engines."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import exchange_calendars as xc
import pandas as pd
import pytest
from helpers import SHARED_DATA, YAHOO

from ml.history import check_history, missing_sessions, split_ratio
from ml.ingest import ingest_paths, parse_price_file

ALPHAVANTAGE = SHARED_DATA / "alphavantage_daily_adjusted"
KAGGLE = SHARED_DATA / "kaggle_sp500_5yr" / "all_stocks_5yr_dev.csv.gz"
HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"


def needs_shared() -> None:
    if not YAHOO.is_dir():
        pytest.skip(f"shared developer data not found at {SHARED_DATA}")


def bars(path: Path) -> pd.DataFrame:
    frame = parse_price_file(path).prices
    return frame.assign(source_file=str(path.resolve()))


def write_bars(path: Path, rows: list[tuple[str, float]]) -> Path:
    """A Yahoo-layout file with one bar per (date, close)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + [f"{d},{c},{c},{c},{c},{c},1000" for d, c in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def frame(rows: list[tuple[str, str, float]], source: str = "stored.csv") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ticker": [r[0] for r in rows],
            "trade_date": pd.to_datetime([r[1] for r in rows]),
            "close": [r[2] for r in rows],
            "source_file": source,
        }
    )


# -- the pure checks --------------------------------------------------------------------------
def test_a_split_the_other_vendor_had_not_applied_is_a_conflict_named_by_its_factor():
    needs_shared()
    # Yahoo's NVDA (downloaded 2022) is adjusted for the 4:1 split of July 2021; Alpha Vantage's
    # file ends 2021-04-21, before it.
    yahoo = bars(YAHOO / "NVDA.csv.gz")
    vendor = parse_price_file(ALPHAVANTAGE / "DA-NVDA-T-2021-04-21.csv.gz").prices
    check = check_history(vendor, yahoo, "alphavantage.csv")
    [conflict] = check.conflicts
    assert conflict.ticker == "NVDA" and conflict.split == "4:1"
    assert conflict.overlap == len(vendor.merge(yahoo, on=["ticker", "trade_date"]))
    assert conflict.disagreeing == conflict.overlap
    assert conflict.constant_ratio == pytest.approx(4, rel=0.01)
    text = conflict.describe()
    assert "NVDA.csv.gz" in text and "4:1 split" in text and "2021-04-21" in text
    assert check.conflicting_files == {"NVDA": [str((YAHOO / "NVDA.csv.gz").resolve())]}


def test_vendors_that_agree_give_no_conflict_and_a_lone_bad_bar_is_evidence():
    needs_shared()
    yahoo = bars(YAHOO / "MSFT.csv.gz")
    vendor = parse_price_file(ALPHAVANTAGE / "DA-MSFT-T-2021-04-21.csv.gz").prices
    assert check_history(vendor, yahoo, "alphavantage.csv").conflicts == []
    day = pd.Timestamp("2010-06-01")
    wrong = vendor.copy()
    wrong.loc[wrong["trade_date"] == day, "close"] *= 1.05
    [conflict] = check_history(wrong, yahoo, "alphavantage.csv").conflicts
    assert (conflict.disagreeing, conflict.example_date) == (1, day)
    assert conflict.split is None and conflict.constant_ratio is None
    assert conflict.new_close / conflict.stored_close == pytest.approx(1.05, rel=1e-3)
    assert "1 of" in conflict.describe() and "(2010-06-01)" in conflict.describe()


def test_tolerance_absorbs_rounding_and_the_same_file_is_a_correction_not_a_conflict():
    stored = frame([("ACME", "2021-03-01", 10.0), ("PENY", "2021-03-01", 0.31)])
    rounded = frame([("ACME", "2021-03-01", 10.09), ("PENY", "2021-03-01", 0.314)], "new.csv")
    assert check_history(rounded, stored, "new.csv").conflicts == []  # 0.9%; 0.4 cent
    off = frame([("ACME", "2021-03-01", 10.2), ("PENY", "2021-03-01", 0.32)], "new.csv")
    found = check_history(off, stored, "new.csv").conflicts
    assert [c.ticker for c in found] == ["ACME", "PENY"]
    # A re-download under the same name corrects its own rows.
    assert check_history(off, stored, "stored.csv").conflicts == []


def test_missing_sessions_follow_the_nyse_calendar():
    # Thanksgiving (Thursday) is not a gap; neither is a weekend.
    assert missing_sessions(pd.Timestamp("2021-11-24"), pd.Timestamp("2021-11-26")) == 0
    assert missing_sessions(pd.Timestamp("2021-11-19"), pd.Timestamp("2021-11-22")) == 0
    before, after = pd.Timestamp("2013-03-01"), pd.Timestamp("2014-03-27")
    sessions = xc.get_calendar("XNYS", start="2013-01-01", end="2014-12-31").sessions_in_range(
        "2013-03-02", "2014-03-26"
    )
    assert missing_sessions(before, after) == len(sessions) > 250


def test_junctions_report_gaps_and_jumps_where_the_file_meets_the_stored_history():
    stored = frame(
        [
            ("ACME", "2021-03-01", 100.0),
            ("ACME", "2021-03-02", 101.0),
            ("ACME", "2021-06-01", 100.0),
            ("BETA", "2021-03-01", 50.0),
        ]
    )
    new = frame(
        [
            ("ACME", "2021-03-03", 50.5),  # the day after: a 2:1 split one side did not apply
            ("ACME", "2021-03-04", 50.0),
            ("BETA", "2021-03-02", 51.0),  # an ordinary move: nothing to report
        ],
        "new.csv",
    )
    junctions = check_history(new, stored, "new.csv").junctions
    assert [
        (j.ticker, j.before.date().isoformat(), j.after.date().isoformat()) for j in junctions
    ] == [
        ("ACME", "2021-03-02", "2021-03-03"),
        ("ACME", "2021-03-04", "2021-06-01"),
    ]
    jump, gap = junctions
    assert not jump.is_gap and jump.split == "2:1" and "2:1 split" in jump.describe()
    assert gap.is_gap and gap.missing_sessions == missing_sessions(gap.before, gap.after) > 5
    assert "trading days missing between 2021-03-04 and 2021-06-01" in gap.describe()


@pytest.mark.parametrize(
    ("ratio", "name"),
    [(4.0, "4:1"), (0.25, "4:1"), (7.00000700001, "7:1"), (1.49999925, "3:2"), (1 / 1.5, "3:2")],
)
def test_split_ratio_names_the_split_either_way(ratio, name):
    assert split_ratio(ratio) == name


@pytest.mark.parametrize("ratio", [1.0, 1.1, 2.3, 0.13, float("nan"), 0.0])
def test_split_ratio_is_none_for_ordinary_ratios(ratio):
    assert split_ratio(ratio) is None


# -- ingest, on both engines --------------------------------------------------------------------
@pytest.fixture(params=["duckdb", "bigquery"])
def engine_ctx(request, ctx):
    if request.param == "duckdb":
        return ctx
    from emulators import new_dataset_prefix, warehouse_for

    from ml.context import RunContext

    env = request.getfixturevalue("emulator_env")
    warehouse = warehouse_for(env, STOCKCAST_BQ_DATASET=new_dataset_prefix())
    warehouse.ensure_schema()
    return RunContext(warehouse.settings, warehouse)


def raw_state(warehouse) -> dict[str, pd.DataFrame]:
    out = {}
    for table, key in (
        ("raw.daily_prices", ["ticker", "trade_date"]),
        ("raw.ingested_files", ["source_file"]),
        ("raw.rejected_rows", ["source_file", "line_number"]),
    ):
        df = warehouse.query_df(f"select * from {warehouse.table(table)}")
        out[table] = df.sort_values(key).reset_index(drop=True)
    return out


def test_a_disagreeing_file_is_refused_unless_replace(engine_ctx, tmp_path):
    wh = engine_ctx.warehouse
    days = ["2021-03-01", "2021-03-02", "2021-03-03", "2021-03-04"]
    adjusted = write_bars(
        tmp_path / "vendor_a" / "ACME.csv", [(d, 25.0 + i) for i, d in enumerate(days)]
    )
    other = write_bars(tmp_path / "vendor_a" / "BETA.csv", [(d, 7.0) for d in days])
    unadjusted = tmp_path / "vendor_b" / "prices.csv"
    unadjusted.parent.mkdir()
    unadjusted.write_text(
        "date,open,high,low,close,volume,Name\n"
        + "".join(
            f"{d},{c},{c},{c},{c},10,ACME\n" for d, c in zip(days[1:], [104, 108, 112], strict=True)
        )
        + "".join(f"{d},7,7,7,7,10,BETA\n" for d in days[2:])
        + "2021-03-05,116,116,116,116,10,ACME\n"
    )
    assert ingest_paths(engine_ctx, [adjusted, other]).ok
    before = raw_state(wh)

    refused = ingest_paths(engine_ctx, [unadjusted]).files[0]
    assert not refused.ok and not refused.retryable
    assert "disagree with the stored history of ACME" in refused.error
    assert "--replace" in refused.error
    [evidence] = refused.details
    assert "ACME: 3 of 3 dates" in evidence and "ACME.csv" in evidence
    assert "close 112 here vs 28 stored (ratio 4)" in evidence and "4:1 split" in evidence
    assert refused.summary_lines()[1] == f"  {evidence}"
    after = raw_state(wh)
    for table in before:  # a refused file leaves every table as it was
        pd.testing.assert_frame_equal(before[table], after[table], obj=table)

    replaced = ingest_paths(engine_ctx, [unadjusted], replace=True).files[0]
    assert replaced.ok, replaced.error
    assert replaced.history_replaced == {"ACME": 4}
    assert "--replace: this file's history replaced the stored one of ACME (4 rows)" in (
        replaced.summary_line()
    )
    acme = wh.read_table(
        "raw.daily_prices",
        ["trade_date", "close", "source_file"],
        filter_in={"ticker": ["ACME"]},
        order_by=["trade_date"],
    )
    assert acme["close"].tolist() == [104, 108, 112, 116]
    assert set(acme["source_file"]) == {str(unadjusted.resolve())}
    beta = wh.read_table("raw.daily_prices", ["source_file"], filter_in={"ticker": ["BETA"]})
    assert len(beta) == 4  # BETA agreed: its other rows stay
    state = raw_state(wh)
    again = ingest_paths(engine_ctx, [unadjusted], replace=True).files[0]
    assert again.ok and again.history_replaced == {} and again.inserted == again.updated == 0
    rerun = raw_state(wh)  # the same state; the ledger records the last load's counts
    pd.testing.assert_frame_equal(state["raw.daily_prices"], rerun["raw.daily_prices"])
    assert rerun["raw.ingested_files"]["source_file"].tolist() == (
        state["raw.ingested_files"]["source_file"].tolist()
    )


def test_a_file_that_meets_the_history_after_a_gap_is_loaded_and_reported(ctx, tmp_path):
    needs_shared()
    from ml.pipeline import write_demo_prices

    demo = write_demo_prices(tmp_path / "demo")  # GOOG 2004-08-19 .. 2013-03-01
    kaggle = pd.read_csv(KAGGLE)
    goog = kaggle[kaggle["Name"] == "GOOG"].head(30)  # from 2014-03-27
    later = tmp_path / "kaggle_goog.csv"
    goog.to_csv(later, index=False)
    assert ingest_paths(ctx, [demo]).ok
    result = ingest_paths(ctx, [later]).files[0]
    assert result.ok and result.inserted == 30
    [gap] = result.details
    missing = missing_sessions(pd.Timestamp("2013-03-01"), pd.Timestamp("2014-03-27"))
    assert gap.startswith(f"GOOG: {missing} trading days missing between 2013-03-01 and 2014-03-27")
    assert result.summary_lines() == [result.summary_line(), f"  {gap}"]


def test_cli_refuses_with_the_evidence_and_replace_loads(stockcast_home, tmp_path):
    stockcast = str(Path(sys.executable).with_name("stockcast"))
    first = write_bars(tmp_path / "a" / "ACME.csv", [("2021-03-01", 10.0), ("2021-03-02", 10.0)])
    second = tmp_path / "b" / "ACME.csv.gz"
    second.parent.mkdir()
    second.write_bytes(gzip.compress(f"{HEADER}\n2021-03-02,20,20,20,20,20,5\n".encode()))
    assert subprocess.run([stockcast, "ingest", str(first)], capture_output=True).returncode == 0
    refused = subprocess.run([stockcast, "ingest", str(second)], capture_output=True, text=True)
    assert refused.returncode == 1
    assert "FAILED" in refused.stdout and "2:1 split" in refused.stdout
    assert refused.stderr.strip().splitlines()[-1].startswith("error: some files were not loaded")
    replaced = subprocess.run(
        [stockcast, "ingest", "--replace", str(second)], capture_output=True, text=True
    )
    assert replaced.returncode == 0, replaced.stderr
    assert "replaced the stored one of ACME (2 rows)" in replaced.stdout

"""Ingest tests: real files from ../shared/data, real DuckDB warehouses in tmp_path, no mocks."""

from __future__ import annotations

import gzip
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from ml.ingest import (
    IngestFileError,
    expand_paths,
    ingest_paths,
    parse_price_file,
    ticker_from_file_name,
)

TABLES = ("raw.daily_prices", "raw.rejected_rows", "raw.ingested_files")
YAHOO_HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"


# -- helpers ----------------------------------------------------------------------------------
def snapshot(wh) -> dict[str, pd.DataFrame]:
    """Full contents of every raw table, in a stable order."""
    out = {}
    for table in TABLES:
        df = wh.query_df(f"select * from {table}")
        out[table] = df.sort_values(list(df.columns)[:3]).reset_index(drop=True)
    return out


def assert_same_tables(before: dict, after: dict) -> None:
    for table in TABLES:
        pd.testing.assert_frame_equal(before[table], after[table], obj=table)


def rejected(wh, path: Path) -> pd.DataFrame:
    return wh.query_df(
        "select * from raw.rejected_rows where source_file = ? order by line_number",
        [str(path.resolve())],
    )


def prices(wh, ticker: str) -> pd.DataFrame:
    return wh.query_df(
        "select * from raw.daily_prices where ticker = ? order by trade_date", [ticker]
    )


def write(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_text(newline.join(lines) + newline)
    return path


def weekday_before(day: date) -> date:
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


GOOD_ROWS = [
    "2021-03-01,10.0,11.0,9.5,10.5,10.4,1000",
    "2021-03-02,10.5,12.0,10.0,11.5,11.4,2000",
    "2021-03-03,11.5,11.8,11.0,11.2,11.1,1500",
]


# -- layouts ----------------------------------------------------------------------------------
def test_yahoo_file_loads_and_null_bar_is_refused_with_its_line(shared_data, ctx, warehouse):
    path = shared_data / "yahoo_sp500_daily" / "AAPL.csv.gz"
    report = ingest_paths(ctx, [path])

    assert report.ok, report.summary_lines()
    (result,) = report.files
    assert (result.layout, result.tickers, result.rows_read) == ("yahoo", ["AAPL"], 5556)
    assert (result.inserted, result.updated, result.unchanged, result.refused) == (5555, 0, 0, 1)

    df = prices(warehouse, "AAPL")
    assert len(df) == 5555
    first = df.iloc[0]
    assert str(first.trade_date)[:10] == "1999-12-31"
    assert (first.open, first.close, first.adj_close, first.volume) == (
        0.901228,
        0.917969,
        0.787035,
        163811200,
    )
    assert set(df.source_file) == {str(path.resolve())}

    rej = rejected(warehouse, path)
    assert len(rej) == 1
    row = rej.iloc[0]
    assert row.line_number == 5556  # header is line 1; the null bar is the 5,555th data row
    assert (row.ticker, row.trade_date) == ("AAPL", "2022-01-27")
    assert "null bar" in row.reason
    assert row.raw_record == "2022-01-27,null,null,null,null,null,null"

    files = warehouse.query_df("select * from raw.ingested_files")
    assert len(files) == 1
    rec = files.iloc[0]
    assert rec.layout == "yahoo" and rec.tickers == "AAPL"
    assert (rec.rows_read, rec.rows_inserted, rec.rows_refused) == (5556, 5555, 1)
    assert len(rec.content_sha256) == 64
    assert "5555 inserted" in report.summary_lines()[0]


def test_gspc_index_refuses_zero_opens(shared_data, ctx, warehouse):
    path = shared_data / "index_etf" / "GSPC.csv.gz"
    report = ingest_paths(ctx, [path])
    (result,) = report.files
    assert report.ok and result.tickers == ["GSPC"]
    assert (result.rows_read, result.inserted, result.refused) == (24114, 24114 - 5075, 5075)
    rej = rejected(warehouse, path)
    assert set(rej.column_name) == {"Open"}
    assert rej.reason.str.startswith("non-positive price in Open").all()
    assert (rej.trade_date.min(), rej.trade_date.max()) == ("1962-01-02", "1982-04-19")
    df = prices(warehouse, "GSPC")
    assert str(df.trade_date.min())[:10] == "1927-12-30"
    assert (df.open > 0).all()


def test_caret_index_file_name_keeps_caret(shared_data, ctx, warehouse, tmp_path):
    lines = gzip.decompress((shared_data / "index_etf" / "GSPC.csv.gz").read_bytes())
    lines = lines.decode().splitlines()
    path = write(tmp_path / "^GSPC.csv", [lines[0], *lines[-5:]])
    report = ingest_paths(ctx, [path])
    assert report.ok and report.files[0].tickers == ["^GSPC"]
    assert len(prices(warehouse, "^GSPC")) == 5


def test_spy_yfinance_history_export(shared_data, ctx, warehouse):
    path = shared_data / "index_etf" / "SPY.csv.gz"
    report = ingest_paths(ctx, [path])
    (result,) = report.files
    assert report.ok and result.layout == "yfinance_history" and result.tickers == ["SPY"]
    # Float noise like high 25.49882316589355 < close 25.498823165893555 is not a violation.
    assert (result.rows_read, result.inserted, result.refused) == (8115, 8115, 0)
    df = prices(warehouse, "SPY")
    # 1993-01-29 00:00:00-05:00 is trade date 1993-01-29 (the timestamp's local date).
    assert str(df.trade_date.iloc[0])[:10] == "1993-01-29"
    assert str(df.trade_date.iloc[-1])[:10] == "2025-04-24"
    assert df.close.iloc[0] == pytest.approx(24.452512741088867)
    assert (df.adj_close == df.close).all()
    assert ((df.high >= df[["open", "close", "low"]].max(axis=1)) & (df.low <= df.open)).all()


def test_alphavantage_split_adjustment_matches_yahoo(shared_data, ctx, warehouse):
    av_path = shared_data / "alphavantage_daily_adjusted" / "DA-AAPL-T-2021-04-21.csv.gz"
    report = ingest_paths(ctx, [av_path])
    (result,) = report.files
    assert report.ok and result.layout == "alphavantage_daily_adjusted"
    assert result.tickers == ["AAPL"] and (result.inserted, result.refused) == (5402, 0)
    av = prices(warehouse, "AAPL")

    # Independent reference: Yahoo's split-adjusted AAPL, read with plain pandas.
    yahoo = pd.read_csv(
        shared_data / "yahoo_sp500_daily" / "AAPL.csv.gz", na_values="null", parse_dates=["Date"]
    ).dropna()
    both = av.merge(yahoo, left_on="trade_date", right_on="Date")
    assert len(both) == 5360
    rel = (both.close / both.Close - 1).abs()
    # Two vendors: a handful of days disagree, the rest match to rounding.
    assert rel.median() < 1e-5
    assert (rel < 1e-3).mean() > 0.995
    # Around each split (2000-06-21 x2, 2005-02-28 x2, 2014-06-09 x7, 2020-08-31 x4) the
    # adjusted series is continuous and equals Yahoo's.
    for day in ["2000-06-20", "2000-06-21", "2005-02-25", "2014-06-06", "2020-08-28"]:
        row = both[both.trade_date == pd.Timestamp(day)].iloc[0]
        assert row.close == pytest.approx(row.Close, rel=2e-4), day
    # Before all splits: raw 1999-11-01 close 77.62 / (2*2*7.000007*4) and volume x the same.
    first = av.iloc[0]
    factor = 2 * 2 * 7.00000700001 * 4
    assert first.close == pytest.approx(77.62 / factor)
    assert first.volume == round(2487300 * factor)
    assert first.adj_close == pytest.approx(0.596878742448)  # adjusted_close as given
    last = av.iloc[-1]
    assert (last.close, last.adj_close, last.volume) == (133.5, 133.5, 68538237)


def test_kaggle_long_table_slice(shared_data, ctx, warehouse, tmp_path):
    """A few tickers of the Kaggle long table, with its real NaN-open and low>open rows."""
    text = gzip.decompress(
        (shared_data / "kaggle_sp500_5yr" / "all_stocks_5yr_dev.csv.gz").read_bytes()
    )
    lines = text.decode().splitlines()
    wanted = {"AAL", "AOS", "CHD", "DHR"}
    picked = [lines[0]] + [line for line in lines[1:] if line.rsplit(",", 1)[1] in wanted]
    path = write(tmp_path / "kaggle_slice.csv", picked)

    report = ingest_paths(ctx, [path])
    (result,) = report.files
    assert report.ok and result.layout == "long_table"
    assert result.tickers == sorted(wanted)
    rej = rejected(warehouse, path)
    assert result.refused == len(rej) == 5
    assert result.inserted == len(picked) - 1 - 5
    by_key = {(r.ticker, r.trade_date): r for r in rej.itertuples()}
    # NaN opens (open empty, sometimes high/low too).
    for day in ["2015-07-17", "2016-01-12"]:
        r = by_key[("DHR", day)]
        assert r.column_name == "open" and r.reason == "missing required value in open"
    assert by_key[("DHR", "2014-11-06")].reason == "low 80.49 is above open 78.47"
    r = by_key[("CHD", "2014-05-19")]
    assert r.column_name == "low" and r.reason == "low 33.695 is above open 18.77"
    r = by_key[("AOS", "2014-05-19")]
    assert r.column_name == "high" and r.reason == "high 23.595 is below open 23.89"
    # Line numbers point at the physical line of the slice file.
    for r in rej.itertuples():
        assert picked[r.line_number - 1] == r.raw_record
    df = warehouse.query_df(
        "select ticker, count(*) n, count(adj_close) adj from raw.daily_prices group by 1"
    )
    assert dict(zip(df.ticker, df.n, strict=True))["AAL"] == 1259
    assert (df.adj == 0).all()  # Kaggle has no adjusted close: stored as NULL


def test_kaggle_full_file_quirks_are_refused(shared_data):
    """Parse only (no warehouse): all 21 real quirks of the full Kaggle file, by line."""
    parsed = parse_price_file(shared_data / "kaggle_sp500_5yr" / "all_stocks_5yr_dev.csv.gz")
    assert parsed.rows_read == 514743 and len(parsed.tickers) == 421
    rej = parsed.rejected
    assert len(rej) == 21 and len(parsed.prices) == 514743 - 21
    nan_open = rej[rej.reason == "missing required value in open"]
    assert len(nan_open) == 10
    assert set(nan_open.line_number) == {
        70361, 138038, 138161, 203224, 366595, 366718, 404515, 467767, 485165, 497718,
    }  # fmt: skip
    ohlc = rej[rej.column_name.isin(["high", "low"])]
    assert len(ohlc) == 11  # README: 1 high < max(open, close), 10 low > min(open, close)
    chd = rej[rej.line_number == 96997].iloc[0]
    assert chd.raw_record.startswith("2014-05-19,18.77,") and chd.ticker == "CHD"


# -- idempotency and updates ------------------------------------------------------------------
def test_reingest_is_idempotent(shared_data, ctx, warehouse):
    path = shared_data / "yahoo_sp500_daily" / "AAPL.csv.gz"
    ingest_paths(ctx, [path])
    before = snapshot(warehouse)

    report = ingest_paths(ctx, [path])
    (result,) = report.files
    assert (result.inserted, result.updated, result.unchanged, result.refused) == (0, 0, 5555, 1)
    after = snapshot(warehouse)
    # Prices untouched, ingested_at included.
    pd.testing.assert_frame_equal(before["raw.daily_prices"], after["raw.daily_prices"])
    # Same refused records (only the time they were recorded moves).
    cols = [c for c in before["raw.rejected_rows"].columns if c != "rejected_at"]
    pd.testing.assert_frame_equal(
        before["raw.rejected_rows"][cols], after["raw.rejected_rows"][cols]
    )
    # The file record describes the latest run.
    rec_before, rec_after = (
        before["raw.ingested_files"].iloc[0],
        after["raw.ingested_files"].iloc[0],
    )
    for col in ("content_sha256", "layout", "tickers", "rows_read", "rows_refused"):
        assert rec_before[col] == rec_after[col]
    assert (rec_after.rows_inserted, rec_after.rows_updated, rec_after.rows_unchanged) == (
        0,
        0,
        5555,
    )


def test_corrected_file_updates_rows(ctx, warehouse, tmp_path):
    path = write(tmp_path / "XYZ.csv", [YAHOO_HEADER, *GOOD_ROWS])
    ingest_paths(ctx, [path])
    before = prices(warehouse, "XYZ")

    corrected = GOOD_ROWS.copy()
    corrected[1] = "2021-03-02,10.5,12.0,10.0,11.75,11.65,2100"
    write(path, [YAHOO_HEADER, *corrected])
    report = ingest_paths(ctx, [path])
    (result,) = report.files
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 2)
    after = prices(warehouse, "XYZ")
    changed = after.trade_date == pd.Timestamp("2021-03-02")
    assert after[changed].iloc[0][["close", "adj_close", "volume"]].tolist() == [11.75, 11.65, 2100]
    assert (after[changed].ingested_at > before[changed].ingested_at).all()
    pd.testing.assert_frame_equal(after[~changed], before[~changed])
    sha = warehouse.query_df("select content_sha256 from raw.ingested_files").content_sha256
    assert len(sha) == 1  # one record per file, replaced


# -- file problems ----------------------------------------------------------------------------
def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    d = tmp_path / "bad"
    d.mkdir()
    binary = d / "BIN.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    fake_gz = d / "FAKE.csv.gz"
    fake_gz.write_text(YAHOO_HEADER + "\n" + GOOD_ROWS[0] + "\n")
    truncated = d / "TRUNC.csv.gz"
    truncated.write_bytes(gzip.compress(("\n".join([YAHOO_HEADER, *GOOD_ROWS * 50])).encode())[:60])
    empty = d / "EMPTY.csv"
    empty.write_text("")
    blank = write(d / "BLANK.csv", ["", "  ", ""])
    header_only = write(d / "HDR.csv", [YAHOO_HEADER])
    no_low = write(
        d / "NOLOW.csv", ["Date,Open,High,Close,Adj Close,Volume", "2021-03-01,1,2,1.5,1.5,10"]
    )
    unknown = write(d / "UNK.csv", ["id,name,amount", "1,a,3"])
    bad_name = write(d / "NOT A TICKER!.csv", [YAHOO_HEADER, *GOOD_ROWS])
    return {
        "not found": (d / "MISSING.csv", "file not found"),
        "binary": (binary, "binary"),
        "fake gzip": (fake_gz, "not gzip-compressed"),
        "truncated gzip": (truncated, "corrupt gzip"),
        "empty": (empty, "file is empty"),
        "blank lines only": (blank, "file is empty"),
        "header only": (header_only, "header only: no data rows"),
        "missing column": (no_low, "required column missing: low"),
        "unrecognised layout": (unknown, "unrecognised layout"),
        "invalid ticker from file name": (bad_name, "invalid ticker 'NOT A TICKER!'"),
    }


def test_file_problems_change_nothing_and_other_files_load(shared_data, ctx, warehouse, tmp_path):
    ingest_paths(ctx, [shared_data / "yahoo_sp500_daily" / "AAPL.csv.gz"])
    good = write(tmp_path / "GOOD.csv", [YAHOO_HEADER, *GOOD_ROWS])
    for case, (bad, problem) in _bad_files(tmp_path).items():
        before = snapshot(warehouse)
        report = ingest_paths(ctx, [bad])
        assert not report.ok, case
        (result,) = report.files
        assert result.status == "failed"
        assert str(bad.resolve()) in result.error and problem in result.error, (case, result.error)
        assert result.summary_line().startswith("FAILED ") and problem in result.summary_line()
        assert_same_tables(before, snapshot(warehouse))

        # In one call with a good file: the good file loads, the bad one still fails.
        report = ingest_paths(ctx, [bad, good])
        assert not report.ok and [f.status for f in report.files] == ["failed", "ok"], case
        after = snapshot(warehouse)
        assert len(prices(warehouse, "GOOD")) == 3
        for table in TABLES:
            assert not (after[table].source_file == str(bad.resolve())).any(), (case, table)


def test_parse_price_file_raises_ingest_file_error(tmp_path):
    path = write(tmp_path / "HDR.csv", [YAHOO_HEADER])
    with pytest.raises(IngestFileError, match=r"HDR\.csv: header only") as info:
        parse_price_file(path)
    assert info.value.path == path.resolve()


def test_invalid_ticker_argument_is_a_file_error_and_valid_one_overrides_name(
    ctx, warehouse, tmp_path
):
    path = write(tmp_path / "whatever_name.csv", [YAHOO_HEADER, *GOOD_ROWS])
    report = ingest_paths(ctx, [path], ticker="bad ticker")
    assert not report.ok and "invalid ticker 'BAD TICKER' from the --ticker argument" in (
        report.files[0].error
    )
    report = ingest_paths(ctx, [path], ticker="brk.b")
    assert report.ok and report.files[0].tickers == ["BRK.B"]
    assert len(prices(warehouse, "BRK.B")) == 3


def test_invalid_ticker_in_column_refuses_the_row(ctx, warehouse, tmp_path):
    path = write(
        tmp_path / "long.csv",
        [
            "date,open,high,low,close,volume,Symbol",
            "2021-03-01,10,11,9,10.5,100,bf-b",
            "2021-03-01,10,11,9,10.5,100,NOT VALID",
            "2021-03-01,10,11,9,10.5,100,",
            "2021-03-01,10,11,9,10.5,100,^GSPC",
        ],
    )
    report = ingest_paths(ctx, [path])
    assert report.ok and report.files[0].tickers == ["BF-B", "^GSPC"]
    rej = rejected(warehouse, path)
    assert rej[["line_number", "column_name", "reason"]].values.tolist() == [
        [3, "Symbol", "invalid ticker NOT VALID"],
        [4, "Symbol", "missing ticker"],
    ]


# -- row problems -----------------------------------------------------------------------------
def test_duplicate_dates(ctx, warehouse, tmp_path):
    path = write(
        tmp_path / "DUP.csv",
        [
            YAHOO_HEADER,
            GOOD_ROWS[0],
            GOOD_ROWS[0],  # exact duplicate: kept once, not refused
            GOOD_ROWS[1],
            "2021-03-02,10.5,12.0,10.0,11.6,11.4,2000",  # same date, different close
            GOOD_ROWS[2],
        ],
    )
    report = ingest_paths(ctx, [path])
    (result,) = report.files
    assert (result.rows_read, result.inserted, result.refused) == (5, 2, 2)
    assert result.duplicates_dropped == 1
    rej = rejected(warehouse, path)
    assert rej.line_number.tolist() == [4, 5]
    assert (rej.reason == "same ticker and date appears with different values on lines 4, 5").all()
    assert set(rej.column_name) == {"Date"}
    assert prices(warehouse, "DUP").trade_date.astype(str).str[:10].tolist() == [
        "2021-03-01",
        "2021-03-03",
    ]


def test_future_and_weekend_dates_are_refused(ctx, warehouse, tmp_path):
    today_ny = datetime.now(ZoneInfo("America/New_York")).date()
    future = today_ny + timedelta(days=3)
    last_weekday = weekday_before(today_ny)
    path = write(
        tmp_path / "DATES.csv",
        [
            YAHOO_HEADER,
            f"{last_weekday},10,11,9,10.5,10.5,100",
            f"{future},10,11,9,10.5,10.5,100",
            "2021-03-06,10,11,9,10.5,10.5,100",  # a Saturday
        ],
    )
    report = ingest_paths(ctx, [path])
    assert report.files[0].inserted == 1
    rej = rejected(warehouse, path)
    assert rej.line_number.tolist() == [3, 4]
    assert rej.reason[0].startswith("date is in the future") and rej.column_name[0] == "Date"
    assert rej.reason[1] == "date falls on a weekend (Saturday)"


def test_ohlc_and_value_violations_name_the_column(ctx, warehouse, tmp_path):
    rows = [
        "2021-03-01,9.5,9.9,9,10.5,10.5,100",  # 2 high below close
        "2021-03-02,10,11,10.2,10.5,10.5,100",  # 3 low above open
        "2021-03-03,10,11,9,abc,10.5,100",  # 4 unparseable close
        "2021-03-04,10,11,9,10.5,10.5,-5",  # 5 negative volume
        "2021-03-05,-1,11,9,10.5,10.5,100",  # 6 non-positive open
        "2021-03-08,10,inf,9,10.5,10.5,100",  # 7 non-finite high
        "2021/03/09,10,11,9,10.5,10.5,100",  # 8 unparseable date
        "2021-02-30,10,11,9,10.5,10.5,100",  # 9 impossible date
        "2021-03-10,10,11,9,null,10.5,100",  # 10 missing close
        "2021-03-11,10,11,9,10.5,10.5",  # 11 missing field
        "2021-03-12,10,11,9,10.5,,",  # 12 ok: adj close and volume are optional
    ]
    path = write(tmp_path / "BAD.csv", [YAHOO_HEADER, *rows])
    report = ingest_paths(ctx, [path])
    assert report.ok and report.files[0].inserted == 1
    rej = rejected(warehouse, path)
    got = rej[["line_number", "column_name", "reason"]].values.tolist()
    assert got == [
        [2, "High", "High 9.9 is below Close 10.5"],
        [3, "Low", "Low 10.2 is above Open 10"],
        [4, "Close", "unparseable number in Close: abc"],
        [5, "Volume", "negative volume: -5"],
        [6, "Open", "non-positive price in Open: -1"],
        [7, "High", "non-finite value in High: inf"],
        [
            8,
            "Date",
            "unparseable date (expected YYYY-MM-DD, or MM/DD/YYYY or DD/MM/YYYY throughout)",
        ],
        [
            9,
            "Date",
            "unparseable date (expected YYYY-MM-DD, or MM/DD/YYYY or DD/MM/YYYY throughout)",
        ],
        [10, "Close", "missing required value in Close"],
        [11, None, "wrong number of fields: expected 7, found 6"],
    ]
    assert rej.trade_date.tolist()[:3] == ["2021-03-01", "2021-03-02", "2021-03-03"]
    assert rej.raw_record.tolist() == rows[:10]
    row = prices(warehouse, "BAD").iloc[0]
    assert np.isnan(row.adj_close) and pd.isna(row.volume)


def test_line_numbers_with_blank_lines_crlf_and_quotes(ctx, warehouse, tmp_path):
    crlf = write(
        tmp_path / "CRLF.csv",
        [YAHOO_HEADER, GOOD_ROWS[0], "", GOOD_ROWS[1], "   ", "2021-03-03,1,0.5,1,1,1,1"],
        newline="\r\n",
    )
    quoted = write(
        tmp_path / "QUOTED.csv",
        [
            '"Date","Open","High","Low","Close","Adj Close","Volume"',
            '"2021-03-01","10","11","9","10.5","10.5","100"',
            "",
            '"2021-03-02","10","11","9","10.5","10.5","1',
            '00"',  # a quoted field spanning two physical lines: unparseable volume
            '"2021-03-03","10","11","9","10.5","10.5","100"',
            '"2021-03-04","10","11","9","0","10.5","100"',
        ],
    )
    report = ingest_paths(ctx, [crlf, quoted])
    assert report.ok, report.summary_lines()
    assert [f.inserted for f in report.files] == [2, 2]
    assert rejected(warehouse, crlf)[["line_number", "raw_record"]].values.tolist() == [
        [6, "2021-03-03,1,0.5,1,1,1,1"]
    ]
    rej = rejected(warehouse, quoted)
    assert rej.line_number.tolist() == [4, 7]
    assert rej.raw_record[0] == '"2021-03-02","10","11","9","10.5","10.5","1\n00"'
    assert rej.reason.tolist() == [
        "unparseable number in Volume: 1\n00",
        "non-positive price in Close: 0",
    ]


# -- paths, names, progress -------------------------------------------------------------------
def test_folders_are_expanded_recursively_and_progress_is_reported(ctx, warehouse, tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    write(root / "BBB.csv", [YAHOO_HEADER, *GOOD_ROWS])
    (root / "sub" / "AAA.csv.gz").write_bytes(
        gzip.compress("\n".join([YAHOO_HEADER, *GOOD_ROWS]).encode())
    )
    write(root / "notes.txt", ["not a price file"])
    calls = []
    report = ingest_paths(ctx, [root], progress=lambda *a: calls.append(a))
    assert report.ok
    assert [f.file.name for f in report.files] == ["BBB.csv", "AAA.csv.gz"]  # sorted by path
    assert [c[:2] for c in calls] == [(1, 2), (2, 2)] and calls[-1][2].name == "AAA.csv.gz"
    assert len(report.summary_lines()) == 2

    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert expand_paths([empty]) == [(empty.resolve(), "folder contains no .csv or .csv.gz files")]


@pytest.mark.parametrize(
    ("name", "ticker"),
    [
        ("AAPL.csv.gz", "AAPL"),
        ("aapl.csv", "AAPL"),
        ("DA-AAPL-T-2021-04-21.csv.gz", "AAPL"),
        ("GSPC.csv.gz", "GSPC"),
        ("^GSPC.csv", "^GSPC"),
        ("BRK.B.csv", "BRK.B"),
        ("BF-B.csv.gz", "BF-B"),
        ("AAPL_data.csv", "AAPL"),
    ],
)
def test_ticker_from_file_name(name, ticker):
    assert ticker_from_file_name(Path(name)) == ticker


def test_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, ml.ingest, ml.fetch; print('pandas' in sys.modules, 'yfinance' in sys.modules)"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.split() == ["False", "False"]


def test_rows_another_file_loaded_take_the_new_values_within_tolerance(tmp_path, ctx, warehouse):
    header = "Date,Open,High,Low,Close,Adj Close,Volume\n"
    first = tmp_path / "vendor_a" / "ACME.csv"
    second = tmp_path / "vendor_b" / "ACME.csv"
    first.parent.mkdir()
    second.parent.mkdir()
    first.write_text(header + "2021-03-01,10,11,9,10.5,10.5,100\n2021-03-02,10,11,9,10,10,100\n")
    # Same dates, one close rounded differently (0.4%: within the vendors' tolerance).
    second.write_text(
        header + "2021-03-01,10,11,9,10.5,10.5,100\n2021-03-02,10,11,9,10.04,10.04,100\n"
    )
    ingest_paths(ctx, [first])
    result = ingest_paths(ctx, [second]).files[0]
    assert result.ok, result.error
    assert (result.updated, result.unchanged) == (1, 1)
    assert result.replaced_from == {str(first.resolve()): 1}
    assert "took this file's values for rows another file had loaded (1 from ACME.csv)" in (
        result.summary_line()
    )
    assert prices(warehouse, "ACME")["close"].tolist() == [10.5, 10.04]
    again = ingest_paths(ctx, [second]).files[0]
    assert again.replaced_from == {} and again.updated == 0


@pytest.mark.parametrize(
    ("first_dates", "order"),
    [
        (["03/01/2021", "03/02/2021", "03/15/2021"], "month first"),
        (["01/03/2021", "02/03/2021", "15/03/2021"], "day first"),
    ],
)
def test_slash_dates_take_their_order_from_the_file(tmp_path, ctx, warehouse, first_dates, order):
    path = tmp_path / "ACME.csv"
    rows = "".join(f"{d},10,11,9,10.5,100\n" for d in first_dates)
    path.write_text("Date,Open,High,Low,Close,Volume\n" + rows)
    report = ingest_paths(ctx, [path])
    assert report.ok, (order, report.summary_lines())
    stored = warehouse.query_df("select trade_date from raw.daily_prices order by trade_date")
    assert [str(d.date()) for d in stored["trade_date"]] == [
        "2021-03-01",
        "2021-03-02",
        "2021-03-15",
    ]


def test_ambiguous_slash_dates_are_a_file_problem(tmp_path, ctx, warehouse):
    path = tmp_path / "ACME.csv"
    path.write_text("Date,Open,High,Low,Close\n03/01/2021,10,11,9,10.5\n03/02/2021,10,11,9,10\n")
    report = ingest_paths(ctx, [path])
    assert not report.ok
    assert "ACME.csv" in report.files[0].error and "YYYY-MM-DD" in report.files[0].error
    assert warehouse.query_df("select count(*) as n from raw.daily_prices")["n"].iloc[0] == 0


@pytest.mark.parametrize(
    "content",
    [
        '{"finance":{"result":null,"error":{"code":"Unauthorized","description":"Invalid cookie"}}}',
        "404: Not Found",
    ],
)
def test_error_pages_saved_as_csv_are_named_as_such(tmp_path, ctx, warehouse, content):
    """Failed downloads that saved Yahoo's JSON error or a 404 page under a .csv name."""
    path = tmp_path / "RJF.csv"
    path.write_text(content + "\n")
    result = ingest_paths(ctx, [path]).files[0]
    assert not result.ok
    assert "RJF.csv" in result.error and "unrecognised layout" in result.error


# -- files whose every row is refused (issue 7) -----------------------------------------------
def test_file_with_every_row_refused_fails_but_records_its_refusals(ctx, warehouse, tmp_path):
    bad = [
        "X'); DROP TABLE daily_prices; --",
        '"=HYPERLINK(""http://x"")"',
        "X'); DROP TABLE daily_prices; --",
    ]
    lines = ["date,open,high,low,close,volume,Name"]
    for i, day in enumerate(["2021-03-01", "2021-03-02", "2021-03-03", "2021-03-04"] * 3):
        lines.append(f"{day},10.0,11.0,9.5,10.5,{1000 + i},{bad[i % 3]}")
    path = write(tmp_path / "junk.csv", lines)
    good = write(tmp_path / "ACME.csv", [YAHOO_HEADER, *GOOD_ROWS])

    report = ingest_paths(ctx, [path, good])

    assert not report.ok and [f.status for f in report.files] == ["failed", "ok"]
    result = report.files[0]
    assert not result.retryable and (result.loaded, result.refused) == (0, 12)
    line = result.summary_line()
    assert "\n" not in line and line.startswith("FAILED ") and "every data row was refused" in line
    assert "0 loaded, 12 refused): line 2 Name: invalid ticker X'); DROP TABLE" in line
    assert "line 3 Name: invalid ticker =HYPERLINK" in line and line.endswith("; +9 more")
    assert len(line.split("12 refused): ", 1)[1]) <= 220
    # The refusals are recorded; nothing else of the file is.
    assert list(rejected(warehouse, path)["line_number"]) == list(range(2, 14))
    assert warehouse.query_df("select count(*) n from raw.daily_prices")["n"][0] == 3


def test_cli_ingest_exits_non_zero_when_every_row_is_refused(stockcast_home, tmp_path):
    from click.testing import CliRunner

    from ml.cli import main

    path = write(
        tmp_path / "junk.csv",
        ["date,open,high,low,close,volume,ticker", "2021-03-01,10,11,9.5,10.5,1000,=HYPERLINK(x)"],
    )
    result = CliRunner().invoke(main, ["ingest", str(path)])
    assert result.exit_code == 1, result.output
    assert "line 2 ticker: invalid ticker =HYPERLINK(x)" in result.output


def test_summary_line_of_a_loaded_file_names_its_first_refusals(ctx, tmp_path):
    long_value = "9" * 300
    rows = [
        YAHOO_HEADER,
        *GOOD_ROWS,
        "2021-03-04,null,null,null,null,null,null",
        f"2021-03-05,10,11,9,10,10,{long_value}x",
        "2021-03-06,10,11,9,10,10,1",  # a Saturday
        "2021-03-08,10,11,9,10,10,-1",
    ]
    result = ingest_paths(ctx, [write(tmp_path / "ACME.csv", rows)]).files[0]

    assert result.ok and (result.inserted, result.refused) == (3, 4)
    line = result.summary_line()
    assert "; refused: line 5 Open: null bar" in line and line.endswith("; +2 more")
    assert "line 6 Volume: unparseable number in Volume: 999" in line
    assert long_value not in line and len(line.split("; refused: ", 1)[1]) <= 220


# -- yfinance download CSVs and thousands separators (issue 7) ----------------------------------
def yf_download_csv(path: Path, frames: dict[str, pd.DataFrame], by_ticker=False, adj=True):
    """Write what ``yf.download(tickers).to_csv()`` writes (MultiIndex header), from real bars."""
    names = ["Adj Close", "Close", "High", "Low", "Open", "Volume"][0 if adj else 1 :]
    wide = pd.concat(
        {t: f.set_index("Date")[names] for t, f in frames.items()}, axis=1, names=["Ticker"]
    )
    wide.columns.names = ["Ticker", "Price"]
    wide.index.name = "Date"
    if not by_ticker:
        wide = wide.swaplevel(axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    wide.to_csv(path)
    return path


def test_yfinance_download_single_ticker(shared_data, ctx, warehouse, tmp_path):
    from helpers import read_yahoo

    aapl = read_yahoo("AAPL").iloc[-30:].reset_index(drop=True)
    path = yf_download_csv(tmp_path / "download.csv", {"AAPL": aapl})
    text = path.read_text().splitlines()
    assert text[0] == "Price,Adj Close,Close,High,Low,Open,Volume"
    assert text[1].startswith("Ticker,AAPL,AAPL") and text[2] == "Date,,,,,,"
    # Break one bar (line 10) to check line numbers count the three header lines.
    text[9] = text[9].replace(",", ",-", 2).replace(",-", ",", 1)
    path.write_text("\n".join(text) + "\n")

    report = ingest_paths(ctx, [path], ticker="IGNORED")
    result = report.files[0]
    assert report.ok, report.summary_lines()
    assert (result.layout, result.tickers, result.rows_read) == ("yfinance_download", ["AAPL"], 30)
    (line,) = rejected(warehouse, path)["line_number"]
    assert line == 10 and "line 10 Close: non-positive price" in result.summary_line()
    stored = prices(warehouse, "AAPL")
    expected = aapl.drop(index=6)
    assert len(stored) == 29
    np.testing.assert_allclose(stored["close"], expected["Close"], rtol=1e-12)
    np.testing.assert_allclose(stored["adj_close"], expected["Adj Close"], rtol=1e-12)
    assert list(stored["volume"]) == list(expected["Volume"].astype(int))


@pytest.mark.parametrize("by_ticker", [False, True])
def test_yfinance_download_several_tickers(shared_data, ctx, warehouse, tmp_path, by_ticker):
    from helpers import read_yahoo

    aapl = read_yahoo("AAPL").iloc[-20:]
    msft = read_yahoo("MSFT").iloc[-15:]  # "listed" later: empty fields before
    path = yf_download_csv(tmp_path / "d.csv", {"AAPL": aapl, "MSFT": msft}, by_ticker, adj=False)
    report = ingest_paths(ctx, [path])
    result = report.files[0]
    assert report.ok, report.summary_lines()
    assert (result.tickers, result.rows_read, result.refused) == (["AAPL", "MSFT"], 35, 0)
    for ticker, frame in (("AAPL", aapl), ("MSFT", msft)):
        stored = prices(warehouse, ticker)
        np.testing.assert_allclose(stored["close"], frame["Close"], rtol=1e-12)
        # auto_adjust: the close is adjusted already
        np.testing.assert_allclose(stored["adj_close"], frame["Close"], rtol=1e-12)


def test_thousands_separators_in_quoted_fields(ctx, warehouse, tmp_path):
    path = write(
        tmp_path / "BKNG.csv",
        [
            '"Date","Open","High","Low","Close","Adj Close","Volume"',
            '"2021-03-01","1,010.50","1,020.00","1,000.25","1,015.75","1,015.75","12,345,600"',
            '2021-03-02,"2,000","2,100.5","1,990","2,050","2,050","1,000"',
            '2021-03-03,"1,0,1",2,1,2,2,100',
            '2021-03-04,"10,00",11,9,10,10,100',
        ],
    )
    report = ingest_paths(ctx, [path])
    assert report.ok, report.summary_lines()
    stored = prices(warehouse, "BKNG")
    assert list(stored["open"]) == [1010.5, 2000.0]
    assert list(stored["high"]) == [1020.0, 2100.5]
    assert list(stored["volume"]) == [12345600, 1000]
    reasons = list(rejected(warehouse, path)["reason"])
    assert reasons == ["unparseable number in Open: 1,0,1", "unparseable number in Open: 10,00"]

"""The columnar reader gives what the general one gives, to the bit.

parse_price_file cuts plain files with numpy and Arrow and converts plain dates and decimals
with Arrow; any other file, column or value goes through the csv module and pandas (the
reference path, which the ingest had alone before). Here every file is parsed both ways, the
reference way by switching the three columnar steps off, and the results must be equal: the
accepted bars, the refused rows with their reasons, and the file's ledger record.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
from helpers import SHARED_DATA, YAHOO
from hypothesis import HealthCheck, given, settings

from ml import ingest

if not YAHOO.is_dir():
    pytest.skip(f"shared developer data not found at {YAHOO}", allow_module_level=True)

from test_ingest_properties import mutated_files  # after the skip: it reads the shared data


@contextmanager
def reference_path():
    with mock.patch.multiple(
        ingest,
        _columnar_records=lambda path, data: None,
        _columnar_dates=lambda text: None,
        _columnar_numbers=lambda text, missing: None,
    ):
        yield


def outcome(path: Path, **kwargs) -> tuple:
    """What parse_price_file says about a file, without the load times."""
    try:
        parsed = ingest.parse_price_file(path, **kwargs)
    except ingest.IngestFileError as exc:
        return ("file error", str(exc))
    record = {k: v for k, v in parsed.file_record.items() if k != "ingested_at"}
    return (
        parsed.layout,
        parsed.tickers,
        parsed.rows_read,
        parsed.duplicates_dropped,
        record,
        parsed.prices.drop(columns="ingested_at"),
        parsed.rejected.drop(columns="rejected_at"),
    )


def assert_same(path: Path, **kwargs) -> None:
    columnar = outcome(path, **kwargs)
    with reference_path():
        reference = outcome(path, **kwargs)
    assert len(columnar) == len(reference) and columnar[:-2] == reference[:-2]
    if columnar[0] != "file error":
        for got, expected in zip(columnar[-2:], reference[-2:], strict=True):
            pd.testing.assert_frame_equal(got, expected, check_exact=True)


HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"
EDGE_CASES = {
    "crlf and lone cr": HEADER + "\r\n2021-03-01,10,11,9,10.5,10.5,100\r2021-03-02,1,2,1,1,1,5\r\n",
    "blank and space-only lines": f"\n  \n{HEADER}\n\n2021-03-01,10,11,9,10.5,10.5,100\n \t \n"
    "2021-03-02,10,11,9,10,10,100\n\n",
    "byte order mark": "\ufeff" + HEADER + "\n2021-03-01,10,11,9,10.5,10.5,100\n",
    "padded fields": HEADER + "\n 2021-03-01 ,\t10 , 11,9,10.5 ,10.5, 100\n",
    "long decimals": HEADER + "\n2021-03-01,24.469904286423922,25.498823165893555,"
    "24.1,25.49882316589355,25.49882316589355,100\n",
    "bare points": HEADER + "\n2021-03-01,5.,6,.5,5,5,100\n2021-03-02,.,6,.5,5,5,100\n",
    "signs and exponents": HEADER + "\n2021-03-01,+5,6e0,4,5,5,1e3\n2021-03-02,5,6,4,5,5,-1\n",
    "quoted thousands": HEADER + '\n2021-03-01,"1,010.50","1,020",1000,1010,1010,"12,345,600"\n',
    "invalid and out-of-range dates": HEADER + "\n2021-02-30,1,2,1,1,1,1\n1600-01-03,1,2,1,1,1,1\n"
    "2999-01-01,1,2,1,1,1,1\n2021-3-1,1,2,1,1,1,1\n2021-03-06,1,2,1,1,1,1\n",
    "slash dates": HEADER + "\n03/01/2021,1,2,1,1,1,1\n03/15/2021,1,2,1,1,1,1\n",
    "timestamps": "Date,Open,High,Low,Close,Volume,Dividends,Stock Splits\n"
    "2021-03-01 00:00:00-05:00,1,2,1,1,10,0,0\n2021-03-02 00:00:00-05:00,1,2,1,1,10,0,0\n",
    "duplicates": HEADER + "\n2021-03-01,1,2,1,1,1,1\n2021-03-01,1,2,1,1,1,1\n"
    "2021-03-02,1,2,1,1,1,1\n2021-03-02,1,2,1,1.5,1,1\n2021-03-03,1,2,1,1,1,1\n",
    "missing values and nulls": HEADER + "\n2021-03-01,null,null,null,null,null,null\n"
    "2021-03-02,NaN,2,1,1,1,\n2021-03-03,1,2,1,1,,N/A\n,1,2,1,1,1,1\n",
    "wrong field counts": HEADER + "\n2021-03-01,1,2,1,1,1\n2021-03-02,1,2,1,1,1,1,1\n"
    "2021-03-03,1,2,1,1,1,1\n",
    "long table": "date,open,high,low,close,volume,Name\n2021-03-01,1,2,1,1,5,aapl\n"
    "2021-03-01,1,2,1,1,5,AAPL\n2021-03-02,1,2,1,1,5,bad ticker!\n2021-03-02,1,2,1,1,5,\n"
    "2021-03-02,1,2,1,1,5,MSFT\n",
    "non-ascii": HEADER + "\n2021-03-01,1,2,1,1,1,1\n2021-03-02,1\u00a0,2,1,1,1,1\n",
    "cut short": HEADER + "\n2021-03-01,1,2,1,1,1,1\n2021-03-02,1,2",
    "header only": HEADER + "\n\n",
    "empty": " \n\n",
}


@pytest.mark.parametrize("text", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_edge_cases_parse_the_same_both_ways(tmp_path, text):
    path = tmp_path / "ACME.csv"
    path.write_bytes(text.encode("utf-8"))
    assert_same(path)


@pytest.mark.parametrize(
    "path",
    [
        YAHOO / "AAPL.csv.gz",
        YAHOO / "AMCR.csv.gz",
        SHARED_DATA / "alphavantage_daily_adjusted" / "DA-NVDA-T-2021-04-21.csv.gz",
        SHARED_DATA / "index_etf" / "SPY.csv.gz",
        SHARED_DATA / "index_etf" / "GSPC.csv.gz",
    ],
    ids=lambda p: p.name,
)
def test_shared_files_parse_the_same_both_ways(path):
    assert_same(path)


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_files())
def test_mutated_real_files_parse_the_same_both_ways(case):
    name, text, _ = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        assert_same(path)

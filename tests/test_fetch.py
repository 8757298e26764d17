"""fetch: fails fast without a network; writes yfinance frames as Yahoo-layout CSVs."""

from __future__ import annotations

import socket
from datetime import date

import pandas as pd
import pytest

from ml.fetch import YAHOO_HOST, FetchError, fetch_prices, write_yahoo_csv
from ml.ingest import ingest_paths


def _yahoo_reachable() -> bool:
    try:
        with socket.create_connection((YAHOO_HOST, 443), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def yfinance_history() -> pd.DataFrame:
    """Shaped like ``yf.Ticker('AAPL').history(auto_adjust=False)``: tz-aware index named Date."""
    index = pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"], name="Date").tz_localize(
        "America/New_York"
    )
    return pd.DataFrame(
        {
            "Open": [187.149994, 184.220001, 182.149994],
            "High": [188.440002, 185.880005, 183.089996],
            "Low": [183.889999, 183.429993, 180.880005],
            "Close": [185.639999, 184.25, float("nan")],
            "Adj Close": [184.938217, 183.553467, float("nan")],
            "Volume": [82488700, 58414500, 71983600],
            "Dividends": [0.0, 0.0, 0.0],
            "Stock Splits": [0.0, 0.0, 0.0],
        },
        index=index,
    )


@pytest.mark.skipif(_yahoo_reachable(), reason="a network is reachable: no-network path untestable")
def test_no_network_fails_with_clear_message(tmp_path):
    # Fast by construction: one connection attempt bounded by CONNECT_TIMEOUT (no retries).
    with pytest.raises(FetchError, match=r"cannot reach Yahoo Finance: no network\?"):
        fetch_prices(["AAPL"], date(2024, 1, 1), None, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written


def test_invalid_ticker_is_refused_before_any_network_use(tmp_path):
    with pytest.raises(FetchError, match="invalid ticker"):
        fetch_prices(["NOT VALID"], date(2024, 1, 1), None, tmp_path)


def test_write_yahoo_csv_layout_and_ingest(yfinance_history, tmp_path, ctx, warehouse):
    path = write_yahoo_csv(yfinance_history, tmp_path / "AAPL.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "Date,Open,High,Low,Close,Adj Close,Volume"
    assert lines[1] == "2024-01-02,187.149994,188.440002,183.889999,185.639999,184.938217,82488700"
    assert lines[3] == "2024-01-04,182.149994,183.089996,180.880005,null,null,71983600"

    report = ingest_paths(ctx, [path])
    (result,) = report.files
    assert result.layout == "yahoo" and result.tickers == ["AAPL"]
    assert (result.inserted, result.refused) == (2, 1)


def test_write_yahoo_csv_accepts_yf_download_multiindex(yfinance_history, tmp_path):
    frame = yfinance_history.drop(columns=["Dividends", "Stock Splits"])
    frame.columns = pd.MultiIndex.from_product([frame.columns, ["AAPL"]], names=["Price", "Ticker"])
    path = write_yahoo_csv(frame, tmp_path / "AAPL.csv")
    assert path.read_text().splitlines()[0] == "Date,Open,High,Low,Close,Adj Close,Volume"


def test_write_yahoo_csv_auto_adjusted_frame_uses_close(yfinance_history, tmp_path):
    frame = yfinance_history.drop(columns=["Adj Close"])
    path = write_yahoo_csv(frame, tmp_path / "AAPL.csv")
    first = path.read_text().splitlines()[1].split(",")
    assert first[4] == first[5] == "185.639999"

"""Download daily bars from Yahoo Finance (yfinance) into Yahoo-layout CSV files.

The files are written as ``<out_dir>/<TICKER>.csv`` with the header
``Date,Open,High,Low,Close,Adj Close,Volume`` (the layout of Yahoo's own CSV download, missing
values written as ``null``), so the caller ingests them with :func:`ml.ingest.ingest_paths` like
any uploaded file. yfinance is an optional dependency (``stockcast[fetch]``) imported lazily.
"""

from __future__ import annotations

import socket
import threading
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

YAHOO_HOST = "query2.finance.yahoo.com"
YAHOO_PORT = 443
CONNECT_TIMEOUT = 3.0
YAHOO_COLUMNS = ["Open", "High", "Low", "Close", "Adj Close", "Volume"]


class FetchError(RuntimeError):
    """Prices could not be fetched. ``written`` lists files written before the failure."""

    def __init__(self, message: str, written: list[Path] | None = None):
        super().__init__(message)
        self.written = written or []


def check_yahoo_reachable(
    host: str = YAHOO_HOST, port: int = YAHOO_PORT, timeout: float = CONNECT_TIMEOUT
) -> None:
    """Raise FetchError unless a TCP connection to Yahoo opens within ``timeout`` seconds.

    The DNS lookup runs in a daemon thread because ``getaddrinfo`` ignores socket timeouts and
    can hang for much longer when no resolver is reachable.
    """
    outcome: dict[str, object] = {}

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome["ok"] = True
        except OSError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if outcome.get("ok"):
        return
    detail = outcome.get("error") or f"no answer within {timeout:g}s"
    raise FetchError(
        f"cannot reach Yahoo Finance: no network? ({host}:{port}: {detail}). Download the CSV "
        "files elsewhere and load them with `stockcast ingest <files>`."
    )


def fetch_prices(
    tickers: list[str],
    start: date,
    end: date | None,
    out_dir: Path,
    timeout: float = CONNECT_TIMEOUT,
) -> list[Path]:
    """Download daily bars for ``tickers`` from ``start`` to ``end`` (inclusive; None = today).

    Returns the written CSV paths. Raises FetchError, fast, when Yahoo is unreachable, and after
    writing the others when a ticker returns no data (``FetchError.written`` lists the files).
    """
    from ml.ingest import valid_ticker

    symbols = [t.strip().upper() for t in tickers]
    bad = [t for t in symbols if not valid_ticker(t)]
    if bad:
        raise FetchError(f"invalid ticker(s): {', '.join(map(repr, bad))}")
    if not symbols:
        raise FetchError("no tickers given")
    if end is not None and end < start:
        raise FetchError(f"end date {end} is before start date {start}")
    check_yahoo_reachable(timeout=timeout)

    import yfinance as yf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # yfinance's `end` is exclusive.
    end_exclusive = (end or date.today()) + timedelta(days=1)
    written: list[Path] = []
    failed: list[str] = []
    for symbol in symbols:
        try:
            history = yf.Ticker(symbol).history(
                start=start.isoformat(),
                end=end_exclusive.isoformat(),
                interval="1d",
                auto_adjust=False,
                actions=False,
                timeout=timeout * 5,
            )
        except Exception as exc:  # yfinance raises many types for network/data problems
            failed.append(f"{symbol} ({type(exc).__name__}: {exc})")
            continue
        if history is None or history.empty:
            failed.append(f"{symbol} (no data returned)")
            continue
        written.append(write_yahoo_csv(history, out_dir / f"{symbol}.csv"))
    if failed:
        raise FetchError(f"Yahoo Finance returned no prices for: {'; '.join(failed)}", written)
    return written


def write_yahoo_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write a yfinance frame (``Ticker.history(auto_adjust=False)`` or single-ticker
    ``yf.download``) as a Yahoo download CSV: ``Date,Open,High,Low,Close,Adj Close,Volume``.

    The date is the calendar date of each (exchange-local) timestamp. Without an ``Adj Close``
    column (auto-adjusted data) Close is used. Missing values are written as ``null``.
    """
    import pandas as pd

    frame = frame.copy()
    if isinstance(frame.columns, pd.MultiIndex):  # yf.download: (Price, Ticker) columns
        tickers = frame.columns.get_level_values(-1).unique()
        if len(tickers) != 1:
            raise FetchError(f"expected one ticker's prices, got {list(tickers)}")
        frame.columns = frame.columns.get_level_values(0)
    if "Adj Close" not in frame.columns and "Close" in frame.columns:
        frame["Adj Close"] = frame["Close"]
    missing = [c for c in YAHOO_COLUMNS if c not in frame.columns and c != "Volume"]
    if missing:
        raise FetchError(f"yfinance frame lacks column(s) {', '.join(missing)}")
    if "Volume" not in frame.columns:
        frame["Volume"] = pd.NA
    index = pd.DatetimeIndex(frame.index)
    out = frame[YAHOO_COLUMNS].reset_index(drop=True)
    out.insert(0, "Date", index.strftime("%Y-%m-%d"))
    out["Volume"] = pd.to_numeric(out["Volume"], errors="coerce").round().astype("Int64")
    out = out.sort_values("Date")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False, na_rep="null")
    return path

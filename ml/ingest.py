"""Load daily price CSV files into ``raw.daily_prices``.

``ingest_paths`` reads ``.csv`` / ``.csv.gz`` files (or folders of them), detects the layout from
the header, validates every row with whole-column checks (Arrow and numpy; see
:func:`parse_price_file`), and hands each file's accepted rows and refused rows to
:meth:`ml.warehouse.Warehouse.load_price_files` (batches of files that share no ticker, see
:class:`_Batch`), which upserts each file atomically. This module holds no SQL and does not know which engine is behind the warehouse.

Layouts (header names are matched case-insensitively after trimming; extra columns are ignored):

``yahoo``
    Yahoo Finance download ``Date,Open,High,Low,Close,Adj Close,Volume``. ``null`` marks a
    missing value. OHLCV are split-adjusted, ``Adj Close`` also dividend-adjusted.
``yfinance_history``
    yfinance ``Ticker.history()`` export ``Date,Open,High,Low,Close,Volume,Dividends,
    Stock Splits[,Capital Gains]``. Dates are tz-aware timestamps; the trade date is the calendar
    date written in the timestamp (the exchange's local date). OHLC are already adjusted for
    splits and dividends, so ``adj_close = close``.
``alphavantage_daily_adjusted``
    ``timestamp,open,high,low,close,adjusted_close,volume,dividend_amount,split_coefficient``.
    OHLC and volume are raw (as traded): they are back-adjusted for splits (prices divided and
    volume multiplied by the product of the split coefficients of all later dates) so that
    ``close`` follows Yahoo's split-adjusted convention. ``adj_close = adjusted_close``.
``yfinance_download``
    What ``yf.download(...).to_csv()`` writes: a three-line header ``Price,Adj Close,Close,High,
    Low,Open,Volume`` (``Adj Close`` only without ``auto_adjust``) / ``Ticker,AAPL,AAPL,...`` /
    ``Date,,,,,,`` (the ``Price`` and ``Ticker`` lines may come in either order, and the
    ``Date`` line may be missing). The tickers come from the ``Ticker`` line; a file with
    several tickers (columns grouped per price or per ticker) is read as one bar per (line,
    ticker), and a ticker whose fields on a line are all empty (not listed yet that day) is
    skipped, not counted. Without ``Adj Close`` the OHLC are adjusted (yfinance's
    ``auto_adjust``), so ``adj_close = close``.
``long_table``
    Any of the layouts above or plain OHLC with a ticker column named ``Name``, ``ticker`` or
    ``symbol`` (e.g. Kaggle ``date,open,high,low,close,volume,Name``).
``ohlc``
    ``Date,Open,High,Low,Close[,Volume]`` without an adjusted close.

When the source has no adjusted close (``ohlc``, Kaggle's ``long_table``) ``adj_close`` is
stored as NULL rather than guessed: the source does not say whether its close is
dividend-adjusted. Numbers may carry thousands separators (``"1,010.50"``,
``"12,345,600"``) when the field is quoted, so the comma cannot be a field separator; the
groups must be well formed (``1,0,1`` stays unparseable). Volume is optional everywhere (NULL when the column is absent or empty); a
fractional volume is rounded to the nearest whole share.

Ticker: the ticker column (which wins over the argument), else the ``ticker`` argument, else
the file name (``AAPL.csv.gz``, ``DA-AAPL-T-2021-04-21.csv.gz``, ``AAPL_data.csv``,
``^GSPC.csv``), upper-cased and validated against ``[A-Z0-9.^-]{1,15}``.

Dates are ISO ``YYYY-MM-DD`` (optionally followed by a time and a UTC offset), or slash dates
``MM/DD/YYYY`` / ``DD/MM/YYYY`` whose order the file itself settles (a day above 12 appears
within two weeks of daily bars); a file whose slash dates never settle it is a file problem.

Rows are refused (recorded in ``raw.rejected_rows`` with the physical line number, header =
line 1) for: a wrong number of fields; a missing or invalid ticker (ticker column only); an
unparseable or missing date; a Yahoo ``null`` bar; a missing open/high/low/close; an
unparseable number; a non-finite or non-positive price; a negative volume or one too large for
a 64-bit integer; a non-positive
split coefficient; ``high`` below open/close/low or ``low`` above open/close; a date after
today in New York; a date on a weekend; and the same (ticker, date) more than once with
different values (every copy is refused; copies with equal values are collapsed to the first,
without a refusal). ``column_name`` is the column's name as written in the file's header.
A high/low that misses the open/close by float noise only (relative 1e-9, e.g. SPY's
``25.49882316589355`` vs ``25.498823165893555``) is not a violation: the stored high/low are
clamped to ``max``/``min`` of the bar so downstream OHLC tests hold exactly.
Weekend bars are refused, not accepted with a flag: US exchanges never trade on Saturday or
Sunday, so such a bar is a timezone or data-entry error that would put a fake trading day
into every downstream window. Exchange holidays are not checked here (that needs a calendar
and is left to the dbt tests). Each refused row gets one record, for its first problem in the
order above.

File problems (unreadable, not CSV, not gzip despite the name, empty, header only, unknown
layout, required column missing, invalid ticker from the file name or argument) raise
:class:`IngestFileError` inside ``ingest_paths``; nothing of that file is written and the
other files still load.

A file that parses but whose every data row is refused (e.g. a long table whose ticker column
holds junk on every line) counts as failed too: its refusals are recorded in
``raw.rejected_rows`` as for any file, nothing else is written, and the report (so the CLI's
exit status) says it failed. Summary lines name the first few refusal reasons with their line
numbers (``line 2 ticker: invalid ticker ...; +9 more``), not just a count.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import hashlib
import io
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas and the warehouse are imported lazily: `stockcast --help` stays fast
    from concurrent.futures import Future

    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from ml.context import RunContext
    from ml.warehouse import UpsertCounts

EXCHANGE_TZ = "America/New_York"
TICKER_PATTERN = re.compile(r"^[A-Z0-9.\-^]{1,15}$")
OHLC_TOLERANCE = 1e-9  # relative
_MISSING = ("", "null", "nan", "na", "n/a", "none", "nat")
MISSING_TOKENS = frozenset(v for m in _MISSING for v in (m, m.upper(), m.capitalize()))
MISSING_TOKENS |= {"NaN", "N/A"}

LAYOUT_YAHOO = "yahoo"
LAYOUT_YFINANCE = "yfinance_history"
LAYOUT_ALPHAVANTAGE = "alphavantage_daily_adjusted"
LAYOUT_LONG = "long_table"
LAYOUT_YF_DOWNLOAD = "yfinance_download"
LAYOUT_OHLC = "ohlc"

DATE_NAMES = ("date", "timestamp", "datetime")
ADJ_NAMES = ("adj close", "adj_close", "adjclose", "adjusted_close", "adjusted close")
TICKER_NAMES = ("name", "ticker", "symbol")
PRICES = ("open", "high", "low", "close")
VALUE_COLUMNS = ("open", "high", "low", "close", "adj_close", "volume", "split")

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}:?\d{2})?)?$"
)
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?$")
_SLASH_DATE = re.compile(r"^(?P<a>\d{1,2})/(?P<b>\d{1,2})/(?P<y>\d{4})(?:[ T][\d:.]+)?$")
_FILE_NAME_TICKER = (
    re.compile(r"^DA-(?P<t>.+)-T-\d{4}-\d{2}-\d{2}$", re.IGNORECASE),  # Pooksoft Alpha Vantage
    re.compile(r"^(?P<t>.+)_data$", re.IGNORECASE),  # Kaggle individual_stocks_5yr
)

ProgressCallback = Callable[[int, int, Path], None]


class IngestFileError(Exception):
    """A whole file cannot be ingested. The message names the file and the problem."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass
class FileResult:
    file: Path
    status: str = "ok"  # "ok" or "failed"
    layout: str | None = None
    tickers: list[str] = field(default_factory=list)
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: int = 0
    duplicates_dropped: int = 0
    replaced_from: dict[str, int] = field(default_factory=dict)
    # --replace: per ticker, the stored rows of the files this one disagreed with, removed.
    history_replaced: dict[str, int] = field(default_factory=dict)
    # Evidence and reports shown under the summary line: how the file disagrees with the stored
    # history (when refused for it), gaps and jumps where it meets the stored history.
    details: list[str] = field(default_factory=list)
    # The first few refused rows as (line number, column name or None, reason), by line.
    refusal_examples: list[tuple[int, str | None, str]] = field(default_factory=list)
    error: str | None = None
    # A failure that is not the file's fault (the warehouse was unreachable, ...): trying the
    # same file again may succeed.
    retryable: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def loaded(self) -> int:
        return self.inserted + self.updated + self.unchanged

    def summary_line(self) -> str:
        if not self.ok:
            return f"FAILED {self.error}"
        tickers = (
            ",".join(self.tickers) if len(self.tickers) <= 5 else f"{len(self.tickers)} tickers"
        )
        line = (
            f"{self.file.name} [{self.layout}, {tickers}]: {self.rows_read} rows read, "
            f"{self.inserted} inserted, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.refused} refused"
        )
        if self.duplicates_dropped:
            line += f", {self.duplicates_dropped} exact duplicates dropped"
        if self.replaced_from:
            others = ", ".join(f"{n} from {Path(f).name}" for f, n in self.replaced_from.items())
            line += f"; took this file's values for rows another file had loaded ({others})"
        if self.history_replaced:
            replaced = ", ".join(f"{t} ({n} rows)" for t, n in self.history_replaced.items())
            line += f"; --replace: this file's history replaced the stored one of {replaced}"
        if self.refused:
            line += f"; refused: {self.refusal_text()}"
        return line

    def summary_lines(self) -> list[str]:
        """The summary line, then the evidence and reports, indented, at most a few."""
        shown = self.details[:DETAILS_SHOWN]
        more = len(self.details) - len(shown)
        return [
            self.summary_line(),
            *(f"  {d}" for d in shown),
            *([f"  ... and {more} more"] if more else []),
        ]

    def refusal_text(self) -> str:
        """The first refusal reasons with their line numbers, on one short line."""
        return format_refusals(self.refusal_examples, self.refused)


REFUSAL_EXAMPLES = 3  # refusal reasons shown in a summary line
DETAILS_SHOWN = 5  # evidence lines shown under a file's summary line
REFUSAL_REASON_CHARS = 70  # one reason, at most
REFUSAL_TEXT_CHARS = 200  # all the reasons shown, at most
_WHITESPACE = re.compile(r"\s+")


def _shorten(text: str, limit: int) -> str:
    text = _WHITESPACE.sub(" ", text).strip()  # one line, whatever the file held
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def format_refusals(examples: list[tuple[int, str | None, str]], total: int) -> str:
    """``line 2 ticker: invalid ticker ...; line 3 date: ...; +9 more`` (one line, short)."""
    parts: list[str] = []
    used = 0
    for line, column, reason in examples[:REFUSAL_EXAMPLES]:
        where = f"line {line} {_shorten(column, 30)}" if column else f"line {line}"
        part = f"{where}: {_shorten(reason, REFUSAL_REASON_CHARS)}"
        if parts and used + len(part) + 2 > REFUSAL_TEXT_CHARS:
            break
        parts.append(part)
        used += len(part) + 2
    if total > len(parts):
        parts.append(f"+{total - len(parts)} more")
    return "; ".join(parts)


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if not f.ok]

    def total(self, attribute: str) -> int:
        return sum(getattr(f, attribute) for f in self.files)

    def summary_lines(self) -> list[str]:
        return [line for f in self.files for line in f.summary_lines()]


# -- public entry point ---------------------------------------------------------------------
class FileParser:
    """The files to ingest (see :func:`expand_paths`), each parsed one file ahead in a thread.

    Most of a parse (reading, hashing, gunzipping, Arrow and numpy over whole columns) releases
    the GIL: the next file is parsed while the current one is checked and loaded, and the first
    one while the command still imports its libraries and opens the warehouse (create the
    parser first). ``ticker``: as for :func:`parse_price_file`. Use it as a context manager.
    """

    def __init__(self, paths: Iterable[str | Path], ticker: str | None = None):
        from concurrent.futures import ThreadPoolExecutor

        self.files = expand_paths(paths)
        self.ticker = ticker
        self._waiting = [path for path, problem in self.files if problem is None]
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stockcast-parse")
        self._ahead: dict[Path, Future] = {}
        self._parse_next()

    def _parse_next(self) -> None:
        if self._waiting and not self._ahead:
            path = self._waiting.pop(0)
            self._ahead[path] = self._pool.submit(parse_price_file, path, ticker=self.ticker)

    def parse(self, path: Path) -> ParsedFile:
        """What :func:`parse_price_file` returns (or raises) for ``path``, one of the files."""
        ahead = self._ahead.pop(path, None)
        if path in self._waiting:
            self._waiting.remove(path)
        self._parse_next()
        return ahead.result() if ahead is not None else parse_price_file(path, ticker=self.ticker)

    def close(self) -> None:
        self._waiting.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> FileParser:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def ingest_paths(
    ctx: RunContext,
    paths: Iterable[str | Path] | FileParser,
    ticker: str | None = None,
    progress: ProgressCallback | None = None,
    replace: bool = False,
) -> IngestReport:
    """Ingest files and folders (recursively: ``*.csv``, ``*.csv.gz``, sorted) into the warehouse.

    Each file is loaded all or nothing (several in one transaction, see :class:`_Batch`); a
    file problem is recorded in the report (status ``failed``) and the remaining files still
    load. ``progress(done, total, path)`` is called once per file, in order, when its outcome
    is known. ``replace``: see :func:`ingest_file`. ``paths`` may be a :class:`FileParser`
    already started (it has its own ``ticker``).
    """
    if not isinstance(paths, FileParser):
        with FileParser(paths, ticker=ticker) as parser:
            return ingest_paths(ctx, parser, progress=progress, replace=replace)
    if ticker is not None and ticker != paths.ticker:
        raise ValueError("a FileParser parses with its own ticker: give the ticker to it")
    parser = paths
    report = IngestReport()
    files = parser.files
    total = len(files)
    loading = any(problem is None for _, problem in files)
    if loading:
        # Reach the warehouse once before any file: an unreachable or misconfigured warehouse
        # is one clear error, not the same failure repeated for every file.
        from ml.contracts import DAILY_PRICES
        from ml.warehouse.preflight import check_warehouse

        check_warehouse(ctx.warehouse, write=True)  # read-only, full or damaged: one error
    batch = _Batch(ctx, replace)
    reported = 0

    def report_progress() -> None:
        """Files are done, in order, up to the first one still waiting in the batch."""
        nonlocal reported
        waiting = {id(result) for result, _ in batch.files}
        while reported < len(report.files) and id(report.files[reported]) not in waiting:
            reported += 1
            if progress is not None:
                progress(reported, total, report.files[reported - 1].file)

    with ctx.warehouse.session() if loading else contextlib.nullcontext():
        if loading:
            ctx.warehouse.ensure_schema((DAILY_PRICES.schema,))  # once, on the session's connection
        for path, problem in files:
            report.files.append(
                ingest_file(ctx, path, problem=problem, replace=replace, batch=batch, parser=parser)
            )
            report_progress()
        batch.load()
        report_progress()
    return report


def ingest_file(
    ctx: RunContext,
    path: Path,
    ticker: str | None = None,
    source_name: str | None = None,
    problem: str | None = None,
    replace: bool = False,
    batch: _Batch | None = None,
    parser: FileParser | None = None,
) -> FileResult:
    """Load one file atomically; never raises: the outcome, failure included, is returned.

    A file whose closes disagree with those another file loaded for the same ticker and dates
    (:mod:`ml.history`) is refused with the evidence, unless ``replace``: then, per ticker it
    disagrees on, the rows of the files it disagrees with are removed and this file's loaded,
    in one transaction. Gaps and jumps where the file meets the stored history are reported.

    With a ``batch``, the parsed file joins it instead (see :class:`_Batch`): the result is
    complete once the batch is loaded. A ``parser`` parses the file instead (ahead).
    """
    result = FileResult(file=path)
    try:
        if problem is not None:
            raise IngestFileError(path, problem)
        if parser is not None:
            parsed = parser.parse(path)
        else:
            parsed = parse_price_file(path, ticker=ticker, source_name=source_name)
        result.layout = parsed.layout
        result.tickers = parsed.tickers
        result.rows_read = parsed.rows_read
        result.refused = len(parsed.rejected)
        result.duplicates_dropped = parsed.duplicates_dropped
        if batch is not None:
            batch.add(result, parsed)
            return result
        drop_history = _check_history(ctx, parsed, result, replace)
        counts = ctx.warehouse.load_price_file(
            parsed.prices, parsed.rejected, parsed.file_record, drop_history=drop_history
        )
        _record_load(result, parsed, counts)
    except IngestFileError as exc:
        result.status, result.error = "failed", str(exc)
    except Exception as exc:  # a warehouse or unexpected error must not stop other files
        _record_unexpected(result, exc)
    return result


def _record_load(result: FileResult, parsed: ParsedFile, counts: UpsertCounts) -> None:
    result.inserted, result.updated, result.unchanged = (
        counts.inserted,
        counts.updated,
        counts.unchanged,
    )
    result.replaced_from = counts.replaced_from
    result.refusal_examples = _refusal_examples(parsed.rejected)
    if parsed.prices.empty:
        # Every row was refused: the refusals are recorded, but the file did not load.
        result.status = "failed"
        result.error = (
            f"{result.file}: every data row was refused ({result.rows_read} rows read, 0 "
            f"loaded, {result.refused} refused): {result.refusal_text()}"
        )


def _record_unexpected(result: FileResult, exc: Exception) -> None:
    result.status, result.error = "failed", f"{result.file}: {type(exc).__name__}: {exc}"
    result.retryable = True


BATCH_ROWS = 600_000  # accepted rows a batch holds at most: bounds the memory of an ingest


class _Batch:
    """Parsed files waiting to be written together (:meth:`Warehouse.load_price_files`).

    Committing each file on its own cost more than loading a typical one. The files of a batch
    share no ticker, so that each is judged against the stored history exactly as if the ones
    before it had been committed, and their upserts do not depend on their order; a file with a
    ticker already in the batch loads the batch first. Each file stays all or nothing: a file
    refused (by its rows or the stored history) is left out, and if the batch's transaction
    fails the warehouse loads the files one by one.
    """

    def __init__(self, ctx: RunContext, replace: bool):
        self.ctx = ctx
        self.replace = replace
        self.files: list[tuple[FileResult, ParsedFile]] = []
        self.tickers: set[str] = set()
        self.rows = 0

    def add(self, result: FileResult, parsed: ParsedFile) -> None:
        rows = len(parsed.prices)
        if self.files and (
            not self.tickers.isdisjoint(parsed.tickers) or self.rows + rows > BATCH_ROWS
        ):
            self.load()
        self.files.append((result, parsed))
        self.tickers.update(parsed.tickers)
        self.rows += rows

    def load(self) -> None:
        from ml.warehouse import PriceFileLoad

        if not self.files:
            return
        files, self.files, self.tickers, self.rows = self.files, [], set(), 0
        try:
            stored = _stored_history(self.ctx, sorted({t for _, p in files for t in p.tickers}))
        except Exception as exc:
            for result, _ in files:
                _record_unexpected(result, exc)
            return
        loads, loading = [], []
        for result, parsed in files:
            try:
                drop = _check_history(
                    self.ctx, parsed, result, self.replace, stored.of(parsed.tickers)
                )
            except IngestFileError as exc:
                result.status, result.error = "failed", str(exc)
                continue
            except Exception as exc:
                _record_unexpected(result, exc)
                continue
            loads.append(PriceFileLoad(parsed.prices, parsed.rejected, parsed.file_record, drop))
            loading.append((result, parsed))
        outcomes = self.ctx.warehouse.load_price_files(loads) if loads else []
        for (result, parsed), outcome in zip(loading, outcomes, strict=True):
            if isinstance(outcome, Exception):
                _record_unexpected(result, outcome)
            else:
                _record_load(result, parsed, outcome)


@dataclass
class _StoredHistory:
    """Stored bars (``ticker, trade_date, close, source_file``) of a batch's tickers."""

    bars: pd.DataFrame
    rows_of: dict[str, np.ndarray]

    def of(self, tickers: list[str]) -> pd.DataFrame:
        import numpy as np

        found = [self.rows_of[t] for t in tickers if t in self.rows_of]
        if len(found) == len(self.rows_of):
            return self.bars
        positions = np.concatenate(found) if found else np.empty(0, dtype=np.int64)
        return self.bars.take(np.sort(positions))


def _stored_history(ctx: RunContext, tickers: list[str]) -> _StoredHistory:
    from ml.contracts import DAILY_PRICES

    bars = ctx.warehouse.read_table(
        DAILY_PRICES.full_name,
        ["ticker", "trade_date", "close", "source_file"],
        filter_in={"ticker": tickers},
    )
    return _StoredHistory(bars, bars.groupby("ticker", sort=False).indices if len(bars) else {})


def _check_history(
    ctx: RunContext,
    parsed: ParsedFile,
    result: FileResult,
    replace: bool,
    stored: pd.DataFrame | None = None,
) -> dict[str, list[str]]:
    """Judge the file against the stored history of its tickers (see :mod:`ml.history`):
    ``stored``, else read from the warehouse.

    Raises :class:`IngestFileError` with the evidence when it disagrees and ``replace`` is not
    set; otherwise returns the stored files to drop per ticker and records the reports.
    """
    import pandas as pd

    from ml.contracts import DAILY_PRICES
    from ml.history import CLOSE_TOLERANCE, HistoryCheck, find_conflicts, find_junctions

    if parsed.prices.empty:
        return {}
    if stored is None:
        ctx.warehouse.ensure_schema((DAILY_PRICES.schema,))
        stored = _stored_history(ctx, parsed.tickers).bars
    source = parsed.file_record["source_file"]
    conflicts = find_conflicts(parsed.prices, stored, source)
    evidence = [c.describe() for c in conflicts]
    drop = HistoryCheck(conflicts, []).conflicting_files
    if drop and not replace:
        result.details = evidence
        tickers = sorted(drop)
        named = ", ".join(tickers[:5]) + (
            f" and {len(tickers) - 5} more" if len(tickers) > 5 else ""
        )
        raise IngestFileError(
            result.file,
            f"its closes disagree with the stored history of {named} (loaded from other files) "
            f"by more than {CLOSE_TOLERANCE:.0%}: refused, nothing loaded. If this file is right, load it with "
            "--replace: it then replaces those tickers' rows from the files it disagrees with",
        )
    if drop:
        pairs = [(t, f) for t, files in drop.items() for f in files]
        dropped = stored[pd.MultiIndex.from_frame(stored[["ticker", "source_file"]]).isin(pairs)]
        result.history_replaced = dropped.groupby("ticker").size().astype(int).to_dict()
        # After the replacement, judge the junctions against what stays.
        stored = stored.drop(dropped.index)
    result.details = [j.describe() for j in find_junctions(parsed.prices, stored, source)]
    return drop


def _refusal_examples(rejected: pd.DataFrame) -> list[tuple[int, str | None, str]]:
    if rejected.empty:
        return []
    first = rejected.take(
        rejected["line_number"].to_numpy().argsort(kind="stable")[:REFUSAL_EXAMPLES]
    )
    return [
        (int(line), column if isinstance(column, str) else None, str(reason))
        for line, column, reason in zip(
            first["line_number"], first["column_name"], first["reason"], strict=True
        )
    ]


def expand_paths(paths: Iterable[str | Path]) -> list[tuple[Path, str | None]]:
    """Resolve paths to files. Returns ``(path, problem)``; problem is None for usable files."""
    out: list[tuple[Path, str | None]] = []
    seen: set[Path] = set()

    def add(path: Path, problem: str | None) -> None:
        if path not in seen:
            seen.add(path)
            out.append((path, problem))

    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_csv_name(p))
            if not found:
                add(path, "folder contains no .csv or .csv.gz files")
            for p in found:
                add(p, None)
        elif not path.exists():
            add(path, "file not found")
        elif not _is_csv_name(path):
            add(path, "not a .csv or .csv.gz file")
        else:
            add(path, None)
    return out


CSV_SUFFIXES = (".csv", ".csv.gz")


def _is_csv_name(path: Path) -> bool:
    return path.name.lower().endswith(CSV_SUFFIXES)


# -- parsing --------------------------------------------------------------------------------
@dataclass
class ParsedFile:
    layout: str
    tickers: list[str]
    rows_read: int
    duplicates_dropped: int
    prices: pd.DataFrame
    rejected: pd.DataFrame
    file_record: dict


def ticker_from_file_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    for pattern in _FILE_NAME_TICKER:
        match = pattern.match(name)
        if match:
            name = match.group("t")
            break
    return name.strip().upper()


def valid_ticker(value: str) -> bool:
    return bool(TICKER_PATTERN.match(value))


def _read_bytes(path: Path) -> tuple[bytes, str]:
    """Return ``(content, sha256 of the file bytes)``, gunzipped; raise IngestFileError if the
    file cannot be read or is not text."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IngestFileError(path, "file not found") from None
    except OSError as exc:
        raise IngestFileError(path, f"cannot read file: {exc.strerror or exc}") from None
    sha256 = hashlib.sha256(data).hexdigest()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except EOFError as exc:  # the end-of-stream marker is missing: a copy cut short
            raise IngestFileError(
                path,
                f"corrupt gzip file, cut short ({exc}); nothing was loaded: copy or download "
                "the file again",
            ) from None
        except (OSError, zlib.error) as exc:
            raise IngestFileError(path, f"corrupt gzip file: {exc}") from None
    elif path.name.lower().endswith(".gz"):
        raise IngestFileError(path, "named .gz but is not gzip-compressed")
    if b"\x00" in data:
        raise IngestFileError(path, "binary content (NUL bytes): not a CSV text file")
    return data, sha256


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_text(path: Path) -> tuple[str, str]:
    """Return ``(text, sha256 of the file bytes)``; raise IngestFileError if not a text CSV."""
    data, sha256 = _read_bytes(path)
    return _decode(data), sha256


def _records(path: Path, text: str) -> tuple[list[str], int, pd.DataFrame]:
    """Split text into the header fields, header line number and a frame of data records.

    The frame has ``line`` (physical line number of the record's first line), ``raw`` (the
    record's text), ``nfields`` and one string column per header field (``f0``..). Blank lines
    are dropped. Without quote characters every physical line is one record (fast path);
    otherwise the csv module tracks records that span several lines.
    """
    import numpy as np
    import pandas as pd

    lines = _LINE_BREAK.split(text) if "\r" in text else text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header_index = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_index is None:
        raise IngestFileError(path, "file is empty")
    header = [h.strip() for h in next(csv.reader([lines[header_index]]))]
    n = len(header)
    names = [f"f{i}" for i in range(n)]
    body_start = header_index + 1

    if '"' not in text:
        # One record per physical line: split with str.split (C speed), no csv quoting rules.
        # In chunks, with equal field strings shared (dates, tickers and prices repeat a lot in
        # a long table): a 500k-line file then holds one copy of each distinct value instead of
        # millions of small strings plus the per-line lists.
        chunk_size = 65_536
        line_parts, raw_parts, nfield_parts = [], [], []
        column_parts: list[list[np.ndarray]] = [[] for _ in range(n)]
        shared: list[dict[str, str]] = [{} for _ in range(n)]
        body = lines[body_start:]
        for offset in range(0, len(body), chunk_size):
            kept = [
                (i, line)
                for i, line in enumerate(
                    body[offset : offset + chunk_size], body_start + 1 + offset
                )
                if line.strip()
            ]
            raw = [line for _, line in kept]
            split = [line.split(",") for line in raw]
            nfields = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
            good = nfields == n
            line_parts.append(np.fromiter((i for i, _ in kept), dtype=np.int64, count=len(kept)))
            raw_parts.append(np.array(raw, dtype=object) if raw else np.empty(0, dtype=object))
            nfield_parts.append(nfields)
            for j in range(n):
                get = shared[j].setdefault
                column = np.empty(len(split), dtype=object)
                column[:] = [get(r[j], r[j]) if g else "" for r, g in zip(split, good, strict=True)]
                column_parts[j].append(column)
            del kept, raw, split
        frame = pd.DataFrame(
            {
                "line": np.concatenate(line_parts) if line_parts else np.empty(0, np.int64),
                "raw": pd.Series(
                    np.concatenate(raw_parts) if raw_parts else np.empty(0, object), dtype=object
                ),
                "nfields": np.concatenate(nfield_parts) if nfield_parts else np.empty(0, np.int64),
            }
        )
        for j, name in enumerate(names):
            frame[name] = (
                np.concatenate(column_parts[j]) if column_parts[j] else np.empty(0, object)
            )
            column_parts[j] = []
        del shared
    else:
        rows = []
        reader = csv.reader(io.StringIO("\n".join(lines[body_start:]), newline=""))
        previous = 0
        try:
            for record in reader:
                start, end = previous + 1, reader.line_num
                previous = end
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue
                fields = record if len(record) == n else [""] * n
                raw = "\n".join(lines[body_start + start - 1 : body_start + end])
                rows.append([body_start + start, raw, len(record), *fields])
        except csv.Error as exc:
            line = body_start + previous + 1
            raise IngestFileError(path, f"malformed CSV near line {line}: {exc}") from None
        frame = pd.DataFrame(rows, columns=["line", "raw", "nfields", *names])
    return header, header_index + 1, frame


@dataclass
class _Records:
    """A file's data records, column by column (Arrow strings, numpy numbers).

    ``line`` is the physical line number of each record's first line, ``nfields`` its number
    of fields and ``fields`` one array per header field (``""`` on a record with the wrong
    number of fields). The record's text is kept as an array (``raw``) or, for the columnar
    reader, as each line's span of ``data``, decoded only for the records asked for.
    ``ascii_only``: the fields hold printable ASCII and tabs only, so Python's ``str.strip``
    is a trim of spaces and tabs.
    """

    line: np.ndarray
    nfields: np.ndarray
    fields: list[pa.Array]
    ascii_only: bool
    raw: pa.Array | None = None
    data: bytes = b""
    spans: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.line)

    def raw_text(self, mask: np.ndarray) -> np.ndarray:
        """The text of the records in ``mask``, in order."""
        import numpy as np
        import pyarrow as pa

        if self.raw is not None:
            return np.array(self.raw.filter(pa.array(mask)).to_pylist(), dtype=object)
        starts, stops = self.spans
        return np.array(
            [
                self.data[start:stop].decode("ascii")
                for start, stop in zip(starts[mask], stops[mask], strict=True)
            ],
            dtype=object,
        )

    def field(self, i: int, strip: bool) -> pa.Array:
        import pyarrow as pa
        import pyarrow.compute as pc

        if not strip:
            return self.fields[i]
        if self.ascii_only:
            return pc.utf8_trim(self.fields[i], " \t")
        return pa.array([s.strip() for s in self.fields[i].to_pylist()], pa.large_string())

    def to_frame(self) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        everything = np.ones(len(self), dtype=bool)
        frame = pd.DataFrame(
            {"line": self.line, "raw": self.raw_text(everything), "nfields": self.nfields}
        )
        for i, values in enumerate(self.fields):
            frame[f"f{i}"] = values.to_pylist()
        return frame

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, width: int, ascii_only: bool) -> _Records:
        import numpy as np
        import pyarrow as pa

        def strings(column: str) -> pa.Array:
            return pa.array(list(frame[column]), pa.large_string())

        return cls(
            line=frame["line"].to_numpy(np.int64),
            nfields=frame["nfields"].to_numpy(np.int64),
            fields=[strings(f"f{i}") for i in range(width)],
            ascii_only=ascii_only,
            raw=strings("raw"),
        )


# Bytes the columnar reader takes: printable ASCII but the quote, tab and line breaks.
_PLAIN_BYTES = bytes([*range(0x20, 0x7F), *b"\t\n\r"]).replace(b'"', b"")


def _columnar_records(path: Path, data: bytes) -> tuple[list[str], _Records] | None:
    """The header and records of a plain file, cut with numpy and Arrow.

    Same records as :func:`_records` (one per non-blank physical line, split on every comma),
    for a file of printable ASCII without quotes; ``None`` for any other file, which
    :func:`_records` reads with Python's csv rules (quoting, Unicode whitespace) instead.
    Lines are found with numpy; fields are read by Arrow's CSV reader when every line has the
    header's number of fields, else split with Arrow's string kernels.
    """
    import numpy as np

    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if data.translate(None, _PLAIN_BYTES):
        return None
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    buffer = np.frombuffer(data, dtype=np.uint8)
    breaks = np.flatnonzero(buffer == ord("\n"))
    starts = np.concatenate(([0], breaks + 1))
    stops = np.concatenate((breaks, [len(buffer)]))
    if starts[-1] == stops[-1]:  # text after the last line break is empty: no line
        starts, stops = starts[:-1], stops[:-1]
    # A line is blank when it holds only spaces and tabs: decided by its first byte for almost
    # every line, by Python for the few that start with one.
    first = buffer[np.minimum(starts, len(buffer) - 1)] if len(buffer) else starts
    blank = (starts == stops) | (first == ord(" ")) | (first == ord("\t"))
    for i in np.flatnonzero(blank & (starts != stops)):
        blank[i] = not data[starts[i] : stops[i]].strip(b" \t")
    nonblank = np.flatnonzero(~blank)
    if len(nonblank) == 0:
        raise IngestFileError(path, "file is empty")
    header_index = nonblank[0]
    header_line = data[starts[header_index] : stops[header_index]].decode("ascii")
    header = [h.strip() for h in header_line.split(",")]
    width = len(header)
    body = nonblank[1:]
    fields = None
    if len(body) and body[0] == header_index + 1 and len(body) == len(starts) - body[0]:
        fields = _csv_fields(data[starts[body[0]] :], width, len(body))
    if fields is not None:
        nfields = np.full(len(body), width, dtype=np.int64)
    else:
        nfields, fields = _split_fields(data, starts[body], stops[body], width)
    records = _Records(
        line=body.astype(np.int64) + 1,
        nfields=nfields,
        fields=fields,
        ascii_only=True,
        data=data,
        spans=(starts[body], stops[body]),
    )
    return header, records


def _csv_fields(body: bytes, width: int, lines: int) -> list[pa.Array] | None:
    """The fields of ``lines`` lines without blank ones, read by Arrow's CSV reader as plain
    strings (no quoting, no nulls); ``None`` unless every line has ``width`` fields."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"f{i}" for i in range(width)]
    uneven = []

    def skip(row) -> str:
        uneven.append(row)
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.py_buffer(body),
            # A few large blocks: Arrow still parses them in parallel, and joining many small
            # ones into the one array per column that the checks read cost more than the parse.
            read_options=pacsv.ReadOptions(
                column_names=names, block_size=max(1 << 20, len(body) // 4 + 1)
            ),
            parse_options=pacsv.ParseOptions(
                quote_char=False, ignore_empty_lines=False, invalid_row_handler=skip
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:
        return None
    if uneven or table.num_rows != lines:
        return None
    return [table.column(i).combine_chunks() for i in range(width)]


def _split_fields(
    data: bytes, starts: np.ndarray, stops: np.ndarray, width: int
) -> tuple[np.ndarray, list[pa.Array]]:
    """Each line's number of fields and the fields (``""`` on a line with the wrong number),
    split on every comma with Arrow's string kernels."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(starts) == 0:  # a header and nothing else
        return np.empty(0, dtype=np.int64), [pa.array([], pa.large_string())] * width
    offsets = np.empty(2 * len(starts), dtype=np.int64)
    offsets[0::2], offsets[1::2] = starts, stops
    # Lines and the gaps between them as one array (no copy of the text); keep the lines.
    pieces = pa.LargeStringArray.from_buffers(
        len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data)
    )
    lines = pieces.take(pa.array(np.arange(0, len(pieces), 2)))
    split = pc.split_pattern(lines, ",")
    nfields = pc.list_value_length(split).to_numpy(zero_copy_only=False).astype(np.int64)
    complete = nfields == width
    values = pc.list_flatten(split.filter(pa.array(complete)))
    count = int(complete.sum())
    if count == len(lines):
        fields = [values.take(pa.array(np.arange(j, count * width, width))) for j in range(width)]
    else:
        position = np.full(len(lines), -1, dtype=np.int64)
        position[complete] = np.arange(count) * width
        fields = [
            values.take(pa.array(position + j, mask=~complete)).fill_null("") for j in range(width)
        ]
    return nfields, fields


def _refuse_if_cut_short(
    path: Path, ends_with_break: bool, header: list[str], rec: _Records
) -> None:
    """Refuse a file that stops mid-row: a copy or download cut short.

    Its last line has no line break and lacks fields (or ends in a separator): loading the
    rows before it would silently load half a history. A gzip cut short is caught by gzip's
    own end marker (:func:`read_text`); a plain file cut exactly at a line break, or inside a
    last field that still parses, cannot be told from a complete one.
    """
    import numpy as np

    if len(rec) == 0 or ends_with_break:
        return
    n, found = len(header), int(rec.nfields[-1])
    last = np.zeros(len(rec), dtype=bool)
    last[-1] = True
    raw = str(rec.raw_text(last)[0]).rstrip(" \t")
    line = int(rec.line[-1])
    if found < n:
        where = (
            f"has {found} of {n} fields: it stops in column {header[found - 1]!r} and "
            f"{', '.join(repr(h) for h in header[found:])} {'is' if n - found == 1 else 'are'} "
            "missing"
        )
    elif found == n and raw.endswith(","):
        where = f"ends in an empty {header[-1]!r}"
    else:
        return
    raise IngestFileError(
        path,
        f"the file looks cut short: its last line (line {line}) has no line break and {where}; "
        "nothing was loaded: copy or download the file again (if it is complete, finish or "
        f"remove line {line})",
    )


def _yfinance_download(
    path: Path, header: list[str], rec: _Records
) -> tuple[list[str], _Records, bool]:
    """Turn ``yf.download(...).to_csv()``'s three-line header into a long table.

    Returns ``(header, records, True)`` with a ``Ticker`` column appended and one record per
    (line, ticker); other files come back unchanged with ``False``.
    """
    first = header[0].lower() if header else ""
    if first not in ("price", "ticker") or len(rec) == 0:
        return header, rec, False
    long_header, frame, converted = _yfinance_download_frame(path, header, rec.to_frame())
    if not converted:
        return header, rec, False
    return long_header, _Records.from_frame(frame, len(long_header), rec.ascii_only), True


def _yfinance_download_frame(
    path: Path, header: list[str], rec: pd.DataFrame
) -> tuple[list[str], pd.DataFrame, bool]:
    import pandas as pd

    first = header[0].lower()
    second = str(rec["f0"].iloc[0]).strip().lower()
    if {first, second} != {"price", "ticker"}:
        return header, rec, False
    n = len(header)
    if rec["nfields"].iloc[0] != n:
        raise IngestFileError(
            path, f"yfinance header line {rec['line'].iloc[0]} has the wrong number of fields"
        )
    other = [str(rec[f"f{i}"].iloc[0]).strip() for i in range(n)]
    names, symbols = (header, other) if first == "price" else (other, header)
    skip = 1
    if (
        len(rec) > 1
        and str(rec["f0"].iloc[1]).strip().lower() in DATE_NAMES
        and all(str(rec[f"f{i}"].iloc[1]).strip() == "" for i in range(1, n))
    ):
        skip = 2  # the index name's line: "Date,,,,,,"
    rec = rec.iloc[skip:].reset_index(drop=True)
    groups: dict[str, list[int]] = {}
    for i in range(1, n):
        groups.setdefault(symbols[i].upper(), []).append(i)
    layouts = {tuple(names[i].lower() for i in idx) for idx in groups.values()}
    if len(layouts) > 1 or any(len(set(cols)) != len(cols) for cols in layouts):
        raise IngestFileError(path, "yfinance header: tickers do not all have the same columns")
    parts = []
    for symbol, idx in groups.items():
        part = pd.DataFrame({"line": rec["line"], "raw": rec["raw"], "nfields": rec["nfields"]})
        part["f0"] = rec["f0"]
        for j, i in enumerate(idx, start=1):
            part[f"f{j}"] = rec[f"f{i}"]
        part[f"f{len(idx) + 1}"] = symbol
        if len(groups) > 1:  # a ticker not listed yet on that day: nothing to read
            empty = pd.concat(
                [part[f"f{j}"].str.strip() == "" for j in range(1, len(idx) + 1)], axis=1
            ).all(axis=1)
            part = part[~empty | (part["nfields"] != n)]
        parts.append(part)
    idx = next(iter(groups.values()))
    long_header = ["Date", *(names[i] for i in idx), "Ticker"]
    records = pd.concat(parts, ignore_index=True).sort_values("line", kind="stable")
    if rec.empty:
        raise IngestFileError(path, "header only: no data rows")
    return long_header, records.reset_index(drop=True), True


def detect_layout(path: Path, header: list[str]) -> tuple[str, dict[str, int]]:
    """Map canonical columns (date, open, ..., ticker, split) to header positions."""
    lower = [h.lower() for h in header]
    positions: dict[str, int] = {}
    for i, name in enumerate(lower):
        positions.setdefault(name, i)
    dupes = sorted({h for h in lower if lower.count(h) > 1 and h})
    if dupes:
        raise IngestFileError(path, f"duplicate column(s) in header: {', '.join(dupes)}")

    def find(names: Iterable[str]) -> int | None:
        return next((positions[n] for n in names if n in positions), None)

    cols: dict[str, int] = {}
    date_i = find(DATE_NAMES)
    found_prices = {p: positions[p] for p in PRICES if p in positions}
    if date_i is None and not found_prices:
        raise IngestFileError(
            path,
            f"unrecognised layout: header {','.join(header)!r} has no date or price columns "
            "(expected e.g. Date,Open,High,Low,Close,Adj Close,Volume)",
        )
    missing = (["Date"] if date_i is None else []) + [p for p in PRICES if p not in found_prices]
    is_av = "split_coefficient" in positions or "dividend_amount" in positions
    if is_av:
        missing += [c for c in ("adjusted_close", "split_coefficient") if c not in positions]
    if missing:
        s = "s" if len(missing) > 1 else ""
        raise IngestFileError(path, f"required column{s} missing: {', '.join(missing)}")
    cols["date"] = date_i
    cols.update(found_prices)
    adj_i = find(ADJ_NAMES)
    if adj_i is not None:
        cols["adj_close"] = adj_i
    if "volume" in positions:
        cols["volume"] = positions["volume"]
    ticker_i = find(TICKER_NAMES)
    if ticker_i is not None:
        cols["ticker"] = ticker_i
    if is_av:
        cols["split"] = positions["split_coefficient"]
        return LAYOUT_ALPHAVANTAGE, cols
    if ticker_i is not None:
        return LAYOUT_LONG, cols
    if adj_i is not None:
        return LAYOUT_YAHOO, cols
    if "dividends" in positions or "stock splits" in positions:
        return LAYOUT_YFINANCE, cols
    return LAYOUT_OHLC, cols


def _parse_dates(strings: np.ndarray, path: Path) -> pd.Series:
    """ISO dates (optionally with a time and UTC offset), or slash dates in one file-wide order.

    ``MM/DD/YYYY`` and ``DD/MM/YYYY`` are told apart by the file itself: a daily series has
    days above 12 within two weeks. A file whose slash dates never show which is which is a
    file problem rather than a guess.
    """
    import pandas as pd

    text = pd.Series(strings, dtype=object)
    dates = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
    retry = dates.isna() & (text.str.len() > 10)
    if retry.any():
        day = text[retry].str.extract(_TIMESTAMP, expand=False)
        dates[retry] = pd.to_datetime(day, format="%Y-%m-%d", errors="coerce")
    slashed = text[dates.isna()].str.extract(_SLASH_DATE).dropna()
    if len(slashed):
        first, second = slashed["a"].astype(int), slashed["b"].astype(int)
        if (first > 12).any() and not (second > 12).any():
            order = "%d/%m/%Y"
        elif (second > 12).any() and not (first > 12).any():
            order = "%m/%d/%Y"
        elif not (first > 12).any():
            raise IngestFileError(
                path,
                f"ambiguous dates such as {text[slashed.index[0]]!r}: MM/DD/YYYY or DD/MM/YYYY "
                "cannot be told apart in this file; write dates as YYYY-MM-DD",
            )
        else:
            order = None  # both parts exceed 12 somewhere: no consistent order, rows refused
        if order:
            joined = slashed["a"] + "/" + slashed["b"] + "/" + slashed["y"]
            dates[slashed.index] = pd.to_datetime(joined, format=order, errors="coerce")
    return dates


DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Plain decimals of at most 15 digits: Arrow's parse and pandas' agree on them to the bit
# (pandas rounds longer ones differently, so a column holding any takes pandas' path).
_PLAIN_DIGITS = 15
# Days since 1970 of 1678-01-01 and 2261-12-31: inside the nanosecond range of pandas dates
# (1677-09-21 .. 2262-04-11), where both parsers give the same day.
_FIRST_DAY, _LAST_DAY = -106_650, 106_650


def _string_bytes(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The characters of an Arrow string array (no copy) and each string's length."""
    import numpy as np
    import pyarrow as pa

    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], dtype=width)[
        text.offset : text.offset + len(text) + 1
    ]
    data = text.buffers()[2]
    characters = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
    return characters[offsets[0] : offsets[-1]], np.diff(offsets)


def _columnar_dates(text: pa.Array) -> np.ndarray | None:
    """Plain ``YYYY-MM-DD`` dates (or empty fields) with Arrow; ``None`` when the column
    holds anything else (times, slash dates, invalid days), for :func:`_parse_dates`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    given = pc.not_equal(text, "")
    present = text.filter(given)
    characters, lengths = _string_bytes(present)
    if (lengths != 10).any():
        return None
    grid = characters.reshape(-1, 10)
    dashes = grid[:, [4, 7]] == ord("-")
    digits = (grid[:, [0, 1, 2, 3, 5, 6, 8, 9]] >= ord("0")) & (
        grid[:, [0, 1, 2, 3, 5, 6, 8, 9]] <= ord("9")
    )
    if not (dashes.all() and digits.all()):
        return None
    try:
        parsed = pc.cast(present, pa.date32())
    except pa.ArrowInvalid:  # e.g. 2021-02-30
        return None
    day_numbers = pc.cast(parsed, pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
    if (day_numbers < _FIRST_DAY).any() or (day_numbers > _LAST_DAY).any():
        return None
    dates = np.full(len(text), np.datetime64("NaT"), dtype="datetime64[ns]")
    dates[given.to_numpy(zero_copy_only=False)] = day_numbers.astype("datetime64[D]")
    return dates


def _columnar_numbers(text: pa.Array, missing: np.ndarray) -> np.ndarray | None:
    """Floats of a column whose every non-missing field is a plain decimal (NaN where
    missing), with Arrow; ``None`` otherwise, for :func:`_numbers`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    given = ~missing
    present = text if given.all() else text.filter(pa.array(given))
    characters, lengths = _string_bytes(present)
    if not _digits_and_dots(characters):
        return None
    dots = pc.count_substring(present, ".").to_numpy(zero_copy_only=False)
    digits = lengths - dots
    if (dots > 1).any() or (digits < 1).any() or (digits > _PLAIN_DIGITS).any():
        return None
    numbers = np.full(len(text), np.nan)
    numbers[given] = pc.cast(present, pa.float64()).to_numpy(zero_copy_only=False)
    return numbers


def _digits_and_dots(characters: np.ndarray) -> bool:
    return not characters.tobytes().translate(None, b"0123456789.")


def _missing_fields(text: pa.Array, tokens: pa.Array) -> np.ndarray:
    """Which fields are missing-value tokens. A column of digits and dots without an empty
    field has none: told from its bytes, without a lookup per field."""
    import numpy as np
    import pyarrow.compute as pc

    characters, lengths = _string_bytes(text)
    if len(lengths) and lengths.min() > 0 and _digits_and_dots(characters):
        return np.zeros(len(text), dtype=bool)
    return pc.is_in(text, value_set=tokens).to_numpy(zero_copy_only=False)


def _numbers(text: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Floats of a column with pandas (NaN where missing or unparseable), thousands
    separators included."""
    import numpy as np
    import pandas as pd

    field = pd.Series(text, dtype=object)
    values = pd.to_numeric(field.where(~missing), errors="coerce").astype(float)
    # A comma inside a field can only come from a quoted field: thousands separators.
    grouped = values.isna() & ~missing
    if grouped.any():
        grouped &= field.str.match(_THOUSANDS).fillna(False).astype(bool)
    if grouped.any():
        plain = field[grouped].str.replace(",", "", regex=False)
        values[grouped] = pd.to_numeric(plain, errors="coerce").astype(float)
    return values.to_numpy(dtype=np.float64)


def parse_price_file(
    path: Path, ticker: str | None = None, source_name: str | None = None
) -> ParsedFile:
    """Read and validate one file. Raises IngestFileError for file problems.

    ``source_name`` is what the warehouse records as the file (default: its resolved path),
    e.g. ``gs://bucket/uploads/AAPL.csv`` for a file downloaded from an upload bucket.

    Fields are Arrow strings and the checks numpy masks over whole columns; Python objects
    are made only for the refused rows and for the distinct tickers.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    path = Path(path).resolve()
    data, sha256 = _read_bytes(path)
    columnar = _columnar_records(path, data)
    if columnar is not None:
        header, rec = columnar
        body = data[data.find(b"\n") + 1 :]
        needs_strip = b" " in body or b"\t" in body
        ends_with_break = data.endswith((b"\n", b"\r"))
    else:
        text = _decode(data)
        header, _, frame = _records(path, text)
        rec = _Records.from_frame(frame, len(header), ascii_only=False)
        body_text = text[text.find("\n") + 1 :]
        needs_strip = " " in body_text or "\t" in body_text
        ends_with_break = text.endswith(("\n", "\r"))
    expected_fields = len(header)
    _refuse_if_cut_short(path, ends_with_break, header, rec)
    header, rec, yf_download = _yfinance_download(path, header, rec)
    # The header is judged first: a lone line of JSON or "404: Not Found" is not a header.
    layout, cols = detect_layout(path, header)
    if yf_download:
        layout = LAYOUT_YF_DOWNLOAD
    if len(rec) == 0:
        raise IngestFileError(path, "header only: no data rows")
    now = datetime.now(UTC).replace(tzinfo=None)
    n = len(rec)
    source = source_name or str(path)

    # -- fields as trimmed strings ----------------------------------------------------------
    field = {c: rec.field(i, strip=needs_strip) for c, i in cols.items()}
    header_name = {c: header[i] for c, i in cols.items()}

    def strings(c: str, mask: np.ndarray | None = None) -> np.ndarray:
        values = field[c] if mask is None else field[c].filter(pa.array(mask))
        return np.array(values.to_pylist(), dtype=object)

    def equals(c: str, value: str) -> np.ndarray:
        return pc.equal(field[c], value).to_numpy(zero_copy_only=False)

    if "ticker" in cols:
        encoded = pc.dictionary_encode(field["ticker"])
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        upper = np.array([u.upper() for u in encoded.dictionary.to_pylist()], dtype=object)
        upper_ok = np.array([bool(TICKER_PATTERN.match(u)) for u in upper], dtype=bool)
        tickers = upper[codes]
        ticker_ok = upper_ok[codes]
        ticker_given = (upper != "")[codes]
        ticker_codes = np.unique(upper, return_inverse=True)[1][codes]  # in the tickers' order
    else:
        fixed = (ticker or ticker_from_file_name(path)).strip().upper()
        origin = "--ticker argument" if ticker else "file name"
        if not valid_ticker(fixed):
            raise IngestFileError(
                path,
                f"invalid ticker {fixed!r} from the {origin} (expected 1-15 letters, digits, "
                "'.', '-' or '^'; pass --ticker)",
            )
        tickers = np.full(n, fixed, dtype=object)
        ticker_ok = np.ones(n, dtype=bool)
        ticker_given = np.ones(n, dtype=bool)
        ticker_codes = np.zeros(n, dtype=np.int64)

    reason = np.full(n, None, dtype=object)
    column = np.full(n, None, dtype=object)
    pending = np.ones(n, dtype=bool)

    def refuse(mask, message, col: str | None = None) -> None:
        """Refuse rows in ``mask`` not refused yet. ``message`` is a str or ``f(mask) -> strs``."""
        nonlocal pending
        m = np.asarray(mask, dtype=bool) & pending
        if not m.any():
            return
        reason[m] = message if isinstance(message, str) else np.asarray(message(m), dtype=object)
        column[m] = header_name.get(col) if col else None
        pending = pending & ~m

    def quoted(c: str, m) -> np.ndarray:
        return np.array([s[:40] for s in strings(c, m)], dtype=object)

    nfields = rec.nfields
    refuse(
        nfields != expected_fields,
        lambda m: np.array(
            [f"wrong number of fields: expected {expected_fields}, found {k}" for k in nfields[m]],
            dtype=object,
        ),
    )

    # -- ticker, date ----------------------------------------------------------------------
    if "ticker" in cols:
        refuse(~ticker_given, "missing ticker", "ticker")
        refuse(~ticker_ok, lambda m: "invalid ticker " + quoted("ticker", m), "ticker")
    dates = _columnar_dates(field["date"])
    if dates is None:
        dates = _parse_dates(strings("date"), path).to_numpy("datetime64[ns]")
    refuse(equals("date", ""), "missing date", "date")
    dated = ~np.isnat(dates)
    refuse(
        ~dated,
        "unparseable date (expected YYYY-MM-DD, or MM/DD/YYYY or DD/MM/YYYY throughout)",
        "date",
    )

    # -- numbers ---------------------------------------------------------------------------
    values: dict[str, np.ndarray] = {}
    missing: dict[str, np.ndarray] = {}
    missing_tokens = pa.array(sorted(MISSING_TOKENS), pa.large_string())
    for c in VALUE_COLUMNS:
        if c in cols:
            missing[c] = _missing_fields(field[c], missing_tokens)
            plain = _columnar_numbers(field[c], missing[c])
            values[c] = plain if plain is not None else _numbers(strings(c), missing[c])
    refuse(
        np.logical_and.reduce([missing[p] for p in PRICES]),
        "null bar: open, high, low and close are all missing (Yahoo writes 'null' for a day it "
        "has no data)",
        "open",
    )
    for p in PRICES:
        refuse(missing[p], f"missing required value in {header_name[p]}", p)
    if "split" in cols:
        refuse(missing["split"], "missing split coefficient", "split")
    for c in values:
        refuse(
            ~missing[c] & np.isnan(values[c]),
            lambda m, c=c: f"unparseable number in {header_name[c]}: " + quoted(c, m),
            c,
        )
    for c in values:
        refuse(
            np.isinf(values[c]),
            lambda m, c=c: f"non-finite value in {header_name[c]}: " + quoted(c, m),
            c,
        )
    for c in (*PRICES, "adj_close"):
        if c in values:
            refuse(
                values[c] <= 0,
                lambda m, c=c: f"non-positive price in {header_name[c]}: " + quoted(c, m),
                c,
            )
    if "volume" in values:
        refuse(values["volume"] < 0, lambda m: "negative volume: " + quoted("volume", m), "volume")
        refuse(  # found by the property tests: it cannot be stored as a 64-bit integer
            values["volume"] >= 2.0**63,
            lambda m: "volume too large: " + quoted("volume", m),
            "volume",
        )
    if "split" in values:
        refuse(
            values["split"] <= 0,
            lambda m: "non-positive split coefficient: " + quoted("split", m),
            "split",
        )
    # Float noise (SPY's yfinance export has high 25.49882316589355 vs close 25.498823165893555)
    # is tolerated up to a relative OHLC_TOLERANCE and clamped away below; the rest is refused.
    for bound, others, word, sign in (
        ("high", ("open", "close", "low"), "below", -1),
        ("low", ("open", "close"), "above", 1),
    ):
        for other in others:
            limit = values[other] * (1 + sign * OHLC_TOLERANCE)
            bad = values[bound] < limit if sign < 0 else values[bound] > limit
            refuse(
                bad,
                lambda m, b=bound, o=other, w=word: (
                    f"{header_name[b]} "
                    + quoted(b, m)
                    + f" is {w} {header_name[o]} "
                    + quoted(o, m)
                ),
                bound,
            )
    from zoneinfo import ZoneInfo

    today = datetime.now(ZoneInfo(EXCHANGE_TZ)).date()
    days = np.where(dated, dates, np.datetime64(0, "ns")).astype("datetime64[D]").astype(np.int64)
    refuse(
        dated & (dates > np.datetime64(today, "ns")),
        f"date is in the future (today in New York is {today})",
        "date",
    )
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    refuse(
        dated & (weekday >= 5),
        lambda m: "date falls on a weekend (" + np.array(DAY_NAMES, dtype=object)[weekday[m]] + ")",
        "date",
    )

    # -- duplicates --------------------------------------------------------------------------
    # pandas from here on only: up to here a parse ahead (FileParser) runs while the command
    # still imports pandas.
    import pandas as pd

    has_key = dated & ticker_given
    exact = np.zeros(n, dtype=bool)
    conflict = np.zeros(n, dtype=bool)
    key = ticker_codes.astype(np.int64) * (1 << 32) + (days + (1 << 30))
    if not _increasing(key[has_key]) and pd.Series(key[has_key]).duplicated().any():
        keyed = pd.DataFrame({"ticker": tickers, "date": dates, **values})
        exact = has_key & keyed.duplicated(keep="first").to_numpy()
        candidates = ~exact & has_key
        conflict[candidates] = (
            keyed[["ticker", "date"]][candidates].duplicated(keep=False).to_numpy()
        )
    keep = ~exact
    if conflict.any():
        lines = (
            pd.Series(rec.line[conflict].astype(str))
            .groupby([tickers[conflict], dates[conflict]])
            .transform(", ".join)
            .to_numpy(dtype=object)
        )
        refuse(
            conflict,
            lambda m: (
                "same ticker and date appears with different values on lines " + lines[m[conflict]]
            ),
            "date",
        )

    refused = ~pending & keep
    accepted = pending & keep

    # -- accepted rows, by ticker and date -------------------------------------------------
    order = np.flatnonzero(accepted)
    if not _increasing(key[accepted]):  # files usually come sorted by ticker and date
        order = order[np.lexsort((days[accepted], ticker_codes[accepted]))]
    bar = {p: values[p][order] for p in PRICES}
    volume = values["volume"][order] if "volume" in values else np.full(len(order), np.nan)
    if layout == LAYOUT_ALPHAVANTAGE:
        factor = _split_factor(
            pd.Series(tickers), pd.Series(dates), pd.Series(values["split"]), has_key & keep
        ).to_numpy()[order]
        bar = {p: bar[p] / factor for p in PRICES}
        volume = volume * factor
    bar["high"] = np.fmax.reduce([bar["open"], bar["high"], bar["low"], bar["close"]])
    bar["low"] = np.fmin.reduce([bar["open"], bar["low"], bar["close"]])
    if layout == LAYOUT_YFINANCE or (layout == LAYOUT_YF_DOWNLOAD and "adj_close" not in cols):
        adj_close = bar["close"]
    elif "adj_close" in values:
        adj_close = values["adj_close"][order]
    else:
        adj_close = np.full(len(order), np.nan)
    shares = np.round(volume)
    unknown = np.isnan(shares)
    # Every column is a new array of this parse's own: taken as it is, not copied into blocks.
    prices = pd.DataFrame(
        {
            "ticker": tickers[order],
            "trade_date": dates[order],
            **bar,
            "adj_close": adj_close.astype(float),
            "volume": pd.arrays.IntegerArray(
                np.where(unknown, 0, shares).astype(np.int64), unknown
            ),
            "source_file": source,
            "ingested_at": now,
        },
        copy=False,
    )

    date_text = strings("date", refused)
    refused_tickers = tickers[refused]
    rejected = pd.DataFrame(
        {
            "source_file": source,
            "line_number": rec.line[refused].astype("int64"),
            "ticker": np.where(refused_tickers != "", refused_tickers, None),
            "trade_date": np.where(date_text != "", date_text, None),
            "column_name": column[refused],
            "reason": reason[refused],
            "raw_record": rec.raw_text(refused),
            "rejected_at": now,
        }
    )
    if "ticker" in cols:
        seen = np.bincount(codes[has_key & ticker_ok], minlength=len(upper)) > 0
        tickers_seen = sorted(set(upper[seen]))
    else:
        tickers_seen = [fixed]
    file_record = {
        "source_file": source,
        "content_sha256": sha256,
        "layout": layout,
        "tickers": ",".join(tickers_seen),
        "rows_read": n,
        "rows_refused": len(rejected),
        "ingested_at": now,
    }
    return ParsedFile(
        layout=layout,
        tickers=tickers_seen,
        rows_read=n,
        duplicates_dropped=int(exact.sum()),
        prices=prices,
        rejected=rejected,
        file_record=file_record,
    )


def _increasing(values: np.ndarray) -> bool:
    """Strictly increasing: sorted, and no value twice."""
    return bool((values[1:] > values[:-1]).all())


def _split_factor(
    tickers: pd.Series, dates: pd.Series, split: pd.Series, usable: pd.Series
) -> pd.Series:
    """Per row: the product of the split coefficients on all later dates of the same ticker.

    Refused rows still count when their split coefficient is valid: the split happened even if
    the bar is bad. A missing or invalid coefficient counts as 1 (no split).
    """
    import pandas as pd

    coef = split.where(split.notna() & (split > 0) & ~split.isin([float("inf")]), 1.0)
    per_day = (
        pd.DataFrame({"ticker": tickers, "date": dates, "coef": coef})[usable]
        .groupby(["ticker", "date"], sort=True)["coef"]
        .first()
        .sort_index(ascending=False)
    )
    later = per_day.groupby(level="ticker").cumprod().groupby(level="ticker").shift(1).fillna(1.0)
    index = pd.MultiIndex.from_arrays([tickers, dates])
    return pd.Series(later.reindex(index).to_numpy(), index=tickers.index).fillna(1.0)

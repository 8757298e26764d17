"""Synthetic universe: N made-up tickers x Y years of daily bars, for benchmarks beyond the
shared data. SYNTHETIC: no row is a real price.

    uv run --frozen python benchmarks/synthetic.py --tickers 500 --years 20 --out /tmp/bench

writes ``/tmp/bench/synthetic_500x20y_seed0/SYN0001.csv`` .. ``SYN0500.csv`` in the Yahoo
download layout (``Date,Open,High,Low,Close,Adj Close,Volume``) that ``stockcast ingest``
reads (``--gzip``: ``.csv.gz``), plus a README.md saying the data are synthetic. The same seed
gives the same bytes.

The bars are shaped like real ones, so the loaders, the indicators and the model do the same
work as on real files: trading days are the NYSE sessions of the dbt seed (no weekend or
holiday bars); daily log returns follow a GARCH(1,1) with Student-t shocks (volatility
clusters, fat tails) on top of a common market factor (tickers move together); opens gap from
the previous close; highs and lows bracket open and close; volume is lognormal and rises on
large moves; about a third of the tickers start later (listings), as in the shared data.
"""

from __future__ import annotations

import argparse
import gzip
import io
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

SESSIONS_SEED = (
    Path(__file__).resolve().parent.parent / "dbt_project" / "seeds" / "nyse_sessions.csv"
)
LAST_SESSION = "2024-12-31"  # fixed: the output must not depend on the day it is made
HEADER = ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
GARCH_ALPHA, GARCH_BETA = 0.08, 0.90
STUDENT_DF = 5


def folder_name(tickers: int, years: int, seed: int) -> str:
    return f"synthetic_{tickers}x{years}y_seed{seed}"


def ticker_names(count: int) -> list[str]:
    return [f"SYN{i:04d}" for i in range(1, count + 1)]


def sessions(years: int) -> np.ndarray:
    """The last ``years`` x 252 NYSE sessions up to LAST_SESSION."""
    days = np.loadtxt(SESSIONS_SEED, dtype="datetime64[D]", skiprows=1)
    days = days[days <= np.datetime64(LAST_SESSION)]
    return days[-years * 252 :]


def _student_t(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Student-t shocks scaled to unit variance."""
    return rng.standard_t(STUDENT_DF, size=shape) / np.sqrt(STUDENT_DF / (STUDENT_DF - 2))


def _garch(rng: np.random.Generator, days: int, annual_vol: np.ndarray) -> tuple[np.ndarray, ...]:
    """Returns and conditional daily volatilities, (days, series), GARCH(1,1) per series."""
    long_run = (annual_vol / np.sqrt(252)) ** 2
    omega = long_run * (1 - GARCH_ALPHA - GARCH_BETA)
    shocks = _student_t(rng, (days, len(annual_vol)))
    returns = np.empty_like(shocks)
    volatility = np.empty_like(shocks)
    variance = long_run.copy()
    for t in range(days):
        volatility[t] = np.sqrt(variance)
        returns[t] = volatility[t] * shocks[t]
        variance = omega + GARCH_ALPHA * returns[t] ** 2 + GARCH_BETA * variance
    return returns, volatility


def universe(
    tickers: int, years: int, seed: int
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """``(dates, columns, first_day)``: columns are (days, tickers) arrays of the bars; ticker
    ``i`` has bars from row ``first_day[i]`` on."""
    rng = np.random.default_rng(seed)
    dates = sessions(years)
    days = len(dates)
    market, market_vol = _garch(rng, days, np.array([0.16]))
    beta = rng.uniform(0.5, 1.5, tickers)
    own, own_vol = _garch(rng, days, rng.uniform(0.15, 0.45, tickers))
    drift = rng.normal(0.0003, 0.0002, tickers)
    log_returns = drift + beta * market + own
    volatility = np.sqrt((beta * market_vol) ** 2 + own_vol**2)

    close = rng.lognormal(np.log(40), 0.8, tickers) * np.exp(np.cumsum(log_returns, axis=0))
    previous = np.vstack([close[:1] / np.exp(log_returns[:1]), close[:-1]])
    gap = rng.normal(0, 0.3, (days, tickers)) * volatility
    open_ = previous * np.exp(gap)
    wick = np.abs(rng.normal(0, 0.5, (2, days, tickers))) * volatility
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    surprise = np.abs(log_returns) / volatility
    base_volume = rng.lognormal(np.log(2e6), 1.0, tickers)
    volume = base_volume * rng.lognormal(0, 0.35, (days, tickers)) * (1 + 0.4 * surprise)

    # Rounding is monotonic, so the rounded high and low still bracket the rounded open/close.
    floor = 0.01
    columns = {
        "Open": np.round(np.maximum(open_, floor), 6),
        "High": np.round(np.maximum(high, floor), 6),
        "Low": np.round(np.maximum(low, floor), 6),
        "Close": np.round(np.maximum(close, floor), 6),
        "Volume": np.round(volume).astype(np.int64),
    }
    columns["Adj Close"] = columns["Close"]  # no dividends in a synthetic world
    listed_later = rng.random(tickers) < 1 / 3
    first_day = np.where(listed_later, rng.integers(0, int(days * 0.8), tickers), 0)
    return dates, columns, first_day


def write_universe(
    out: Path, tickers: int, years: int, seed: int = 0, compress: bool = False
) -> Path:
    """Write the universe under ``out``; returns its folder. ``compress``: ``.csv.gz`` files
    (like the shared data; gzip then takes most of the time) instead of ``.csv``."""
    folder = out / folder_name(tickers, years, seed)
    folder.mkdir(parents=True, exist_ok=True)
    dates, columns, first_day = universe(tickers, years, seed)
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    header = (",".join(HEADER) + "\n").encode()
    for i, name in enumerate(ticker_names(tickers)):
        start = first_day[i]
        table = pa.table(
            {
                "Date": pa.array(dates[start:]),
                **{c: pa.array(columns[c][start:, i]) for c in HEADER[1:]},
            }
        )
        buffer = io.BytesIO()
        buffer.write(header)
        pacsv.write_csv(table, buffer, write_options=options)
        if compress:
            (folder / f"{name}.csv.gz").write_bytes(gzip.compress(buffer.getvalue(), 1))
        else:
            (folder / f"{name}.csv").write_bytes(buffer.getvalue())
    rows = int(sum(len(dates) - s for s in first_day))
    (folder / "README.md").write_text(
        f"# SYNTHETIC price data - not real\n\n"
        f"{tickers} made-up tickers (SYN0001..) x {years} years of NYSE sessions up to "
        f"{LAST_SESSION}, {rows} bars, seed {seed}, written by benchmarks/synthetic.py "
        "(GARCH(1,1) returns with Student-t shocks and a market factor; lognormal volume). "
        "For benchmarks only.\n"
    )
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--years", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="parent folder")
    parser.add_argument("--gzip", action="store_true", help="write .csv.gz (slower)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    folder = write_universe(args.out, args.tickers, args.years, args.seed, args.gzip)
    print(f"{folder} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

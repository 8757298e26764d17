"""Benchmark: the dbt indicator mart against TA-Lib in Python, full build and one-day increment.

Side by side in one run, on one warehouse (all shared tickers by default: the Kaggle long table,
then the 150 Yahoo histories with --replace, as tests/test_indicator_parity.py loads them):

* TA-Lib in Python: read the bars from DuckDB, compute SMA 5/15/20/50, EMA 12/26, MACD and
  RSI(14) per ticker, write the table back to DuckDB (the same columns as the mart);
* the full dbt build of `marts.fct_daily_indicators` (`dbt run --full-refresh`);
* one new trading day per ticker, then the incremental dbt run.

dbt figures are the model's own execution time from `run_results.json` (reading the bars,
computing and writing the table); the dbt process's start-up (parsing the project, ~10-20 s)
is reported apart. Peak memory is the resident memory of each step's process tree, sampled
every 0.05 s. The load average is recorded beside every figure: the machine may be shared.

    uv run --frozen python benchmarks/indicator_speed.py [--data ../shared/data | --duckdb FILE]

`measure()` is the entry point for other benchmarks (benchmarks/scale.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "indicator_speed.json"
SELECT = ["--select", "stg_raw__daily_prices", "fct_daily_indicators"]
MODEL = "model.stockcast.fct_daily_indicators"
INDICATORS = [
    "sma_5", "sma_15", "sma_20", "sma_50", "ema_12", "ema_26",
    "macd", "macd_signal", "macd_hist", "rsi_14",
]  # fmt: skip


# --- a subprocess with its peak memory -------------------------------------------------------


def _run(command: list[str], env: dict[str, str]) -> dict:
    """Run a command; wall seconds, peak RSS of its process tree, load average, output."""
    result = run_measured(command, env, cwd=REPO)
    if result["exit_status"]:
        raise RuntimeError(
            f"{result['command']} failed ({result['exit_status']}):\n{result['output']}"
        )
    return {
        "wall_seconds": result["seconds"],
        "peak_rss_mib": round(result["peak_rss_mib"]),
        "load_average_1min": result["load_average"],
        "output": result["output"],
    }


# --- the TA-Lib side (runs in its own process: python indicator_speed.py --talib-only DB) ----


def talib_indicators(duckdb_path: str) -> dict:
    """Read the bars from DuckDB, compute every indicator with TA-Lib, write them back."""
    import duckdb
    import numpy as np
    import talib

    timings = {}
    started = time.perf_counter()
    with duckdb.connect(duckdb_path) as con:
        bars = con.execute(
            "select ticker, trade_date, open, high, low, close, adj_close, volume "
            "from raw.daily_prices order by ticker, trade_date"
        ).df()
        timings["read_seconds"] = time.perf_counter() - started

        computing = time.perf_counter()
        close = bars["close"].to_numpy(dtype=float)
        tickers = bars["ticker"].to_numpy()
        starts = np.flatnonzero(np.r_[True, tickers[1:] != tickers[:-1]])
        ends = np.r_[starts[1:], len(bars)]
        out = {name: np.full(len(bars), np.nan) for name in INDICATORS}
        price_index = np.empty(len(bars), dtype=np.int64)
        for start, end in zip(starts, ends, strict=True):
            x = close[start:end]
            price_index[start:end] = np.arange(end - start)
            for n in (5, 15, 20, 50):
                out[f"sma_{n}"][start:end] = talib.SMA(x, n)
            out["ema_12"][start:end] = talib.EMA(x, 12)
            out["ema_26"][start:end] = talib.EMA(x, 26)
            macd, signal, hist = talib.MACD(x, 12, 26, 9)
            out["macd"][start:end] = macd
            out["macd_signal"][start:end] = signal
            out["macd_hist"][start:end] = hist
            out["rsi_14"][start:end] = talib.RSI(x, 14)
        bars.insert(2, "price_index", price_index)
        for name, values in out.items():
            bars[name] = values
        timings["compute_seconds"] = time.perf_counter() - computing

        writing = time.perf_counter()
        con.register("talib_bars", bars)
        con.execute("create schema if not exists benchmark")
        con.execute(
            "create or replace table benchmark.talib_indicators as select * from talib_bars"
        )
        con.unregister("talib_bars")
        timings["write_seconds"] = time.perf_counter() - writing
    timings["total_seconds"] = time.perf_counter() - started
    return {k: round(v, 3) for k, v in timings.items()} | {"rows": len(bars)}


# --- the dbt side -----------------------------------------------------------------------------


def _dbt(args: list[str], env: dict[str, str]) -> dict:
    from ml.config import DBT_PROJECT_DIR, profiles_dir

    dbt = Path(sys.executable).with_name("dbt")
    command = [
        str(dbt), *args,
        "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(profiles_dir()),
        "--target", "dev",
    ]  # fmt: skip
    log = Path(env["DBT_LOG_PATH"]) / "dbt.log"
    log.unlink(missing_ok=True)
    result = _run(command, env)
    result["sql_seconds"] = _sql_seconds(log, MODEL)
    run_results = json.loads((Path(env["DBT_TARGET_PATH"]) / "run_results.json").read_text())
    model = next(r for r in run_results["results"] if r["unique_id"] == MODEL)
    result["model_seconds"] = round(model["execution_time"], 2)
    # dbt's own share of the model time (rendering the SQL, the materialization's bookkeeping
    # queries) does not grow with the data: shown apart from the execute phase.
    phases = {t["name"]: t for t in model["timing"]}
    for phase in ("compile", "execute"):
        if phase in phases:
            took = _iso_seconds(phases[phase]["completed_at"]) - _iso_seconds(
                phases[phase]["started_at"]
            )
            result[f"{phase}_seconds"] = round(took, 2)
    result["dbt_elapsed_seconds"] = round(run_results["elapsed_time"], 2)
    del result["output"]
    return result


def _dbt_floor(env: dict[str, str]) -> dict:
    """dbt's time for an incremental model that appends nothing, run as the timed increment is
    (a fresh process, a view first): what any dbt incremental run costs before its queries."""
    from ml.config import profiles_dir

    project = Path(__file__).resolve().parent / "dbt_floor"
    dbt = Path(sys.executable).with_name("dbt")
    command = [
        str(dbt), "run", "--project-dir", str(project), "--profiles-dir", str(profiles_dir()),
        "--target", "dev",
    ]  # fmt: skip
    floor_env = dict(env, DBT_TARGET_PATH=str(Path(env["DBT_TARGET_PATH"]) / "floor"))
    _run(command, floor_env)  # creates the table
    result = _run(command, floor_env)  # the incremental run
    results = json.loads((Path(floor_env["DBT_TARGET_PATH"]) / "run_results.json").read_text())
    (model,) = (r for r in results["results"] if r["unique_id"].endswith(".floor_increment"))
    del result["output"]
    return {"model_seconds": round(model["execution_time"], 2), **result}


def _sql_seconds(log: Path, node: str) -> float:
    """Seconds the warehouse spent on the queries dbt ran for ``node`` (from dbt's debug log:
    each query's "On <node>:" line, then its "SQL status: OK in <s> seconds")."""
    seconds, current = 0.0, None
    for line in log.read_text(errors="replace").splitlines():
        if " On " in line and ": " in line.split(" On ", 1)[1]:
            current = line.split(" On ", 1)[1].split(":", 1)[0]
        elif "SQL status:" in line and current == node:
            with contextlib.suppress(ValueError, IndexError):
                seconds += float(line.rsplit(" in ", 1)[1].split()[0])
    return round(seconds, 2)


def _iso_seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _append_one_day(duckdb_path: str) -> int:
    """One new bar per ticker on its next weekday, stamped now (as ingest stamps new bars)."""
    import duckdb

    with duckdb.connect(duckdb_path) as con:
        con.execute(
            """
            insert into raw.daily_prices
            select
                ticker,
                trade_date + case when dayofweek(trade_date) = 5 then 3 else 1 end,
                close * 1.01, close * 1.02, close * 0.99, close * 1.01, adj_close * 1.01,
                volume, 'benchmark-next-day', now()
            from raw.daily_prices
            qualify row_number() over (partition by ticker order by trade_date desc) = 1
            """
        )
        (rows,) = con.execute(
            "select count(*) from raw.daily_prices where source_file = 'benchmark-next-day'"
        ).fetchone()
    return rows


def _deviation(duckdb_path: str) -> dict[str, float]:
    """Max |mart - TA-Lib| per indicator, x the ticker's price level (RSI: points)."""
    import duckdb

    terms = ", ".join(
        f"max(abs(m.{n} - t.{n})"
        + ("" if n == "rsi_14" else " / levels.level")
        + f") as {n}, count(*) filter (where (m.{n} is null) != isnan(coalesce(t.{n}, 'nan')))"
        f" as {n}__nulls"
        for n in INDICATORS
    )
    with duckdb.connect(duckdb_path, read_only=True) as con:
        row = con.execute(
            f"""
            with levels as (
                select ticker, max(abs(close)) as level from raw.daily_prices group by ticker
            )
            select {terms}
            from marts.fct_daily_indicators as m
            inner join benchmark.talib_indicators as t using (ticker, trade_date)
            inner join levels using (ticker)
            """
        ).fetchone()
    names = [d for n in INDICATORS for d in (n, f"{n}__nulls")]
    return dict(zip(names, row, strict=True))


def _ingest(data_dir: Path, env: dict[str, str]) -> None:
    stockcast = str(Path(sys.executable).with_name("stockcast"))
    _run([stockcast, "ingest", str(data_dir / "kaggle_sp500_5yr")], env)
    _run([stockcast, "ingest", "--replace", str(data_dir / "yahoo_sp500_daily")], env)


def measure(source: str | Path, work_dir: str | Path | None = None) -> dict:
    """Run the benchmark; `source` is a data folder (ingested into a new warehouse) or a
    DuckDB file with raw.daily_prices (copied first: the original is not changed)."""
    source = Path(source)
    home = Path(work_dir or tempfile.mkdtemp(prefix="stockcast-indicators-"))
    duckdb_path = home / "warehouse" / "stockcast.duckdb"
    duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, STOCKCAST_HOME=str(home), DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    env.pop("STOCKCAST_DUCKDB_PATH", None)
    env.pop("STOCKCAST_TARGET", None)
    env["DBT_TARGET_PATH"] = str(home / "dbt" / "target")
    env["DBT_LOG_PATH"] = str(home / "dbt" / "logs")
    env["DBT_PARTIAL_PARSE"] = "true"
    if source.is_dir():
        _ingest(source, env)
    else:
        shutil.copyfile(source, duckdb_path)

    import duckdb

    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        rows, tickers = con.execute(
            "select count(*), count(distinct ticker) from raw.daily_prices"
        ).fetchone()
        duckdb_version = con.execute("select version()").fetchone()[0]

    # dbt once before timing: partial parsing is then warm for every timed run.
    _dbt(["run", *SELECT, "--full-refresh"], env)
    talib_run = _run(
        [sys.executable, str(Path(__file__).resolve()), "--talib-only", str(duckdb_path)], env
    )
    talib = json.loads(talib_run.pop("output").strip().splitlines()[-1]) | talib_run
    full = _dbt(["run", *SELECT, "--full-refresh"], env)
    deviation = _deviation(str(duckdb_path))
    appended = _append_one_day(str(duckdb_path))
    incremental = _dbt(["run", *SELECT], env)
    floor = _dbt_floor(env)

    result = {
        "rows": rows,
        "tickers": tickers,
        "talib_python": talib,
        "dbt_full_build": full,
        "dbt_incremental_one_day": incremental | {"new_rows": appended},
        "dbt_incremental_floor": floor,
        "full_build_over_talib": round(full["model_seconds"] / talib["total_seconds"], 2),
        "incremental_over_full_build": round(
            incremental["model_seconds"] / full["model_seconds"], 3
        ),
        # the warehouse's share alone: dbt's own per-model cost (rendering, bookkeeping) is
        # about 0.4 s whatever the data, more than 5% of a 1 M-bar build by itself
        "incremental_over_full_build_warehouse": round(
            incremental["sql_seconds"] / full["sql_seconds"], 3
        ),
        "max_deviation_from_talib": deviation,
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "duckdb": duckdb_version,
        },
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "work_dir": str(home),
    }
    return result


def scale_rows(
    work: Path, shared: Path, synthetic_duckdb: Path | None = None, results: Path = RESULTS
) -> list[dict]:
    """The indicator rows of ``benchmarks/scale.py`` (``make benchmark``), shaped as its ingest
    rows: the full build beside TA-Lib, the one-day increment beside the full build; on the
    shared tickers (their whole result written to ``results``) and, given its warehouse, on the
    synthetic universe."""
    runs = {"442 shared tickers": measure(shared, Path(work) / "indicators")}
    results.write_text(json.dumps(runs["442 shared tickers"], indent=2) + "\n")
    if synthetic_duckdb is not None:
        synthetic = measure(synthetic_duckdb, Path(work) / "indicators-synthetic")
        runs[f"SYNTHETIC {synthetic['tickers']} tickers"] = synthetic

    def step(seconds: float, run: dict) -> dict:
        return {
            "seconds": seconds,
            "peak_rss_mib": run["peak_rss_mib"],
            "load_average": run["load_average_1min"][-1],
        }

    rows = []
    for label, result in runs.items():
        talib, full = result["talib_python"], result["dbt_full_build"]
        increment = result["dbt_incremental_one_day"]
        rows += [
            {
                "row": f"indicators full build vs TA-Lib ({label})",
                "measured": step(full["model_seconds"], full),
                "reference": {
                    "what": "TA-Lib in Python: read + compute + write (target <= 3x)",
                    **step(talib["total_seconds"], talib),
                },
                "ratio": result["full_build_over_talib"],
                "rows": result["rows"],
            },
            {
                "row": f"indicators one-day incremental ({label})",
                "measured": step(increment["model_seconds"], increment),
                "reference": {
                    "what": "the full build (target <= 0.05x); dbt compile+bookkeeping "
                    f"{increment['model_seconds'] - increment['sql_seconds']:.2f} s; an "
                    "incremental model with no work takes "
                    f"{result['dbt_incremental_floor']['model_seconds']:.2f} s in dbt",
                    **step(full["model_seconds"], full),
                },
                "ratio": result["incremental_over_full_build"],
                "rows": result["rows"],
            },
            {
                "row": f"  its warehouse queries alone ({label})",
                "measured": step(increment["sql_seconds"], increment),
                "reference": {
                    "what": "the full build's warehouse queries (target <= 0.05x)",
                    **step(full["sql_seconds"], full),
                },
                "ratio": result["incremental_over_full_build_warehouse"],
                "rows": result["rows"],
            },
        ]
    return rows


def table(result: dict) -> str:
    talib, full = result["talib_python"], result["dbt_full_build"]
    incremental = result["dbt_incremental_one_day"]
    lines = [
        f"{result['rows']:,} bars, {result['tickers']} tickers; {result['measured_at']}",
        "",
        f"| {'step':<48} | {'seconds':>8} | {'peak MiB':>8} | {'load 1 min':>11} |",
        f"|{'-' * 50}|{'-' * 10}|{'-' * 10}|{'-' * 13}|",
    ]

    def row(name: str, seconds: float, peak: object = "", load: object = "") -> None:
        lines.append(f"| {name:<48} | {seconds:>8.2f} | {peak!s:>8} | {load!s:>11} |")

    def load(step: dict) -> str:
        return "{:.1f}-{:.1f}".format(*step["load_average_1min"])

    row("TA-Lib in Python: read + compute + write", talib["total_seconds"],
        talib["peak_rss_mib"], load(talib))  # fmt: skip
    row("  read", talib["read_seconds"])
    row("  compute", talib["compute_seconds"])
    row("  write", talib["write_seconds"])
    for name, step in (
        ("dbt full build (model time)", full),
        (f"dbt one-day incremental (+{incremental['new_rows']} bars)", incremental),
    ):
        row(name, step["model_seconds"], step["peak_rss_mib"], load(step))
        row("  of which queries in the warehouse", step["sql_seconds"])
        row("  dbt process wall clock (with start-up)", step["wall_seconds"])
    worst = result["max_deviation_from_talib"]
    lines += [
        "",
        f"full build / TA-Lib: {result['full_build_over_talib']}x (target <= 3x)",
        f"incremental / full build: {100 * result['incremental_over_full_build']:.1f}% "
        f"(target <= 5%); the warehouse queries alone: "
        f"{100 * result['incremental_over_full_build_warehouse']:.1f}%",
        "max deviation from TA-Lib (x price level; RSI points): "
        + ", ".join(f"{n} {worst[n]:.1e}" for n in INDICATORS),
        "NULL mismatches: " + str(sum(worst[f"{n}__nulls"] for n in INDICATORS)),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--duckdb", type=Path, help="a warehouse with raw.daily_prices instead")
    parser.add_argument("--work-dir", type=Path, help="data folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--talib-only", metavar="DUCKDB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.talib_only:
        print(json.dumps(talib_indicators(args.talib_only)))
        return
    result = measure(args.duckdb or args.data, args.work_dir)
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()

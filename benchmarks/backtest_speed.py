"""How long `stockcast backtest` takes: 4 folds of 38 tickers, every model, timed per model.

Issue 8's target: at most 5 minutes on 2 cores. The 38 tickers are forecast_quality.py's design
set: the first 38 files (sorted by name) of ../shared/data/yahoo_sp500_daily that are not among
its 28 well-known names. The warehouse is built (ingest + dbt) in a fresh data
folder, or in ``--home`` when that folder has none yet; a ``--home`` that already has one is
reused as it is (its build is not timed). Then the backtest stage runs as the CLI runs it
(loading the indicators once, MLflow logging and the warehouse tables included) with its
progress printed, and the total and per-model seconds are written as JSON. Usage:

    python benchmarks/backtest_speed.py --data ../shared/data/yahoo_sp500_daily
    python benchmarks/backtest_speed.py --home /tmp/bt-home --model garch --model ets --folds 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forecast_quality import ticker_sets

TARGET_SECONDS = 300
# run_backtest's progress line when a model finishes a fold.
DONE = re.compile(r"^\s*fold (\d+)/(\d+) (\S+): done in ([\d.]+)s")


def _has_warehouse(ctx) -> bool:
    from ml.contracts import INDICATOR_MART

    return ctx.warehouse.table_exists(INDICATOR_MART)


def _machine() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "load_average_1_5_15": [round(x, 2) for x in load],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/yahoo_sp500_daily"))
    parser.add_argument("--home", type=Path, help="Data folder to build in or reuse.")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--test-days", type=int, default=21)
    parser.add_argument("--model", dest="models", action="append", help="Default: all.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/backtest_speed.json"))
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="stockcast-backtest-speed-"))
    os.environ["STOCKCAST_HOME"] = str(home.resolve())
    for name in ("STOCKCAST_DUCKDB_PATH", "MLFLOW_TRACKING_URI", "STOCKCAST_TARGET"):
        os.environ.pop(name, None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from ml.backtest import MODEL_NAMES, BacktestConfig, backtest, summary_table
    from ml.context import build_context

    machine_before = _machine()
    started = time.perf_counter()
    ctx = build_context()
    files = ticker_sets(args.data)[0]  # the design set
    build_seconds = None
    if _has_warehouse(ctx):
        print(f"reusing the warehouse in {home}", flush=True)
    else:
        from ml.ingest import ingest_paths
        from ml.transform import transform

        print(f"building a warehouse of {len(files)} tickers in {home}", flush=True)
        report = ingest_paths(ctx, files)
        assert report.ok, report.summary_lines()
        transform(ctx)
        build_seconds = round(time.perf_counter() - started, 1)
        print(f"built in {build_seconds:.0f}s", flush=True)

    per_fold: dict[str, dict[int, float]] = {}

    def progress(message: str) -> None:
        print(message, flush=True)
        done = DONE.match(message)
        if done:
            fold, model, seconds = int(done.group(1)), done.group(3), float(done.group(4))
            per_fold.setdefault(model, {})[fold] = seconds

    config = BacktestConfig(
        n_folds=args.folds,
        test_days=args.test_days,
        models=tuple(args.models) if args.models else MODEL_NAMES,
    )
    backtest_started = time.perf_counter()
    result = backtest(ctx, config, progress=progress)
    seconds = time.perf_counter() - backtest_started
    print(summary_table(result).round(3).to_string())

    models = {
        model: {
            "seconds": round(sum(folds.values()), 1),
            "per_fold": [round(folds[k], 1) for k in sorted(folds)],
        }
        for model, folds in per_fold.items()
    }
    modelled = sum(m["seconds"] for m in models.values())
    summary = {
        "what": f"backtest stage, {len(result.folds)} folds of {args.test_days} as-of days, "
        f"{result.forecasts['ticker'].nunique()} tickers",
        "tickers": [p.name.split(".")[0] for p in files],
        "folds": [f.as_dict() for f in result.folds],
        "models": list(config.models),
        "origins_per_model": int(len(result.forecasts) / len(config.models) / 10),
        "seconds": round(seconds, 1),
        "target_seconds": TARGET_SECONDS,
        "within_target": seconds <= TARGET_SECONDS,
        # Loading the indicators, metrics, plots, MLflow logging and the warehouse tables.
        "seconds_outside_models": round(seconds - modelled, 1),
        "per_model": models,
        "build_seconds": build_seconds,
        "mlflow_run_id": result.run_id,
        "machine_before": machine_before,
        "machine_after": _machine(),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("seconds", "per_model")}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

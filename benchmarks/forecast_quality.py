"""The walk-forward backtest behind docs/forecast-quality.md, reproducible with one command.

Loads a fixed slice of ../shared/data (the 28 well-known names its README always includes) into
a fresh data folder, builds the indicators with dbt, runs `stockcast backtest` with fixed
settings, and writes the pooled table as markdown. Usage:

    python benchmarks/forecast_quality.py --data ../shared/data/yahoo_sp500_daily
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

TICKERS = [
    "AAPL", "MSFT", "AMZN", "GOOGL", "GOOG", "FB", "JPM", "NVDA", "INTC", "JNJ", "KO", "IBM",
    "CSCO", "BAC", "AMD", "NFLX", "DIS", "HD", "MCD", "PFE", "GS", "CVX", "AAL", "ADBE", "C",
    "F", "GE", "MMM",
]  # fmt: skip
METRICS = ["rel_mae", "mase", "mape", "directional_accuracy", "dm_pvalue"]


def markdown(frame) -> str:
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            if isinstance(value, float):
                cells.append("" if value != value else f"{value:.3f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/yahoo_sp500_daily"))
    parser.add_argument("--folds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/forecast_quality"))
    args = parser.parse_args()

    os.environ["STOCKCAST_HOME"] = tempfile.mkdtemp(prefix="stockcast-quality-")
    for name in ("STOCKCAST_DUCKDB_PATH", "MLFLOW_TRACKING_URI", "STOCKCAST_TARGET"):
        os.environ.pop(name, None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from ml.backtest import BacktestConfig, backtest, summary_table
    from ml.context import build_context
    from ml.evaluate import INTERVAL_METRICS
    from ml.ingest import ingest_paths
    from ml.transform import transform

    started = time.perf_counter()
    ctx = build_context()
    report = ingest_paths(ctx, [args.data / f"{t}.csv.gz" for t in TICKERS])
    assert report.ok, report.summary_lines()
    transform(ctx)
    config = BacktestConfig(n_folds=args.folds, test_days=21)
    result = backtest(ctx, config, progress=print)
    seconds = time.perf_counter() - started

    pooled = result.pooled()
    args.out.mkdir(parents=True, exist_ok=True)
    result.metrics.to_csv(args.out / "metrics.csv", index=False)
    tables = {}
    for metric in METRICS:
        table = pooled.pivot(index="model", columns="horizon", values=metric)
        table.columns = [f"h{h}" for h in table.columns]
        tables[metric] = markdown(table.reset_index())
    intervals = pooled.groupby("model")[list(INTERVAL_METRICS)].mean()
    intervals = intervals.dropna(how="all").reset_index()
    for metric in ("coverage_80", "coverage_95", "winkler_80", "winkler_95", "pinball"):
        table = pooled.pivot(index="model", columns="horizon", values=metric).dropna(how="all")
        table.columns = [f"h{h}" for h in table.columns]
        tables[metric] = markdown(table.reset_index())
    summary = {
        "tickers": TICKERS,
        "folds": [f.as_dict() for f in result.folds],
        "mlflow_run_id": result.run_id,
        "seconds": round(seconds, 1),
        "origins_per_model": int(len(result.forecasts) / len(config.models) / 10),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = [f"## {metric}\n\n{table}\n" for metric, table in tables.items()]
    text.append(f"## intervals (mean over horizons)\n\n{markdown(intervals)}\n")
    (args.out / "tables.md").write_text("\n".join(text))
    print(summary_table(result).round(3).to_string())
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

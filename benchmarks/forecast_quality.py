"""The walk-forward backtests behind docs/forecast-quality.md, reproducible with one command.

Three parts, each on a fresh warehouse built from ../shared/data/yahoo_sp500_daily (ingest, dbt):

* ``main``: the report set (38 tickers, see below), 4 consecutive folds of 21 as-of dates
  ending at the last date whose 10-day actuals are known; every model.
* ``regimes``: the report set, one 21-day fold starting at each named market regime the data
  reaches (:data:`ml.folds.REGIMES`), the LSTM refit before each; LSTM, naive, EWMA, GARCH.
* ``ablation``: the design set (another 38 tickers), 4 folds as in ``main``; the LSTM with each
  candidate input group added to the base features, beside EWMA and GARCH.

The two ticker sets are disjoint and chosen by rule, not by result: the files of the folder in
name order, leaving out the 28 well-known names the earlier reports used; the first 38 are the
design set (the model's choices, e.g. the scale head's loss and the input groups, were made on
them), the next 38 the report set. Usage:

    python benchmarks/forecast_quality.py --data ../shared/data/yahoo_sp500_daily [--part main]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

WELL_KNOWN = [
    "AAPL", "MSFT", "AMZN", "GOOGL", "GOOG", "FB", "JPM", "NVDA", "INTC", "JNJ", "KO", "IBM",
    "CSCO", "BAC", "AMD", "NFLX", "DIS", "HD", "MCD", "PFE", "GS", "CVX", "AAL", "ADBE", "C",
    "F", "GE", "MMM",
]  # fmt: skip
SET_SIZE = 38
PARTS = ("main", "regimes", "ablation")
ABLATION = {
    "base": [],
    "+volatility": ["volatility"],
    "+market": ["market"],
    "+volume": ["volume"],
    "+all": ["volatility", "market", "volume"],
}


def ticker_sets(data: Path) -> tuple[list[Path], list[Path]]:
    """(design set, report set): files in name order without the well-known names."""
    files = sorted(
        p for p in data.glob("*.csv.gz") if p.name.removesuffix(".csv.gz") not in WELL_KNOWN
    )
    if len(files) < 2 * SET_SIZE:
        raise SystemExit(f"{data} holds {len(files)} usable files; the report needs {2 * SET_SIZE}")
    return files[:SET_SIZE], files[SET_SIZE : 2 * SET_SIZE]


def markdown(frame, digits: int = 3) -> str:
    columns = list(frame.columns)
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            if isinstance(value, float):
                cells.append("" if value != value else f"{value:.{digits}f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def by_horizon(pooled, metric: str, models=None, digits: int = 3) -> str:
    table = pooled.pivot(index="model", columns="horizon", values=metric).dropna(how="all")
    if models:
        table = table.loc[[m for m in models if m in table.index]]
    table.columns = [f"h{h}" for h in table.columns]
    table["mean"] = table.mean(axis=1)
    return markdown(table.reset_index(), digits)


def warehouse(files: list[Path], home: Path):
    from ml.context import build_context
    from ml.data import load_indicators
    from ml.features import build_feature_frame
    from ml.ingest import ingest_paths
    from ml.transform import transform

    os.environ["STOCKCAST_HOME"] = str(home)
    ctx = build_context()
    report = ingest_paths(ctx, files)
    assert report.ok, report.summary_lines()
    transform(ctx)
    return ctx, build_feature_frame(load_indicators(ctx.warehouse))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/yahoo_sp500_daily"))
    parser.add_argument("--part", choices=PARTS, action="append", help="default: all three")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/forecast_quality"))
    args = parser.parse_args()
    parts = args.part or list(PARTS)

    for name in ("STOCKCAST_DUCKDB_PATH", "MLFLOW_TRACKING_URI", "STOCKCAST_TARGET"):
        os.environ.pop(name, None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from ml.backtest import MODEL_NAMES, BacktestConfig, backtest, run_backtest
    from ml.evaluate import naive_scales, regime_metrics
    from ml.features import feature_set
    from ml.fitting import TrainConfig
    from ml.folds import regime_folds

    design, report = ticker_sets(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="stockcast-quality-"))
    summary = {
        "design_set": [p.name.removesuffix(".csv.gz") for p in design],
        "report_set": [p.name.removesuffix(".csv.gz") for p in report],
        "default_features": list(TrainConfig().features),
    }
    sections = []

    if {"main", "regimes"} & set(parts):
        ctx, frame = warehouse(report, root / "report")
    if "main" in parts:
        started = time.perf_counter()
        models = (*MODEL_NAMES, "lstm_raw")
        result = backtest(ctx, BacktestConfig(n_folds=4, models=models), progress=print)
        pooled = result.pooled()
        result.metrics.to_csv(args.out / "metrics.csv", index=False)
        summary["main"] = {
            "folds": [f.as_dict() for f in result.folds],
            "seconds": round(time.perf_counter() - started, 1),
            "mlflow_run_id": result.run_id,
            "origins_per_model": int(len(result.forecasts) / len(models) / 10),
        }
        interval_models = ["lstm", "lstm_raw", "ewma", "garch", "ets"]
        sections.append(
            "## main: relative MAE vs naive\n\n" + by_horizon(pooled, "rel_mae", digits=4)
        )
        for metric in ("winkler_80", "winkler_95", "coverage_80", "coverage_95", "pinball"):
            sections.append(f"## main: {metric}\n\n" + by_horizon(pooled, metric, interval_models))
    if "regimes" in parts:
        started = time.perf_counter()
        folds, skipped = regime_folds(frame["trade_date"], test_days=21)
        config = BacktestConfig(models=("lstm", "naive", "ewma", "garch"))
        result = run_backtest(frame, config, progress=print, folds=folds)
        table = regime_metrics(result.forecasts, result.folds, naive_scales(frame, result.folds))
        table.to_csv(args.out / "regimes.csv", index=False)
        summary["regimes"] = {
            "folds": [f.as_dict() for f in result.folds],
            "skipped": skipped,
            "seconds": round(time.perf_counter() - started, 1),
        }
        sections.append("## regimes\n\n" + markdown(table, 4))
    if "ablation" in parts:
        started = time.perf_counter()
        _, frame = warehouse(design, root / "design")
        rows = []
        for label, groups in ABLATION.items():
            train = replace(TrainConfig(), features=tuple(feature_set(groups)))
            config = BacktestConfig(
                n_folds=4, models=("lstm", "naive", "ewma", "garch"), train=train
            )
            print(f"== ablation {label}: {len(train.features)} features")
            pooled = run_backtest(frame, config, progress=print).pooled()
            means = pooled.groupby("model")[["rel_mae", "winkler_80", "winkler_95", "pinball",
                                              "coverage_80", "coverage_95"]].mean()  # fmt: skip
            for model in ("lstm", "ewma", "garch") if label == "base" else ("lstm",):
                name = f"lstm {label}" if model == "lstm" else model
                rows.append({"model": name, **means.loc[model].to_dict()})
        import pandas as pd

        table = pd.DataFrame(rows)
        table.to_csv(args.out / "ablation.csv", index=False)
        summary["ablation"] = {"seconds": round(time.perf_counter() - started, 1)}
        sections.append("## ablation (design set, mean over horizons)\n\n" + markdown(table, 4))

    (args.out / f"tables_{'_'.join(parts)}.md").write_text("\n\n".join(sections) + "\n")
    (args.out / f"summary_{'_'.join(parts)}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n\n".join(sections))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

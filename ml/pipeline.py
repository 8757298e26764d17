"""The main job: ingest -> transform -> train (if no champion) -> score -> build and test marts.

The CLI and (later) the orchestration flows are thin faces over these functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ml.config import data_dir, load_settings

FORECAST_MARTS = "source:ml.predicted_prices+"


@dataclass
class RunReport:
    stage_seconds: dict[str, float] = field(default_factory=dict)
    ingest_ok: bool = True
    trained_version: str | None = None
    scored_version: str | None = None
    forecasts_written: int = 0
    gate: object = None  # ml.gate.GateDecision of the model trained in this run, if any


def run_pipeline(
    paths: list[Path],
    *,
    ticker: str | None = None,
    retrain: bool = False,
    train_config=None,
    say=print,
    force: bool = False,
) -> RunReport:
    from ml.ingest import ingest_paths
    from ml.transform import transform
    from ml.warehouse import Warehouse

    settings = load_settings()
    warehouse = Warehouse(settings)
    report = RunReport()

    def stage(name: str):
        say(f"== {name}")
        return time.perf_counter()

    started = stage("ingest")
    ingest = ingest_paths(paths, warehouse=warehouse, ticker=ticker)
    for line in ingest.summary_lines():
        say(line)
    report.ingest_ok = ingest.ok
    report.stage_seconds["ingest"] = time.perf_counter() - started

    started = stage("transform (dbt build)")
    transform(settings, echo=say)
    report.stage_seconds["transform"] = time.perf_counter() - started

    from ml import registry

    registry.configure(settings)
    if retrain or registry.champion_version() is None:
        started = stage("train")
        from ml.train import train

        result = train(train_config, warehouse=warehouse, progress=say, force=force)
        report.trained_version = result.model_version
        report.gate = result.gate
        say(
            f"registered stockcast-lstm v{result.model_version} as {result.gate.alias} "
            f"(run {result.run_id}); held-out relative MAE vs naive, mean over horizons: "
            f"{result.metrics['rel_mae'].mean():.3f}"
        )
        report.stage_seconds["train"] = time.perf_counter() - started
    else:
        say(f"== train skipped: champion v{registry.champion_version()} is registered")

    started = stage("score")
    from ml.score import score

    scored = score(warehouse=warehouse, progress=say)
    report.scored_version = scored.model_version
    report.forecasts_written = scored.rows_written
    say(
        f"wrote {scored.rows_written} forecasts for {scored.tickers_scored} tickers"
        + (
            f"; skipped (too little history): {', '.join(scored.tickers_skipped)}"
            if scored.tickers_skipped
            else ""
        )
    )
    report.stage_seconds["score"] = time.perf_counter() - started

    started = stage("publish forecast marts (dbt build)")
    transform(settings, select=FORECAST_MARTS, echo=say)
    report.stage_seconds["publish"] = time.perf_counter() - started
    return report


def write_demo_prices(out_dir: Path | None = None) -> Path:
    """GOOG daily bars 2004-2013 as shipped by the `backtesting` package, in Yahoo layout.

    Real prices, so the demo runs on a machine with no network and no data of its own. The
    package ships OHLCV only: Adj Close is written equal to Close.
    """
    from backtesting.test import GOOG

    out_dir = out_dir or data_dir() / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = GOOG.reset_index().rename(columns={"index": "Date"})
    frame["Date"] = frame["Date"].dt.strftime("%Y-%m-%d")
    frame["Adj Close"] = frame["Close"]
    path = out_dir / "GOOG.csv"
    frame[["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]].to_csv(path, index=False)
    return path

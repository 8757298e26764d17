"""The main job: ingest -> transform -> train and promote (if no champion) -> score -> build and
test marts.

Score publishes the champion's forecasts or, while no model has passed the promotion gate, the
naive_ewma baseline's (:mod:`ml.score`); with no champion every run trains and gates again.

The CLI and (later) the orchestration flows are thin faces over these functions.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ml.config import data_dir

if TYPE_CHECKING:
    from ml.context import RunContext

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
    ctx: RunContext,
    paths: list[Path],
    *,
    ticker: str | None = None,
    retrain: bool = False,
    train_config=None,
    say=print,
    force: bool = False,
    replace: bool = False,
) -> RunReport:
    """Ingest ``paths`` (``replace``: see :func:`ml.ingest.ingest_file`), then :func:`refresh`."""
    from ml.ingest import ingest_paths

    report = RunReport()
    with _stage(report, "ingest", say):
        ingest = ingest_paths(ctx, paths, ticker=ticker, replace=replace)
        for line in ingest.summary_lines():
            say(line)
    report.ingest_ok = ingest.ok
    return refresh(ctx, retrain=retrain, train_config=train_config, say=say, force=force,
                   report=report)  # fmt: skip


def refresh(
    ctx: RunContext,
    *,
    retrain: bool = False,
    train_config=None,
    say=print,
    force: bool = False,
    report: RunReport | None = None,
) -> RunReport:
    """Everything after loading: dbt build -> train and promote (if no champion) -> score ->
    forecast marts.

    The scheduled job in production (the upload function only loads files).
    """
    from ml.transform import transform

    report = report or RunReport()
    with _stage(report, "transform", say, "transform (dbt build)"):
        transform(ctx, echo=say)

    from ml import registry

    ctx.tracking()
    champion = registry.champion_version()
    unseen = [] if champion is None else tickers_the_champion_never_saw(ctx)
    if unseen:
        shown = ", ".join(unseen[:10]) + (
            f" and {len(unseen) - 10} more" if len(unseen) > 10 else ""
        )
        say(
            f"retraining: champion v{champion} was not trained on {len(unseen)} of the loaded "
            f"tickers ({shown}); the promotion gate decides whether the new model replaces it"
        )
    if champion is None and not retrain:
        say(
            "training: no champion is registered (no model has passed the promotion gate yet); "
            "the gate decides whether the new model becomes one"
        )
    if retrain or champion is None or unseen:
        from ml.promote import promote
        from ml.train import train

        with _stage(report, "train", say):
            result = train(ctx, train_config, progress=say)
            report.trained_version = result.model_version
        with _stage(report, "promote", say, "promote (promotion gate)"):
            report.gate = promote(ctx, result, force=force, progress=say)
            say(
                f"registered stockcast-lstm v{result.model_version} as {report.gate.alias} "
                f"(run {result.run_id}); held-out relative MAE vs naive, mean over horizons: "
                f"{result.metrics['rel_mae'].mean():.3f}"
            )
            if unseen and report.gate.alias != "champion":
                say(
                    f"champion v{champion} stays and forecasts {len(unseen)} tickers it was not "
                    "trained on; `stockcast train --force` promotes the new model instead"
                )
    else:
        say(f"== train skipped: champion v{champion} is registered")

    from ml.score import score

    with _stage(report, "score", say):
        scored = score(ctx, progress=say)
        report.scored_version = scored.model_version
        report.forecasts_written = scored.rows_written
        say(
            (
                f"no model has passed the promotion gate: published the {scored.model_name} "
                "baseline; "
                if scored.baseline
                else ""
            )
            + f"wrote {scored.rows_written} forecasts for {scored.tickers_scored} tickers"
            + (
                f"; skipped (too little history): {', '.join(scored.tickers_skipped)}"
                if scored.tickers_skipped
                else ""
            )
        )

    with _stage(report, "publish", say, "publish forecast marts (dbt build)"):
        transform(ctx, select=FORECAST_MARTS, echo=say)
    return report


def tickers_the_champion_never_saw(ctx: RunContext) -> list[str]:
    """Tickers in the indicator mart that the champion's training data did not hold.

    The rule `refresh` (and so `run`) follows: such tickers trigger a retrain, and the promotion
    gate decides whether the new model becomes champion; if it does not, the old champion
    forecasts them anyway and the run says so. Champions from before the training tickers were
    recorded (no `tickers` in their meta) are taken to cover every ticker.
    """
    from ml import registry
    from ml.contracts import INDICATOR_MART

    current = registry.champion_settings()
    trained = (current[1] if current else {}).get("tickers")
    if trained is None:
        return []
    wh = ctx.warehouse
    loaded = wh.query_df(f"select distinct ticker from {wh.table(INDICATOR_MART)}")["ticker"]
    return sorted(set(loaded) - set(trained))


@contextlib.contextmanager
def _stage(report: RunReport, name: str, say, title: str | None = None) -> Iterator[None]:
    say(f"== {title or name}")
    started = time.perf_counter()
    yield
    report.stage_seconds[name] = time.perf_counter() - started


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

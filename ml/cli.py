"""`stockcast`: the command line. Thin: every command calls a stage function.

Heavy imports (TensorFlow, MLflow, pandas) happen inside commands, so `--help` answers at once.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import date
from pathlib import Path

import click

CONFIG_HELP = """
\b
Configuration (shared with dbt through profiles.yml):
  STOCKCAST_TARGET       dbt target: dev (DuckDB, default) or bigquery
  STOCKCAST_DUCKDB_PATH  DuckDB file (default: ./data/warehouse/stockcast.duckdb)
  STOCKCAST_HOME         local data folder (default: ./data)
  MLFLOW_TRACKING_URI    MLflow store (default: sqlite:///./data/mlflow/mlflow.db)
  STOCKCAST_BQ_PROJECT   BigQuery project (bigquery target); STOCKCAST_BQ_DATASET is the
                         dataset prefix (default: stockcast -> stockcast_raw, ...)
"""


def _quiet_libraries() -> None:
    """Keep the terminal for Stockcast's own progress: libraries log at warning level and up."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow would reset its logger to INFO on import; keep ours.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notes per fold model


def _echo(message: str) -> None:
    click.echo(message)


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


def _context():
    """The run context for this command, built once: settings, warehouse, MLflow."""
    from ml.config import ConfigError
    from ml.context import build_context
    from ml.warehouse import WarehouseError

    try:
        return build_context()
    except (ConfigError, WarehouseError) as exc:
        _fail(str(exc))


@click.group(
    help="Stockcast: price files -> warehouse -> indicators -> LSTM forecasts.\n" + CONFIG_HELP
)
@click.version_option(package_name="stockcast")
def main() -> None:
    _quiet_libraries()


@main.command(help="Load daily price CSVs (.csv/.csv.gz, files or folders) into raw.daily_prices.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--ticker", help="Ticker for files that carry none (default: from the file name).")
def ingest(paths: tuple[Path, ...], ticker: str | None) -> None:
    from ml.ingest import ingest_paths
    from ml.warehouse import WarehouseError

    ctx = _context()
    with click.progressbar(length=1, label="ingesting", file=sys.stderr) as bar:

        def progress(done: int, total: int, path) -> None:
            bar.length = total
            bar.update(done - bar.pos)

        try:
            report = ingest_paths(ctx, list(paths), ticker=ticker, progress=progress)
        except WarehouseError as exc:
            _fail(str(exc))
    for line in report.summary_lines():
        click.echo(line)
    if not report.ok:
        _fail("some files were not loaded (see above); the others were")


@main.command(help="Build the dbt models and run every data and unit test (dbt build).")
@click.option("--select", help="dbt selection, e.g. fct_daily_indicators+")
def transform(select: str | None) -> None:
    from ml.transform import DbtError
    from ml.transform import transform as run_transform

    ctx = _context()
    try:
        run_transform(ctx, select=select, echo=_echo)
    except DbtError as exc:
        _fail(str(exc))


def _train_options(func=None, *, tickers: bool = True):
    if func is None:
        return lambda f: _train_options(f, tickers=tickers)
    options = [
        click.option("--epochs", type=int, default=None, help="Maximum epochs (early stopping)."),
        click.option("--window", type=int, default=None, help="Days of features per sample."),
        click.option("--units", type=int, default=None, help="LSTM units per layer."),
        click.option("--layers", type=int, default=None, help="Stacked LSTM layers."),
        click.option("--seed", type=int, default=None, help="Random seed."),
        click.option(
            "--max-train-samples", type=int, default=None, help="Subsample the fit set to this."
        ),
        click.option("--train-years", type=float, default=None, help="Years of history to fit on."),
        click.option(
            "--ignore-tuned",
            is_flag=True,
            help="Start from the built-in defaults, not the latest `stockcast tune` result.",
        ),
    ]
    if tickers:
        options.append(
            click.option("--ticker", "tickers", multiple=True, help="Train on these tickers only.")
        )
    for option in reversed(options):
        func = option(func)
    return func


def _train_config(
    epochs,
    window,
    units,
    layers,
    seed,
    max_train_samples,
    train_years,
    ignore_tuned=False,
    tickers=(),
):
    from dataclasses import replace

    from ml.model import ModelParams
    from ml.train import TrainConfig

    model_overrides = {
        k: v
        for k, v in dict(
            epochs=epochs, window=window, units=units, layers=layers, seed=seed
        ).items()
        if v is not None
    }
    config = TrainConfig(
        params=replace(ModelParams(), **model_overrides), use_tuned=not ignore_tuned
    )
    overrides = {
        k: v
        for k, v in dict(max_train_samples=max_train_samples, train_years=train_years).items()
        if v is not None
    }
    if tickers:
        overrides["tickers"] = tuple(t.upper() for t in tickers)
    return replace(config, **overrides)


FORCE_HELP = "Promote to champion even if the gate refuses (recorded on the run)."


@main.command(
    help="Train the LSTM, log it to MLflow and register it; the promotion gate decides whether "
    "it becomes champion (beats naive and the champion on the same walk-forward folds) or "
    "challenger."
)
@_train_options
@click.option("--force", is_flag=True, help=FORCE_HELP)
def train(force, **options) -> None:
    from ml.train import train as run_train

    ctx = _context()
    try:
        result = run_train(ctx, _train_config(**options), progress=_echo, force=force)
    except (LookupError, ValueError) as exc:
        _fail(str(exc))
    click.echo(result.metrics.round(4).to_string(index=False))
    click.echo(
        f"registered stockcast-lstm v{result.model_version} as {result.gate.alias} "
        f"(run {result.run_id}): {result.gate.reason}"
    )


@main.command(help="Forecast the next 10 trading days for every ticker with the champion model.")
@click.option("--ticker", "tickers", multiple=True, help="Only these tickers.")
def score(tickers: tuple[str, ...]) -> None:
    from ml.score import score as run_score

    ctx = _context()
    try:
        result = run_score(ctx, tickers=list(tickers) or None, progress=_echo)
    except (LookupError, ValueError) as exc:
        _fail(str(exc))
    click.echo(
        f"wrote {result.rows_written} rows to ml.predicted_prices for {result.tickers_scored} "
        f"tickers (model v{result.model_version}, run {result.run_id})"
    )
    if result.tickers_skipped:
        click.echo(f"skipped, too little history: {', '.join(result.tickers_skipped)}")


@main.command(help="Walk-forward backtest of the LSTM beside naive, drift, ETS and peer models.")
@click.option("--folds", type=int, default=4, show_default=True, help="Number of test blocks.")
@click.option("--test-days", type=int, default=21, show_default=True, help="As-of days per fold.")
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Models to compare (default: lstm, naive, drift, ets, peer_lstm).",
)
@click.option("--peer-epochs", type=int, default=5, show_default=True)
@_train_options
def backtest(folds, test_days, models, peer_epochs, **options) -> None:
    from ml.backtest import MODEL_NAMES, BacktestConfig, summary_table
    from ml.backtest import backtest as run_backtest

    train_config = _train_config(**options)
    config = BacktestConfig(
        n_folds=folds,
        test_days=test_days,
        models=tuple(models) or MODEL_NAMES,
        train=train_config,
        peer_epochs=peer_epochs,
        tickers=train_config.tickers,
    )
    ctx = _context()
    try:
        result = run_backtest(ctx, config, progress=_echo)
    except (LookupError, ValueError) as exc:
        _fail(str(exc))
    first, last = result.folds[0].test_start.date(), result.folds[-1].test_end.date()
    click.echo(
        f"\nwalk-forward backtest, {len(result.folds)} folds, as-of {first}..{last}: "
        "relative MAE vs naive by horizon (below 1 beats naive), mean MASE, interval "
        "coverage, mean Diebold-Mariano p-value vs naive"
    )
    click.echo(summary_table(result).round(3).to_string())
    click.echo(f"stored in ml.backtest_metrics and MLflow run {result.run_id}")


@main.command(
    help="Search LSTM settings by walk-forward skill vs naive (Optuna); train uses the best."
)
@click.option("--trials", type=int, default=20, show_default=True, help="Optuna trials.")
@click.option(
    "--folds", type=int, default=3, show_default=True, help="Walk-forward folds per trial."
)
@click.option("--test-days", type=int, default=21, show_default=True, help="As-of days per fold.")
@_train_options
def tune(trials, folds, test_days, **options) -> None:
    from ml.tune import tune as run_tune

    ctx = _context()
    try:
        result = run_tune(
            ctx,
            trials,
            _train_config(**options),
            n_folds=folds,
            test_days=test_days,
            progress=_echo,
        )
    except (LookupError, ValueError) as exc:
        _fail(str(exc))
    click.echo(
        f"best walk-forward relative MAE vs naive: {result.best_score:.4f} "
        f"(below 1 beats naive) with {result.best_params}"
    )
    click.echo(f"stored on MLflow run {result.run_id}; `stockcast train` will start from it")


def _run(
    paths: list[Path] | None,
    ticker: str | None,
    retrain: bool,
    config=None,
    force: bool = False,
) -> None:
    """The main job on ``paths``; without paths, only what follows loading (`refresh`)."""
    from ml.pipeline import refresh, run_pipeline
    from ml.transform import DbtError
    from ml.warehouse import WarehouseError

    ctx = _context()
    try:
        if paths is None:
            report = refresh(ctx, retrain=retrain, train_config=config, say=_echo, force=force)
        else:
            report = run_pipeline(
                ctx,
                paths,
                ticker=ticker,
                retrain=retrain,
                train_config=config,
                say=_echo,
                force=force,
            )
    except (LookupError, ValueError, DbtError, WarehouseError) as exc:
        _fail(str(exc))
    click.echo(
        "stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.stage_seconds.items())
    )
    if not report.ingest_ok:
        _fail("some input files were not loaded (see the ingest summary); the rest ran")


@main.command(help="The main job: ingest -> transform -> train (if no champion) -> score -> marts.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--ticker", help="Ticker for files that carry none.")
@click.option("--retrain", is_flag=True, help="Train a new model even if a champion exists.")
@_train_options(tickers=False)
@click.option("--force", is_flag=True, help=FORCE_HELP)
def run(paths, ticker, retrain, force, **options) -> None:
    _run(list(paths), ticker, retrain, _train_config(**options), force=force)


@main.command(
    help="Everything after loading: dbt build -> train (if no champion) -> score -> marts. "
    "The scheduled job in production, where uploads are loaded by the upload function."
)
@click.option("--retrain", is_flag=True, help="Train a new model even if a champion exists.")
@_train_options(tickers=False)
@click.option("--force", is_flag=True, help=FORCE_HELP)
def refresh(retrain, force, **options) -> None:
    _run(None, None, retrain, _train_config(**options), force=force)


@main.command(
    help="Run the main job offline on real GOOG bars (2004-2013) shipped by `backtesting`."
)
def demo() -> None:
    from ml.pipeline import write_demo_prices

    path = write_demo_prices()
    click.echo(f"demo data: {path} (GOOG daily bars 2004-2013 from the backtesting package)")
    _run([path], None, retrain=False)


@main.command(help="Download daily bars with yfinance (needs a network) and ingest them.")
@click.argument("tickers", nargs=-1, required=True)
@click.option("--start", required=True, type=click.DateTime(["%Y-%m-%d"]), help="First date.")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), help="Last date (default: today).")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for the downloaded CSVs.")
def fetch(tickers, start, end, out) -> None:
    from ml.config import data_dir
    from ml.fetch import FetchError, fetch_prices
    from ml.ingest import ingest_paths

    out = out or data_dir() / "downloads"
    try:
        files = fetch_prices(
            [t.upper() for t in tickers],
            start=start.date(),
            end=end.date() if end else date.today(),
            out_dir=out,
        )
    except FetchError as exc:
        _fail(str(exc))
    report = ingest_paths(_context(), files)
    for line in report.summary_lines():
        click.echo(line)
    if not report.ok:
        _fail("some downloaded files were not loaded")


if __name__ == "__main__":
    main()

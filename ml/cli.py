"""`stockcast`: the command line. Thin: every command calls a stage function.

Heavy imports (TensorFlow, MLflow, pandas) happen inside commands, so `--help` answers at once.

Errors are handled once, by :class:`StockcastGroup`: an expected failure is one line
``error: <what> <fix>`` on stderr with a documented exit code (:data:`EXIT_CODES`); anything
else is one line naming the exception and ``--debug``, which shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from datetime import date
from pathlib import Path
from typing import NoReturn

import click

CONFIG_HELP = """
\b
Configuration (shared with dbt through profiles.yml):
  STOCKCAST_TARGET       dbt target: dev (DuckDB, default) or bigquery
  STOCKCAST_DUCKDB_PATH  DuckDB file (default: <home>/warehouse/stockcast.duckdb)
  STOCKCAST_HOME         local data folder (default: data/ in the repository, from any
                         folder; `dbt build` run in dbt_project/ uses the same)
  MLFLOW_TRACKING_URI    MLflow store (default: sqlite:///<home>/mlflow/mlflow.db)
  STOCKCAST_BQ_PROJECT   BigQuery project (bigquery target); STOCKCAST_BQ_DATASET is the
                         dataset prefix (default: stockcast -> stockcast_raw, ...)

\b
Exit codes: 0 ok, 1 data refused or a stage failed on the data (or an unexpected error),
2 usage (a bad option or argument), 3 configuration or target, 4 warehouse unavailable or busy,
5 `monitor --fail-on-alert` advised a retrain.
"""

EXIT_DATA = 1  # data refused, or a stage failed on the data; also unexpected errors
EXIT_USAGE = 2  # click's usage errors: bad option values, missing arguments
EXIT_CONFIG = 3  # ConfigError: unknown target, missing BigQuery project, missing extra
EXIT_WAREHOUSE = 4  # WarehouseError, DuckDB lock held by another process
EXIT_ALERT = 5  # `monitor --fail-on-alert`: a retrain threshold was crossed
EXIT_CODES = {
    0: "success",
    EXIT_DATA: "data refused or a stage failed on the data; unexpected errors",
    EXIT_USAGE: "usage: an invalid option value, a missing argument or path",
    EXIT_CONFIG: "configuration or target",
    EXIT_WAREHOUSE: "warehouse unavailable or busy",
    EXIT_ALERT: "monitor --fail-on-alert: a retrain threshold was crossed",
}
# `backtest --model` choices; equal to ml.backtest.MODEL_NAMES (a test checks), written out here
# so that --help does not import the backtest's libraries.
# ml.backtest.MODEL_NAMES, then its LSTM_ABLATIONS (importing it here would load pandas).
BACKTEST_MODELS = ("lstm", "naive", "drift", "ets", "peer_lstm", "ewma", "garch")
BACKTEST_ABLATIONS = ("lstm_raw", "lstm_volscale", "lstm_netscale")
# `backtest --regimes`: the names of ml.folds.REGIMES (a test checks), for --help.
REGIME_NAMES = "2008 crisis, 2015-16 selloff, 2017 calm, 2018 Q4, 2020 crash, 2022 bear"
# ml.features.FEATURE_GROUPS (importing it here would load pandas for --help).
FEATURE_GROUP_NAMES = ("base", "volatility", "market", "volume")


def _quiet_libraries() -> None:
    """Keep the terminal for Stockcast's own progress: libraries log at warning level and up."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # 2 still lets TF's C++ ERROR lines through
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow would reset its logger to INFO on import; keep ours.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notes per fold model
    # MLflow's advice to its own developers, printed on stderr when the model class is defined.
    # MLflow shows it under its own "once" filter, which overrides ours: drop it where shown.
    show = warnings.showwarning
    if not getattr(show, "stockcast", False):

        def showwarning(message, *args, **kwargs):
            if "Add type hints to the `predict` method" not in str(message):
                show(message, *args, **kwargs)

        showwarning.stockcast = True
        warnings.showwarning = showwarning


def _echo(message: str) -> None:
    click.echo(message)


class StockcastError(click.ClickException):
    """An expected failure: one ``error:`` line on stderr and a documented exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_DATA):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.secho(f"error: {self.format_message()}", fg="red", err=True)


def _fail(message: str, exit_code: int = EXIT_DATA) -> NoReturn:
    raise StockcastError(message, exit_code)


def _one_line(message: str) -> str:
    """The first line of ``message``; the rest (e.g. dbt's failures) goes to stdout above it."""
    first, *rest = str(message).strip().splitlines() or [""]
    for line in rest:
        click.echo(line)
    return first.strip() + (" (details above)" if any(line.strip() for line in rest) else "")


def _usage_error(exc: click.UsageError) -> StockcastError:
    where = exc.ctx.command_path if exc.ctx is not None else "stockcast"
    return StockcastError(f"{exc.format_message()} See `{where} --help`.", EXIT_USAGE)


def _busy(detail: str) -> str:
    return (
        f"another stockcast command is using the warehouse ({detail}): retry when it has finished"
    )


def _expected_error(exc: Exception, command: str | None) -> StockcastError:
    """The exit code and one-line message for an exception raised by a command."""
    from ml.config import ConfigError
    from ml.transform import DbtError
    from ml.warehouse import WarehouseError, is_lock_conflict

    text = str(exc).strip()
    if isinstance(exc, ConfigError):  # before ValueError: ConfigError is one
        return StockcastError(_one_line(text), EXIT_CONFIG)
    if isinstance(exc, WarehouseError):
        return StockcastError(_one_line(text), EXIT_WAREHOUSE)
    duckdb = sys.modules.get("duckdb")
    if duckdb is not None and isinstance(exc, duckdb.IOException):
        first = text.splitlines()[0] if text else type(exc).__name__
        if is_lock_conflict(text):
            return StockcastError(_busy(first), EXIT_WAREHOUSE)
        return StockcastError(f"cannot open the warehouse: {first}", EXIT_WAREHOUSE)
    if isinstance(exc, DbtError):
        if is_lock_conflict(text):
            _one_line(text)  # dbt's detail, on stdout
            return StockcastError(_busy("dbt could not lock the DuckDB file"), EXIT_WAREHOUSE)
        return StockcastError(_one_line(text), EXIT_DATA)
    fetch = sys.modules.get("ml.fetch")
    if isinstance(exc, (LookupError, ValueError)) or (
        fetch is not None and isinstance(exc, fetch.FetchError)
    ):
        if isinstance(exc, KeyError) and exc.args:
            text = str(exc.args[0])  # str(KeyError) is the repr of its argument
        return StockcastError(_one_line(text), EXIT_DATA)
    first = text.splitlines()[0] if text else ""
    rerun = f"stockcast --debug {command} ..." if command else "stockcast --debug ..."
    return StockcastError(
        f"unexpected {type(exc).__name__}: {first} (rerun as `{rerun}` to see the traceback)",
        EXIT_DATA,
    )


class StockcastGroup(click.Group):
    """Maps every command's errors to one ``error:`` line and an exit code, in one place."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:  # a bad option of the group itself
            raise _usage_error(exc) from exc

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # the command's own options and arguments
            if ctx.params.get("debug"):
                raise
            raise _usage_error(exc) from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            raise _expected_error(exc, ctx.invoked_subcommand) from exc


def _context():
    """The run context for this command, built once: settings, warehouse, MLflow.

    Configuration and warehouse errors are mapped to exit codes by :class:`StockcastGroup`.
    """
    from ml.context import build_context

    return build_context()


def _where(ctx) -> str:
    """Where this context's warehouse keeps the forecasts, for people to read."""
    if ctx.settings.engine == "duckdb":
        return str(Path(ctx.settings.target_config["path"]).resolve())
    return ctx.warehouse.table("ml.predicted_prices")


def _require_prices(ctx) -> None:
    """Refuse to build on a warehouse with no prices (a fresh home): say what to run first."""
    from ml.contracts import DAILY_PRICES

    name = DAILY_PRICES.full_name
    loaded = ctx.warehouse.table_exists(name) and int(
        ctx.warehouse.query_df(f"select count(*) as n from {ctx.warehouse.table(name)}")["n"].iloc[
            0
        ]
    )
    if not loaded:
        where = _where(ctx) if ctx.settings.engine == "duckdb" else ctx.warehouse.table(name)
        _fail(
            f"no prices loaded yet ({name} is empty or missing in {where}): run "
            "`stockcast ingest PATH...` first, or `stockcast run PATH...` for the whole job"
        )


@click.group(
    cls=StockcastGroup,
    help="Stockcast: price files -> warehouse -> indicators -> LSTM forecasts.\n" + CONFIG_HELP,
)
@click.option(
    "--debug",
    is_flag=True,
    envvar="STOCKCAST_DEBUG",
    help="On an error, show the full traceback instead of one `error:` line.",
)
@click.version_option(package_name="stockcast")
def main(debug: bool) -> None:
    _quiet_libraries()


PATHS = click.Path(exists=True, path_type=Path)
POSITIVE = click.IntRange(min=1)
REPLACE_HELP = (
    "A file whose closes disagree with the stored history of a ticker (another vendor, other "
    "split adjustment) is refused with the evidence; with --replace it replaces the rows of "
    "the files it disagrees with, for those tickers."
)


@main.command(help="Load daily price CSVs (.csv/.csv.gz, files or folders) into raw.daily_prices.")
@click.argument("paths", nargs=-1, required=True, type=PATHS)
@click.option("--ticker", help="Ticker for files that carry none (default: from the file name).")
@click.option("--replace", is_flag=True, help=REPLACE_HELP)
def ingest(paths: tuple[Path, ...], ticker: str | None, replace: bool) -> None:
    from ml.ingest import FileParser, ingest_paths

    # The parser first: it parses the first file while the warehouse's libraries are imported.
    with FileParser(paths, ticker=ticker) as files, contextlib.ExitStack() as stack:
        ctx = _context()
        bars = []  # shown from the first file loaded: a warehouse error comes alone

        def progress(done: int, total: int, path) -> None:
            if not bars:
                bar = click.progressbar(length=total, label="ingesting", file=sys.stderr)
                bars.append(stack.enter_context(bar))
            bars[0].update(done - bars[0].pos)

        report = ingest_paths(ctx, files, progress=progress, replace=replace)
    for line in report.summary_lines():
        click.echo(line)
    if not report.ok:
        _fail("some files were not loaded (see above); the others were: fix them and rerun")


@main.command(help="Build the dbt models and run every data and unit test (dbt build).")
@click.option("--select", help="dbt selection, e.g. fct_daily_indicators+")
@click.option("--verbose", "-v", is_flag=True, help="Print every dbt log line.")
def transform(select: str | None, verbose: bool) -> None:
    from ml.transform import transform as run_transform
    from ml.warehouse.preflight import check_warehouse

    ctx = _context()
    check_warehouse(ctx.warehouse)  # a read-only, full or damaged disk: path, cause and fix
    _require_prices(ctx)
    run_transform(ctx, select=select, echo=_echo, verbose=verbose)


def _train_options(func=None, *, tickers: bool = True):
    if func is None:
        return lambda f: _train_options(f, tickers=tickers)
    options = [
        click.option(
            "--epochs", type=POSITIVE, default=None, help="Maximum epochs (early stopping)."
        ),
        click.option(
            "--window",
            type=click.IntRange(min=2),
            default=None,
            help="Days of features per sample.",
        ),
        click.option("--units", type=POSITIVE, default=None, help="LSTM units per layer."),
        click.option("--layers", type=POSITIVE, default=None, help="Stacked LSTM layers."),
        click.option(
            "--seed", type=click.IntRange(0, 2**32 - 1), default=None, help="Random seed."
        ),
        click.option(
            "--max-train-samples",
            type=POSITIVE,
            default=None,
            help="Subsample the fit set to this.",
        ),
        click.option(
            "--train-years",
            type=click.FloatRange(min=0, min_open=True, max=100),
            default=None,
            help="Years of history to fit on (above 0, at most 100).",
        ),
        click.option(
            "--features",
            "feature_groups",
            multiple=True,
            type=click.Choice(FEATURE_GROUP_NAMES),
            help="Input groups on top of the base features, replacing the default volatility, "
            "market and volume (repeatable; `--features base` for the base set alone; see "
            "ml/features.py).",
        ),
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
    feature_groups=(),
    ignore_tuned=False,
    tickers=(),
):
    from dataclasses import replace

    from ml.fitting import TrainConfig
    from ml.model import ModelParams

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
    if feature_groups:
        from ml.features import feature_set

        overrides["features"] = tuple(feature_set(feature_groups))
    return replace(config, **overrides)


FORCE_HELP = "Promote to champion even if the gate refuses (recorded on the run)."


@main.command(
    help="Train the LSTM, log it to MLflow and register it; the promotion gate decides whether "
    "it becomes champion (on the same walk-forward folds: no worse than naive, intervals "
    "better than the naive_ewma baseline's, no worse than the champion) or challenger."
)
@_train_options
@click.option("--force", is_flag=True, help=FORCE_HELP)
def train(force, **options) -> None:
    from ml.promote import promote
    from ml.train import train as run_train

    ctx = _context()
    result = run_train(ctx, _train_config(**options), progress=_echo)
    decision = promote(ctx, result, force=force, progress=_echo)
    click.echo(result.metrics.round(4).to_string(index=False))
    click.echo(
        f"registered stockcast-lstm v{result.model_version} as {decision.alias} "
        f"(run {result.run_id}): {decision.reason}"
    )
    if decision.published == "baseline":
        click.echo(
            "no champion: `stockcast score` publishes the naive_ewma baseline until a model "
            "passes the promotion gate"
        )


@main.command(
    help="Forecast the next 10 trading days for every ticker with the champion model (while no "
    "model has passed the promotion gate: the naive_ewma baseline, naive closes with EWMA "
    "intervals)."
)
@click.option("--ticker", "tickers", multiple=True, help="Only these tickers.")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d"]),
    help="Backfill: forecast as of every trading day from this date (YYYY-MM-DD) with the "
    "champion (or the baseline while there is none), keeping forecasts already published; "
    "those whose target date the champion was fitted on are flagged in-sample and kept out of "
    "the accuracy marts. Publish them with "
    "`stockcast transform --select source:ml.predicted_prices+`.",
)
def score(tickers: tuple[str, ...], since) -> None:
    if since is not None and since.date() > date.today():
        raise click.BadParameter(f"{since.date()} is in the future.", param_hint="'--since'")
    from ml.score import score as run_score
    from ml.warehouse.preflight import check_warehouse

    ctx = _context()
    check_warehouse(ctx.warehouse, write=True)  # a read-only, full or damaged disk first
    _require_prices(ctx)  # a fresh home: say what to run first, before MLflow loads
    result = run_score(
        ctx,
        tickers=list(tickers) or None,
        progress=_echo,
        since=since.date() if since else None,
    )
    if result.baseline:
        click.echo(
            f"no model has passed the promotion gate: published the {result.model_name} "
            f"baseline for {result.tickers_scored} tickers ({result.rows_written} rows in "
            "ml.predicted_prices; `stockcast train` trains and gates a model)"
        )
    else:
        click.echo(
            f"wrote {result.rows_written} rows to ml.predicted_prices for "
            f"{result.tickers_scored} tickers (model v{result.model_version}, run {result.run_id})"
        )
    if result.tickers_skipped:
        click.echo(f"skipped, too little history: {', '.join(result.tickers_skipped)}")


@main.command(
    help="Check the latest forecasts: input and forecast drift against the champion's training "
    "reference (Evidently; HTML report in <home>/monitoring and on an MLflow run, scores in "
    "ml.drift_scores) and realized accuracy (rolling relative MAE vs naive, interval coverage); "
    "say whether a retrain is advised (thresholds: STOCKCAST_MONITOR_* variables, see the "
    "README). Exit 0 either way unless --fail-on-alert."
)
@click.option(
    "--fail-on-alert",
    is_flag=True,
    help=f"Exit {EXIT_ALERT} when a threshold is crossed (for schedulers and CI).",
)
@click.option(
    "--retrain",
    is_flag=True,
    help="When a threshold is crossed, train a new model (default settings) and let the "
    "promotion gate decide whether it replaces the champion.",
)
@click.option("--no-publish", is_flag=True, help="Do not rebuild the fct_feature_drift mart (dbt).")
def monitor(fail_on_alert: bool, retrain: bool, no_publish: bool) -> None:
    from ml.monitor import monitor as run_monitor
    from ml.monitor import retrain_if_needed

    ctx = _context()
    report = run_monitor(ctx, progress=_echo, publish=not no_publish)
    for line in report.lines():
        click.echo(line)
    if report.status != "monitored":
        return
    if retrain and report.retrain_advised:

        def train_and_promote():
            from ml.promote import promote
            from ml.train import train as run_train

            return promote(ctx, run_train(ctx, progress=_echo), progress=_echo)

        decision = retrain_if_needed(ctx, report, retrain=train_and_promote, progress=_echo)
        click.echo(f"retrained: gate {decision.result.alias}: {decision.result.reason}")
    elif report.retrain_advised:
        click.echo("`stockcast monitor --retrain` (or `stockcast train`) retrains")
    if fail_on_alert and report.retrain_advised:
        _fail(
            f"{len(report.retrain_reasons)} monitoring threshold(s) crossed (see above); "
            "retrain with `stockcast train` or raise the STOCKCAST_MONITOR_* thresholds",
            EXIT_ALERT,
        )


@main.command(
    help="Show the champion (the MLflow alias `champion` of model stockcast-lstm) and the "
    "registered versions, or move it by hand with --set VERSION: a rollback to an earlier "
    "version (or forward again), without the promotion gate. Who, why, when and the version "
    "before are recorded as tags on the version (champion_set_by, champion_set_reason, "
    "champion_set_at, champion_previous). Publish with it: `stockcast score`."
)
@click.option(
    "--set",
    "version",
    type=POSITIVE,
    help="Make this registered version the champion.",
)
@click.option(
    "--reason",
    help="Why (recorded with --set) [default: manual rollback].",
)
def champion(version: int | None, reason: str | None) -> None:
    if reason is not None and version is None:
        raise click.BadParameter("needs --set VERSION.", param_hint="'--reason'")
    import getpass
    import socket

    from ml import registry
    from ml.config import load_settings

    settings = load_settings()
    registry.configure(settings)
    where = settings.mlflow_tracking_uri
    if version is None:
        current = registry.champion_version()
        versions = registry.model_versions()
        if not versions:
            click.echo(f"no version of stockcast-lstm is registered in {where}")
            return
        click.echo(
            f"champion: v{current}" if current else "champion: none (the baseline is published)"
        )
        for v in versions:
            aliases = ",".join(v.aliases) if v.aliases else "-"
            set_by = (v.tags or {}).get("champion_set_by")
            extra = f", champion set by {set_by}" if set_by else ""
            click.echo(f"  v{v.version}  {v.status}  aliases: {aliases}  run {v.run_id}{extra}")
        return
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    change = registry.set_champion(str(version), reason or "manual rollback", who)
    before = f"v{change.previous}" if change.previous else "none"
    click.echo(
        f"champion of stockcast-lstm: {before} -> v{change.current} (set by {who}: "
        f"{reason or 'manual rollback'}; in {where})"
    )
    click.echo("`stockcast score` publishes forecasts with it")


@main.command(
    help="Walk-forward backtest of the LSTM beside naive, drift, ETS and peer models: the last "
    "--folds blocks of --test-days as-of dates, blocks placed from --start and/or ending by "
    "--end, or one block (--folds per regime) at the start of each named market regime "
    "(--regimes); a table per regime when the folds test one."
)
@click.option(
    "--folds",
    type=POSITIVE,
    default=None,
    help="Number of test blocks [default: 4; with --start and --end: as many as fit between "
    "them; with --regimes: blocks per regime, 1].",
)
@click.option(
    "--test-days", type=POSITIVE, default=21, show_default=True, help="As-of days per fold."
)
@click.option(
    "--start",
    type=click.DateTime(["%Y-%m-%d"]),
    help="First fold starts at the first trading date on or after this date (YYYY-MM-DD).",
)
@click.option(
    "--end",
    type=click.DateTime(["%Y-%m-%d"]),
    help="Last fold ends at the last as-of date on or before this date whose 10-day actuals "
    "are known (YYYY-MM-DD).",
)
@click.option(
    "--regimes",
    is_flag=True,
    help=f"One fold from the start of each named regime the data reaches ({REGIME_NAMES}); "
    "the others are listed as skipped.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Choice(BACKTEST_MODELS + BACKTEST_ABLATIONS),
    help="Models to compare (default: all but the lstm_raw, lstm_volscale and lstm_netscale ablations).",
)
@click.option(
    "--peer-epochs", type=POSITIVE, default=5, show_default=True, help="Epochs of peer_lstm."
)
@_train_options
def backtest(folds, test_days, start, end, regimes, models, peer_epochs, **options) -> None:
    if regimes and (start or end):
        raise click.BadParameter(
            f"cannot be combined with {'--start' if start else '--end'}: the regimes place "
            "the folds.",
            param_hint="'--regimes'",
        )
    if start and end and end < start:
        raise click.BadParameter(
            f"{end.date()} is before --start {start.date()}.", param_hint="'--end'"
        )
    from ml.backtest import MODEL_NAMES, BacktestConfig, regime_table, summary_table
    from ml.backtest import backtest as run_backtest

    train_config = _train_config(**options)
    config = BacktestConfig(
        n_folds=(None if start and end else 4) if folds is None else folds,
        test_days=test_days,
        start=str(start.date()) if start else None,
        end=str(end.date()) if end else None,
        regimes=regimes,
        folds_per_regime=folds or 1,
        models=tuple(models) or MODEL_NAMES,
        train=train_config,
        peer_epochs=peer_epochs,
        tickers=train_config.tickers,
    )
    ctx = _context()
    result = run_backtest(ctx, config, progress=_echo)
    first, last = result.folds[0].test_start.date(), result.folds[-1].test_end.date()
    click.echo(
        f"\nwalk-forward backtest, {len(result.folds)} folds, as-of {first}..{last}: "
        "relative MAE vs naive by horizon (below 1 beats naive), mean MASE, interval "
        "coverage, mean Diebold-Mariano p-value vs naive"
    )
    click.echo(summary_table(result).round(3).to_string())
    by_regime = regime_table(result)
    if len(by_regime):
        click.echo(
            "\nby regime (folds outside every named regime pooled as 'other'): relative MAE vs "
            "naive, interval coverage and Winkler score (% of the close) at 80/95%, means over "
            "horizons"
        )
        shown = by_regime.drop(columns=["n_forecasts"]).set_index(["regime", "model"])
        click.echo(shown.round(3).to_string())
    click.echo(f"stored in ml.backtest_metrics and MLflow run {result.run_id}")


@main.command(
    help="Search LSTM settings by the walk-forward pinball loss of the published forecast over "
    "the EWMA baseline's (Optuna); train uses the best.",
)
@click.option("--trials", type=POSITIVE, default=20, show_default=True, help="Optuna trials.")
@click.option(
    "--folds", type=POSITIVE, default=3, show_default=True, help="Walk-forward folds per trial."
)
@click.option(
    "--test-days", type=POSITIVE, default=21, show_default=True, help="As-of days per fold."
)
@_train_options
def tune(trials, folds, test_days, **options) -> None:
    from ml.tune import tune as run_tune

    ctx = _context()
    result = run_tune(
        ctx, trials, _train_config(**options), n_folds=folds, test_days=test_days, progress=_echo
    )
    click.echo(
        f"best walk-forward pinball loss vs the EWMA baseline: {result.best_score:.4f} "
        f"(below 1 beats it) with {result.best_params}"
    )
    click.echo(f"stored on MLflow run {result.run_id}; `stockcast train` will start from it")


def _run(
    paths: list[Path] | None,
    ticker: str | None,
    retrain: bool,
    config=None,
    force: bool = False,
    replace: bool = False,
) -> None:
    """The main job on ``paths``; without paths, only what follows loading (`refresh`)."""
    from ml.pipeline import refresh, run_pipeline

    ctx = _context()
    if paths is None:
        _require_prices(ctx)
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
            replace=replace,
        )
    click.echo(
        "stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.stage_seconds.items())
    )
    if paths is not None:
        _show_forecasts(ctx)
    if not report.ingest_ok:
        _fail("some input files were not loaded (see the ingest summary); the rest ran")


PREVIEW_COLUMNS = "ticker, as_of_date, horizon, target_date, predicted_close, lower_80, upper_80"


def _show_forecasts(ctx) -> None:
    """Where the forecasts are, the first rows of the latest ones, and a query to paste."""
    table = ctx.warehouse.table("ml.predicted_prices")
    columns = "ticker, target_date, predicted_close, lower_80, upper_80"
    latest = (
        f"select {', '.join('p.' + c for c in PREVIEW_COLUMNS.split(', '))} from {table} p join "
        f"(select ticker, max(as_of_date) as as_of_date from {table} group by ticker) l "
        "on p.ticker = l.ticker and p.as_of_date = l.as_of_date order by p.ticker, p.horizon"
    )
    if ctx.settings.engine == "duckdb":
        path = _where(ctx)
        click.echo(f"\nforecasts: table ml.predicted_prices in the DuckDB file {path}")
        example = (
            f'duckdb {path} "select {columns} from ml.predicted_prices '
            'order by ticker, as_of_date desc, horizon limit 20"'
        )
    else:
        click.echo(f"\nforecasts: BigQuery table {table}")
        example = (
            f"bq query --use_legacy_sql=false 'select {columns} from {table} "
            "order by ticker, as_of_date desc, horizon limit 20'"
        )
    try:
        preview = ctx.warehouse.query_df(latest + " limit 5")
    except Exception as exc:  # the job succeeded: a failed preview must not fail it
        click.echo(f"(no preview: {type(exc).__name__}: {str(exc).splitlines()[0]})")
    else:
        click.echo(preview.round(2).to_string(index=False))
    click.echo(f"query them: {example}")
    click.echo(f"models and runs: MLflow at {ctx.settings.mlflow_tracking_uri}")


@main.command(
    help="The main job: ingest -> transform -> train + promote (if no champion or new "
    "tickers) -> score -> marts."
)
@click.argument("paths", nargs=-1, required=True, type=PATHS)
@click.option("--ticker", help="Ticker for files that carry none.")
@click.option("--replace", is_flag=True, help=REPLACE_HELP)
@click.option("--retrain", is_flag=True, help="Train a new model even if a champion exists.")
@_train_options(tickers=False)
@click.option("--force", is_flag=True, help=FORCE_HELP)
def run(paths, ticker, replace, retrain, force, **options) -> None:
    _run(list(paths), ticker, retrain, _train_config(**options), force=force, replace=replace)


@main.command(
    help="Everything after loading: dbt build -> train + promote (if no champion or new "
    "tickers) -> score -> marts. The scheduled job in production, where uploads are loaded by the upload function."
)
@click.option("--retrain", is_flag=True, help="Train a new model even if a champion exists.")
@_train_options(tickers=False)
@click.option("--force", is_flag=True, help=FORCE_HELP)
def refresh(retrain, force, **options) -> None:
    _run(None, None, retrain, _train_config(**options), force=force)


def _use_demo_home() -> Path:
    """Point this process (and the ones it starts) at the demo's home.

    The demo keeps to a home of its own (DuckDB warehouse and MLflow store under
    <STOCKCAST_HOME>/demo), so its GOOG rows and GOOG-only model never mix with the user's.
    """
    from ml.config import data_dir

    home = data_dir() / "demo"
    os.environ["STOCKCAST_HOME"] = str(home)
    os.environ["STOCKCAST_TARGET"] = "dev"
    for name in ("STOCKCAST_DUCKDB_PATH", "MLFLOW_TRACKING_URI", "STOCKCAST_MLFLOW_ARTIFACTS"):
        os.environ.pop(name, None)
    return home


@main.command(
    help="Run the main job offline on real GOOG bars (2004-2013) shipped by `backtesting`."
)
def demo() -> None:
    from ml.pipeline import write_demo_prices

    home = _use_demo_home()
    path = write_demo_prices(home / "input")
    click.echo(f"demo data: {path} (GOOG daily bars 2004-2013 from the backtesting package)")
    _run([path], None, retrain=False)
    _demo_history()
    click.echo("see it: make dashboard DEMO=1 (= stockcast dashboard --demo)")


# What the demo adds so that the dashboard means something on day one: a walk-forward
# backtest beside naive and the EWMA baseline, and the published model's forecasts backfilled
# over the last months, so realized accuracy can be shown at once.
DEMO_BACKTEST_FOLDS = 2
DEMO_BACKFILL_SESSIONS = 126


def _demo_history() -> None:
    from ml.backtest import BacktestConfig
    from ml.backtest import backtest as run_backtest
    from ml.fitting import TrainConfig
    from ml.score import score
    from ml.transform import transform

    ctx = _context()
    click.echo("== backtest (walk-forward, for the dashboard's model page)")
    config = BacktestConfig(
        n_folds=DEMO_BACKTEST_FOLDS, models=("lstm", "naive", "ewma"), train=TrainConfig()
    )
    result = run_backtest(ctx, config, progress=_echo)
    click.echo(f"stored in ml.backtest_metrics and MLflow run {result.run_id}")
    sessions = ctx.warehouse.query_df(
        f"select distinct trade_date from {ctx.warehouse.table('raw.daily_prices')} "
        f"order by trade_date desc limit {DEMO_BACKFILL_SESSIONS}"
    )
    since = _as_date(sessions["trade_date"].min())
    click.echo(f"== backfill forecasts since {since} (realized accuracy on day one)")
    try:
        backfilled = score(ctx, progress=_echo, since=since)
        click.echo(f"wrote {backfilled.rows_written} backfilled forecasts")
    except ValueError as exc:  # a rerun: everything since then is published already
        click.echo(str(exc))
    click.echo("== publish forecast and backtest marts (dbt build)")
    transform(
        ctx,
        select="source:ml.predicted_prices+ source:ml.backtest_metrics+ "
        "source:ml.backtest_forecasts+",
        echo=_echo,
    )


def _as_date(value) -> date:
    import pandas as pd

    return pd.Timestamp(value).date()


@main.command(help="Download daily bars with yfinance (needs a network) and ingest them.")
@click.argument("tickers", nargs=-1, required=True)
@click.option("--start", required=True, type=click.DateTime(["%Y-%m-%d"]), help="First date.")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), help="Last date (default: today).")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for the downloaded CSVs.")
@click.option("--replace", is_flag=True, help=REPLACE_HELP)
def fetch(tickers, start, end, out, replace) -> None:
    from ml.config import data_dir
    from ml.fetch import fetch_prices
    from ml.ingest import ingest_paths

    end = end.date() if end else date.today()
    if end < start.date():
        raise click.BadParameter(f"{end} is before --start {start.date()}.", param_hint="'--end'")
    out = out or data_dir() / "downloads"
    files = fetch_prices([t.upper() for t in tickers], start=start.date(), end=end, out_dir=out)
    report = ingest_paths(_context(), files, replace=replace)
    for line in report.summary_lines():
        click.echo(line)
    if not report.ok:
        _fail("some downloaded files were not loaded")


@main.command(
    help="Serve the daily and retrain flows (Prefect) on their schedules until Ctrl-C: daily at "
    "17:30 New York time on NYSE trading days (holidays are skipped), retrain on Saturdays at "
    "06:00. Against PREFECT_API_URL if set, else a local Prefect server started for as long as "
    "it serves."
)
@click.option(
    "--landing",
    type=click.Path(path_type=Path),
    help="Landing folder the daily flow loads first (as `stockcast watch` does).",
)
def serve(landing: Path | None) -> None:
    from ml.landing import landing_problem

    if landing is not None:
        landing = landing.expanduser().resolve()
        problem = landing_problem(landing)
        if problem:
            raise click.BadParameter(problem + ".", param_hint="'--landing'")
    from ml.flows import serve_flows

    serve_flows(landing, say=_echo)


def _port_problem(port: int) -> str | None:
    """Why the dashboard cannot listen on ``port`` of the loopback interface, or None."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the server binds: a port left in TIME_WAIT by a stopped server is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            return f"port {port} on 127.0.0.1 is not free ({exc.strerror})"
    return None


@main.command(
    help="Serve the dashboard on http://127.0.0.1:PORT (Streamlit): an overview of every ticker, "
    "a ticker page (candlesticks, indicators, the forecast with its 80%/95% bands, past "
    "forecasts) and the model page (champion, backtest skill, coverage, realized accuracy). It "
    "reads the published marts of the configured target read-only. Ctrl-C stops."
)
@click.option(
    "--port",
    type=click.IntRange(1024, 65535),
    default=8501,
    show_default=True,
    help="Port on 127.0.0.1.",
)
@click.option(
    "--demo",
    is_flag=True,
    help="Show what `stockcast demo` (`make demo`) built, in its own home (<home>/demo).",
)
def dashboard(port: int, demo: bool) -> None:
    import importlib.util

    from ml.config import ConfigError

    if importlib.util.find_spec("streamlit") is None:
        raise ConfigError(
            "the dashboard needs Streamlit and Plotly: install the extra with "
            "`uv sync --extra dashboard` (or `make install`)"
        )
    problem = _port_problem(port)
    if problem:
        _fail(f"{problem}: pick another with --port", EXIT_USAGE)
    if demo:
        _use_demo_home()
    ctx = _context()  # a configuration error is one line here, not a page in the browser
    from ml.dashboard import APP_SCRIPT

    where = _where(ctx) if ctx.settings.engine == "duckdb" else f"BigQuery ({ctx.settings.target})"
    click.echo(f"dashboard: http://127.0.0.1:{port} (reading the marts of {where}; Ctrl-C stops)")
    if ctx.settings.engine == "duckdb" and not Path(where).exists():
        click.echo(
            f"no warehouse at {where} yet: the pages stay empty until "
            + (
                "`stockcast demo` (`make demo`) has run"
                if demo
                else "`stockcast run PATH...` has run (after `make demo`: `stockcast dashboard "
                "--demo`)"
            )
        )
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT),
        "--server.address", "127.0.0.1", "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none", "--global.developmentMode", "false",
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip
    sys.stdout.flush()
    # Streamlit takes this process over: a signal to it (Ctrl-C, a service manager's TERM)
    # stops the server, and no child is left behind.
    os.execv(sys.executable, command)


@main.command(
    help="Load price files dropped into DIR with the daily flow (Prefect; no server needed): "
    "loaded files move to DIR/processed/, refused ones to DIR/quarantine/ with a "
    "<name>.reason.txt; a file is read once its size has stopped changing, and the same content "
    "is never loaded twice. "
    "Ctrl-C stops."
)
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--once", is_flag=True, help="Process what is in DIR now, then exit (for cron).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds between looks at DIR.",
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Seconds a file's size must stay unchanged before it is read.",
)
def watch(directory: Path, once: bool, interval: float, settle: float) -> None:
    import time

    from ml.landing import LandingBusyError, LandingFolder, landing_problem

    directory = directory.expanduser().resolve()
    problem = landing_problem(directory)
    if problem:
        raise click.BadParameter(problem + ".", param_hint="'DIR'")
    folder = LandingFolder(directory, settle)
    if once and not folder.candidates():
        click.echo(f"no new files in {directory}: nothing to do")
        return
    from ml.flows import daily

    if not once:
        click.echo(f"watching {directory} every {interval:g} s (Ctrl-C stops)")
    refused = 0
    running = False
    try:
        while True:
            if folder.candidates():
                running = True
                try:
                    report = daily(landing=str(directory), settle_seconds=settle, say=_echo)
                except LandingBusyError as exc:
                    click.echo(f"skipped this look: {exc}")
                except Exception as exc:
                    if once:
                        raise
                    # A failed run must not end the watch: say why, look again later.
                    error = _expected_error(exc, "watch")
                    click.secho(f"error: {error.format_message()}", fg="red", err=True)
                else:
                    refused += len(report.quarantined)
                running = False
            if once:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo(
            f"stopped watching {directory}"
            + (
                " (the run under way was interrupted: the files it loaded are filed; the next "
                "daily run, for a new file or on `stockcast serve`'s schedule, builds, scores "
                "and publishes what it left)"
                if running
                else ""
            )
        )
        return
    if refused:
        _fail(
            f"{refused} file{'s were' if refused > 1 else ' was'} refused and moved to "
            f"{folder.quarantine} (the reason is in <name>.reason.txt beside each); the others "
            "were loaded"
        )


if __name__ == "__main__":
    main()

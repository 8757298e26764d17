"""Prefect flows over the stages: ``daily`` and ``retrain``. Thin: the stages stay plain
functions (:mod:`ml.ingest`, :mod:`ml.transform`, :mod:`ml.score`, ...); the flows only arrange
them, retry what may pass, and report.

``daily``: (NYSE trading day?) -> load the landing folder's files -> dbt build -> score ->
publish the forecast marts (dbt build and test of ``ml.predicted_prices`` and what reads it).
With nothing new loaded and forecasts newer than the last load, it stops after the load and
says so. ``retrain``: (tune) -> train -> (backtest) -> promotion gate -> and, when the gate made
a new champion, score and publish with it. :func:`run_retrain` starts it from other code (a
monitor step in ``daily``, a subflow then).

Retries: a task is retried (three times, backoff ``STOCKCAST_RETRY_DELAY_SECONDS`` x 1, 3, 9,
default 10 s) only when :func:`is_transient` says the failure may pass: the warehouse busy
(another writer past the bounded wait, dbt meeting DuckDB's lock), a network error or a
server-side/throttling answer from MLflow or BigQuery. A refused file, invalid data, a failed
dbt test or a bug fail at once, with the cause as the failed state's message.

Nothing half-done is published: forecasts are replaced in one transaction
(:meth:`ml.warehouse.Warehouse.replace_predictions`), so a failed score leaves the previous
ones; the marts are rebuilt only after a score succeeded.

No server is needed: without ``PREFECT_API_URL`` Prefect starts a temporary one for the
process; with it, runs are recorded on that server. :func:`serve_flows` (``stockcast serve``)
puts both flows on cron schedules; schedules need a server's scheduler, so without
``PREFECT_API_URL`` it starts a local ``prefect server`` for as long as it serves.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Before Prefect is imported (it reads its settings then). Prefect's own console lines (run
# names, state changes, a failed task's traceback) would bury the one-line-per-stage progress:
# its console shows critical messages only; the runs' logs still reach the server in full.
# The temporary server takes 20-60 s to start on a busy two-core machine, above Prefect's 20 s.
# TensorFlow and MLflow as quiet as the CLI keeps them (served runs do not go through the CLI).
for _name, _value in {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_CONFIGURE_LOGGING": "false",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}.items():
    os.environ.setdefault(_name, _value)

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

if TYPE_CHECKING:
    from ml.context import RunContext
    from ml.gate import GateDecision
    from ml.ingest import IngestReport
    from ml.score import ScoreResult

EXCHANGE_TZ = "America/New_York"
# After the NYSE close (16:00) and the vendors' end-of-day files; the flow skips holidays.
DAILY_CRON = "30 17 * * 1-5"
RETRAIN_CRON = "0 6 * * 6"  # Saturday morning: a quiet warehouse, results before Monday
DAILY_DEPLOYMENT = "stockcast-daily"
RETRAIN_DEPLOYMENT = "stockcast-weekly-retrain"
RETRIES = 3
LOCAL_SERVER_PORT = 4200  # Prefect's usual port: its UI is where people expect it


def retry_delays() -> list[float]:
    base = float(os.environ.get("STOCKCAST_RETRY_DELAY_SECONDS", "10"))
    return [base, base * 3, base * 9]


Say = Callable[[str], None]


def echo(message: str) -> None:
    """Progress: one line on stdout, and in the run's log on the Prefect server."""
    print(message, flush=True)
    with contextlib.suppress(Exception):  # outside a run there is no run logger
        get_run_logger().info(message)


# -- what is worth a retry --------------------------------------------------------------------
class RetryableFilesError(RuntimeError):
    """Files failed for reasons that are not their own (warehouse unreachable, ...)."""


def is_transient(exc: BaseException) -> bool:
    """Whether a failure may pass if the task is tried again a little later.

    Yes: the warehouse busy, a lost connection, a timeout, a server error (5xx) or throttling
    (429) from MLflow or BigQuery. No: a refused file, invalid data or settings, a failed dbt
    test, a full or read-only disk, a bug. The cause chain is followed: MLflow and BigQuery
    wrap the network error that stopped them.
    """
    from ml.config import ConfigError
    from ml.ingest import IngestFileError
    from ml.transform import DbtError
    from ml.warehouse import WarehouseBusyError, is_lock_conflict
    from ml.warehouse.preflight import StorageError

    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, (IngestFileError, ConfigError, StorageError)):
            return False
        if isinstance(exc, (WarehouseBusyError, RetryableFilesError)):
            return True
        if isinstance(exc, DbtError):
            return is_lock_conflict(str(exc))
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        duckdb = sys.modules.get("duckdb")
        if duckdb is not None and isinstance(exc, duckdb.IOException):
            return is_lock_conflict(str(exc))
        if _network_error(exc) or _retryable_status(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _network_error(exc: BaseException) -> bool:
    requests = sys.modules.get("requests")
    httpx = sys.modules.get("httpx")
    return (
        (requests is not None and isinstance(exc, requests.exceptions.ConnectionError))
        or (requests is not None and isinstance(exc, requests.exceptions.Timeout))
        or (httpx is not None and isinstance(exc, httpx.TransportError))
    )


# Answers that say "later": throttled, or the server (or a proxy before it) briefly unable.
GOOGLE_RETRYABLE = {429, 500, 502, 503, 504}  # google.api_core's advice for idempotent calls
# Not 500: MLflow gives INTERNAL_ERROR (500) to its own local errors too, bugs included.
MLFLOW_RETRYABLE = {429, 502, 503, 504}


def _retryable_status(exc: BaseException) -> bool:
    """A throttling or server-side answer from BigQuery (google.api_core) or MLflow."""
    code = getattr(exc, "code", None)  # google.api_core.exceptions.GoogleAPICallError
    if isinstance(code, int) and type(exc).__module__.startswith("google."):
        return code in GOOGLE_RETRYABLE
    status = getattr(exc, "get_http_status_code", None)  # mlflow.exceptions.MlflowException
    if callable(status):
        try:
            return status() in MLFLOW_RETRYABLE
        except Exception:
            return False
    return False


def _retry_if_transient(task, task_run, state) -> bool:
    """Prefect's retry condition: retry transient failures only, and say so (a waiting flow
    shows as waiting, not as failed)."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as raised:
            exc = raised
    if exc is None or not is_transient(exc):
        return False
    attempt = task_run.run_count
    if attempt <= RETRIES:
        delay = retry_delays()[min(attempt, RETRIES) - 1]
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        echo(f"{task.name}: {first} -- waiting ~{delay:g} s, then retry {attempt}/{RETRIES}")
    return True


def _task(name: str):
    return task(
        name=name,
        retries=RETRIES,
        retry_delay_seconds=retry_delays(),
        retry_jitter_factor=0.2,
        retry_condition_fn=_retry_if_transient,
        # Tasks take the run context (a warehouse, MLflow settings): nothing to hash or store.
        cache_policy=NO_CACHE,
        persist_result=False,
    )


# -- tasks: each calls one stage ----------------------------------------------------------------
@_task("ingest")
def ingest_task(ctx: RunContext, paths: list[Path], say: Say) -> IngestReport:
    from ml.ingest import ingest_paths

    with ctx.warehouse.writing("stockcast daily flow: ingest", on_wait=say):
        report = ingest_paths(ctx, paths)
    retryable = [f for f in report.files if f.retryable]
    if retryable:
        # Loading is idempotent: the whole task runs again, files already loaded change nothing.
        raise RetryableFilesError(
            f"{len(retryable)} of {len(report.files)} files could not be loaded for a reason "
            f"that is not theirs: {retryable[0].error}"
        )
    return report


@_task("transform")
def transform_task(ctx: RunContext, say: Say) -> None:
    from ml.transform import transform

    with ctx.warehouse.writing("stockcast daily flow: dbt build", on_wait=say):
        transform(ctx, echo=say)


@_task("score")
def score_task(ctx: RunContext, say: Say) -> ScoreResult:
    from ml.score import score

    with ctx.warehouse.writing("stockcast flow: score", on_wait=say):
        return score(ctx, progress=say)


@_task("publish")
def publish_task(ctx: RunContext, say: Say) -> None:
    from ml.pipeline import FORECAST_MARTS
    from ml.transform import transform

    with ctx.warehouse.writing("stockcast flow: publish marts", on_wait=say):
        transform(ctx, select=FORECAST_MARTS, echo=say)


@_task("monitor")
def monitor_task(ctx: RunContext, say: Say):
    from ml.monitor import monitor

    with ctx.warehouse.writing("stockcast daily flow: monitor", on_wait=say):
        return monitor(ctx, progress=say)


@_task("tune")
def tune_task(ctx: RunContext, trials: int, config, say: Say):
    from ml.tune import tune

    return tune(ctx, trials, config, progress=say)


@_task("train")
def train_task(ctx: RunContext, config, say: Say):
    from ml.train import train

    return train(ctx, config, progress=say)


@_task("backtest")
def backtest_task(ctx: RunContext, config, say: Say):
    from ml.backtest import backtest

    return backtest(ctx, config, progress=say)


@_task("promote")
def promote_task(ctx: RunContext, candidate, force: bool, say: Say) -> GateDecision:
    from ml.promote import promote

    return promote(ctx, candidate, force=force, progress=say)


# -- the daily flow -------------------------------------------------------------------------------
@dataclass
class DailyReport:
    day: date | None = None
    skipped: str | None = None  # why nothing ran (not a trading day, nothing new, ...)
    ingest: IngestReport | None = None
    loaded: list[str] = field(default_factory=list)  # file names
    quarantined: dict[str, str] = field(default_factory=dict)  # file name -> reason
    repeats: list[str] = field(default_factory=list)  # content loaded before: not loaded again
    still_writing: list[str] = field(default_factory=list)
    scored: ScoreResult | None = None
    monitor: Any = None  # ml.monitor.MonitorReport
    retrain: Any = None  # RetrainReport, when the monitor crossed a threshold
    stage_seconds: dict[str, float] = field(default_factory=dict)


def new_york_today() -> date:
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo(EXCHANGE_TZ)).date()


def closed_reason(day: date) -> str | None:
    """Why the NYSE does not trade on ``day`` (a weekend, a holiday), or None if it does."""
    import exchange_calendars as xc
    import pandas as pd

    if day.weekday() >= 5:
        return f"{day:%A}"
    start, end = pd.Timestamp(day) - pd.Timedelta(days=7), pd.Timestamp(day) + pd.Timedelta(days=7)
    calendar = xc.get_calendar("XNYS", start=str(start.date()), end=str(end.date()))
    if calendar.is_session(pd.Timestamp(day)):
        return None
    return "an NYSE holiday"


# The mart the forecasts are published in; it carries each forecast's scored_at.
FORECAST_MART = "marts.fct_forecasts_vs_actuals"
CURRENT, UNPUBLISHED, STALE = "current", "unpublished", "stale"


def forecast_freshness(ctx: RunContext) -> str:
    """:data:`CURRENT`: scored after the last file was loaded, and published; :data:`UNPUBLISHED`:
    scored after it, but the marts hold older forecasts (a run stopped before publishing);
    :data:`STALE`: files were loaded after the last scoring (or nothing was scored yet)."""
    import pandas as pd

    from ml.contracts import INGESTED_FILES, PREDICTED_PRICES

    wh = ctx.warehouse
    if not (
        wh.table_exists(INGESTED_FILES.full_name) and wh.table_exists(PREDICTED_PRICES.full_name)
    ):
        return STALE
    published = (
        f"(select max(scored_at) from {wh.table(FORECAST_MART)})"
        if wh.table_exists(FORECAST_MART)
        else "cast(null as timestamp)"
    )
    times = wh.query_df(
        f"select (select max(ingested_at) from {wh.table(INGESTED_FILES.full_name)}) as loaded, "
        f"(select max(scored_at) from {wh.table(PREDICTED_PRICES.full_name)}) as scored, "
        f"{published} as published"
    ).iloc[0]
    loaded, scored, published = times["loaded"], times["scored"], times["published"]
    if pd.isna(loaded) or pd.isna(scored) or scored < loaded:
        return STALE
    return CURRENT if pd.notna(published) and published >= scored else UNPUBLISHED


def _has_prices(ctx: RunContext) -> bool:
    from ml.contracts import DAILY_PRICES

    wh = ctx.warehouse
    name = DAILY_PRICES.full_name
    return wh.table_exists(name) and bool(
        wh.query_df(f"select count(*) as n from {wh.table(name)}")["n"].iloc[0]
    )


@contextlib.contextmanager
def _stage(report, name: str, say: Say, title: str | None = None) -> Iterator[None]:
    say(f"== {title or name}")
    started = time.perf_counter()
    yield
    report.stage_seconds[name] = time.perf_counter() - started


@flow(name="daily", validate_parameters=False)
def daily(
    landing: str | None = None,
    paths: list[str] | None = None,
    trading_days_only: bool = False,
    settle_seconds: float | None = None,
    today: date | None = None,
    ctx: RunContext | None = None,
    say: Say | None = None,
    monitor: bool = True,
    retrain_on_alert: bool = True,
    retrain_options: dict | None = None,
) -> DailyReport:
    """Load new files (from the ``landing`` folder and/or ``paths``), then dbt build -> score ->
    publish the forecast marts -> monitor (drift and realized accuracy, :mod:`ml.monitor`);
    a crossed threshold starts the retrain flow (``retrain_on_alert``), whose promotion gate
    decides, and the decision is recorded on the monitor's MLflow run.

    ``trading_days_only`` (the schedule's): on a weekend or NYSE holiday (``today``, default the
    date in New York) nothing runs. ``ctx`` is built here when not given, once for the run.
    ``retrain_options`` go to :func:`retrain` (``tune_trials``, ``train_config``, ...).
    """
    say = say or echo
    report = DailyReport(day=today or new_york_today())
    if trading_days_only:
        closed = closed_reason(report.day)
        if closed:
            report.skipped = f"{report.day} is {closed}: the NYSE is closed, nothing to do"
            say(f"daily: {report.skipped}")
            return report

    from ml.context import build_context

    ctx = ctx or build_context()
    files = [Path(p) for p in paths or []]
    landed_by_path = {}
    with contextlib.ExitStack() as stack:
        folder = None
        if landing:
            from ml.landing import DEFAULT_SETTLE_SECONDS, LandingFolder

            settle = DEFAULT_SETTLE_SECONDS if settle_seconds is None else settle_seconds
            folder = stack.enter_context(LandingFolder(landing, settle).batch())
            claim = folder.claim()
            report.still_writing = [p.name for p in claim.still_writing]
            if claim.still_writing:
                say(
                    f"still being written, left for the next look: {', '.join(report.still_writing)}"
                )
            for landed, earlier in claim.repeats:
                moved = folder.file_repeat(landed)
                report.repeats.append(landed.path.name)
                say(
                    f"{landed.path.name}: same content as {earlier['name']} loaded at "
                    f"{earlier['loaded_at']}: not loaded again, moved to {moved.parent.name}/"
                )
            # Keyed as ingest reports them: resolved (a symlinked file is filed too).
            landed_by_path = {c.path.resolve(): c for c in claim.to_load}
            files += list(landed_by_path)
        if files:
            with _stage(report, "ingest", say, f"ingest ({len(files)} files)"):
                report.ingest = ingest_task(ctx, files, say)
                for line in report.ingest.summary_lines():
                    say(line)
            for result in report.ingest.files:
                name = Path(result.file).name
                if result.ok:
                    report.loaded.append(name)
                else:
                    report.quarantined[name] = "\n".join(result.summary_lines())
                landed = landed_by_path.get(Path(result.file).resolve()) if folder else None
                if landed is None:
                    continue
                if result.ok:
                    folder.file_loaded(landed)
                else:
                    moved = folder.file_refused(landed, report.quarantined[name])
                    say(
                        f"{name}: refused, moved to {moved.parent}/ (reason in {moved.name}.reason.txt)"
                    )

    if not report.loaded:
        if not _has_prices(ctx):
            report.skipped = "no prices loaded yet"
            say(
                "daily: no prices loaded yet"
                + (f": drop price files into {landing}" if landing else "")
            )
            return report
        freshness = forecast_freshness(ctx)
        if freshness == CURRENT:
            report.skipped = "nothing new"
            say("daily: nothing new loaded and the forecasts are up to date: no build, no scoring")
            return report
        if freshness == UNPUBLISHED:
            say("daily: the latest forecasts were scored but not published (a run stopped early)")
            with _stage(report, "publish", say, "publish forecast marts (dbt build)"):
                publish_task(ctx, say)
            return report

    with _stage(report, "transform", say, "transform (dbt build)"):
        transform_task(ctx, say)
    with _stage(report, "score", say):
        report.scored = score_task(ctx, say)
        say(_scored_line(report.scored))
    with _stage(report, "publish", say, "publish forecast marts (dbt build)"):
        publish_task(ctx, say)
    if monitor:
        _monitor_and_retrain(ctx, report, say, retrain_on_alert, retrain_options)
    say(_seconds_line(report.stage_seconds))
    return report


def _monitor_and_retrain(
    ctx: RunContext,
    report: DailyReport,
    say: Say,
    retrain_on_alert: bool = True,
    retrain_options: dict | None = None,
) -> None:
    from ml.monitor import retrain_if_needed

    with _stage(report, "monitor", say):
        report.monitor = monitor_task(ctx, say)
        for line in report.monitor.lines():
            say(line)
    if not report.monitor.retrain_reasons:
        return
    if not retrain_on_alert:
        say(
            "retrain advised (retrain_on_alert is off): "
            + "; ".join(report.monitor.retrain_reasons)
        )
        return

    def start_retrain():
        reason = "monitor: " + "; ".join(report.monitor.retrain_reasons)
        report.retrain = run_retrain(ctx, reason=reason, say=say, **(retrain_options or {}))
        return report.retrain.decision  # the gate's decision, recorded on the monitor's run

    retrain_if_needed(ctx, report.monitor, retrain=start_retrain, progress=say)


def _seconds_line(stage_seconds: dict[str, float]) -> str:
    return "stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in stage_seconds.items())


def _scored_line(scored: ScoreResult) -> str:
    source = (
        f"the {scored.model_name} baseline (no model has passed the promotion gate; the "
        "retrain flow trains one)"
        if scored.baseline
        else f"model v{scored.model_version}"
    )
    line = (
        f"wrote {scored.rows_written} forecasts for {scored.tickers_scored} tickers with {source}"
    )
    if scored.tickers_skipped:
        line += f"; skipped (too little history): {', '.join(scored.tickers_skipped)}"
    return line


# -- the retrain flow --------------------------------------------------------------------------------
@dataclass
class RetrainReport:
    reason: str
    trained_version: str | None = None
    decision: GateDecision | None = None
    backtest_run_id: str | None = None
    tune_run_id: str | None = None
    scored: ScoreResult | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)


@flow(name="retrain", validate_parameters=False)
def retrain(
    reason: str = "scheduled",
    tune_trials: int = 0,
    run_backtest: bool = True,
    force: bool = False,
    train_config: Any = None,
    backtest_config: Any = None,
    ctx: RunContext | None = None,
    say: Say | None = None,
) -> RetrainReport:
    """(tune) -> train -> (backtest) -> promotion gate; a new champion is scored and published.

    ``tune_trials`` > 0 runs an Optuna search first (train then starts from its best settings);
    ``run_backtest`` stores a walk-forward backtest of the trained settings beside the
    baselines; ``train_config``/``backtest_config`` default to the CLI's defaults.
    """
    from dataclasses import replace

    from ml.fitting import TrainConfig

    say = say or echo
    report = RetrainReport(reason=reason)
    say(f"retrain: {reason}")
    from ml.context import build_context

    ctx = ctx or build_context()
    config = train_config or TrainConfig()
    if tune_trials:
        with _stage(report, "tune", say, f"tune ({tune_trials} trials)"):
            report.tune_run_id = tune_task(ctx, tune_trials, config, say).run_id
    with _stage(report, "train", say):
        result = train_task(ctx, config, say)
        report.trained_version = result.model_version
    if run_backtest:
        from ml.backtest import BacktestConfig

        backtest = backtest_config or BacktestConfig(
            train=replace(result.config, use_tuned=False), tickers=result.config.tickers
        )
        with _stage(report, "backtest", say):
            report.backtest_run_id = backtest_task(ctx, backtest, say).run_id
    with _stage(report, "promote", say, "promote (promotion gate)"):
        report.decision = promote_task(ctx, result, force, say)
        say(
            f"stockcast-lstm v{result.model_version} is {report.decision.alias}: {report.decision.reason}"
        )
    if report.decision.alias == "champion":
        with _stage(report, "score", say):
            report.scored = score_task(ctx, say)
            say(_scored_line(report.scored))
        with _stage(report, "publish", say, "publish forecast marts (dbt build)"):
            publish_task(ctx, say)
    say(_seconds_line(report.stage_seconds))
    return report


def run_retrain(ctx: RunContext, reason: str, say: Say | None = None, **options) -> RetrainReport:
    """Start the retrain flow (a subflow when called from a flow, e.g. the daily monitor step)
    on ``ctx``; ``options`` are :func:`retrain`'s (``tune_trials``, ``run_backtest``, ...)."""
    return retrain(reason=reason, ctx=ctx, say=say, **options)


# -- serving on schedules ---------------------------------------------------------------------------
def deployments(landing: Path | None = None) -> list:
    """The two scheduled deployments: daily after the NYSE close on weekdays (the flow skips
    holidays), the retrain on Saturday mornings, both in New York time."""
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    return [
        daily.to_deployment(
            name=DAILY_DEPLOYMENT,
            schedules=[Cron(DAILY_CRON, timezone=EXCHANGE_TZ)],
            parameters={
                "landing": str(landing) if landing else None,
                "trading_days_only": True,
            },
            description="Load the landing folder's files, dbt build, score, publish the marts.",
            entrypoint_type=EntrypointType.MODULE_PATH,
        ),
        retrain.to_deployment(
            name=RETRAIN_DEPLOYMENT,
            schedules=[Cron(RETRAIN_CRON, timezone=EXCHANGE_TZ)],
            parameters={"reason": "weekly schedule"},
            description="Train, backtest, promotion gate; a new champion is scored at once.",
            entrypoint_type=EntrypointType.MODULE_PATH,
        ),
    ]


@contextlib.contextmanager
def prefect_api(say: Say, startup_seconds: float = 180.0) -> Iterator[str]:
    """The Prefect API to serve against: ``PREFECT_API_URL`` if set, else a local
    ``prefect server`` started for the time being (its scheduler creates the scheduled runs,
    which Prefect's temporary server does not) and stopped afterwards."""
    import socket
    import subprocess

    import httpx
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from ml.transform import _die_with_parent_hook

    url = os.environ.get("PREFECT_API_URL")
    if url:
        yield url
        return
    with socket.socket() as probe:
        port = LOCAL_SERVER_PORT
        if probe.connect_ex(("127.0.0.1", port)) == 0:  # taken: any free port
            with socket.socket() as free:
                free.bind(("127.0.0.1", 0))
                port = free.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    from ml.config import data_dir

    log_path = data_dir() / "prefect-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    say(f"starting a local Prefect server on http://127.0.0.1:{port} (log: {log_path})")
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent_hook(),
            process_group=0,  # a Ctrl-C reaches us only: we stop the server once serving ends
        )  # fmt: skip
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"the local Prefect server exited ({server.returncode}) while starting: "
                    f"see {log_path}, or set PREFECT_API_URL to a running server"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the local Prefect server did not answer within {startup_seconds:.0f} s: "
                    f"see {log_path}, or set PREFECT_API_URL to a running server"
                )
            time.sleep(0.5)
        os.environ["PREFECT_API_URL"] = url  # for the runs the runner starts as processes
        with temporary_settings({PREFECT_API_URL: url}):
            yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


SHUTDOWN_GRACE_SECONDS = 30.0


def _exit_within_grace_after_ctrl_c(say: Say, grace_seconds: float) -> None:
    """Ctrl-C stops serving as before (a KeyboardInterrupt that Prefect's runner handles), and
    also starts a timer: if the process has not ended ``grace_seconds`` later, it exits anyway.
    Prefect's shutdown (pausing the schedules through its API, then its worker threads) was
    seen to never return on a loaded machine, leaving `stockcast serve` running after Ctrl-C.
    The local Prefect server dies with this process (see prefect_api)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def force_exit() -> None:
        time.sleep(grace_seconds)
        say(f"stopped serving (Prefect's shutdown took over {grace_seconds:.0f} s: left it)")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def on_ctrl_c(signum, frame) -> None:
        threading.Thread(target=force_exit, name="stockcast-shutdown", daemon=True).start()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_ctrl_c)


def serve_flows(
    landing: Path | None = None, say: Say = echo, grace_seconds: float = SHUTDOWN_GRACE_SECONDS
) -> None:
    """Serve ``daily`` and ``retrain`` on their schedules until Ctrl-C (or SIGTERM); after
    Ctrl-C the process ends within ``grace_seconds`` even if Prefect's shutdown does not."""
    from prefect import serve

    _exit_within_grace_after_ctrl_c(say, grace_seconds)
    try:
        with prefect_api(say) as url:
            say(
                f"serving on {url.removesuffix('/api')}: daily at {DAILY_CRON} {EXCHANGE_TZ} "
                f"(NYSE trading days"
                + (f", landing folder {landing}" if landing else "")
                + f"), retrain at {RETRAIN_CRON} {EXCHANGE_TZ}; Ctrl-C stops"
            )
            serve(*deployments(landing), print_starting_message=False)
    except KeyboardInterrupt:  # before Prefect's runner took over Ctrl-C: as clean a stop
        pass
    say("stopped serving")

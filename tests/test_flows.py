"""The Prefect flows on real components: real price files, a DuckDB file, dbt, MLflow's file
store, Prefect's own server (temporary). Logic is tested on the functions; the few real flow
runs share one temporary Prefect server for the session (it takes 20-60 s to start), except
`stockcast watch --once`, run as a user runs it: with no server at all."""

from __future__ import annotations

import os

# Short retry delays in this process and the commands it starts (before ml.flows is imported).
os.environ["STOCKCAST_RETRY_DELAY_SECONDS"] = "0.5"

import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import date, datetime
from pathlib import Path

import pytest
from helpers import REPO, YAHOO, isolated_home, tiny_train_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not YAHOO.is_dir(), reason="../shared/data is not beside the repo"),
]

from ml import flows  # noqa: E402
from ml.ingest import IngestFileError  # noqa: E402
from ml.transform import DbtError  # noqa: E402
from ml.warehouse import WarehouseBusyError, WarehouseError  # noqa: E402

TICKERS = ["AAPL", "KO", "MSFT"]
BAD_FILE = "broken.csv"
LATER = ["AMZN"]  # in the second landing folder


def _stockcast() -> str:
    return str(Path(sys.executable).with_name("stockcast"))


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STOCKCAST_", "MLFLOW_", "PREFECT_"))
    }
    return {**env, "STOCKCAST_HOME": str(home), "STOCKCAST_RETRY_DELAY_SECONDS": "0.5", **extra}


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """One temporary Prefect server for the session's in-process flow runs."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):
        yield PREFECT_API_URL.value()


READER = """
import sys, time
from pathlib import Path
from ml.context import build_context
wh = build_context().warehouse
stop = Path(sys.argv[1])
while not stop.exists():
    rows = wh.query_df("select count(*) as n from raw.daily_prices")["n"].iloc[0]
    print(rows, flush=True)
    time.sleep(0.3)
"""
WAITING = "waiting for the warehouse: the test (PID"


def _collect(process: subprocess.Popen, lines: list[str]) -> threading.Thread:
    def read() -> None:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def watched(tmp_path_factory, prefect_api):
    """Two `stockcast watch --once` on one warehouse at once, and a reader polling it.

    The first, as a user runs it: no Prefect server (Prefect's temporary one), a landing folder
    of real price files and one bad file. The second, against the session's Prefect server
    (PREFECT_API_URL), another folder with one more ticker. The test holds the warehouse while
    both start: each must say it waits, then go on once it is free.
    """
    home = tmp_path_factory.mktemp("home")
    first, second = tmp_path_factory.mktemp("landing"), tmp_path_factory.mktemp("landing2")
    for ticker in TICKERS:
        shutil.copy(YAHOO / f"{ticker}.csv.gz", first / f"{ticker}.csv.gz")
    (first / BAD_FILE).write_text("Symbol;Last;Change\nKO;61.2;+0.3\n")
    for ticker in LATER:
        shutil.copy(YAHOO / f"{ticker}.csv.gz", second / f"{ticker}.csv.gz")
    prefect_home = tmp_path_factory.mktemp("prefect")
    stop = tmp_path_factory.mktemp("reader") / "stop"
    with isolated_home(home):
        from ml.context import build_context

        warehouse = build_context().warehouse
        warehouse.ensure_schema()  # the reader's table exists from the start
    commands = {
        "first": ([_stockcast(), "watch", "--once", str(first)],
                  _env(home, PREFECT_HOME=str(prefect_home))),
        "second": ([_stockcast(), "watch", "--once", "--settle", "0.2", str(second)],
                   _env(home, PREFECT_API_URL=prefect_api)),
        "reader": ([sys.executable, "-c", READER, str(stop)], _env(home)),
    }  # fmt: skip
    outputs: dict[str, list[str]] = {name: [] for name in commands}
    started = time.perf_counter()
    with warehouse.writing("the test"):
        processes = {
            name: subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
            for name, (args, env) in commands.items()
        }  # fmt: skip
        threads = [_collect(processes[name], outputs[name]) for name in commands]
        deadline = time.monotonic() + 600
        while not outputs["reader"] or not all(
            any(WAITING in line for line in outputs[name]) for name in ("first", "second")
        ):
            assert time.monotonic() < deadline, outputs
            for name, process in processes.items():
                assert process.poll() is None, (name, outputs[name], process.stderr.read())
            time.sleep(0.2)
        answered_while_held = len(outputs["reader"])
    errors = {}
    for name in ("first", "second"):
        processes[name].wait(timeout=900)
        errors[name] = processes[name].stderr.read()
    seconds = time.perf_counter() - started
    stop.touch()
    processes["reader"].wait(timeout=60)
    errors["reader"] = processes["reader"].stderr.read()
    for thread in threads:
        thread.join(timeout=10)
    return {
        "home": home,
        "landing": first,
        "prefect_home": prefect_home,
        "processes": processes,
        "outputs": outputs,
        "errors": errors,
        "answered_while_held": answered_while_held,
        "seconds": seconds,
    }


def _query(home: Path, sql: str):
    import duckdb

    with duckdb.connect(str(home / "warehouse" / "stockcast.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


# -- the done-when: files in, forecasts and marts out, the bad file in quarantine ---------------
def test_watch_once_loads_dropped_files_through_the_daily_flow_with_no_server(watched):
    landing, home = watched["landing"], watched["home"]
    stdout, stderr = watched["outputs"]["first"], watched["errors"]["first"]
    print(f"two `stockcast watch --once` at once: {watched['seconds']:.0f} s")
    assert "Traceback" not in stderr, stderr
    assert watched["processes"]["first"].returncode == 1, stderr  # as `stockcast ingest`
    assert stderr.strip().splitlines() == [
        f"error: 1 file was refused and moved to {landing / 'quarantine'} (the reason is in "
        "<name>.reason.txt beside each); the others were loaded"
    ]
    stages = [line for line in stdout if line.startswith("== ")]
    assert stages == ["== ingest (4 files)", "== transform (dbt build)", "== score",
                      "== publish forecast marts (dbt build)", "== monitor"]  # fmt: skip

    assert sorted(p.name for p in (landing / "processed").iterdir()) == [
        f"{t}.csv.gz" for t in TICKERS
    ]
    assert sorted(p.name for p in (landing / "quarantine").iterdir()) == [
        BAD_FILE,
        f"{BAD_FILE}.reason.txt",
    ]
    reason = (landing / "quarantine" / f"{BAD_FILE}.reason.txt").read_text()
    assert "unrecognised layout" in reason and "Symbol;Last;Change" in reason
    assert not [p for p in landing.iterdir() if p.is_file() and not p.name.startswith(".")]

    everyone = sorted([*TICKERS, *LATER])
    forecasts = _query(home, "select ticker, count(*) from ml.predicted_prices group by 1")
    assert sorted(forecasts) == [(t, 10) for t in everyone]
    (mart,) = _query(home, "select count(*) from marts.fct_forecasts_vs_actuals")
    assert mart == (len(everyone) * 10,)
    (indicators,) = _query(home, "select count(distinct ticker) from marts.fct_daily_indicators")
    assert indicators == (len(everyone),)
    # The monitoring marts are built too (empty until a forecast's target date has passed and a
    # champion with a training reference publishes).
    tables = {row[0] for row in _query(home, "select table_name from information_schema.tables")}
    assert {"fct_forecast_accuracy_by_horizon", "fct_feature_drift"} <= tables

    # It went through Prefect: the temporary server recorded a completed `daily` run.
    with sqlite3.connect(watched["prefect_home"] / "prefect.db") as db:
        runs = db.execute(
            "select f.name, r.state_type from flow_run r join flow f on f.id = r.flow_id"
        ).fetchall()
    assert runs == [("daily", "COMPLETED")]


def test_two_flows_and_a_reader_share_the_warehouse_waiting_not_crashing(watched):
    """Both flows waited for the warehouse (saying so) instead of failing, both finished, the
    reader kept answering, and nothing was lost or doubled."""
    processes, outputs, errors = watched["processes"], watched["outputs"], watched["errors"]
    assert processes["second"].returncode == 0, (errors["second"], outputs["second"])
    assert "== score" in outputs["second"]
    assert processes["reader"].returncode == 0, errors["reader"]
    for text in errors.values():
        assert "Traceback" not in text and "IOException" not in text, text
    assert watched["answered_while_held"] > 0
    assert len(outputs["reader"]) > watched["answered_while_held"]
    counts = [int(n) for n in outputs["reader"]]
    assert counts == sorted(counts) and counts[-1] > 0  # every load seen whole

    home = watched["home"]
    (duplicates,) = _query(
        home,
        "select count(*) - count(distinct (ticker, as_of_date, horizon)) from ml.predicted_prices",
    )
    assert duplicates == (0,)
    assert _query(home, "select count(*) from raw.ingested_files") == [(len(TICKERS) + len(LATER),)]


def test_a_repeated_file_is_not_loaded_again_and_a_quiet_day_is_cheap(watched):
    landing, home = watched["landing"], watched["home"]
    shutil.copy(YAHOO / "KO.csv.gz", landing / "KO-again.csv.gz")
    messages: list[str] = []
    with isolated_home(home):
        report = flows.daily(landing=str(landing), settle_seconds=0.2, say=messages.append)
    assert report.repeats == ["KO-again.csv.gz"] and report.loaded == []
    assert report.skipped == "nothing new" and report.stage_seconds == {}
    assert messages[-1] == (
        "daily: nothing new loaded and the forecasts are up to date: no build, no scoring"
    )
    assert (landing / "processed" / "KO-again.csv.gz").exists()
    (files,) = _query(home, "select count(*) from raw.ingested_files")
    assert files == (len(TICKERS) + len(LATER),)


def test_forecasts_scored_but_never_published_are_published_by_the_next_run(watched):
    """A run stopped between scoring and publishing (Ctrl-C, a crash): the next daily run,
    with nothing new to load, publishes them and does nothing else."""
    from ml.score import score

    home = watched["home"]
    messages: list[str] = []
    with isolated_home(home):
        from ml.context import build_context

        ctx = build_context()
        score(ctx)  # scored, as a run does, and stopped before the publish step
        assert flows.forecast_freshness(ctx) == flows.UNPUBLISHED
        report = flows.daily(ctx=ctx, say=messages.append)
        assert flows.forecast_freshness(ctx) == flows.CURRENT
    assert messages[0] == (
        "daily: the latest forecasts were scored but not published (a run stopped early)"
    )
    assert list(report.stage_seconds) == ["publish"]
    published = _query(home, "select max(scored_at) from marts.fct_forecasts_vs_actuals")
    assert published == _query(home, "select max(scored_at) from ml.predicted_prices")


def test_the_writer_lock_waits_bounded_then_fails_in_one_line(tmp_path, monkeypatch):
    from ml.config import load_settings
    from ml.warehouse import open_warehouse

    monkeypatch.setenv("STOCKCAST_DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    monkeypatch.setenv("STOCKCAST_LOCK_WAIT_SECONDS", "0.5")
    monkeypatch.delenv("STOCKCAST_TARGET", raising=False)
    first, second = open_warehouse(load_settings()), open_warehouse(load_settings())
    told: list[str] = []
    with (
        first.writing("daily flow: dbt build"),
        pytest.raises(WarehouseBusyError) as raised,
        second.writing("another flow", on_wait=told.append),
    ):
        pass
    assert told == [f"waiting for the warehouse: daily flow: dbt build (PID {os.getpid()}) "
                    f"is writing to {tmp_path / 'w.duckdb'}"]  # fmt: skip
    message = str(raised.value)
    assert "\n" not in message and "stayed locked for 0 s: retry when it has finished" in message
    assert flows.is_transient(raised.value)
    with second.writing("another flow"):  # released
        pass


# -- retries: transient failures only ----------------------------------------------------------
def _lock_error() -> DbtError:
    return DbtError("dbt build failed (exit 2). Cause: IO Error: Could not set lock on file")


def _mlflow_error(code: str | None):
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    if code is None:  # MLflow's default: INTERNAL_ERROR (500), its own local failures included
        return MlflowException("could not parse the model's meta")
    return MlflowException("store answered", error_code=getattr(databricks_pb2, code))


def _wrapped_network_error() -> RuntimeError:
    try:
        try:
            raise ConnectionError("connection refused")
        except ConnectionError as cause:
            raise RuntimeError("could not log the run") from cause
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize(
    ("make", "transient"),
    [
        (lambda: WarehouseBusyError("in use"), True),
        (_lock_error, True),
        (lambda: TimeoutError("read timed out"), True),
        (_wrapped_network_error, True),
        (lambda: _mlflow_error("TEMPORARILY_UNAVAILABLE"), True),
        (lambda: _mlflow_error("INVALID_PARAMETER_VALUE"), False),
        (lambda: _mlflow_error(None), False),
        (lambda: IngestFileError("x.csv", "unrecognised layout"), False),
        (lambda: DbtError("dbt build failed (exit 1). 1 data test failed"), False),
        (lambda: WarehouseError("NULL in required columns"), False),
        (lambda: ValueError("no ticker has a complete feature row"), False),
    ],
)
def test_only_transient_failures_are_retried(make, transient):
    assert flows.is_transient(make()) is transient


def test_a_task_retries_a_busy_warehouse_and_never_a_bad_file(prefect_api):
    from prefect import flow

    calls = {"busy": 0, "bad": 0}

    @flows._task("busy-then-free")
    def busy_then_free() -> str:
        calls["busy"] += 1
        if calls["busy"] < 3:
            raise WarehouseBusyError("the warehouse is in use by stockcast transform (PID 1)")
        return "done"

    @flows._task("bad-file")
    def bad_file() -> None:
        calls["bad"] += 1
        raise IngestFileError("prices.csv", "unrecognised layout")

    @flow
    def probe():
        done = busy_then_free()
        refused = bad_file(return_state=True)
        return done, refused.is_failed(), refused.message

    done, failed, message = probe()
    assert done == "done" and calls["busy"] == 3
    assert calls["bad"] == 1 and failed
    assert "unrecognised layout" in message


# -- the schedule and the trading-day check ----------------------------------------------------
def test_the_schedules_are_after_the_close_on_weekdays_and_weekly(tmp_path):
    daily, retrain = flows.deployments(tmp_path)
    (schedule,) = daily.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == (
        "30 17 * * 1-5",
        "America/New_York",
    )
    assert daily.parameters == {"landing": str(tmp_path), "trading_days_only": True}
    assert daily.entrypoint == "ml.flows.daily"
    (schedule,) = retrain.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == (
        "0 6 * * 6",
        "America/New_York",
    )
    assert retrain.entrypoint == "ml.flows.retrain"


@pytest.mark.parametrize(
    ("day", "reason"),
    [
        (date(2024, 7, 4), "an NYSE holiday"),  # Independence Day, a Thursday
        (date(2025, 1, 9), "an NYSE holiday"),  # the day of mourning for President Carter
        (date(2024, 7, 6), "Saturday"),
        (date(2024, 7, 5), None),
    ],
)
def test_closed_days_are_known(day, reason):
    assert flows.closed_reason(day) == reason


def test_the_scheduled_daily_flow_skips_a_holiday_before_touching_anything(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("STOCKCAST_HOME", str(home))
    messages: list[str] = []
    report = flows.daily.fn(trading_days_only=True, today=date(2025, 12, 25), say=messages.append)
    assert messages == ["daily: 2025-12-25 is an NYSE holiday: the NYSE is closed, nothing to do"]
    assert report.skipped and report.stage_seconds == {}
    assert not home.exists()  # no warehouse opened, nothing written


# -- the retrain flow -------------------------------------------------------------------------
def test_retrain_trains_backtests_gates_and_publishes_a_new_champion(watched, prefect_api):
    pytest.importorskip("tensorflow")
    from ml.backtest import BacktestConfig
    from ml.config import MODEL_NAME

    tiny = tiny_train_config(train_years=4, use_tuned=False, gate_folds=1, gate_test_days=10)
    backtest = BacktestConfig(n_folds=1, test_days=10, models=("naive", "drift"), train=tiny)
    messages: list[str] = []
    with isolated_home(watched["home"]):
        from ml.context import build_context

        ctx = build_context()
        # As the monitor step will: from code, with a reason; forced, since a one-epoch
        # network need not pass the gate.
        report = flows.run_retrain(
            ctx, "test: drift", say=messages.append, train_config=tiny,
            backtest_config=backtest, force=True,
        )  # fmt: skip
    stages = [m for m in messages if m.startswith("== ")]
    assert messages[0] == "retrain: test: drift"
    assert stages == ["== train", "== backtest", "== promote (promotion gate)", "== score",
                      "== publish forecast marts (dbt build)"]  # fmt: skip
    assert report.decision.alias == "champion"
    assert report.scored.model_version == report.trained_version
    published = _query(watched["home"], "select distinct model_name, model_version "
                                        "from ml.predicted_prices")  # fmt: skip
    assert published == [(MODEL_NAME, report.trained_version)]
    (stored,) = _query(
        watched["home"],
        f"select count(*) from ml.backtest_metrics where backtest_run_id = '{report.backtest_run_id}'",
    )
    assert stored[0] > 0


def test_a_crossed_monitor_threshold_starts_the_retrain_and_its_gate_decision_is_logged(
    watched, prefect_api, monkeypatch
):
    """The daily flow's last step on the champion the retrain test published: with the drift
    threshold near 0 every input counts as drifted, so the monitor advises a retrain, the
    retrain flow runs, and the gate's decision lands on the monitor's MLflow run."""
    pytest.importorskip("tensorflow")
    import mlflow
    from mlflow.tracking import MlflowClient

    tiny = tiny_train_config(
        seed=2, train_years=4, use_tuned=False, gate_folds=1, gate_test_days=10
    )
    options = {"train_config": tiny, "run_backtest": False}
    monkeypatch.setenv("STOCKCAST_MONITOR_DRIFT_THRESHOLD", "0.000001")
    messages: list[str] = []
    with isolated_home(watched["home"]):
        from ml.context import build_context

        ctx = build_context()
        report = flows.DailyReport()
        flows._monitor_and_retrain(ctx, report, messages.append, retrain_options=options)
        ctx.tracking()
        client = MlflowClient(mlflow.get_tracking_uri())
        tags = client.get_run(report.monitor.monitor_run_id).data.tags
    assert any("drift" in reason for reason in report.monitor.retrain_reasons), messages
    assert report.retrain is not None and report.retrain.reason.startswith("monitor: ")
    assert tags["retrain_decision"] == "retrained"
    assert tags["retrain_gate_alias"] == report.retrain.decision.alias
    assert "== monitor" in messages and "== train" in messages


# -- serve ------------------------------------------------------------------------------------
def _polled_since(api: str, since: float) -> bool:
    """Whether a runner has polled both deployments on the Prefect server since ``since``."""
    import httpx

    names = [flows.DAILY_DEPLOYMENT, flows.RETRAIN_DEPLOYMENT]
    found = httpx.post(
        f"{api}/deployments/filter",
        json={"deployments": {"name": {"any_": names}}},
        timeout=10,
    ).json()
    polled = [
        d["name"]
        for d in found
        if d.get("last_polled")
        and datetime.fromisoformat(d["last_polled"].replace("Z", "+00:00")).timestamp() >= since
    ]
    return sorted(set(polled)) == sorted(names)


def test_serve_starts_and_stops_cleanly_on_ctrl_c(prefect_api, tmp_path):
    env = _env(tmp_path / "home", PREFECT_API_URL=prefect_api)
    process = subprocess.Popen(
        [_stockcast(), "serve", "--landing", str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = _collect(process, lines)
    started = time.time()
    deadline = time.monotonic() + 300
    while not any(line.startswith("serving on ") for line in lines):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, lines
        time.sleep(0.2)
    # Ctrl-C once the runner polls for both deployments: "serving on" is printed before
    # Prefect's runner has registered them and taken over the signal, and on a loaded machine
    # a fixed pause was not always enough.
    while not _polled_since(prefect_api, started):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, lines
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    # Within the shutdown grace: Prefect's own shutdown, or the bounded exit after it.
    assert process.wait(timeout=flows.SHUTDOWN_GRACE_SECONDS + 30) == 0, process.stderr.read()
    reader.join(timeout=10)
    assert lines[0].startswith(f"serving on {prefect_api.removesuffix('/api')}: daily at 30 17")
    assert lines[-1].startswith("stopped serving"), lines
    assert "Traceback" not in process.stderr.read()


def test_ctrl_c_ends_the_process_within_the_grace_even_if_a_thread_never_returns(tmp_path):
    """The bounded exit behind `stockcast serve`: a non-daemon thread that never ends (as
    Prefect's were seen to) does not keep the process alive past the grace after Ctrl-C."""
    script = tmp_path / "serve_like.py"
    script.write_text(
        "import threading, time\n"
        "from ml.flows import _exit_within_grace_after_ctrl_c\n"
        "_exit_within_grace_after_ctrl_c(lambda m: print(m, flush=True), 1.0)\n"
        "threading.Thread(target=time.sleep, args=(600,)).start()\n"
        "print('ready', flush=True)\n"
        "try:\n"
        "    time.sleep(600)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    reader = _collect(process, lines)
    deadline = time.monotonic() + 120
    while "ready" not in lines:
        assert process.poll() is None and time.monotonic() < deadline, lines
        time.sleep(0.1)
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    reader.join(timeout=10)
    assert time.monotonic() - interrupted >= 1.0
    assert lines[-2:] == [
        "interrupted",
        "stopped serving (Prefect's shutdown took over 1 s: left it)",
    ]

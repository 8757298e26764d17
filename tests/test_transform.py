"""The transform stage's dbt child: it dies with its parent, its log is summarised, and a
failure names its cause. Real dbt on a small real warehouse, real processes and signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import YAHOO, isolated_home

from ml.transform import DbtError, DbtLog, _fold_tracebacks

KO = YAHOO / "KO.csv.gz"
STOCKCAST = Path(sys.executable).with_name("stockcast")


# --- the log, from text -------------------------------------------------------------------------

PASSING = """\
\x1b[0m21:57:35  Running with dbt=1.11.16
21:57:52  1 of 5 START sql view model staging.stg_raw__daily_prices ......... [RUN]
21:57:53  1 of 5 OK created sql view model staging.stg_raw__daily_prices .... [\x1b[32mOK\x1b[0m in 0.4s]
21:57:53  2 of 5 START test not_null_stg_raw__daily_prices_close .............. [RUN]
21:57:53  2 of 5 PASS not_null_stg_raw__daily_prices_close .................... [PASS in 0.1s]
21:57:53  3 of 5 START unit_test int_ema_computed::test_ema_matches_talib ..... [RUN]
21:57:53  3 of 5 PASS int_ema_computed::test_ema_matches_talib ................ [PASS in 0.2s]
21:57:53  4 of 5 START test accepted_range_x__0  [RUN]
21:57:53  4 of 5 WARN 3 accepted_range_x__0 ................................... [WARN 3 in 0.1s]
21:57:53  5 of 5 NO-OP exposure stockcast_forecast_dashboard .................. [NO-OP in 0.00s]
21:57:54  Finished running 1 exposure, 1 view model, 2 data tests, 1 unit test in 0 hours 0 minutes and 1.50 seconds (1.50s).
21:57:54
21:57:54  Completed with 1 warning:
21:57:54
21:57:54  Warning in test accepted_range_x__0 (models/schema.yml)
21:57:54  Got 3 results, configured to warn if != 0
21:57:54
21:57:54  Done. PASS=3 WARN=1 ERROR=0 SKIP=0 NO-OP=1 TOTAL=5
"""


def _read(text: str) -> DbtLog:
    log = DbtLog()
    for line in text.splitlines(keepends=True):
        log.add(line)
    return log


def test_summary_counts_nodes_by_kind_and_status() -> None:
    log = _read(PASSING)
    assert log.summary() == (
        "dbt: 1 model (1 pass); 2 data tests (1 pass, 1 warn); 1 unit test (1 pass); "
        "1 exposure (1 no-op) in 1.5s"
    )
    assert log.problems() == [
        "Completed with 1 warning:",
        "",
        "Warning in test accepted_range_x__0 (models/schema.yml)",
        "Got 3 results, configured to warn if != 0",
    ]


def test_failure_detail_puts_the_cause_first_and_keeps_every_line() -> None:
    long_sql = "select " + ", ".join(f"column_{i}" for i in range(600)) + " from x"
    head, _ = PASSING.split("21:57:54  Completed with")
    text = head.replace("4 of 5 WARN 3", "4 of 5 ERROR") + (
        "21:57:54  Completed with 1 error, 0 partial successes, and 0 warnings:\n"
        "21:57:54  Runtime Error in model fct (models/fct.sql)\n"
        f"21:57:54    {long_sql}\n"
        '21:57:54    IO Error: Could not write file "/x/stockcast.duckdb.wal": '
        "No space left on device\n"
        "21:57:54  Done. PASS=3 WARN=0 ERROR=1 SKIP=0 NO-OP=1 TOTAL=5\n"
    )
    detail = _read(text).failure_detail()
    assert detail.startswith("cause: IO Error: Could not write file")
    assert "No space left on device" in detail.splitlines()[0]
    assert long_sql in detail  # not cut at a character budget
    assert "4 of 5 ERROR accepted_range_x__0" in detail
    assert "Runtime Error in model fct (models/fct.sql)" in detail


def test_tracebacks_fold_to_one_line_and_repeats_go() -> None:
    lines = [
        "Encountered an error:",
        "IO Error: Could not set lock on file",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in f',
        "    f()",
        "_duckdb.IOException: IO Error: Could not set lock on file",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "Traceback (most recent call last):",
        '  File "y.py", line 2, in g',
        "_duckdb.IOException: IO Error: Could not set lock on file",
    ]
    assert _fold_tracebacks(lines) == [
        "Encountered an error:",
        "IO Error: Could not set lock on file",
        "(Python traceback, 2 lines, in the dbt log)",
        "_duckdb.IOException: IO Error: Could not set lock on file",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "(Python traceback, 1 lines, in the dbt log)",
    ]


# --- real dbt, real processes -------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A data folder with KO loaded (no dbt build yet)."""
    if not KO.is_file():
        pytest.skip(f"shared developer data not found: {KO}")
    folder = tmp_path_factory.mktemp("transform")
    with isolated_home(folder):
        done = subprocess.run(
            [str(STOCKCAST), "ingest", str(KO)], capture_output=True, text=True, env=os.environ
        )
        assert done.returncode == 0, done.stderr
        yield folder


def _children(pid: int) -> list[int]:
    psutil = pytest.importorskip("psutil")
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    psutil = pytest.importorskip("psutil")
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _start_transform_and_wait_for_dbt(args: list[str] | None = None):
    parent = subprocess.Popen(
        [str(STOCKCAST), "transform", *(args or [])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ,
    )
    deadline = time.monotonic() + 180  # a first parse on a busy machine
    while time.monotonic() < deadline:
        children = _children(parent.pid)
        if children:
            time.sleep(2)  # let dbt get going (parse, open the warehouse)
            return parent, children
        time.sleep(0.1)
    parent.kill()
    pytest.fail(f"stockcast transform never started dbt (exit {parent.poll()})")


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_dbt_dies_with_stockcast_transform(home, signum) -> None:
    with isolated_home(home):
        parent, dbt = _start_transform_and_wait_for_dbt()
        parent.send_signal(signum)
        parent.wait(30)
        leftover = [pid for pid in dbt if _alive(pid)]
        try:
            assert _gone_within(dbt, 10), f"dbt outlived stockcast (signal {signum})"
        finally:
            for pid in leftover:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_rerun_after_kill_succeeds_with_short_output(home) -> None:
    """After a killed transform the warehouse is free, and a full build prints a few lines."""
    with isolated_home(home):
        parent, dbt = _start_transform_and_wait_for_dbt()
        parent.kill()
        parent.wait(30)
        _gone_within(dbt, 10)
        done = subprocess.run(
            [str(STOCKCAST), "transform"], capture_output=True, text=True, env=os.environ
        )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) <= 8, done.stdout  # was ~460 lines of START/PASS
    assert lines[-1].startswith("dbt: ") and "models (" in lines[-1]
    assert "error" not in lines[-1] and "fail" not in lines[-1]


@pytest.mark.slow
def test_failure_names_the_lock_holder(home) -> None:
    duckdb = pytest.importorskip("duckdb")
    with isolated_home(home):
        from ml.context import build_context
        from ml.transform import run_dbt

        ctx = build_context()
        # This process holds the write lock that the dbt child needs.
        with duckdb.connect(str(ctx.warehouse.path)), pytest.raises(DbtError) as caught:
            run_dbt(["build", "--select", "stg_raw__daily_prices"], ctx.settings)
    message = str(caught.value)
    detail = message.split("\n", 1)[1]
    assert detail.startswith("cause: ") and "Could not set lock on file" in detail.splitlines()[0]
    assert "Traceback (most recent call last)" not in message
    assert len(message.splitlines()) < 40


@pytest.mark.slow
def test_failing_model_shows_its_error_block_in_full(home, tmp_path, monkeypatch) -> None:
    import ml.transform
    from ml.config import DBT_PROJECT_DIR

    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    (project / "models" / "broken_model.sql").write_text(
        "select * from {{ ref('stg_raw__daily_prices') }} join no_such_table using (ticker)\n"
    )
    monkeypatch.setattr(ml.transform, "DBT_PROJECT_DIR", project)
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))
    with isolated_home(home):
        from ml.context import build_context
        from ml.transform import run_dbt

        ctx = build_context()
        echoed: list[str] = []
        with pytest.raises(DbtError) as caught:
            run_dbt(["build", "--select", "broken_model"], ctx.settings, echo=echoed.append)
    message = str(caught.value)
    assert "1 model (1 error)" in message.splitlines()[0]
    assert "1 of 1 ERROR creating sql" in message and "broken_model" in message
    assert "no_such_table" in message and "does not exist" in message
    assert "Completed with 1 error" in message

"""The stages against real servers: PostgreSQL, an MLflow tracking server serving its
artifacts and a Prefect server, started by `scripts/servers.sh up` on ports of their own (not
the defaults) into a temporary folder, stopped and deleted afterwards. The main job (tiny
model, forced promotion), `stockcast watch --once` (the daily flow), `stockcast monitor` and
`stockcast champion --set` run against them; the runs, the registered version, its alias, its
artifacts and the flow run must be in the servers' stores."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import REPO, YAHOO, isolated_home, tiny_train_config

pytest.importorskip("tensorflow")
pytest.importorskip("psycopg2", reason="MLflow's PostgreSQL store needs psycopg2 (bigquery extra)")


def _postgres_bin() -> str | None:
    for folder in (
        os.environ.get("STOCKCAST_PG_BIN"),
        *sorted(glob.glob("/usr/lib/postgresql/*/bin")),
    ):
        if folder and Path(folder, "initdb").exists() and Path(folder, "postgres").exists():
            return folder
    initdb = shutil.which("initdb")
    return str(Path(initdb).resolve().parent) if initdb and shutil.which("postgres") else None


PG_BIN = _postgres_bin()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not YAHOO.is_dir(), reason="../shared/data is not beside the repo"),
    pytest.mark.skipif(
        PG_BIN is None and not os.environ.get("STOCKCAST_REQUIRE_SERVERS"),
        reason="PostgreSQL binaries (initdb, postgres) not found: apt-get install postgresql",
    ),
]

from ml.config import CHAMPION_ALIAS, MODEL_NAME  # noqa: E402

SCRIPT = REPO / "scripts" / "servers.sh"
TICKERS = ["AAPL", "KO", "MSFT"]
LATER = "AMZN"  # dropped into the landing folder
PG_PORT, MLFLOW_PORT, PREFECT_PORT = 5491, 5091, 5092


def _script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def starting(tmp_path_factory):
    """`scripts/servers.sh up` under way (40-90 s on a busy machine): the job loads and
    transforms meanwhile, which needs no server. Stopped and deleted (`purge`) at the end."""
    assert PG_BIN, "STOCKCAST_REQUIRE_SERVERS is set (CI) but PostgreSQL is not installed"
    folder = tmp_path_factory.mktemp("servers")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("STOCKCAST_", "MLFLOW_"))},
        "STOCKCAST_SERVERS_DIR": str(folder),
        "STOCKCAST_PG_PORT": str(PG_PORT),
        "STOCKCAST_MLFLOW_PORT": str(MLFLOW_PORT),
        "STOCKCAST_PREFECT_PORT": str(PREFECT_PORT),
        "STOCKCAST_PG_BIN": PG_BIN,
        "STOCKCAST_SERVERS_PYTHON": sys.executable,
    }
    process = subprocess.Popen(
        ["bash", str(SCRIPT), "up"], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        yield {"env": env, "dir": folder, "process": process, "started": time.perf_counter()}
    finally:
        process.kill()
        process.wait()
        down = _script(env, "purge")
        assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def servers(starting):
    stdout, stderr = starting["process"].communicate(timeout=300)
    seconds = time.perf_counter() - starting["started"]
    assert starting["process"].returncode == 0, stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in stdout.splitlines())
    print(f"\nservers up in {seconds:.0f} s: {exports}\n{stderr}")
    folder = starting["dir"]
    return {
        "env": starting["env"],
        "dir": folder,
        "url": exports["MLFLOW_TRACKING_URI"],
        "prefect": exports["PREFECT_API_URL"],
        "stdout": stdout,
        "run": folder / "run",
    }


@pytest.fixture(scope="module")
def job(starting, request, tmp_path_factory):
    """The stages on three real tickers: ingest and dbt build while the servers start, then
    train, promote (forced: a tiny model need not pass the gate) and score against the MLflow
    server."""

    tiny = tiny_train_config(train_years=4, use_tuned=False, gate_folds=1, gate_test_days=10)
    home = tmp_path_factory.mktemp("home")
    inputs = tmp_path_factory.mktemp("inputs")
    for ticker in TICKERS:
        shutil.copy(YAHOO / f"{ticker}.csv.gz", inputs / f"{ticker}.csv.gz")
    messages: list[str] = []
    from ml.context import build_context
    from ml.ingest import ingest_paths
    from ml.promote import promote
    from ml.score import score
    from ml.train import train
    from ml.transform import transform

    with isolated_home(home):
        local = build_context()
        assert ingest_paths(local, [inputs]).ok
        transform(local, echo=messages.append)
    servers = request.getfixturevalue("servers")
    with isolated_home(home, {"MLFLOW_TRACKING_URI": servers["url"]}):
        ctx = build_context()
        trained = train(ctx, tiny, progress=messages.append)
        decision = promote(ctx, trained, force=True, progress=messages.append)
        scored = score(ctx, progress=messages.append)
    yield {
        "trained": trained,
        "decision": decision,
        "scored": scored,
        "messages": messages,
        "home": home,
        "ctx": ctx,
    }


def _psql(servers, sql: str) -> list[list[str]]:
    run = servers["run"]
    out = subprocess.run(
        [str(Path(PG_BIN, "psql")), "-h", "127.0.0.1", "-p", (run / "postgres.port").read_text().strip(),
         "-U", "stockcast", "-d", "mlflow", "-tAc", sql],
        env={**os.environ, "PGPASSWORD": (run / "postgres.password").read_text().strip()},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [line.split("|") for line in out.stdout.splitlines() if line]


def test_the_script_starts_the_servers_on_loopback_and_up_is_idempotent(servers, job):
    # (`job` first: it loads and transforms while the servers start)
    assert servers["url"] == f"http://127.0.0.1:{MLFLOW_PORT}"
    assert servers["prefect"] == f"http://127.0.0.1:{PREFECT_PORT}/api"
    assert (servers["run"] / "postgres.port").read_text().strip() == str(PG_PORT)
    again = _script(servers["env"], "up")
    assert again.returncode == 0, again.stderr
    assert again.stdout == servers["stdout"]
    for name in ("PostgreSQL", "MLflow", "Prefect"):
        assert f"{name} already running" in again.stderr, again.stderr
    status = _script(servers["env"], "status")
    assert status.returncode == 0, status.stderr
    for name in ("postgres", "mlflow", "prefect"):
        assert f"{name}: running" in status.stderr, status.stderr


def test_the_run_the_version_its_alias_and_its_artifacts_are_in_the_servers_stores(servers, job):
    import mlflow
    from mlflow.tracking import MlflowClient

    trained = job["trained"]
    assert job["decision"].alias == CHAMPION_ALIAS
    assert job["scored"].model_version == trained.model_version
    client = MlflowClient(servers["url"], registry_uri=servers["url"])
    version = client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    assert version.version == trained.model_version
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # served, not a local folder
    # The same rows in PostgreSQL: MLflow's tables, written by the server.
    assert _psql(servers, f"select status from runs where run_uuid = '{run.info.run_id}'") == [
        ["FINISHED"]
    ]
    assert [trained.model_version, CHAMPION_ALIAS] in _psql(
        servers, f"select version, alias from registered_model_aliases where name = '{MODEL_NAME}'"
    )
    # The artifact files are in the served folder, and come back through the server.
    served = servers["dir"] / "artifacts"
    assert list(served.rglob("model_meta.json")), sorted(p.name for p in served.rglob("*"))
    assert list(served.rglob("MLmodel")) and list(served.rglob("network.keras"))
    mlflow.set_tracking_uri(servers["url"])
    meta = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/model_meta.json")
    assert meta["params"]["units"] == 4
    # Nothing went to a local store.
    assert not (job["home"] / "mlflow").exists()
    rows = job["ctx"].warehouse.query_df(
        "select count(distinct ticker) as n, min(model_version) as v from ml.predicted_prices"
    )
    assert int(rows["n"].iloc[0]) == len(TICKERS) and rows["v"].iloc[0] == trained.model_version


def test_watch_once_runs_the_daily_flow_against_the_prefect_and_mlflow_servers(
    servers, job, tmp_path
):
    """The done-when of operations, on the servers: real files and a bad one dropped into a
    landing folder; `stockcast watch --once` loads them through the daily flow, recorded by the
    Prefect server, scoring with the champion from the MLflow server and logging its monitor
    run there; forecasts, accuracy and drift marts appear; the bad file is quarantined."""
    import httpx
    from mlflow.tracking import MlflowClient

    landing = tmp_path / "landing"
    landing.mkdir()
    shutil.copy(YAHOO / f"{LATER}.csv.gz", landing / f"{LATER}.csv.gz")
    (landing / "broken.csv").write_text("Symbol;Last;Change\nKO;61.2;+0.3\n")
    env = {
        **{k: v for k, v in os.environ.items()
           if not k.startswith(("STOCKCAST_", "MLFLOW_", "PREFECT_"))},
        "STOCKCAST_HOME": str(job["home"]),
        "MLFLOW_TRACKING_URI": servers["url"],
        "PREFECT_API_URL": servers["prefect"],
    }  # fmt: skip
    stockcast = str(Path(sys.executable).with_name("stockcast"))
    done = subprocess.run(
        [stockcast, "watch", "--once", "--settle", "0.2", str(landing)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, (done.stdout, done.stderr)  # one file refused, as ingest says
    assert done.stderr.startswith("error: 1 file was refused"), done.stderr
    assert "== monitor" in done.stdout, done.stdout
    assert sorted(p.name for p in (landing / "processed").iterdir()) == [f"{LATER}.csv.gz"]
    assert sorted(p.name for p in (landing / "quarantine").iterdir()) == [
        "broken.csv",
        "broken.csv.reason.txt",
    ]

    warehouse = job["ctx"].warehouse
    forecasts = warehouse.query_df(
        "select ticker, count(*) as n, min(model_version) as v from ml.predicted_prices"
        " where as_of_date = (select max(as_of_date) from ml.predicted_prices) group by 1"
    )
    assert sorted(forecasts["ticker"]) == sorted([*TICKERS, LATER])
    assert set(forecasts["n"]) == {10}
    assert set(forecasts["v"]) == {job["trained"].model_version}  # the server's champion
    tables = set(
        warehouse.query_df("select table_name from information_schema.tables")["table_name"]
    )
    assert {"fct_forecasts_vs_actuals", "fct_forecast_accuracy_by_horizon",
            "fct_feature_drift"} <= tables  # fmt: skip
    (drift,) = warehouse.query_df("select count(*) as n from marts.fct_feature_drift")["n"]
    assert drift > 0

    flow_runs = httpx.post(f"{servers['prefect']}/flow_runs/filter", json={}, timeout=30)
    flow_runs.raise_for_status()
    flow_names = httpx.post(f"{servers['prefect']}/flows/filter", json={}, timeout=30).json()
    names = {flow["id"]: flow["name"] for flow in flow_names}
    states = [(names[run["flow_id"]], run["state_type"]) for run in flow_runs.json()]
    assert ("daily", "COMPLETED") in states, states

    client = MlflowClient(servers["url"])
    experiment = client.get_experiment_by_name("stockcast")
    (monitored,) = client.search_runs([experiment.experiment_id], "tags.stage = 'monitor'")
    scoring = client.get_run(monitored.data.tags["mlflow.parentRunId"])
    assert scoring.data.tags["stage"] == "score"  # the report sits under the scoring's run
    assert scoring.data.metrics["tickers_scored"] == len(TICKERS) + 1
    logged = [a.path for a in client.list_artifacts(monitored.info.run_id, "monitoring")]
    assert any(path.endswith(".html") for path in logged), logged


def test_monitor_runs_against_the_server_and_logs_its_run_there(servers, job):
    from mlflow.tracking import MlflowClient

    from ml.cli import main

    with isolated_home(job["home"], {"MLFLOW_TRACKING_URI": servers["url"]}):
        done = CliRunner().invoke(main, ["monitor", "--no-publish"])
    assert done.exit_code == 0, done.output
    client = MlflowClient(servers["url"])
    experiment = client.get_experiment_by_name("stockcast")
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'monitor'")
    assert runs, done.output
    served = servers["dir"] / "artifacts"
    assert list(served.rglob("*.html")), "the drift report is served by the tracking server"


def test_the_champion_is_rolled_back_and_forth_against_the_server(servers, job, monkeypatch):
    from mlflow.tracking import MlflowClient

    from ml.cli import main

    client = MlflowClient(servers["url"], registry_uri=servers["url"])
    first = client.get_model_version(MODEL_NAME, job["trained"].model_version)
    # A second version of the same model (as a later `train` would register), then back.
    second = client.create_model_version(
        MODEL_NAME,
        first.source,
        run_id=first.run_id,
        model_id=first.source.removeprefix("models:/"),
    )
    for _ in range(100):
        if client.get_model_version(MODEL_NAME, second.version).status == "READY":
            break
        time.sleep(0.1)
    monkeypatch.setenv("STOCKCAST_HOME", str(job["home"]))
    monkeypatch.delenv("STOCKCAST_DUCKDB_PATH", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", servers["url"])
    runner = CliRunner()
    forward = runner.invoke(main, ["champion", "--set", second.version, "--reason", "test"])
    assert forward.exit_code == 0, forward.output
    assert f"v{first.version} -> v{second.version}" in forward.output
    back = runner.invoke(main, ["champion", "--set", first.version, "--reason", "bad week"])
    assert back.exit_code == 0, back.output
    assert f"v{second.version} -> v{first.version}" in back.output
    assert client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version == first.version
    tags = client.get_model_version(MODEL_NAME, first.version).tags
    assert tags["champion_set_reason"] == "bad week"
    assert tags["champion_previous"] == second.version and "@" in tags["champion_set_by"]
    missing = runner.invoke(main, ["champion", "--set", "99"])
    assert missing.exit_code == 1 and missing.stderr.startswith(
        "error: stockcast-lstm has no version 99"
    )
    assert client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version == first.version

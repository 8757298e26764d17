import subprocess
import sys

import pytest
from click.testing import CliRunner
from helpers import duckdb_lock_held

from ml.cli import main

COMMANDS = [
    "ingest", "transform", "train", "score", "run", "demo", "fetch", "backtest", "tune", "monitor",
    "champion",
]  # fmt: skip


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command):
    args = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_help_does_not_load_heavy_libraries():
    """--help must answer at once: TensorFlow, MLflow and dbt are imported only by commands."""
    code = (
        "import sys; from click.testing import CliRunner; from ml.cli import main; "
        f"[CliRunner().invoke(main, [c, '--help']) for c in {COMMANDS!r}]; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'mlflow', 'dbt') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_ingest_does_not_import_tensorflow():
    code = "import sys, ml.ingest; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _run_cli(args, home, **extra):
    import os
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKCAST_", "MLFLOW_"))}
    env["STOCKCAST_HOME"] = str(home)
    env.update(extra)
    stockcast = Path(sys.executable).with_name("stockcast")
    return subprocess.run([str(stockcast), *args], env=env, capture_output=True, text=True)


def test_ingest_command_loads_good_files_and_fails_on_a_bad_one(tmp_path):
    good = tmp_path / "ACME.csv"
    good.write_text(
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2021-03-01,10,11,9.5,10.5,10.5,1000\n"
        "2021-03-02,null,null,null,null,null,null\n"
        "2021-03-03,10.5,10.8,10.1,10.2,10.2,1200\n"
    )
    bad = tmp_path / "BROKEN.csv"
    bad.write_text("Date,Open,High,Low,Volume\n2021-03-01,1,2,0.5,10\n")  # no Close column
    done = _run_cli(["ingest", str(good), str(bad)], tmp_path / "home")
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "BROKEN.csv" in output and "close" in output.lower()
    assert "2 inserted" in output and "1 refused" in output
    again = _run_cli(["ingest", str(good)], tmp_path / "home")
    assert again.returncode == 0, again.stderr
    assert "0 inserted, 0 updated, 2 unchanged, 1 refused" in again.stdout


def test_fetch_without_network_fails_with_a_clear_message(tmp_path):
    done = _run_cli(["fetch", "AAPL", "--start", "2024-01-02"], tmp_path)
    if done.returncode == 0:  # pragma: no cover - only where Yahoo is reachable
        pytest.skip("a network is available here")
    assert "cannot reach Yahoo Finance" in done.stderr


# -- misuse: one `error:` line on stderr and a documented exit code, before any work ---------


@pytest.fixture
def home(stockcast_home, monkeypatch):
    """A fresh, empty STOCKCAST_HOME with no MLflow or BigQuery settings from the shell."""
    for name in ("MLFLOW_TRACKING_URI", "STOCKCAST_BQ_PROJECT", "STOCKCAST_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return stockcast_home


def _invoke(args, **env):
    return CliRunner().invoke(main, args, env=env or None)


def _one_error_line(result) -> str:
    """The whole of stderr: exactly one `error:` line, no traceback."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


INVALID = [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--window", "-5"], "--window"),
    (["train", "--window", "1"], "--window"),
    (["train", "--units", "0"], "--units"),
    (["train", "--layers", "0"], "--layers"),
    (["train", "--max-train-samples", "0"], "--max-train-samples"),
    (["train", "--train-years", "0"], "--train-years"),
    (["train", "--train-years", "-1.5"], "--train-years"),
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--epochs", "many"], "--epochs"),
    (["backtest", "--folds", "0"], "--folds"),
    (["backtest", "--test-days", "-3"], "--test-days"),
    (["backtest", "--peer-epochs", "0"], "--peer-epochs"),
    (["backtest", "--model", "arima"], "--model"),
    (["backtest", "--epochs", "0"], "--epochs"),
    (["backtest", "--start", "2020-13-01"], "--start"),
    (["backtest", "--end", "last-year"], "--end"),
    (["backtest", "--start", "2020-02-01", "--end", "2019-12-31"], "--end"),
    (["backtest", "--regimes", "--start", "2020-01-01"], "--regimes"),
    (["backtest", "--end", "2020-01-01", "--regimes"], "--regimes"),
    (["backtest", "--regimes", "--folds", "0"], "--folds"),
    (["tune", "--trials", "0"], "--trials"),
    (["tune", "--folds", "0"], "--folds"),
    (["tune", "--window", "0"], "--window"),
    (["run", "{prices}", "--epochs", "0"], "--epochs"),
    (["run", "{prices}", "--window", "-5"], "--window"),
    (["refresh", "--units", "0"], "--units"),
    (["run", "{missing}"], "does not exist"),
    (["ingest", "{prices}", "{missing}"], "does not exist"),
    (["fetch", "AAPL", "--start", "2024-01-02", "--end", "2023-01-01"], "--end"),
    (["train", "--bogus"], "--bogus"),
    (["forecast"], "No such command"),
]


@pytest.mark.parametrize(("args", "named"), INVALID, ids=[" ".join(a) for a, _ in INVALID])
def test_invalid_arguments_are_usage_errors_before_any_work(home, tmp_path, args, named):
    prices = tmp_path / "ACME.csv"
    prices.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n")
    paths = {"prices": str(prices), "missing": str(tmp_path / "nowhere.csv")}
    result = _invoke([a.format(**paths) for a in args])
    assert result.exit_code == 2, result.output
    line = _one_error_line(result)
    assert named in line and "--help" in line
    assert list(home.iterdir()) == []  # no warehouse, no MLflow store, nothing trained


def test_backtest_model_choices_are_the_backtests_models():
    from ml.backtest import LSTM_ABLATIONS, MODEL_NAMES
    from ml.cli import BACKTEST_ABLATIONS, BACKTEST_MODELS

    assert BACKTEST_MODELS == MODEL_NAMES
    assert BACKTEST_ABLATIONS == LSTM_ABLATIONS


def test_feature_groups_of_the_cli_are_those_of_the_features_module():
    from ml.cli import FEATURE_GROUP_NAMES, _train_config
    from ml.features import FEATURE_GROUPS, FEATURES, feature_set
    from ml.fitting import TrainConfig

    assert set(FEATURE_GROUP_NAMES) == set(FEATURE_GROUPS)
    options = dict(epochs=None, window=None, units=None, layers=None, seed=None,
                   max_train_samples=None, train_years=None)  # fmt: skip
    assert _train_config(**options).features == TrainConfig().features
    assert _train_config(**options, feature_groups=("base",)).features == tuple(FEATURES)
    chosen = _train_config(**options, feature_groups=("volume", "volatility")).features
    assert chosen == tuple(feature_set(["volatility", "volume"]))
    assert len(chosen) > len(FEATURES)


def test_an_unknown_feature_group_is_refused_naming_the_choices(home):
    result = _invoke(["train", "--features", "sentiment"])
    assert result.exit_code == 2, result.output
    assert "--features" in result.output and "volatility" in result.output


def test_backtest_help_names_the_regimes_of_the_folds_module():
    from ml.cli import REGIME_NAMES
    from ml.folds import REGIMES

    assert ", ".join(REGIMES) == REGIME_NAMES


def test_unknown_target_is_a_configuration_error(home):
    result = _invoke(["score"], STOCKCAST_TARGET="nope")
    assert result.exit_code == 3, result.output
    assert "STOCKCAST_TARGET='nope'" in _one_error_line(result)
    assert list(home.iterdir()) == []


def test_bigquery_without_a_project_is_a_configuration_error(home):
    result = _invoke(["transform"], STOCKCAST_TARGET="bigquery")
    assert result.exit_code == 3, result.output
    assert "set STOCKCAST_BQ_PROJECT" in _one_error_line(result)


def test_champion_rollback_validates_the_version_and_records_who_and_why(home, tmp_path):
    """`stockcast champion --set` on the local store (versions registered without training;
    tests/test_servers.py does the same against an MLflow server after a real train)."""
    from mlflow.tracking import MlflowClient

    from ml import registry
    from ml.config import CHAMPION_ALIAS, MODEL_NAME, load_settings

    assert _invoke(["champion"]).output.startswith("no version of stockcast-lstm is registered")
    registry.configure(load_settings())
    client = MlflowClient()
    client.create_registered_model(MODEL_NAME)
    for _ in range(2):
        client.create_model_version(MODEL_NAME, source=str(tmp_path))
    client.set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, "2")

    done = _invoke(["champion", "--set", "1", "--reason", "v2 misses the 80% band"])
    assert done.exit_code == 0, done.output
    assert "champion of stockcast-lstm: v2 -> v1 (set by " in done.output
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version) == "1"
    tags = client.get_model_version(MODEL_NAME, "1").tags
    assert tags["champion_set_reason"] == "v2 misses the 80% band"
    assert tags["champion_previous"] == "2" and "@" in tags["champion_set_by"]
    assert tags["champion_set_at"]
    listed = _invoke(["champion"]).output
    assert listed.startswith("champion: v1") and "v2  READY  aliases: -" in listed

    missing = _invoke(["champion", "--set", "7"])
    assert missing.exit_code == 1
    assert _one_error_line(missing) == (
        "error: stockcast-lstm has no version 7 (registered: v1, v2): pick one of them "
        "(`stockcast champion` lists them)"
    )
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version) == "1"
    assert _invoke(["champion", "--set", "0"]).exit_code == 2
    assert _invoke(["champion", "--reason", "why"]).exit_code == 2


def test_monitor_on_a_fresh_home_has_nothing_to_monitor(home):
    result = _invoke(["monitor", "--fail-on-alert"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("nothing to monitor yet: no forecasts in ml.predicted_prices")
    assert "`stockcast score`" in result.stdout and result.stderr == ""
    assert not (home / "warehouse").exists()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("STOCKCAST_MONITOR_DRIFT_SHARE", "half", "is not a number"),
        ("STOCKCAST_MONITOR_DRIFT_SHARE", "1.5", "must be above 0.0 and at most 1.0"),
        ("STOCKCAST_MONITOR_DRIFT_METHOD", "magic", "use one of wasserstein"),
        ("STOCKCAST_MONITOR_MIN_REALIZED", "2.5", "is not an integer"),
        ("STOCKCAST_MONITOR_DRIFT_WINDOW", "1", "must be at least 2"),
    ],
)
def test_bad_monitor_thresholds_are_configuration_errors(home, variable, value, expected):
    result = _invoke(["monitor"], **{variable: value})
    assert result.exit_code == 3, result.output
    line = _one_error_line(result)
    assert variable in line and expected in line
    assert not (home / "warehouse").exists()


@pytest.mark.parametrize("command", ["transform", "refresh", "score"])
def test_building_on_a_fresh_home_says_to_ingest_first(home, command):
    result = _invoke([command])
    assert result.exit_code == 1, result.output
    line = _one_error_line(result)
    assert "no prices loaded" in line and "stockcast ingest" in line
    assert result.stdout == ""  # no dbt log: dbt never ran
    assert not (home / "warehouse").exists()
    assert not (home / "mlflow").exists()  # refused before the MLflow store is touched


# The training options of every command that trains, each refused in a real process: one
# `error:` line naming the option, exit 2, before TensorFlow, MLflow or pandas load.
TRAIN_ARGUMENTS = [
    ("--epochs", "0"), ("--window", "-3"), ("--units", "0"), ("--layers", "0"),
]  # fmt: skip
REFUSE_AND_REPORT = """
import sys
from ml.cli import main
try:
    main(sys.argv[1:], prog_name="stockcast")
except SystemExit as exit:
    loaded = [m for m in ("tensorflow", "keras", "mlflow", "pandas", "dbt") if m in sys.modules]
    print(exit.code, ",".join(loaded) or "-")
"""


@pytest.mark.parametrize("command", ["train", "run {prices}", "tune", "backtest"])
def test_training_arguments_are_refused_before_anything_loads(tmp_path, command):
    import os

    prices = tmp_path / "ACME.csv"
    prices.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKCAST_", "MLFLOW_"))}
    env["STOCKCAST_HOME"] = str(tmp_path / "home")
    for option, value in TRAIN_ARGUMENTS:
        args = [*command.format(prices=prices).split(), option, value]
        done = subprocess.run([sys.executable, "-c", REFUSE_AND_REPORT, *args], env=env,
                              capture_output=True, text=True)  # fmt: skip
        assert done.stdout.split() == ["2", "-"], (args, done.stdout, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert f"Invalid value for '{option}': {value}" in lines[0]
    assert not (tmp_path / "home").exists()


def test_a_bad_training_argument_answers_at_once(tmp_path):
    """The installed `stockcast` script, timed: the refusal costs an interpreter start and
    click, nothing heavier."""
    import time

    started = time.perf_counter()
    done = _run_cli(["train", "--epochs", "0"], tmp_path / "home")
    took = time.perf_counter() - started
    assert done.returncode == 2 and done.stderr.startswith("error: Invalid value for '--epochs'")
    assert took < 2.0, f"{took:.2f} s"  # measured: 0.2 s


def _raise(exc):
    def build():
        raise exc

    return build


def _errors():
    import duckdb

    from ml.config import ConfigError
    from ml.transform import DbtError
    from ml.warehouse import WarehouseBusyError, WarehouseError

    lock = 'IO Error: Could not set lock on file "/x/stockcast.duckdb": Conflicting lock is held'
    return [
        (ConfigError("target 'x' needs a GCP project: set STOCKCAST_BQ_PROJECT"), 3, "set STOCK"),
        (WarehouseError("no warehouse at /x: run `stockcast ingest` first"), 4, "no warehouse"),
        (WarehouseBusyError("the warehouse /x is in use by PID 7: retry"), 4, "in use by PID 7"),
        (duckdb.IOException(lock), 4, "another stockcast command is using the warehouse"),
        (duckdb.IOException("IO Error: Permission denied"), 4, "cannot open the warehouse"),
        (DbtError("dbt build failed (exit 1). 3 errors\nERROR one\nERROR two"), 1, "dbt build"),
        (DbtError(f"dbt build failed (exit 2).\n{lock}"), 4, "another stockcast command"),
        (LookupError("no 'champion' version: run `stockcast train` first"), 1, "no 'champion'"),
        (KeyError("GOOG"), 1, "error: GOOG"),
        (ValueError("0 trading dates cannot hold 2 folds"), 1, "0 trading dates"),
        (RuntimeError("boom\nsecond line"), 1, "unexpected RuntimeError: boom (rerun as"),
    ]


@pytest.mark.parametrize(("exc", "code", "says"), _errors(), ids=lambda v: repr(v)[:40])
def test_every_error_is_one_line_with_its_exit_code(home, monkeypatch, exc, code, says):
    monkeypatch.setattr("ml.cli._context", _raise(exc))
    result = _invoke(["score"])
    assert result.exit_code == code, result.output
    assert says in _one_error_line(result)
    if "\nERROR" in str(exc):  # dbt's failures are kept, on stdout, above the error line
        assert "ERROR one" in result.stdout and "(details above)" in result.stderr


def test_unexpected_errors_name_the_debug_flag_which_shows_the_traceback(home, monkeypatch):
    monkeypatch.setattr("ml.cli._context", _raise(RuntimeError("boom")))
    line = _one_error_line(_invoke(["score"]))
    assert "`stockcast --debug score ...`" in line
    result = _invoke(["--debug", "score"])
    assert isinstance(result.exception, RuntimeError) and result.exit_code == 1


def test_debug_shows_the_traceback_of_an_expected_error_too(tmp_path):
    plain = _run_cli(["score"], tmp_path, STOCKCAST_TARGET="nope")
    assert plain.returncode == 3 and plain.stderr.startswith("error: ")
    assert len(plain.stderr.splitlines()) == 1, plain.stderr
    debug = _run_cli(["--debug", "score"], tmp_path, STOCKCAST_TARGET="nope")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "ml.config.ConfigError" in debug.stderr


def test_a_warehouse_held_by_another_process_is_exit_4(tmp_path):
    """A real DuckDB lock held by another process: one line, exit 4, nothing else on stderr."""
    home = tmp_path / "home"
    (home / "warehouse").mkdir(parents=True)
    path = home / "warehouse" / "stockcast.duckdb"
    prices = tmp_path / "ACME.csv"
    prices.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n2021-03-01,10,11,9,10,10,1\n")
    with duckdb_lock_held(path):
        done = _run_cli(["ingest", str(prices)], home, STOCKCAST_LOCK_WAIT_SECONDS="1")
    assert done.returncode == 4, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "retry" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_help_documents_the_exit_codes_and_debug():
    result = _invoke(["--help"])
    assert "--debug" in result.output and "Exit codes" in result.output


def test_a_finished_job_says_where_the_forecasts_are(ctx, capsys):
    import pandas as pd

    from ml.cli import _show_forecasts

    rows = [
        {
            "ticker": ticker, "as_of_date": as_of, "target_date": as_of + pd.Timedelta(days=h),
            "horizon": h, "predicted_close": 100.0 + h, "lower_80": 99.0, "upper_80": 101.0 + h,
            "model_name": "stockcast-lstm", "model_version": "1", "mlflow_run_id": "r",
            "scored_at": pd.Timestamp("2024-01-03 20:00"),
        }
        for ticker in ("AAA", "BBB")
        for as_of in (pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-02"))
        for h in range(1, 11)
    ]  # fmt: skip
    ctx.warehouse.replace_predictions(pd.DataFrame(rows))
    _show_forecasts(ctx)
    out = capsys.readouterr().out
    path = str(ctx.warehouse.path)
    assert f"in the DuckDB file {path}" in out
    assert f'duckdb {path} "select ticker, target_date' in out
    preview = [line for line in out.splitlines() if line.startswith("   AAA")]
    assert len(preview) == 5 and all("2024-01-02" in line for line in preview), out
    assert "BBB" not in out.split("query them")[0]  # the first 5 rows: AAA's horizons 1..5

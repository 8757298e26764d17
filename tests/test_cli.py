import subprocess
import sys

import pytest
from click.testing import CliRunner

from ml.cli import main

COMMANDS = [
    "ingest", "transform", "train", "score", "run", "demo", "fetch", "backtest", "tune"
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


def _run_cli(args, home):
    import os
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKCAST_", "MLFLOW_"))}
    env["STOCKCAST_HOME"] = str(home)
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

import subprocess
import sys

import pytest
from click.testing import CliRunner

from ml.cli import main

COMMANDS = ["ingest", "transform", "train", "score", "run", "demo", "fetch"]


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

"""The README's main command on a fresh data folder: `stockcast demo` (offline GOOG sample)."""

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKCAST_", "MLFLOW_"))}
    env["STOCKCAST_HOME"] = str(tmp_path)
    stockcast = Path(sys.executable).with_name("stockcast")
    done = subprocess.run(
        [str(stockcast), "demo"], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "GOOG daily bars 2004-2013" in done.stdout
    demo_home = tmp_path / "demo"  # the demo's own home: it never mixes with the user's data
    assert not (tmp_path / "warehouse").exists() and not (tmp_path / "mlflow").exists()
    con = duckdb.connect(str(demo_home / "warehouse" / "stockcast.duckdb"), read_only=True)
    rows = con.execute(
        "select horizon, as_of_date, target_date from ml.predicted_prices "
        "where ticker = 'GOOG' order by horizon"
    ).fetchall()
    last_bar = con.execute("select max(trade_date) from raw.daily_prices").fetchone()[0]
    assert [r[0] for r in rows] == list(range(1, 11))
    assert all(r[1] == last_bar and r[2] > last_bar for r in rows)
    assert (demo_home / "mlflow" / "mlflow.db").exists()

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
    last_bar = con.execute("select max(trade_date) from raw.daily_prices").fetchone()[0]
    rows = con.execute(
        "select horizon, as_of_date, target_date from ml.predicted_prices "
        "where ticker = 'GOOG' and as_of_date = ? order by horizon",
        [last_bar],
    ).fetchall()
    assert [r[0] for r in rows] == list(range(1, 11))
    assert all(r[2] > last_bar for r in rows)
    assert (demo_home / "mlflow" / "mlflow.db").exists()

    # For the dashboard on day one: a walk-forward backtest beside naive and the baseline, and
    # half a year of backfilled forecasts, most of them already due and judged.
    (models,) = con.execute(
        "select list(distinct model order by model) from marts.fct_backtest_metrics"
    ).fetchone()
    assert models == ["ewma", "lstm", "naive"]
    as_of_dates, due = con.execute(
        "select count(distinct as_of_date), count(actual_close) "
        "from marts.fct_forecasts_vs_actuals where ticker = 'GOOG'"
    ).fetchone()
    assert as_of_dates == 126 and due > 1000
    assert "see it: make dashboard DEMO=1" in done.stdout
    assert "Warning in test" not in done.stdout, done.stdout[-3000:]

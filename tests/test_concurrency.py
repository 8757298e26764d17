"""One writer at a time, safely: commands started together on one DuckDB warehouse take turns
(bounded wait) instead of failing, and no file is lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import YAHOO, duckdb_lock_held

pytestmark = pytest.mark.slow

READER = """
from ml.context import build_context
wh = build_context().warehouse
print(len(wh.read_table("raw.daily_prices", ["ticker"])))
"""


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKCAST_", "MLFLOW_"))}
    return {**env, "STOCKCAST_HOME": str(home), **extra}


def _stockcast() -> str:
    return str(Path(sys.executable).with_name("stockcast"))


def test_two_writers_and_a_reader_started_together_all_finish_and_lose_nothing(tmp_path):
    if not YAHOO.is_dir():
        pytest.skip(f"shared developer data not found at {YAHOO}")
    first = [YAHOO / f"{t}.csv.gz" for t in ("AAPL", "KO", "MSFT", "AMZN")]
    second = [YAHOO / f"{t}.csv.gz" for t in ("BAC", "ADBE", "AMD", "ALL")]
    home = tmp_path / "home"
    env = _env(home)
    # Create the warehouse first, so the reader has something to wait for rather than nothing.
    subprocess.run([_stockcast(), "ingest", str(YAHOO / "AAL.csv.gz")], env=env, check=True,
                   capture_output=True)  # fmt: skip
    processes = [
        subprocess.Popen([_stockcast(), "ingest", *map(str, files)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for files in (first, second)
    ] + [
        subprocess.Popen([sys.executable, "-c", READER], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    assert int(outputs[2][0].strip()) > 0

    import duckdb

    with duckdb.connect(str(home / "warehouse" / "stockcast.duckdb"), read_only=True) as con:
        loaded = dict(
            con.execute("select ticker, count(*) from raw.daily_prices group by 1").fetchall()
        )
        files = con.execute("select count(*) from raw.ingested_files").fetchone()[0]
    assert sorted(loaded) == sorted(
        ["AAL", "AAPL", "KO", "MSFT", "AMZN", "BAC", "ADBE", "AMD", "ALL"]
    )
    assert files == 9
    assert all(n > 1000 for n in loaded.values())


def test_a_held_lock_ends_in_a_one_line_busy_error_naming_the_holder(tmp_path):
    """Past the bounded wait, the second command fails with who holds the warehouse."""
    from ml.config import load_settings
    from ml.warehouse import WarehouseBusyError, open_warehouse

    path = tmp_path / "w.duckdb"
    with duckdb_lock_held(path) as holder:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("STOCKCAST_DUCKDB_PATH", str(path))
            patch.setenv("STOCKCAST_LOCK_WAIT_SECONDS", "1")
            patch.delenv("STOCKCAST_TARGET", raising=False)
            warehouse = open_warehouse(load_settings())
        with pytest.raises(WarehouseBusyError, match=rf"PID {holder.pid}\).*retry"):
            warehouse.ensure_schema()

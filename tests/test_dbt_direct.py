"""dbt used directly (`cd dbt_project && dbt build`) reaches the warehouse `stockcast` uses, with
no flag and no extra setting: dbt finds the profile through dbt_project/profiles.yml (a link to
the repository's profiles.yml), and the DuckDB path does not depend on the current folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, YAHOO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not YAHOO.is_dir(), reason=f"shared developer data not found at {YAHOO}"),
]

BIN = Path(sys.executable).parent
SELECT = ["stg_raw__daily_prices", "int_prices_sequenced"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The user's environment without Stockcast or dbt settings; dbt's artefacts and logs go to
    tmp_path (not dbt_project/target, which other runs may use at the same time)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("STOCKCAST_", "MLFLOW_", "DBT_"))
    }
    env.update(
        DBT_TARGET_PATH=str(tmp_path / "dbt-target"),
        DBT_LOG_PATH=str(tmp_path / "dbt-logs"),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        **extra,
    )
    return env


def _duckdb_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*.duckdb*") if p.is_file()}


def _relations(path: Path) -> dict[str, int]:
    import duckdb

    with duckdb.connect(str(path), read_only=True) as con:
        names = [
            f"{schema}.{name}"
            for schema, name in con.execute(
                "select table_schema, table_name from information_schema.tables"
            ).fetchall()
        ]
        return {n: con.execute(f"select count(*) from {n}").fetchone()[0] for n in names}


def test_dbt_build_in_dbt_project_uses_the_stockcast_warehouse(tmp_path):
    home = tmp_path / "home"
    env = _env(tmp_path, STOCKCAST_HOME=str(home))
    before = _duckdb_files(REPO / "dbt_project")
    loaded = subprocess.run(
        [str(BIN / "stockcast"), "ingest", str(YAHOO / "HWM.csv.gz")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    warehouse = home / "warehouse" / "stockcast.duckdb"
    rows = _relations(warehouse)["raw.daily_prices"]
    assert rows > 1000

    # What an analytics engineer types: no --profiles-dir, no path, in dbt_project/.
    built = subprocess.run(
        [str(BIN / "dbt"), "build", "--select", *SELECT],
        cwd=REPO / "dbt_project", env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:]

    relations = _relations(warehouse)
    assert relations["staging.stg_raw__daily_prices"] == rows
    assert relations["intermediate.int_prices_sequenced"] == rows
    # No second warehouse anywhere under dbt_project/ (the old relative default made one there).
    assert _duckdb_files(REPO / "dbt_project") == before


def test_the_default_warehouse_is_the_repository_data_folder_for_dbt_and_python(tmp_path):
    """Without STOCKCAST_HOME: Python's default is <repo>/data/warehouse/stockcast.duckdb from
    any folder, and dbt run in <repo>/dbt_project reaches that same file. Shown on a copy of
    the repository's profile and dbt project (so the real ./data is never touched)."""
    from ml.config import PROJECT_ROOT, load_settings

    with pytest.MonkeyPatch.context() as patch:
        for name in ("STOCKCAST_HOME", "STOCKCAST_DUCKDB_PATH", "STOCKCAST_TARGET",
                     "DBT_PROFILES_DIR"):  # fmt: skip
            patch.delenv(name, raising=False)
        patch.chdir(tmp_path)
        default = Path(load_settings().target_config["path"])
    assert default == PROJECT_ROOT / "data" / "warehouse" / "stockcast.duckdb"

    copy = tmp_path / "repo"
    shutil.copytree(REPO / "dbt_project", copy / "dbt_project", symlinks=True,
                    ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))  # fmt: skip
    shutil.copy(REPO / "profiles.yml", copy / "profiles.yml")
    assert (copy / "dbt_project" / "profiles.yml").is_symlink()
    copied_default = copy / default.relative_to(PROJECT_ROOT)
    # The raw tables, loaded by Stockcast into the copy's default location.
    loaded = subprocess.run(
        [str(BIN / "stockcast"), "ingest", str(YAHOO / "HWM.csv.gz")],
        env=_env(tmp_path, STOCKCAST_DUCKDB_PATH=str(copied_default)),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr

    built = subprocess.run(
        [str(BIN / "dbt"), "build", "--select", "stg_raw__daily_prices"],
        cwd=copy / "dbt_project", env=_env(tmp_path), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:]
    assert "staging.stg_raw__daily_prices" in _relations(copied_default)
    assert _duckdb_files(copy) == {copied_default}

"""Shared pytest fixtures: the shared developer data set and a throwaway warehouse."""

from __future__ import annotations

from pathlib import Path

import pytest
from emulators import emulator_env  # noqa: F401  (fixture: the local BigQuery/GCS emulators)
from helpers import SHARED_DATA as SHARED_DATA_DIR


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real developer data set (``../shared/data`` relative to the repo); read-only."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"shared developer data not found at {SHARED_DATA_DIR}")
    return SHARED_DATA_DIR


@pytest.fixture
def stockcast_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point STOCKCAST_HOME and the DuckDB file at a fresh folder under tmp_path."""
    home = tmp_path / "stockcast_home"
    home.mkdir()
    monkeypatch.setenv("STOCKCAST_HOME", str(home))
    monkeypatch.setenv("STOCKCAST_DUCKDB_PATH", str(home / "warehouse" / "stockcast.duckdb"))
    monkeypatch.delenv("STOCKCAST_TARGET", raising=False)
    # mlflow.set_tracking_uri also sets this variable process-wide: an earlier test's store
    # must not leak into this home.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture
def ctx(stockcast_home: Path):
    """A run context on an empty DuckDB file in tmp_path, schema created."""
    from ml.context import build_context

    context = build_context()
    context.warehouse.ensure_schema()
    return context


@pytest.fixture
def warehouse(ctx):
    """The run context's real warehouse (DuckDB file in tmp_path)."""
    return ctx.warehouse

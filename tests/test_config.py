import os

import pytest

from ml.config import ConfigError, load_settings


def test_defaults_live_in_the_data_folder_and_leave_the_environment_alone(tmp_path, monkeypatch):
    for name in ("STOCKCAST_DUCKDB_PATH", "STOCKCAST_TARGET", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STOCKCAST_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.target == "dev" and settings.engine == "duckdb"
    assert settings.target_config["path"] == str(tmp_path / "warehouse" / "stockcast.duckdb")
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert "STOCKCAST_DUCKDB_PATH" not in os.environ
    # dbt gets the same resolved path Python uses.
    assert settings.dbt_env()["STOCKCAST_DUCKDB_PATH"] == settings.target_config["path"]


def test_one_setting_moves_dbt_and_python(tmp_path, monkeypatch):
    monkeypatch.setenv("STOCKCAST_DUCKDB_PATH", str(tmp_path / "elsewhere.duckdb"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/other.db")
    settings = load_settings()
    assert settings.target_config["path"] == str(tmp_path / "elsewhere.duckdb")
    assert settings.dbt_env()["STOCKCAST_DUCKDB_PATH"] == str(tmp_path / "elsewhere.duckdb")
    assert settings.mlflow_tracking_uri == "sqlite:////tmp/other.db"


def test_target_selects_the_bigquery_profile_and_unknown_targets_fail(monkeypatch):
    monkeypatch.setenv("STOCKCAST_TARGET", "bigquery")
    monkeypatch.setenv("STOCKCAST_BQ_PROJECT", "my-project")
    settings = load_settings()
    assert settings.engine == "bigquery"
    assert settings.target_config["project"] == "my-project"
    monkeypatch.setenv("STOCKCAST_TARGET", "nope")
    with pytest.raises(ConfigError, match="not a target"):
        load_settings()


def test_relative_paths_reach_dbt_absolute(tmp_path, monkeypatch):
    """dbt runs in dbt_project/ and would read a relative path from there: its children get
    the absolute paths Python resolved from the current folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STOCKCAST_TARGET", raising=False)
    monkeypatch.delenv("STOCKCAST_DUCKDB_PATH", raising=False)
    monkeypatch.setenv("STOCKCAST_HOME", "home")
    settings = load_settings()
    expected = str(tmp_path / "home" / "warehouse" / "stockcast.duckdb")
    assert settings.target_config["path"] == expected
    assert settings.dbt_env()["STOCKCAST_DUCKDB_PATH"] == expected
    assert settings.dbt_env()["STOCKCAST_HOME"] == str(tmp_path / "home")
    monkeypatch.setenv("STOCKCAST_DUCKDB_PATH", "w.duckdb")
    settings = load_settings()
    assert settings.target_config["path"] == str(tmp_path / "w.duckdb")
    assert settings.dbt_env()["STOCKCAST_DUCKDB_PATH"] == str(tmp_path / "w.duckdb")

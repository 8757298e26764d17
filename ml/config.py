"""One configuration for dbt and Python.

The warehouse is the dbt target selected from ``profiles.yml`` (``STOCKCAST_TARGET``, default
``dev`` = DuckDB). Python renders the same profile dbt renders, so one setting moves both; what
the profile means for each engine (a DuckDB file, a BigQuery project and datasets) is read by the
engines in :mod:`ml.warehouse` only. MLflow comes from ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import jinja2
import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
PROFILE_NAME = "stockcast"
MODEL_NAME = "stockcast-lstm"
CHAMPION_ALIAS = "champion"
EXPERIMENT_NAME = "stockcast"

RAW_SCHEMA = "raw"
ML_SCHEMA = "ml"
MARTS_SCHEMA = "marts"


def profiles_dir() -> Path:
    return Path(os.environ.get("DBT_PROFILES_DIR", PROJECT_ROOT)).resolve()


def data_dir() -> Path:
    """Local folder for the embedded warehouse and the MLflow store: ``STOCKCAST_HOME`` (a
    relative one from the current folder), else the repository's ``data/`` folder, wherever
    the command runs. profiles.yml's default for dbt (``../data`` from dbt_project/, where dbt
    runs) is the same folder, so dbt run by hand reaches the same warehouse."""
    home = os.environ.get("STOCKCAST_HOME")
    return Path(home).resolve() if home else PROJECT_ROOT / "data"


# A DuckDB ``path`` that is not a file: in memory, or a URL-like location (md:, s3://, ...).
_NOT_A_FILE = re.compile(r"^(:memory:|[A-Za-z][\w+.-]+:)")


def _absolute_values() -> dict[str, str]:
    """The profile's path settings made absolute the way Python reads them (from the current
    folder). dbt runs in dbt_project/ and would read a relative one from there; it is handed
    these instead."""
    values = {"STOCKCAST_HOME": str(data_dir())}
    path = os.environ.get("STOCKCAST_DUCKDB_PATH")
    if path and not _NOT_A_FILE.match(path):
        values["STOCKCAST_DUCKDB_PATH"] = str(Path(path).expanduser().resolve())
    return values


def _render(value: object, values: dict[str, str], used: dict[str, str]) -> object:
    """Render profiles.yml values the way dbt does (``env_var``).

    ``values`` take precedence over the environment; those used are recorded in ``used`` (to
    hand on to dbt).
    """
    if isinstance(value, str) and "{{" in value:

        def env_var(name: str, default: str | None = None) -> str:
            if name in values:
                used[name] = values[name]
                return values[name]
            if name in os.environ:
                return os.environ[name]
            if default is None:
                raise ConfigError(f"environment variable {name} is required by profiles.yml")
            return default

        env = jinja2.Environment(undefined=jinja2.StrictUndefined)
        env.globals["env_var"] = env_var
        return env.from_string(value).render()
    if isinstance(value, dict):
        return {k: _render(v, values, used) for k, v in value.items()}
    return value


class ConfigError(ValueError):
    """The configuration cannot be used as it is (unknown target, unsupported engine, ...)."""


# Drift methods `stockcast monitor` accepts (Evidently names), and whether a column drifted
# when the score is at or above the threshold (a distance) or below it (a p-value).
DRIFT_METHODS = {
    "wasserstein": "distance",
    "psi": "distance",
    "jensenshannon": "distance",
    "hellinger": "distance",
    "ks": "p_value",
}


@dataclass(frozen=True)
class MonitorThresholds:
    """When `stockcast monitor` advises a retrain: any one crossed is a reason.

    Each is read from the environment variable named beside it (see the README, Monitoring).
    The drift defaults were chosen on real prices (4 tickers, reference 2016-07..2019-01): with
    Evidently's default Wasserstein threshold 0.1 nearly every input "drifts" in any calm
    21-session window (the inputs are autocorrelated: moving-average ratios, RSI, volatility),
    so the per-column threshold is a shift of 0.75 reference standard deviations; then calm
    windows of 2019 drift on at most 21% of the inputs and the window to 2020-03-13 on 92%.
    """

    # Share of the model's inputs whose distribution drifted (0..1).
    drift_share: float = 0.5  # STOCKCAST_MONITOR_DRIFT_SHARE
    # Evidently method and per-column threshold (see DRIFT_METHODS).
    drift_method: str = "wasserstein"  # STOCKCAST_MONITOR_DRIFT_METHOD
    drift_threshold: float = 0.75  # STOCKCAST_MONITOR_DRIFT_THRESHOLD
    # Sessions up to the scoring's as-of date compared with the training reference.
    drift_window: int = 21  # STOCKCAST_MONITOR_DRIFT_WINDOW
    # Rolling realized relative MAE vs naive (fct_champion_accuracy_latest) above this.
    rel_mae: float = 1.10  # STOCKCAST_MONITOR_REL_MAE
    # |realized coverage - nominal| of the 80% or the 95% interval above this.
    coverage_gap: float = 0.15  # STOCKCAST_MONITOR_COVERAGE_GAP
    # Realized forecasts the rolling window needs before accuracy is judged.
    min_realized: int = 100  # STOCKCAST_MONITOR_MIN_REALIZED

    ENV: ClassVar[dict[str, str]] = {
        "drift_share": "STOCKCAST_MONITOR_DRIFT_SHARE",
        "drift_method": "STOCKCAST_MONITOR_DRIFT_METHOD",
        "drift_threshold": "STOCKCAST_MONITOR_DRIFT_THRESHOLD",
        "drift_window": "STOCKCAST_MONITOR_DRIFT_WINDOW",
        "rel_mae": "STOCKCAST_MONITOR_REL_MAE",
        "coverage_gap": "STOCKCAST_MONITOR_COVERAGE_GAP",
        "min_realized": "STOCKCAST_MONITOR_MIN_REALIZED",
    }

    @classmethod
    def from_env(cls) -> MonitorThresholds:
        """The defaults, with each environment variable that is set laid over them."""
        defaults = cls()
        values: dict = {}
        for name, variable in cls.ENV.items():
            raw = os.environ.get(variable, "").strip()
            if not raw:
                continue
            kind = type(getattr(defaults, name))
            try:
                values[name] = kind(raw)
            except ValueError:
                raise ConfigError(
                    f"{variable}={raw!r} is not a{'n integer' if kind is int else ' number'}; "
                    f"set it like {variable}={getattr(defaults, name)} or unset it"
                ) from None
        thresholds = cls(**values)
        thresholds.check()
        return thresholds

    def check(self) -> None:
        env = self.ENV
        if self.drift_method not in DRIFT_METHODS:
            raise ConfigError(
                f"{env['drift_method']}={self.drift_method!r} is not a drift method Stockcast "
                f"reads; use one of {', '.join(DRIFT_METHODS)}"
            )
        for name, low, high in (
            ("drift_share", 0.0, 1.0),
            ("coverage_gap", 0.0, 1.0),
            ("rel_mae", 0.0, None),
            ("drift_threshold", 0.0, None),
        ):
            value = getattr(self, name)
            if not (value > low and (high is None or value <= high)):
                bound = f"above {low}" + (f" and at most {high}" if high is not None else "")
                raise ConfigError(f"{env[name]}={value} must be {bound}")
        for name, low in (("drift_window", 2), ("min_realized", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"{env[name]}={getattr(self, name)} must be at least {low}")


@dataclass(frozen=True)
class Settings:
    """The resolved target: what dbt will connect to, and where MLflow lives.

    Engine-neutral: ``engine`` is the dbt adapter type and ``target_config`` the rendered
    profile output; only the warehouse engines read the engine-specific fields in it.
    """

    target: str
    engine: str
    target_config: dict = field(repr=False)
    # Environment values the profile was rendered with (local defaults included): passed on to
    # dbt so it resolves exactly what Python resolved.
    profile_env: dict = field(repr=False, default_factory=dict)
    mlflow_tracking_uri: str = ""
    mlflow_artifact_root: str = ""
    # When `stockcast monitor` advises a retrain (STOCKCAST_MONITOR_* variables).
    monitor: MonitorThresholds = field(default_factory=MonitorThresholds)

    def dbt_env(self) -> dict[str, str]:
        """Environment for a dbt subprocess so it resolves exactly what Python resolved."""
        env = dict(os.environ)
        env.update(self.profile_env)
        env["STOCKCAST_TARGET"] = self.target
        env["MLFLOW_TRACKING_URI"] = self.mlflow_tracking_uri
        env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        return env


def load_settings() -> Settings:
    profile_path = profiles_dir() / "profiles.yml"
    try:
        profile = yaml.safe_load(profile_path.read_text())[PROFILE_NAME]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"cannot read profile {PROFILE_NAME!r} from {profile_path}: {exc}"
        ) from exc
    values = _absolute_values()
    used: dict[str, str] = {}
    target = str(_render(profile.get("target", "dev"), values, used))
    outputs = profile["outputs"]
    if target not in outputs:
        raise ConfigError(
            f"STOCKCAST_TARGET={target!r} is not a target in {profile_path} "
            f"(known: {', '.join(outputs)}); set STOCKCAST_TARGET to one of them"
        )
    config = _render(outputs[target], values, used)
    if config.get("type") == "duckdb" and config.get("path"):
        path = str(config["path"])
        if not _NOT_A_FILE.match(path):
            # As dbt reads it: a relative path from the dbt project folder (dbt runs there).
            path = str((DBT_PROJECT_DIR / Path(path).expanduser()).resolve())
        config = {**config, "path": path}
        # dbt children get the very file Python resolved.
        used["STOCKCAST_DUCKDB_PATH"] = path

    mlflow_dir = data_dir() / "mlflow"
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlflow_dir / 'mlflow.db'}"
    # A tracking server (http/https) keeps the artifacts itself (`mlflow server
    # --serve-artifacts`): the experiment takes the server's default root, not a local folder.
    remote = tracking_uri.startswith(("http://", "https://"))
    artifact_root = os.environ.get("STOCKCAST_MLFLOW_ARTIFACTS") or (
        "" if remote else (mlflow_dir / "artifacts").as_uri()
    )
    return Settings(
        target=target,
        engine=str(config["type"]),
        target_config=config,
        profile_env=used,
        mlflow_tracking_uri=tracking_uri,
        mlflow_artifact_root=artifact_root,
        monitor=MonitorThresholds.from_env(),
    )

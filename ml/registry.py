"""MLflow glue: tracking store, the logged model format, and the model registry.

The logged model is an MLflow pyfunc that carries the Keras network and the normalisation
statistics fit on training data; its input is a (samples, window, features) float32 array of
raw feature windows and its output the log returns for horizons 1..10.
"""

from __future__ import annotations

import os

# TensorFlow's C++ logger: level 2 still lets ERROR lines through (e.g. the harmless
# "E0000 ... NodeDef mentions attribute use_unbounded_threadpool"); 3 keeps only FATAL. It is
# read when TF loads, which in Stockcast is always after this module (keras is imported inside
# the functions that fit or load a network). Real failures still surface as Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json
import logging
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from ml.config import CHAMPION_ALIAS, EXPERIMENT_NAME, MODEL_NAME, Settings

log = logging.getLogger(__name__)


class _NoCloudPickleNotice(logging.Filter):
    """Drop MLflow's per-log notice that a Python object is pickled as ``python_model``.

    Kept narrow on purpose: only that message, only on the logger that emits it. The class is
    pickled by reference (``ml.registry.LstmForecaster``), so loading already needs this package
    and runs no code that is not in it; moving to models-from-code is left for a change that
    can be tested against the versions already registered.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Passing a Python object as `python_model`")


logging.getLogger("mlflow.pyfunc").addFilter(_NoCloudPickleNotice())


def configure(settings: Settings, experiment_id: str | None = None) -> str:
    """Point MLflow at the configured store; create the experiment unless its id is known.
    Returns the experiment's id."""
    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    if experiment_id is not None:
        mlflow.set_experiment(experiment_id=experiment_id)
        return experiment_id
    experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        experiment_id = mlflow.create_experiment(
            EXPERIMENT_NAME, artifact_location=settings.mlflow_artifact_root or None
        )
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    for message in recover(experiment_id):
        log.warning(message)
    return experiment_id


# --- recovery from a killed run -----------------------------------------------------------------

PID_TAG, HOST_TAG = "stockcast.pid", "stockcast.host"
# A RUNNING run that cannot be checked (another host, or no PID tag: runs from before the tag)
# is declared dead only after this long; a training takes minutes.
STALE_AFTER_HOURS = 24


def owner_tags() -> dict[str, str]:
    """Tags that let a later process tell whether this run's process is still alive."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _run_is_dead(run, now_ms: int) -> str | None:
    """Why a RUNNING run's process is gone, or None while it may be alive."""
    tags = run.data.tags
    pid, host = tags.get(PID_TAG), tags.get(HOST_TAG)
    if pid and host == socket.gethostname():
        if int(pid) == os.getpid() or _process_alive(int(pid)):
            return None
        return f"its process {pid} on {host} is gone"
    age_hours = (now_ms - run.info.start_time) / 3_600_000
    if age_hours > STALE_AFTER_HOURS:
        return f"still RUNNING {age_hours:.0f} h after it started (limit {STALE_AFTER_HOURS} h)"
    return None


def recover(experiment_id: str) -> list[str]:
    """Bring the store back to a consistent state after a killed `train` (or tune, backtest).

    Rules:
    * a RUNNING run whose process is gone (PID tag, same host) is marked FAILED; a run that
      cannot be checked is marked FAILED once it has been RUNNING for STALE_AFTER_HOURS;
    * recovery never promotes. A READY version that the promotion gate never judged (no alias,
      no ``gate_alias`` tag on its run, newer than every version holding an alias) was left by
      a `train` killed after registering, or by its promotion killed before setting the alias.
      Once the process that trained it is gone (the PID rule above: while it is alive, its
      promotion gate runs for minutes and is left to it), the version is tagged
      ``stockcast.recovered`` and keeps no alias: the next `stockcast train` (or `run`/`refresh`
      when no champion exists) trains and gates a new version. Until a model passes the gate,
      `score` publishes the baseline.

    Returns what was changed, one message per change.
    """
    client = MlflowClient()
    messages = []
    now_ms = int(time.time() * 1000)
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        reason = _run_is_dead(run, now_ms)
        if reason:
            client.set_tag(run.info.run_id, RECOVERED_TAG, f"marked FAILED: {reason}")
            client.set_terminated(run.info.run_id, status="FAILED")
            messages.append(f"MLflow run {run.info.run_id} marked FAILED: {reason}")
    for version in _never_gated(client):
        trainer = _trainer(client, version, now_ms)
        if trainer.alive:
            continue
        reason = (
            f"promotion interrupted: {trainer.description} ended after registering this "
            "version and before the promotion gate set its alias; recovery does not promote it"
        )
        client.set_model_version_tag(MODEL_NAME, version.version, RECOVERED_TAG, reason)
        messages.append(
            f"{MODEL_NAME} v{version.version} has no alias ({reason}): the next "
            "`stockcast train` (or `stockcast run`) trains and gates a new version"
        )
    return messages


RECOVERED_TAG = "stockcast.recovered"


def _never_gated(client: MlflowClient) -> list:
    """READY versions newer than every aliased version, with no alias, no ``gate_alias`` tag on
    their run and not yet tagged as recovered: promotions that never finished."""
    try:
        registered = client.get_registered_model(MODEL_NAME)
    except mlflow.exceptions.MlflowException:
        return []  # nothing registered yet
    newest_aliased = max((int(v) for v in registered.aliases.values()), default=0)
    left = []
    for version in client.search_model_versions(f"name = '{MODEL_NAME}'"):
        if (
            version.status != "READY"
            or int(version.version) <= newest_aliased
            or RECOVERED_TAG in (version.tags or {})
            or not version.run_id  # registered by hand, not by a `train` that may have died
        ):
            continue
        try:
            judged = "gate_alias" in client.get_run(version.run_id).data.tags
        except mlflow.exceptions.MlflowException:
            judged = False
        if not judged:
            left.append(version)
    return sorted(left, key=lambda v: int(v.version))


@dataclass(frozen=True)
class _Trainer:
    alive: bool
    description: str


def _trainer(client: MlflowClient, version, now_ms: int) -> _Trainer:
    """Whether the process that trained ``version`` may still be running its promotion gate,
    and how to name it. Same host: its PID is checked. Otherwise (another host, or a run from
    before the PID tag) it is taken as gone once its run is STALE_AFTER_HOURS old."""
    try:
        run = client.get_run(version.run_id)
    except mlflow.exceptions.MlflowException:
        return _Trainer(False, "its trainer (its training run is missing)")
    pid, host = run.data.tags.get(PID_TAG), run.data.tags.get(HOST_TAG)
    if pid and host == socket.gethostname():
        alive = int(pid) == os.getpid() or _process_alive(int(pid))
        return _Trainer(alive, f"its trainer (process {pid} on {host})")
    age_hours = (now_ms - (run.info.end_time or run.info.start_time)) / 3_600_000
    where = f"on {host}" if host else "with no process recorded"
    return _Trainer(
        age_hours <= STALE_AFTER_HOURS,
        f"its trainer ({where}, run last active {age_hours:.0f} h ago)",
    )


class LstmForecaster(mlflow.pyfunc.PythonModel):
    """Raw feature windows in, the published log-return forecast for horizons 1..H out: the
    network's location shrunk toward naive by the combination weights in its meta.
    :meth:`forecast` also gives the calibrated interval bounds."""

    def load_context(self, context):
        import keras

        from ml.model import FittedForecaster, Standardizer

        stats = json.loads(Path(context.artifacts["scalers"]).read_text())
        self.meta = stats["meta"]
        self.forecaster = FittedForecaster(
            keras.models.load_model(context.artifacts["network"], compile=False),
            Standardizer.from_dict(stats["x"]),
            Standardizer.from_dict(stats["y"]),
            history={},
        )

    def forecast(self, model_input: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Published log returns and their ``lower_80 .. upper_95`` bounds."""
        from ml.combine import published_forecast

        x = np.asarray(model_input, dtype=np.float32)
        return published_forecast(self.forecaster, x, self.meta)

    # Typed so MLflow does not warn on every log; np.ndarray is a hint MLflow accepts without
    # inferring a schema from it, so the signature stays the one inferred from the example.
    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        return self.forecast(model_input)[0]


def log_forecaster(forecaster, meta: dict, example_x: np.ndarray) -> str:
    """Log the fitted forecaster in the active run and register it. Returns the version."""
    from mlflow.utils.logging_utils import disable_logging, enable_logging

    with tempfile.TemporaryDirectory() as tmp:
        network_path = Path(tmp) / "network.keras"
        forecaster.network.save(network_path)
        scalers_path = Path(tmp) / "scalers.json"
        scalers_path.write_text(
            json.dumps(
                {
                    "x": forecaster.x_scaler.to_dict(),
                    "y": forecaster.y_scaler.to_dict(),
                    "meta": meta,
                }
            )
        )
        from ml.combine import published_forecast

        example_y = published_forecast(forecaster, example_x, meta)[0]
        # MLflow prints "Successfully registered model ..." and "Created version ..." itself;
        # the stage reports the registration in its own words.
        disable_logging()
        try:
            info = _log_model(network_path, scalers_path, example_x, example_y)
        finally:
            enable_logging()
    return str(info.registered_model_version)


def _log_model(network_path: Path, scalers_path: Path, example_x, example_y):
    from mlflow.models import infer_signature

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=LstmForecaster(),
        artifacts={"network": str(network_path), "scalers": str(scalers_path)},
        signature=infer_signature(example_x, example_y),
        input_example=example_x[:2],
        registered_model_name=MODEL_NAME,
        pip_requirements=["tensorflow-cpu", "keras>=3", "numpy", "mlflow"],
    )


def set_alias(version: str, alias: str) -> None:
    MlflowClient().set_registered_model_alias(MODEL_NAME, alias, version)


def champion_settings() -> tuple[str, dict] | None:
    """The champion's version and its model meta (settings, data range), without loading it."""
    version = champion_version()
    if version is None:
        return None
    run_id = MlflowClient().get_model_version(MODEL_NAME, version).run_id
    return version, mlflow.artifacts.load_dict(f"runs:/{run_id}/model_meta.json")


@dataclass
class RegisteredModel:
    version: str
    run_id: str
    model: object
    meta: dict


def champion_version() -> str | None:
    """The champion's version, or None when no model is registered yet."""
    try:
        return MlflowClient().get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version
    except mlflow.exceptions.MlflowException:
        return None


def load_champion() -> RegisteredModel:
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    except mlflow.exceptions.MlflowException as exc:
        raise LookupError(
            f"no '{CHAMPION_ALIAS}' version of model '{MODEL_NAME}' is registered: "
            "run `stockcast train` first"
        ) from exc
    # Without suppress_warnings MLflow maps every installed module to its package to compare
    # with the model's pip requirements, seconds per load, for a warning the CLI never shows
    # (MLflow logs at ERROR only: cli._quiet_libraries).
    model = mlflow.pyfunc.load_model(
        f"models:/{MODEL_NAME}/{version.version}", suppress_warnings=True
    )
    meta = model.unwrap_python_model().meta
    return RegisteredModel(str(version.version), version.run_id, model, meta)


CHAMPION_SET_TAGS = (
    "champion_set_by",
    "champion_set_reason",
    "champion_set_at",
    "champion_previous",
)


@dataclass(frozen=True)
class ChampionChange:
    previous: str | None
    current: str


def set_champion(version: str, reason: str, who: str) -> ChampionChange:
    """Move the ``champion`` alias to ``version`` by hand (a rollback, or forward again), and
    record on that version who did it, why, when and which version held it before (tags
    :data:`CHAMPION_SET_TAGS`). The promotion gate is not consulted: a person decides.

    Raises LookupError when the version is not registered or not READY (no alias moves).
    """
    from datetime import UTC, datetime

    client = MlflowClient()
    try:
        target = client.get_model_version(MODEL_NAME, version)
    except mlflow.exceptions.MlflowException as exc:
        known = sorted(
            (int(v.version) for v in client.search_model_versions(f"name = '{MODEL_NAME}'")),
        )
        listed = ", ".join(f"v{v}" for v in known) if known else "none"
        raise LookupError(
            f"{MODEL_NAME} has no version {version} (registered: {listed}): pick one of them "
            "(`stockcast champion` lists them)"
        ) from exc
    if target.status != "READY":
        raise LookupError(
            f"{MODEL_NAME} v{version} is {target.status}, not READY: pick a READY version "
            "(`stockcast champion` lists them)"
        )
    previous = champion_version()
    previous = None if previous is None else str(previous)  # an int from a SQL store
    set_alias(str(version), CHAMPION_ALIAS)
    values = (who, reason, datetime.now(UTC).isoformat(timespec="seconds"), previous)
    for key, value in zip(CHAMPION_SET_TAGS, values, strict=True):
        client.set_model_version_tag(MODEL_NAME, str(version), key, value or "none")
    return ChampionChange(previous, str(version))


def model_versions() -> list:
    """Every registered version of the model, newest first (empty when none)."""
    versions = MlflowClient().search_model_versions(f"name = '{MODEL_NAME}'")
    return sorted(versions, key=lambda v: -int(v.version))

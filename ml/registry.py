"""MLflow glue: tracking store, the logged model format, and the model registry.

The logged model is an MLflow pyfunc that carries the Keras network and the normalisation
statistics fit on training data; its input is a (samples, window, features) float32 array of
raw feature windows and its output the log returns for horizons 1..10.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from ml.config import CHAMPION_ALIAS, EXPERIMENT_NAME, MODEL_NAME, Settings


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
            EXPERIMENT_NAME, artifact_location=settings.mlflow_artifact_root
        )
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


class LstmForecaster(mlflow.pyfunc.PythonModel):
    """Raw feature windows in, log returns for horizons 1..H out."""

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

    def predict(self, context, model_input, params=None):
        return self.forecaster.predict(np.asarray(model_input, dtype=np.float32))


def log_forecaster(forecaster, meta: dict, example_x: np.ndarray) -> str:
    """Log the fitted forecaster in the active run and register it. Returns the version."""
    from mlflow.models import infer_signature

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
        example_y = forecaster.predict(example_x)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=LstmForecaster(),
            artifacts={"network": str(network_path), "scalers": str(scalers_path)},
            signature=infer_signature(example_x, example_y),
            input_example=example_x[:2],
            registered_model_name=MODEL_NAME,
            pip_requirements=["tensorflow-cpu", "keras>=3", "numpy", "mlflow"],
        )
    return str(info.registered_model_version)


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
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}")
    meta = model.unwrap_python_model().meta
    return RegisteredModel(str(version.version), version.run_id, model, meta)

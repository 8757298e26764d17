"""MLflow glue on a real sqlite store in tmp: a killed `train` is recovered from, and logging
the model is quiet. Killed states are made directly through MlflowClient."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")

from ml import registry  # noqa: E402
from ml.config import CHAMPION_ALIAS, MODEL_NAME, load_settings  # noqa: E402


@pytest.fixture
def store(stockcast_home, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings()
    experiment_id = registry.configure(settings)
    return settings, experiment_id


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


def _running_run(experiment_id: str, tags: dict[str, str], start_time: int | None = None) -> str:
    client = mlflow.MlflowClient()
    run = client.create_run(experiment_id, start_time=start_time, tags=tags, run_name="train")
    return run.info.run_id


def test_killed_runs_are_marked_failed_live_ones_kept(store) -> None:
    _settings, experiment_id = store
    client = mlflow.MlflowClient()
    host = registry.owner_tags()[registry.HOST_TAG]
    dead = _running_run(
        experiment_id, {registry.PID_TAG: str(_dead_pid()), registry.HOST_TAG: host}
    )
    live = _running_run(
        experiment_id, {registry.PID_TAG: str(os.getppid()), registry.HOST_TAG: host}
    )
    elsewhere = _running_run(experiment_id, {registry.PID_TAG: "1", registry.HOST_TAG: "other"})
    untagged_recent = _running_run(experiment_id, {})
    day_ms = 24 * 3_600_000
    untagged_old = _running_run(experiment_id, {}, start_time=client.get_run(dead).info.start_time
                                - day_ms - 60_000)  # fmt: skip

    messages = registry.recover(experiment_id)

    status = {run_id: client.get_run(run_id).info.status for run_id in
              (dead, live, elsewhere, untagged_recent, untagged_old)}  # fmt: skip
    assert status == {
        dead: "FAILED",
        live: "RUNNING",
        elsewhere: "RUNNING",
        untagged_recent: "RUNNING",
        untagged_old: "FAILED",
    }
    assert len(messages) == 2 and "is gone" in messages[0]
    assert "process" in client.get_run(dead).data.tags["stockcast.recovered"]
    assert registry.recover(experiment_id) == []  # converged


def _killed_trainer(experiment_id: str) -> str:
    """A finished training run whose process (on this host) is gone."""
    host = registry.owner_tags()[registry.HOST_TAG]
    run_id = _running_run(experiment_id, {registry.PID_TAG: str(_dead_pid()),
                                          registry.HOST_TAG: host})  # fmt: skip
    mlflow.MlflowClient().set_terminated(run_id)
    return run_id


def _version(run_id: str) -> str:
    return (
        mlflow.MlflowClient()
        .create_model_version(MODEL_NAME, f"runs:/{run_id}/model", run_id)
        .version
    )


def test_a_version_left_without_alias_is_tagged_never_promoted(store) -> None:
    _settings, experiment_id = store
    client = mlflow.MlflowClient()
    client.create_registered_model(MODEL_NAME)  # a registered model with no versions
    assert registry.recover(experiment_id) == []

    run_id = _killed_trainer(experiment_id)
    for _ in range(2):  # killed twice between registering and setting the alias
        _version(run_id)
    messages = registry.recover(experiment_id)
    assert registry.champion_version() is None  # no bootstrap: nothing is promoted
    assert len(messages) == 2, messages
    assert all("has no alias (promotion interrupted" in m for m in messages)
    assert "the next `stockcast train` (or `stockcast run`) trains and gates" in messages[1]
    for version in ("1", "2"):
        found = client.get_model_version(MODEL_NAME, version)
        assert found.tags[registry.RECOVERED_TAG].startswith("promotion interrupted: ")
        assert "does not promote" in found.tags[registry.RECOVERED_TAG]
        assert not found.aliases
    assert registry.recover(experiment_id) == []  # converged: tagged once

    # A version the gate judged (its run carries the decision) is not touched, with an alias
    # or, once a later version took the alias, without one.
    gated = _killed_trainer(experiment_id)
    client.set_tag(gated, "gate_alias", "challenger")
    registry.set_alias(_version(gated), "challenger")
    registry.set_alias(_version(gated), "challenger")  # v3 loses the alias to v4
    assert registry.recover(experiment_id) == []
    assert registry.RECOVERED_TAG not in client.get_model_version(MODEL_NAME, "3").tags


def test_versions_older_than_an_aliased_one_are_left_alone(store) -> None:
    """Versions from before the gate recorded its decision, superseded since: not interrupted
    promotions, so not tagged."""
    _settings, experiment_id = store
    client = mlflow.MlflowClient()
    client.create_registered_model(MODEL_NAME)
    run_id = _killed_trainer(experiment_id)
    _version(run_id)
    registry.set_alias(_version(run_id), CHAMPION_ALIAS)
    assert registry.recover(experiment_id) == []
    assert registry.RECOVERED_TAG not in client.get_model_version(MODEL_NAME, "1").tags


def test_version_of_a_live_trainer_is_left_to_its_promotion(store) -> None:
    """Training registers first and the promotion stage sets the alias minutes later: another
    process recovering meanwhile must not touch the version under the trainer's feet."""
    _settings, experiment_id = store
    client = mlflow.MlflowClient()
    client.create_registered_model(MODEL_NAME)
    live = _running_run(experiment_id, registry.owner_tags())
    client.set_terminated(live)  # train's run is finished; its promotion is under way
    _version(live)
    assert registry.recover(experiment_id) == []
    assert registry.RECOVERED_TAG not in client.get_model_version(MODEL_NAME, "1").tags

    client.set_tag(live, registry.PID_TAG, str(_dead_pid()))  # the trainer was killed
    messages = registry.recover(experiment_id)
    assert len(messages) == 1 and "promotion interrupted" in messages[0]
    assert "its trainer (process " in messages[0]
    assert registry.champion_version() is None


def test_a_trainer_on_another_host_is_given_the_stale_limit(store) -> None:
    _settings, experiment_id = store
    client = mlflow.MlflowClient()
    client.create_registered_model(MODEL_NAME)
    elsewhere = {registry.PID_TAG: "1", registry.HOST_TAG: "other-host"}
    recent = _running_run(experiment_id, elsewhere)
    client.set_terminated(recent)
    _version(recent)
    day_ms = 24 * 3_600_000
    long_ago = client.get_run(recent).info.start_time - day_ms - 3_600_000
    old = _running_run(experiment_id, elsewhere, start_time=long_ago)
    client.set_terminated(old, end_time=long_ago + 60_000)
    _version(old)
    messages = registry.recover(experiment_id)
    assert len(messages) == 1 and messages[0].startswith(f"{MODEL_NAME} v2 has no alias")
    assert "on other-host" in messages[0]
    assert registry.RECOVERED_TAG not in client.get_model_version(MODEL_NAME, "1").tags


def test_configure_recovers_on_first_lookup(store, caplog) -> None:
    settings, experiment_id = store
    client = mlflow.MlflowClient()
    client.create_registered_model(MODEL_NAME)
    _version(_killed_trainer(experiment_id))
    with caplog.at_level(logging.WARNING, logger="ml.registry"):
        registry.configure(settings)
    assert "promotion interrupted" in caplog.text
    assert registry.champion_version() is None
    assert client.get_model_version(MODEL_NAME, "1").tags[registry.RECOVERED_TAG]


def test_predict_type_hints_satisfy_mlflow() -> None:
    from mlflow.pyfunc.utils.data_validation import _get_func_info_if_type_hint_supported

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # np.ndarray: accepted, no schema inferred from it (the logged signature is used).
        assert _get_func_info_if_type_hint_supported(registry.LstmForecaster.predict) is None


@pytest.mark.slow
def test_logged_model_loads_and_logging_is_quiet(store, caplog, capfd) -> None:
    from ml.model import ModelParams, fit_forecaster

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5, 3)).astype(np.float32)
    y = rng.normal(size=(64, 10)).astype(np.float32)
    params = ModelParams(window=5, units=4, epochs=1, batch_size=32)
    forecaster = fit_forecaster(x[:48], y[:48], x[48:], y[48:], params)
    from ml.combine import calibrate, fast_scale, published_forecast

    features = ["a", "ret_1", "b"]
    calibration = calibrate(
        y[48:],
        *forecaster.predict_distribution(x[48:]),
        np.repeat(np.arange(4), 4),
        fast=fast_scale(x[48:], 1, 10),
    )
    meta = {"window": 5, "features": features, **calibration.to_dict()}
    with (
        warnings.catch_warnings(record=True) as caught,
        caplog.at_level(logging.WARNING),
        mlflow.start_run(),
    ):
        warnings.simplefilter("always")
        version = registry.log_forecaster(forecaster, meta, x[:8])
    texts = [str(w.message) for w in caught] + [caplog.text]
    assert not any("Add type hints" in t for t in texts)
    assert "Passing a Python object" not in caplog.text
    printed = capfd.readouterr()
    assert "registered model" not in printed.err + printed.out  # MLflow's own prints
    assert "Created version" not in printed.err + printed.out
    registry.set_alias(version, CHAMPION_ALIAS)
    loaded = registry.load_champion()
    # The registered model publishes what the stage computed: the combined point forecast and
    # the calibrated bounds, from its own meta.
    point, bounds = published_forecast(forecaster, x[:8], meta)
    np.testing.assert_allclose(loaded.model.predict(x[:8]), point, rtol=1e-5, atol=1e-7)
    loaded_point, loaded_bounds = loaded.model.unwrap_python_model().forecast(x[:8])
    for key in ("lower_80", "upper_95"):
        np.testing.assert_allclose(loaded_bounds[key], bounds[key], rtol=1e-5)
    assert (loaded_bounds["lower_95"] < loaded_point).all()

"""The tuned settings: where `stockcast tune` leaves its best trial and `train` finds it.

Tune stores the best parameters as a tag on its parent MLflow run (``stage=tune``);
:func:`best_params` reads the latest finished one back and :func:`resolve_params` lays a
training config's explicit settings over it. Below both stages: it imports neither.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING

from ml.config import EXPERIMENT_NAME
from ml.model import ModelParams

if TYPE_CHECKING:
    from ml.fitting import TrainConfig

TUNED_FIELDS = ("window", "units", "layers", "dropout", "learning_rate", "epochs")


def best_params(base: ModelParams | None = None) -> tuple[ModelParams, str | None]:
    """The best parameters of the latest tune run (or ``base`` if none), and that run's id."""
    import mlflow

    base = base or ModelParams()
    experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        return base, None
    runs = mlflow.search_runs(
        [experiment.experiment_id],
        filter_string="tags.stage = 'tune' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs.empty or "tags.best_params" not in runs:
        return base, None
    tuned = json.loads(runs.iloc[0]["tags.best_params"])
    return replace(base, **{k: v for k, v in tuned.items() if k in TUNED_FIELDS}), str(
        runs.iloc[0]["run_id"]
    )


def resolve_params(config: TrainConfig) -> tuple[ModelParams, str | None]:
    """The parameters a fit with ``config`` uses, and the tune run they come from (if any).

    With ``use_tuned``, the latest tune run's best parameters, with the settings of
    ``config.params`` that differ from the defaults winning; otherwise ``config.params``.
    MLflow must already point at the run context's store (``ctx.tracking()``).
    """
    if not config.use_tuned:
        return config.params, None
    tuned, tune_run_id = best_params()
    defaults = ModelParams()
    explicit = {k: v for k, v in config.params.as_dict().items() if v != getattr(defaults, k)}
    return replace(tuned, **explicit), tune_run_id

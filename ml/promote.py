"""Promote stage: the promotion gate decides the alias of a freshly registered model.

Runs after :func:`ml.train.train`: the candidate's settings (as trained, tuned parameters
resolved), the current champion's and the published baseline ``ewma`` are scored on the same
walk-forward folds beside naive (:func:`ml.gate.compare_on_same_folds`); :func:`ml.gate.decide`
applies the rule (no worse than naive's point forecast and a lower pinball loss than the
baseline's intervals; no worse than the champion; ``force``). The candidate's version gets the
alias `champion` or `challenger`, and the decision is recorded on its training run (tags
``gate_*``; metrics ``gate_<model>_<score>`` for candidate, champion and ewma, e.g.
``gate_candidate_rel_mae``, ``gate_ewma_pinball``). When nothing has passed and no champion
exists, forecasts are published from the baseline (``naive_ewma``, :mod:`ml.score`).
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING

import pandas as pd

from ml.data import load_indicators
from ml.features import build_feature_frame
from ml.gate import GateDecision, compare_on_same_folds, decide
from ml.model import ModelParams
from ml.score import BASELINE_MODEL_NAME

if TYPE_CHECKING:
    from ml.context import RunContext
    from ml.train import TrainResult


def promote(
    ctx: RunContext,
    candidate: TrainResult,
    *,
    force: bool = False,
    progress=None,
    frame: pd.DataFrame | None = None,
) -> GateDecision:
    """Judge the registered ``candidate`` against naive, the ewma baseline and the champion,
    set its alias and record why. ``frame`` is the feature frame it was trained on (loaded
    again if not given)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from ml import registry

    # The trained network and its windows are unreferenced once train has returned: free them
    # before the gate's fits, so that peak memory stays at one fit's worth.
    gc.collect()
    say = progress or (lambda message: None)
    config = candidate.config
    ctx.tracking()
    current = registry.champion_settings()  # the candidate has no alias yet: the one before
    champion = None
    if current:
        # Refit as the champion was trained: its settings and, when recorded, its feature set.
        champion = ModelParams(**current[1]["params"])
        if current[1].get("features"):
            champion = replace(config, params=champion, features=tuple(current[1]["features"]))
    say(
        f"promotion gate: walk-forward over {config.gate_folds} folds of "
        f"{config.gate_test_days} days, candidate"
        + (f" vs champion v{current[0]}" if current else "")
        + " vs the ewma baseline, beside naive"
    )
    if frame is None:
        tickers = list(config.tickers) if config.tickers else None
        frame = build_feature_frame(load_indicators(ctx.warehouse, tickers))
    scores = compare_on_same_folds(
        frame,
        config,
        config.params,
        champion,
        n_folds=config.gate_folds,
        test_days=config.gate_test_days,
        progress=say,
    )
    decision = decide(
        scores.candidate, scores.baseline, scores.champion, current[0] if current else None, force
    )
    say(gate_line(decision))

    registry.set_alias(candidate.model_version, decision.alias)
    client = MlflowClient()
    for key, value in decision.tags().items():
        client.set_tag(candidate.run_id, key, value)
    metrics = {
        f"gate_{model}_{name}": value
        for model, score in scores.by_model().items()
        for name, value in asdict(score).items()
        if not math.isnan(value)  # a model without intervals has no interval scores
    }
    client.log_batch(
        candidate.run_id,
        metrics=[Metric(key, value, int(time.time() * 1000), 0) for key, value in metrics.items()],
    )
    return decision


def gate_line(decision: GateDecision) -> str:
    """The one line the gate prints: alias, reason and, when no champion exists, what is
    published instead."""
    line = f"gate: {decision.alias}: {decision.reason}"
    if decision.published == "baseline":
        line += (
            "; no model has passed the gate, so forecasts will be published from the "
            f"baseline {BASELINE_MODEL_NAME}"
        )
    return line

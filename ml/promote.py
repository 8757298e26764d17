"""Promote stage: the promotion gate decides the alias of a freshly registered model.

Runs after :func:`ml.train.train`: the candidate's settings (as trained, tuned parameters
resolved) and the current champion's are each refit on the same walk-forward folds beside
naive (:func:`ml.gate.compare_on_same_folds`); :func:`ml.gate.decide` applies the rule (beat
naive, be no worse than the champion; ``force``; the bootstrap champion when none exists).
The candidate's version gets the alias `champion` or `challenger`, and the decision is
recorded on its training run (tags ``gate_*``, metrics ``gate_*_rel_mae``).
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

import pandas as pd

from ml.data import load_indicators
from ml.features import build_feature_frame
from ml.gate import GateDecision, compare_on_same_folds, decide
from ml.model import ModelParams

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
    """Judge the registered ``candidate`` against naive and the champion, set its alias and
    record why. ``frame`` is the feature frame it was trained on (loaded again if not given)."""
    from mlflow.tracking import MlflowClient

    from ml import registry

    # The trained network and its windows are unreferenced once train has returned: free them
    # before the gate's fits, so that peak memory stays at one fit's worth.
    gc.collect()
    say = progress or (lambda message: None)
    config = candidate.config
    ctx.tracking()
    current = registry.champion_settings()  # the candidate has no alias yet: the one before
    if current and current[0] == candidate.model_version:
        current = None  # made champion meanwhile by a recovery's bootstrap rule: none before
    champion_params = ModelParams(**current[1]["params"]) if current else None
    say(
        f"promotion gate: walk-forward over {config.gate_folds} folds of "
        f"{config.gate_test_days} days, candidate"
        + (f" vs champion v{current[0]}" if current else "")
        + " vs naive"
    )
    if frame is None:
        tickers = list(config.tickers) if config.tickers else None
        frame = build_feature_frame(load_indicators(ctx.warehouse, tickers))
    candidate_rel, champion_rel, _ = compare_on_same_folds(
        frame,
        config,
        config.params,
        champion_params,
        n_folds=config.gate_folds,
        test_days=config.gate_test_days,
        progress=say,
    )
    decision = decide(candidate_rel, champion_rel, current[0] if current else None, force)
    say(f"gate: {decision.alias}: {decision.reason}")

    registry.set_alias(candidate.model_version, decision.alias)
    client = MlflowClient()
    for key, value in decision.tags().items():
        client.set_tag(candidate.run_id, key, value)
    client.log_metric(candidate.run_id, "gate_candidate_rel_mae", decision.candidate_rel_mae)
    if decision.champion_rel_mae is not None:
        client.log_metric(candidate.run_id, "gate_champion_rel_mae", decision.champion_rel_mae)
    return decision

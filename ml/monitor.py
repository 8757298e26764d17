"""Monitor stage: drift of the champion's inputs and forecasts, realized accuracy, and whether to
retrain.

After a scoring, :func:`monitor` looks at the latest forecasts in ``ml.predicted_prices``:

* **drift** (Evidently): the model's inputs (stationary features: returns, volatility, indicator
  ratios; never a price level) over the last ``drift_window`` sessions up to the scoring's
  as-of date, and the forecast log returns (horizons 1, 5, 10) of the as-of dates in that
  window, each compared with the champion's training reference: a sample of its fit-period
  inputs and its published forecasts on the held-out validation period, logged by
  :func:`ml.train.train` as ``monitoring/reference_*.parquet`` on its MLflow run
  (:func:`log_reference`). The HTML report is saved under ``<home>/monitoring/`` and logged to
  the MLflow run of the monitor (one per scored as-of date and model version: scoring itself
  opens no MLflow run), the per-column scores are written to ``ml.drift_scores`` (one row per
  as-of date and column, replaced when monitored again) and the ``fct_feature_drift`` mart is
  rebuilt over them;
* **realized accuracy**: the current model's row of the ``fct_champion_accuracy_latest`` mart
  (rolling relative MAE vs naive and interval coverage over the last 63 sessions of target
  dates);

and returns a :class:`MonitorReport` whose ``retrain_reasons`` lists every threshold crossed
(:class:`ml.config.MonitorThresholds`). :func:`retrain_if_needed` then calls the retrain it is
given (train and the promotion gate) when there is a reason, and records the decision on the
monitor's MLflow run. The promotion gate, not the monitor, decides whether the new model
replaces the champion.

No TensorFlow here (nor in anything this module imports): the forecasts are read from the
warehouse, not recomputed. Evidently and MLflow are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ml.config import DRIFT_METHODS, MonitorThresholds, data_dir
from ml.contracts import INDICATOR_MART, PREDICTED_PRICES
from ml.features import INDICATOR_COLUMNS, build_feature_frame
from ml.score import BASELINE_MODEL_NAME

if TYPE_CHECKING:
    from ml.context import RunContext

REFERENCE_INPUTS = "monitoring/reference_inputs.parquet"
REFERENCE_PREDICTIONS = "monitoring/reference_predictions.parquet"
REFERENCE_ROWS = 5000  # fit-period input rows kept as the drift reference (seeded sample)
PREDICTION_HORIZONS = (1, 5, 10)  # forecast log returns compared for prediction drift
ACCURACY_MART = "marts.fct_champion_accuracy_latest"
DRIFT_MARTS = "source:ml.drift_scores+"
# Bars loaded before the drift window so that every input is past its warm-up (the longest is
# the 60-row volatility; the 50-day average and MACD need fewer).
WARM_UP_SESSIONS = 90
NOMINAL = {"80": 0.80, "95": 0.95}


def prediction_column(horizon: int) -> str:
    return f"predicted_return_h{horizon}"


# -- the training reference (written by train) ---------------------------------------------------


def reference_inputs(
    frame: pd.DataFrame,
    features: list[str],
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    rows: int = REFERENCE_ROWS,
    seed: int = 0,
) -> pd.DataFrame:
    """A seeded sample of the feature rows dated ``start``..``end`` (the fit period): the
    inputs the model learned from, one row per (ticker, trade_date), complete in ``features``."""
    dates = frame["trade_date"]
    inside = frame[(dates >= pd.Timestamp(start)) & (dates <= pd.Timestamp(end))]
    inside = inside.dropna(subset=list(features))
    if len(inside) > rows:
        inside = inside.sample(rows, random_state=seed).sort_index()
    return inside[["ticker", "trade_date", *features]].reset_index(drop=True)


def reference_predictions(
    predicted: np.ndarray, tickers: np.ndarray, as_of_dates: np.ndarray
) -> pd.DataFrame:
    """The published forecast log returns (horizons :data:`PREDICTION_HORIZONS`) on the
    held-out validation windows: how the model's forecasts are distributed on data it was not
    fit on."""
    out = pd.DataFrame({"ticker": tickers, "as_of_date": pd.to_datetime(as_of_dates)})
    for h in PREDICTION_HORIZONS:
        out[prediction_column(h)] = np.asarray(predicted, dtype=np.float64)[:, h - 1]
    return out


def log_reference(inputs: pd.DataFrame, predictions: pd.DataFrame) -> None:
    """Log both reference frames (small parquet files) on the active MLflow run."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        for frame, artifact in ((inputs, REFERENCE_INPUTS), (predictions, REFERENCE_PREDICTIONS)):
            path = Path(tmp) / Path(artifact).name
            frame.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path=str(Path(artifact).parent))


# -- the report ------------------------------------------------------------------------------


@dataclass
class Accuracy:
    """The current model's row of fct_champion_accuracy_latest."""

    n_realized: int = 0  # all its realized forecasts
    window_forecasts: int = 0  # realized forecasts in the rolling window
    window_start: str | None = None
    window_end: str | None = None
    rel_mae: float | None = None
    coverage_80: float | None = None
    coverage_95: float | None = None

    def gap(self, level: str) -> float | None:
        value = getattr(self, f"coverage_{level}")
        return None if value is None else value - NOMINAL[level]


@dataclass
class Drift:
    scores: pd.DataFrame  # one row per column (the ml.drift_scores rows)
    share: float  # drifted inputs / inputs compared
    drifted: list[str]  # inputs that drifted, most first
    predictions_drifted: list[str]
    window_start: str
    window_end: str
    report_path: Path | None


@dataclass
class MonitorReport:
    """What :func:`monitor` found. ``retrain_reasons`` is empty when nothing crossed."""

    thresholds: MonitorThresholds
    status: str = "monitored"  # or "nothing to monitor"
    message: str = ""
    as_of_date: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    mlflow_run_id: str | None = None  # the model's training run
    scored_at: str | None = None  # when the monitored forecasts were written (UTC)
    monitor_run_id: str | None = None  # the MLflow run holding this report
    drift: Drift | None = None
    accuracy: Accuracy | None = None
    notes: list[str] = field(default_factory=list)  # what could not be judged, and why
    retrain_reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def retrain_advised(self) -> bool:
        return bool(self.retrain_reasons)

    @property
    def drift_share(self) -> float | None:
        return self.drift.share if self.drift else None

    @property
    def report_path(self) -> Path | None:
        return self.drift.report_path if self.drift else None

    def lines(self) -> list[str]:
        """The figures, one per line, for people."""
        if self.status != "monitored":
            return [self.message]
        t = self.thresholds
        out = [
            f"monitored {self.model_name} v{self.model_version}, forecasts as of {self.as_of_date}"
        ]
        if self.drift:
            d = self.drift
            shown = ", ".join(d.drifted[:8]) + (" ..." if len(d.drifted) > 8 else "")
            out.append(
                f"input drift: {d.share:.0%} of the inputs drifted (threshold {t.drift_share:.0%}; "
                f"{d.window_start}..{d.window_end} vs the training reference, {t.drift_method} "
                f">= {t.drift_threshold})" + (f": {shown}" if d.drifted else "")
            )
            if d.predictions_drifted:
                out.append(f"forecast drift: {', '.join(d.predictions_drifted)}")
            if d.report_path:
                out.append(f"drift report: {d.report_path}")
        a = self.accuracy
        if a and a.window_forecasts:
            out.append(
                f"realized accuracy over {a.window_forecasts} forecasts due "
                f"{a.window_start}..{a.window_end}: relative MAE vs naive {_fmt(a.rel_mae)} "
                f"(threshold {t.rel_mae}), coverage 80% {_fmt(a.coverage_80, pct=True)}, "
                f"95% {_fmt(a.coverage_95, pct=True)} (gap threshold {t.coverage_gap:.0%})"
            )
        out += [f"note: {note}" for note in self.notes]
        if self.retrain_reasons:
            out.append("retrain advised:")
            out += [f"  - {reason}" for reason in self.retrain_reasons]
        else:
            out.append("no retrain advised: no threshold crossed")
        if self.monitor_run_id:
            out.append(f"MLflow run {self.monitor_run_id}")
        return out


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.0%}" if pct else f"{value:.3f}"


# -- the stage -------------------------------------------------------------------------------


def monitor(ctx: RunContext, *, progress=None, publish: bool = True) -> MonitorReport:
    """Drift and realized accuracy of the latest forecasts against the thresholds in
    ``ctx.settings.monitor``. Writes ``ml.drift_scores`` and (``publish``) rebuilds the drift
    mart; logs everything to the monitor's MLflow run. Running it again on the same data
    leaves the same state (the as-of date's rows and its MLflow run are reused)."""
    started = time.perf_counter()
    say = progress or (lambda message: None)
    thresholds = ctx.settings.monitor
    report = MonitorReport(thresholds)
    wh = ctx.warehouse
    latest = _latest_forecasts(ctx)
    if latest is None:
        report.status = "nothing to monitor"
        report.message = (
            "nothing to monitor yet: no forecasts in ml.predicted_prices; run `stockcast score` "
            "(or `stockcast run PATH...`) first"
        )
        return report
    report.as_of_date = str(latest["as_of_date"].date())
    report.model_name = str(latest["model_name"])
    report.model_version = str(latest["model_version"])
    report.mlflow_run_id = str(latest["mlflow_run_id"])
    report.scored_at = str(latest["scored_at"])
    say(
        f"monitoring {report.model_name} v{report.model_version}, forecasts as of "
        f"{report.as_of_date}"
    )

    report.accuracy = _accuracy(ctx, report)
    _judge_accuracy(report)

    experiment_id = ctx.tracking()  # MLflow: the reference lives on the model's training run
    if report.model_name == BASELINE_MODEL_NAME:
        report.notes.append(
            "no drift check: the forecasts are the naive_ewma baseline's (no champion), which has "
            "no training reference"
        )
    else:
        say(f"drift: last {thresholds.drift_window} sessions vs the training reference")
        with _no_progress_bar():
            report.drift = _drift(ctx, report, latest["as_of_date"])
        if report.drift is not None and report.drift.share >= thresholds.drift_share:
            shown = ", ".join(report.drift.drifted[:5])
            report.retrain_reasons.append(
                f"input drift share {report.drift.share:.0%} is at or above "
                f"{thresholds.drift_share:.0%} ({len(report.drift.drifted)} inputs drifted: "
                f"{shown}{' ...' if len(report.drift.drifted) > 5 else ''})"
            )

    report.monitor_run_id = _log_run(report, experiment_id)
    if report.drift is not None:
        scores = report.drift.scores.assign(monitor_run_id=report.monitor_run_id)
        report.drift.scores = scores
        wh.replace_drift_scores(scores)
        if publish:
            from ml.transform import transform

            say("publish: fct_feature_drift (dbt build)")
            transform(ctx, select=DRIFT_MARTS, echo=lambda line: None)
    report.seconds = time.perf_counter() - started
    return report


def _latest_forecasts(ctx: RunContext) -> pd.Series | None:
    """The model that wrote the most recent forecasts, and their as-of date."""
    wh = ctx.warehouse
    if not wh.table_exists(PREDICTED_PRICES.full_name):
        return None
    rows = wh.query_df(
        "select model_name, model_version, mlflow_run_id, max(as_of_date) as as_of_date, "
        f"max(scored_at) as scored_at from {wh.table(PREDICTED_PRICES.full_name)} "
        "group by model_name, model_version, mlflow_run_id "
        "order by scored_at desc, as_of_date desc, model_version desc limit 1"
    )
    if rows.empty:
        return None
    latest = rows.iloc[0].copy()
    latest["as_of_date"] = pd.Timestamp(latest["as_of_date"])
    return latest


def _accuracy(ctx: RunContext, report: MonitorReport) -> Accuracy | None:
    wh = ctx.warehouse
    if not wh.table_exists(ACCURACY_MART):
        report.notes.append(
            f"no realized accuracy: {ACCURACY_MART} is not built; run `stockcast transform`"
        )
        return None
    rows = wh.query_df(
        "select n_realized_forecasts, window_forecasts, window_first_target_date, "
        "accuracy_as_of_date, rel_mae, coverage_80, coverage_95 "
        f"from {wh.table(ACCURACY_MART)} "
        f"where model_name = '{_quote(report.model_name)}' "
        f"and model_version = '{_quote(report.model_version)}'"
    )
    if rows.empty:
        report.notes.append(
            f"no realized accuracy: {ACCURACY_MART} has no row for these forecasts yet; "
            "run `stockcast transform` after scoring"
        )
        return None
    row = rows.iloc[0]

    def value(name):
        v = row[name]
        return None if pd.isna(v) else float(v)

    def day(name):
        v = row[name]
        return None if pd.isna(v) else str(pd.Timestamp(v).date())

    return Accuracy(
        n_realized=int(row["n_realized_forecasts"]),
        window_forecasts=0 if pd.isna(row["window_forecasts"]) else int(row["window_forecasts"]),
        window_start=day("window_first_target_date"),
        window_end=day("accuracy_as_of_date"),
        rel_mae=value("rel_mae"),
        coverage_80=value("coverage_80"),
        coverage_95=value("coverage_95"),
    )


def _quote(text: str | None) -> str:
    return str(text).replace("'", "''")


def _judge_accuracy(report: MonitorReport) -> None:
    a, t = report.accuracy, report.thresholds
    if a is None:
        return
    if a.n_realized == 0:
        report.notes.append(
            "no realized accuracy yet: none of these forecasts is due (their target dates have "
            "no loaded close)"
        )
        return
    if a.window_forecasts < t.min_realized:
        report.notes.append(
            f"accuracy not judged: {a.window_forecasts} realized forecasts in the window, "
            f"{t.min_realized} needed (STOCKCAST_MONITOR_MIN_REALIZED)"
        )
        return
    span = f"over {a.window_forecasts} forecasts due {a.window_start}..{a.window_end}"
    if a.rel_mae is not None and a.rel_mae > t.rel_mae:
        report.retrain_reasons.append(
            f"realized relative MAE vs naive {a.rel_mae:.3f} is above {t.rel_mae} {span}"
        )
    for level in NOMINAL:
        gap = a.gap(level)
        if gap is not None and abs(gap) > t.coverage_gap:
            coverage = getattr(a, f"coverage_{level}")
            side = "too narrow" if gap < 0 else "too wide"
            report.retrain_reasons.append(
                f"{level}% intervals covered {coverage:.0%} of actuals {span} (gap "
                f"{abs(gap):.0%} above {t.coverage_gap:.0%}: {side})"
            )


# -- drift -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Evidently's import and run print warnings (pandas, scipy, its own deprecations)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loggers = [logging.getLogger(name) for name in ("evidently", "fsspec", "numexpr")]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _drift(ctx: RunContext, report: MonitorReport, as_of: pd.Timestamp) -> Drift | None:
    """Evidently drift of the inputs and forecasts in the window against the reference."""
    import mlflow

    thresholds = report.thresholds
    run_id = report.mlflow_run_id
    try:
        meta = mlflow.artifacts.load_dict(f"runs:/{run_id}/model_meta.json")
    except Exception as exc:  # the run or its meta is gone: say so, judge the rest
        report.notes.append(f"no drift check: the model's run {run_id} has no meta ({exc})")
        return None
    features = list(meta["features"])
    if not ctx.warehouse.table_exists(INDICATOR_MART):
        report.notes.append(
            f"no drift check: {INDICATOR_MART} is not built; run `stockcast transform`"
        )
        return None
    frame = _recent_features(ctx, as_of, thresholds.drift_window)
    window = np.sort(frame.loc[frame["trade_date"] <= as_of, "trade_date"].unique())
    window = window[-thresholds.drift_window :]
    if len(window) == 0:
        report.notes.append(f"no drift check: {INDICATOR_MART} has no bar up to {as_of.date()}")
        return None
    start, end = pd.Timestamp(window[0]), pd.Timestamp(window[-1])
    forecasts = _window_forecasts(ctx, report, start, as_of, frame)
    tickers = set(forecasts["ticker"]) if len(forecasts) else set(frame["ticker"])
    current_inputs = frame[frame["trade_date"].between(start, end) & frame["ticker"].isin(tickers)][
        features
    ]

    reference = _load_reference(run_id, REFERENCE_INPUTS)
    if reference is None:
        if not meta.get("fit_as_of_end"):
            report.notes.append(
                f"no drift check: the model's run {run_id} has neither a reference sample nor "
                "its fit period; retrain to monitor it"
            )
            return None
        report.notes.append(
            f"the model's run {run_id} has no logged reference sample (trained before "
            "monitoring): the reference inputs were rebuilt from the warehouse for its fit "
            f"period {meta.get('fit_as_of_start')}..{meta['fit_as_of_end']}"
        )
        reference = _rebuilt_reference(ctx, meta, features)
    reference_forecasts = _load_reference(run_id, REFERENCE_PREDICTIONS)
    predictions = [prediction_column(h) for h in PREDICTION_HORIZONS]
    if reference_forecasts is None:
        report.notes.append("no forecast drift: the model's run has no reference forecasts")
        predictions = []
    # One report over inputs and forecasts: the two kinds are on different rows (NaN in the
    # other kind's columns); Evidently compares each column on its own values.
    current = pd.concat(
        [current_inputs, forecasts[predictions] if predictions else None], ignore_index=True
    )
    ref = pd.concat(
        [reference[features], reference_forecasts[predictions] if predictions else None],
        ignore_index=True,
    )
    columns = [c for c in features + predictions if current[c].notna().any()]
    missing = sorted(set(features + predictions) - set(columns))
    if missing:
        report.notes.append(f"not compared (no value in the window): {', '.join(missing)}")
    if not any(c in features for c in columns):
        report.notes.append("no drift check: no model input has a value in the window")
        return None
    with _quiet():
        from evidently import Report
        from evidently.presets import DataDriftPreset

        preset = DataDriftPreset(
            columns=columns,
            method=thresholds.drift_method,
            threshold=thresholds.drift_threshold,
            drift_share=thresholds.drift_share,
        )
        snapshot = Report([preset]).run(current[columns], ref[columns])
        scores = _column_scores(snapshot.dict())
        path = (
            data_dir()
            / "monitoring"
            / (f"drift_{report.as_of_date}_{report.model_name}_v{report.model_version}.html")
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(path))
    distance = DRIFT_METHODS[thresholds.drift_method] == "distance"
    rows = []
    for column in columns:
        score = scores.get(column)
        drifted = score is not None and (
            score >= thresholds.drift_threshold if distance else score < thresholds.drift_threshold
        )
        rows.append(
            {
                "as_of_date": as_of.date(),
                "column_name": column,
                "column_kind": "prediction" if column in predictions else "input",
                "model_name": report.model_name,
                "model_version": report.model_version,
                "mlflow_run_id": run_id,
                "monitor_run_id": "",  # set once the MLflow run exists
                "method": thresholds.drift_method,
                "threshold": thresholds.drift_threshold,
                "drift_score": score,
                "is_drifted": int(drifted),
                "reference_rows": int(ref[column].notna().sum()),
                "current_rows": int(current[column].notna().sum()),
                "window_start": start.date(),
                "window_end": end.date(),
                "computed_at": pd.Timestamp.now(tz="UTC").tz_localize(None),
            }
        )
    table = pd.DataFrame(rows)
    order = table.sort_values("drift_score", ascending=not distance)
    inputs = order[order["column_kind"] == "input"]
    return Drift(
        scores=table,
        share=float(inputs["is_drifted"].mean()),
        drifted=inputs.loc[inputs["is_drifted"] == 1, "column_name"].tolist(),
        predictions_drifted=order.loc[
            (order["column_kind"] == "prediction") & (order["is_drifted"] == 1), "column_name"
        ].tolist(),
        window_start=str(start.date()),
        window_end=str(end.date()),
        report_path=path,
    )


def _column_scores(result: dict) -> dict[str, float]:
    """{column: drift score} from an Evidently 0.7 snapshot's ``dict()``."""
    scores = {}
    for metric in result.get("metrics", []):
        config = metric.get("config", {})
        if str(config.get("type", "")).endswith("ValueDrift") and "column" in config:
            value = metric.get("value")
            scores[config["column"]] = None if value is None else float(value)
    return scores


def _recent_features(ctx: RunContext, as_of: pd.Timestamp, window: int) -> pd.DataFrame:
    """Feature rows of every loaded ticker over the window and its warm-up, up to ``as_of``
    (the market inputs are means over the universe loaded, as when scoring)."""
    wh = ctx.warehouse
    # Calendar days that surely hold the sessions needed (about 1.6 calendar days a session).
    since = as_of - pd.Timedelta(days=int((window + WARM_UP_SESSIONS) * 1.6) + 10)
    indicators = wh.query_df(
        f"select {', '.join(INDICATOR_COLUMNS)} from {wh.table(INDICATOR_MART)} "
        f"where trade_date >= date '{since.date()}' and trade_date <= date '{as_of.date()}' "
        "order by ticker, trade_date"
    )
    indicators["trade_date"] = pd.to_datetime(indicators["trade_date"])
    return build_feature_frame(indicators)


def _window_forecasts(
    ctx: RunContext,
    report: MonitorReport,
    start: pd.Timestamp,
    end: pd.Timestamp,
    frame: pd.DataFrame,
) -> pd.DataFrame:
    """The model's forecast log returns (ln(predicted / as-of close)) for the as-of dates in the
    window, one row per (ticker, as_of_date), a column per horizon compared."""
    wh = ctx.warehouse
    horizons = ", ".join(str(h) for h in PREDICTION_HORIZONS)
    rows = wh.query_df(
        f"select ticker, as_of_date, horizon, predicted_close "
        f"from {wh.table(PREDICTED_PRICES.full_name)} "
        f"where model_name = '{_quote(report.model_name)}' "
        f"and model_version = '{_quote(report.model_version)}' "
        f"and as_of_date >= date '{start.date()}' and as_of_date <= date '{end.date()}' "
        f"and horizon in ({horizons})"
    )
    columns = ["ticker", "as_of_date", *(prediction_column(h) for h in PREDICTION_HORIZONS)]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows["as_of_date"] = pd.to_datetime(rows["as_of_date"])
    closes = frame[["ticker", "trade_date", "close"]].rename(columns={"trade_date": "as_of_date"})
    rows = rows.merge(closes, on=["ticker", "as_of_date"], how="inner")
    rows["log_return"] = np.log(rows["predicted_close"] / rows["close"])
    wide = rows.pivot_table(
        index=["ticker", "as_of_date"], columns="horizon", values="log_return"
    ).reset_index()
    wide.columns = [
        prediction_column(c) if isinstance(c, (int, np.integer)) else c for c in wide.columns
    ]
    return wide.reindex(columns=columns)


def _load_reference(run_id: str, artifact: str) -> pd.DataFrame | None:
    import mlflow

    try:
        path = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{artifact}")
    except Exception:  # not logged (a model trained before monitoring existed)
        return None
    return pd.read_parquet(path)


PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """No MLflow download progress bars on stderr (it reads the variable on every download)."""
    previous = os.environ.get(PROGRESS_BAR)
    os.environ[PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PROGRESS_BAR, None)
        else:
            os.environ[PROGRESS_BAR] = previous


def _rebuilt_reference(ctx: RunContext, meta: dict, features: list[str]) -> pd.DataFrame:
    """The reference sample rebuilt from the warehouse for the fit period in the model's meta
    (for models trained before the sample was logged)."""
    from ml.data import load_indicators

    frame = build_feature_frame(load_indicators(ctx.warehouse, meta.get("tickers")))
    return reference_inputs(
        frame, features, meta.get("fit_as_of_start", "1900-01-01"), meta["fit_as_of_end"]
    )


# -- MLflow ------------------------------------------------------------------------------------


def _log_run(report: MonitorReport, experiment_id: str) -> str:
    """Log the report to the monitor's MLflow run for (as-of date, model, version), reusing it
    when that scoring was monitored before; returns its id."""
    import mlflow
    from mlflow.tracking import MlflowClient

    found = MlflowClient().search_runs(
        [experiment_id],
        filter_string=(
            "tags.stage = 'monitor' "
            f"and tags.monitor_as_of_date = '{report.as_of_date}' "
            f"and tags.model_name = '{report.model_name}' "
            f"and tags.model_version = '{report.model_version}'"
        ),
        max_results=1,
    )
    run_id = found[0].info.run_id if found else None
    scoring = MlflowClient().search_runs(
        [experiment_id],
        filter_string=(
            "tags.stage = 'score' "
            f"and tags.as_of_date = '{report.as_of_date}' "
            f"and tags.model_name = '{report.model_name}' "
            f"and tags.model_version = '{report.model_version}'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    metrics: dict[str, float] = {}
    if report.drift:
        metrics["drift_share"] = report.drift.share
        metrics["inputs_drifted"] = float(len(report.drift.drifted))
        for row in report.drift.scores.itertuples():
            if row.drift_score is not None and np.isfinite(row.drift_score):
                metrics[f"drift_{row.column_name}"] = float(row.drift_score)
    if report.accuracy:
        a = report.accuracy
        metrics["realized_forecasts"] = float(a.window_forecasts)
        for name in ("rel_mae", "coverage_80", "coverage_95"):
            value = getattr(a, name)
            if value is not None:
                metrics[f"realized_{name}"] = value
    name = None if run_id else f"monitor {report.as_of_date}"
    with mlflow.start_run(run_id=run_id, run_name=name) as run:
        mlflow.set_tags(
            {
                "stage": "monitor",
                "monitor_as_of_date": report.as_of_date,
                "model_name": report.model_name,
                "model_version": report.model_version,
                "model_run_id": report.mlflow_run_id,
                "scored_at": report.scored_at,
                "retrain_advised": str(report.retrain_advised).lower(),
                "retrain_reasons": "; ".join(report.retrain_reasons) or "none",
                "notes": "; ".join(report.notes)[:5000] or "none",
                # Tags, not params: a run monitored again under other thresholds updates them.
                **{f"threshold_{k}": str(v) for k, v in vars(report.thresholds).items()},
            }
        )
        if scoring:  # shown under the scoring's run in the MLflow UI
            mlflow.set_tag("mlflow.parentRunId", scoring[0].info.run_id)
            mlflow.set_tag("scoring_run_id", scoring[0].info.run_id)
        if metrics:
            mlflow.log_metrics(metrics)
        if report.drift is not None:
            if report.drift.report_path:
                mlflow.log_artifact(str(report.drift.report_path), artifact_path="monitoring")
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "drift_scores.csv"
                report.drift.scores.drop(columns=["monitor_run_id"]).to_csv(path, index=False)
                mlflow.log_artifact(str(path), artifact_path="monitoring")
        return run.info.run_id


# -- the loop --------------------------------------------------------------------------------


@dataclass
class RetrainDecision:
    """What :func:`retrain_if_needed` did: ``retrained`` and, if so, what the retrain returned
    (the promotion gate's :class:`ml.gate.GateDecision` when given the train + promote stages)."""

    retrained: bool
    reasons: list[str]
    result: object = None


def retrain_if_needed(
    ctx: RunContext,
    report: MonitorReport,
    *,
    retrain: Callable[[], object],
    progress=None,
) -> RetrainDecision:
    """Call ``retrain()`` when the report has reasons; record the decision (and the gate's, when
    ``retrain`` returns a :class:`ml.gate.GateDecision`) on the monitor's MLflow run.

    ``retrain`` takes no argument: the flows pass their retrain flow, the CLI and tests the
    train and promote stages. Whether the new model replaces the champion is the promotion
    gate's decision, made inside ``retrain``."""
    say = progress or (lambda message: None)
    decision = RetrainDecision(bool(report.retrain_reasons), list(report.retrain_reasons))
    if decision.retrained:
        say("retraining: " + "; ".join(report.retrain_reasons))
        decision.result = retrain()
    else:
        say("no retrain: no threshold crossed")
    if report.monitor_run_id:
        from mlflow.tracking import MlflowClient

        ctx.tracking()
        client = MlflowClient()
        tags = {"retrain_decision": "retrained" if decision.retrained else "none"}
        result = decision.result
        if result is not None and hasattr(result, "tags"):  # a GateDecision
            tags.update({f"retrain_{k}": v for k, v in result.tags().items()})
        elif result is not None:
            tags["retrain_result"] = repr(result)[:5000]
        for key, value in tags.items():
            client.set_tag(report.monitor_run_id, key, value)
    return decision

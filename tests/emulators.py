"""Local BigQuery / GCS emulators for tests: fixtures and helpers (no side effects on import).

Register the fixtures in a conftest with ``from emulators import emulator_env  # noqa: F401``
(pytest finds fixtures imported into a conftest or test module).

``scripts/emulators.sh up`` installs the emulators once (cached virtualenvs) and starts them;
``emulator_env`` parses its ``export`` lines and stops the emulators at the end of the session
only if this session started them.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
EMULATORS_SCRIPT = REPO / "scripts" / "emulators.sh"
DBT_PROJECT_DIR = REPO / "dbt_project"


def parse_exports(text: str) -> dict[str, str]:
    """``export NAME=value`` lines (the only thing ``emulators.sh up|env`` prints) as a dict."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if not line.startswith("export ") or "=" not in line:
            raise ValueError(f"unexpected line on emulators.sh stdout: {line!r}")
        name, value = line.removeprefix("export ").split("=", 1)
        env[name] = value
    return env


def run_script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(EMULATORS_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def emulator_env() -> Iterator[dict[str, str]]:
    """Start (or reuse) the emulators; yields the variables ``emulators.sh up`` exports."""
    was_running = run_script("status").returncode == 0
    started = run_script("up")
    if started.returncode != 0:
        pytest.fail(f"scripts/emulators.sh up failed:\n{started.stderr[-4000:]}")
    env = parse_exports(started.stdout)
    yield env
    if not was_running:
        run_script("down")


def new_dataset_prefix() -> str:
    """A profile ``dataset`` of its own, so test sessions sharing one emulator never collide."""
    return f"stockcast_t{uuid.uuid4().hex[:8]}"


def dbt_env(env: dict[str, str], dataset_prefix: str) -> dict[str, str]:
    """Environment for a dbt subprocess on the emulator's ``bigquery`` target."""
    full = dict(os.environ)
    full.update(env)
    full["STOCKCAST_BQ_DATASET"] = dataset_prefix
    full["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    full.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    return full


def run_dbt(args: list[str], env: dict[str, str], target_path: Path) -> subprocess.CompletedProcess:
    """``dbt <args>`` in the project with its own target/log folders (parallel-safe)."""
    import sys

    dbt = Path(sys.executable).with_name("dbt")
    return subprocess.run(
        [
            str(dbt),
            *args,
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(REPO),
            "--target-path",
            str(target_path / "target"),
            "--log-path",
            str(target_path / "logs"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def warehouse_for(env: dict[str, str], **overrides: str):
    """The product's own warehouse engine for ``env`` (the emulator's target, or a DuckDB file):
    source tables are created from the same contracts (ml/contracts.py) the product uses."""
    from ml.config import load_settings
    from ml.warehouse import open_warehouse

    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("STOCKCAST_")]:
            patch.delenv(name)
        for name, value in {**env, **overrides}.items():
            patch.setenv(name, value)
        return open_warehouse(load_settings())


def seed_sources(warehouse, prices: pd.DataFrame, ml: dict[str, pd.DataFrame]) -> None:
    """Create the source tables and fill them through the engine's own writers."""
    warehouse.ensure_schema()
    load_prices(warehouse, prices)
    warehouse.replace_backtest("run_1", ml["ml.backtest_metrics"], ml["ml.backtest_forecasts"])
    warehouse.replace_predictions(ml["ml.predicted_prices"])
    if "ml.drift_scores" in ml:
        warehouse.replace_drift_scores(ml["ml.drift_scores"])


def load_prices(warehouse, prices: pd.DataFrame) -> None:
    """``prices`` through the engine's own price loader, one file per ``source_file`` as ingest
    loads them (no refused rows)."""
    from ml.contracts import REJECTED_ROWS

    no_refusals = pd.DataFrame(columns=REJECTED_ROWS.column_names)
    for source_file, bars in prices.groupby("source_file"):
        warehouse.load_price_file(
            bars,
            no_refusals,
            {
                "source_file": source_file,
                "content_sha256": "0" * 64,
                "layout": "yahoo",
                "tickers": ",".join(sorted(bars["ticker"].unique())),
                "rows_read": len(bars),
                "rows_refused": 0,
                "ingested_at": bars["ingested_at"].iloc[0],
            },
        )


def price_slice(yahoo_dir: Path, ticker: str, start: str, rows: int) -> pd.DataFrame:
    """``rows`` consecutive clean bars of a Yahoo CSV from ``start``, as raw.daily_prices rows.

    `null` rows and rows ingest would refuse (non-positive prices, OHLC violations) are dropped.
    """
    frame = pd.read_csv(yahoo_dir / f"{ticker}.csv.gz", na_values="null").dropna()
    frame = frame[frame["Date"] >= start]
    ohlc = frame[["Open", "High", "Low", "Close"]]
    ok = (
        (ohlc > 0).all(axis=1)
        & (frame["High"] >= ohlc.max(axis=1))
        & (frame["Low"] <= ohlc.min(axis=1))
    )
    frame = frame[ok].head(rows)
    return pd.DataFrame(
        {
            "ticker": ticker,
            "trade_date": pd.to_datetime(frame["Date"]).dt.date,
            "open": frame["Open"].astype(float),
            "high": frame["High"].astype(float),
            "low": frame["Low"].astype(float),
            "close": frame["Close"].astype(float),
            "adj_close": frame["Adj Close"].astype(float),
            "volume": frame["Volume"].astype("int64"),
            "source_file": f"{ticker}.csv.gz",
            "ingested_at": pd.Timestamp("2024-01-01"),
        }
    ).reset_index(drop=True)


def ml_frames(prices: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Small, mutually consistent ml tables over ``prices``: one backtest run of two models
    (metrics computed from the forecasts, so the reconciliation test holds) and forecasts."""
    import numpy as np

    created = pd.Timestamp("2024-02-01 12:00")
    forecasts = []
    for ticker, bars in prices.groupby("ticker"):
        bars = bars.sort_values("trade_date").reset_index(drop=True)
        closes = bars["close"].to_numpy()
        for fold, origin in enumerate(range(len(bars) - 40, len(bars) - 5, 10)):
            for horizon in (1, 2):
                actual = float(np.log(closes[origin + horizon] / closes[origin]))
                for model, predicted in (("naive", 0.0), ("lstm", actual * 0.5 + 0.001)):
                    interval = model == "lstm"
                    forecasts.append(
                        {
                            "backtest_run_id": "run_1",
                            "model": model,
                            "fold": fold,
                            "ticker": ticker,
                            "as_of_date": bars["trade_date"][origin],
                            "horizon": horizon,
                            "as_of_close": float(closes[origin]),
                            "actual_log_return": actual,
                            "predicted_log_return": predicted,
                            "lower_80": predicted - 0.02 if interval else None,
                            "upper_80": predicted + 0.02 if interval else None,
                            "lower_95": predicted - 0.04 if interval else None,
                            "upper_95": predicted + 0.04 if interval else None,
                        }
                    )
    forecasts = pd.DataFrame(forecasts)
    level = forecasts["as_of_close"]
    forecasts_abs_error = (
        level * np.exp(forecasts["predicted_log_return"])
        - level * np.exp(forecasts["actual_log_return"])
    ).abs()
    covered_80 = (forecasts["actual_log_return"] >= forecasts["lower_80"]) & (
        forecasts["actual_log_return"] <= forecasts["upper_80"]
    )
    covered_95 = (forecasts["actual_log_return"] >= forecasts["lower_95"]) & (
        forecasts["actual_log_return"] <= forecasts["upper_95"]
    )
    scored = forecasts.assign(
        abs_error=forecasts_abs_error,
        covered_80=covered_80.astype(float),
        covered_95=covered_95.astype(float),
    )
    metrics = []
    scopes = [(t, scored[scored["ticker"] == t]) for t in scored["ticker"].unique()]
    scopes.append(("__all__", scored))
    for scope, rows in scopes:
        for (model, horizon), group in rows.groupby(["model", "horizon"]):
            interval = model == "lstm"
            metrics.append(
                {
                    "backtest_run_id": "run_1",
                    "model": model,
                    "ticker": scope,
                    "horizon": int(horizon),
                    "n_forecasts": len(group),
                    "mae": float(group["abs_error"].mean()),
                    "rmse": float(np.sqrt((group["abs_error"] ** 2).mean())),
                    "mape": None,
                    "rel_mae": 1.0 if model == "naive" else 0.5,
                    "mase": None,
                    "directional_accuracy": None,
                    "dm_stat": None if model == "naive" else -2.5,
                    "dm_pvalue": None if model == "naive" else 0.01,
                    "coverage_80": float(group["covered_80"].mean()) if interval else None,
                    "width_80": 0.04 if interval else None,
                    "winkler_80": None,
                    "coverage_95": float(group["covered_95"].mean()) if interval else None,
                    "width_95": 0.08 if interval else None,
                    "winkler_95": None,
                    "n_folds": int(forecasts["fold"].max() + 1),
                    "first_as_of": forecasts["as_of_date"].min(),
                    "last_as_of": forecasts["as_of_date"].max(),
                    "created_at": created,
                }
            )
    predictions = []
    for ticker, bars in prices.groupby("ticker"):
        bars = bars.sort_values("trade_date").reset_index(drop=True)
        as_of = len(bars) - 3
        for horizon in (1, 2, 5):  # horizon 5 is past the last loaded bar: actual unknown
            target = (
                bars["trade_date"][as_of + horizon]
                if as_of + horizon < len(bars)
                else (bars["trade_date"].iloc[-1] + pd.Timedelta(days=7))
            )
            close = float(bars["close"][as_of])
            predictions.append(
                {
                    "ticker": ticker,
                    "as_of_date": bars["trade_date"][as_of],
                    "target_date": target,
                    "horizon": horizon,
                    "predicted_close": close * 1.01,
                    "lower_80": close * 0.97,
                    "upper_80": close * 1.05,
                    "lower_95": close * 0.95,
                    "upper_95": close * 1.07,
                    "model_name": "stockcast-lstm",
                    "model_version": "1",
                    "mlflow_run_id": "mlflow_run_1",
                    "scored_at": created,
                }
            )
    as_of = pd.DataFrame(predictions)["as_of_date"].max()
    drift = pd.DataFrame(
        {
            "as_of_date": as_of,
            "column_name": ["ret_1", "rsi", "volatility_20", "predicted_return_h1"],
            "column_kind": ["input", "input", "input", "prediction"],
            "model_name": "stockcast-lstm",
            "model_version": "1",
            "mlflow_run_id": "mlflow_run_1",
            "monitor_run_id": "monitor_run_1",
            "method": "wasserstein",
            "threshold": 0.75,
            "drift_score": [1.2, 0.1, 0.9, 2.0],
            "is_drifted": [1, 0, 1, 1],
            "reference_rows": 5000,
            "current_rows": 63,
            "window_start": as_of - pd.Timedelta(days=30),
            "window_end": as_of,
            "computed_at": created,
        }
    )
    return {
        "ml.backtest_forecasts": forecasts,
        "ml.backtest_metrics": pd.DataFrame(metrics),
        "ml.predicted_prices": pd.DataFrame(predictions),
        "ml.drift_scores": drift,
    }

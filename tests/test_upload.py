"""Upload-triggered loading on the local emulators: a CSV put into the (emulated) bucket and
announced by a CloudEvent ends as rows in BigQuery's raw dataset, then, after the refresh job, as
forecasts; a bad file ends in quarantine with its reason; a duplicate event changes nothing; a
failure mid-load leaves the tables as before and the event is retried.

The function is called through functions-framework's own app and test client, with the
CloudEvent headers Cloud Storage sends."""

from __future__ import annotations

import io
import uuid

import pandas as pd
import pytest
from helpers import YAHOO, tiny_train_config

pytestmark = pytest.mark.slow

TICKERS = ("KO", "AAPL")
ROWS = 420  # trading days per ticker: enough for the indicator warm-up and a tiny model


@pytest.fixture(scope="module")
def cloud(emulator_env, tmp_path_factory):
    """A run context on a fresh dataset prefix of the BigQuery emulator, the GCS emulator's
    upload bucket, and the Cloud Function app."""
    from functions_framework import create_app
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    from helpers import isolated_home

    import ml.upload

    env = {**emulator_env, "STOCKCAST_BQ_DATASET": f"upload_{uuid.uuid4().hex[:8]}"}
    with isolated_home(tmp_path_factory.mktemp("upload_home"), env):
        from ml.context import build_context

        ml.upload._runtime.clear()
        ctx = build_context()
        client = storage.Client(
            project=env["STOCKCAST_BQ_PROJECT"], credentials=AnonymousCredentials()
        )
        app = create_app(target="on_upload", source=ml.upload.__file__, signature_type="cloudevent")
        yield {
            "ctx": ctx,
            "bucket": client.bucket(env["STOCKCAST_GCS_BUCKET"]),
            "client": app.test_client(),
        }
        ml.upload._runtime.clear()


def _slice(ticker: str, rows: int = ROWS) -> pd.DataFrame:
    return pd.read_csv(YAHOO / f"{ticker}.csv.gz", dtype=str, keep_default_na=False).tail(rows)


def _accepted(ticker: str, rows: int = ROWS) -> int:
    """Bars of the slice ingest must accept: all but Yahoo's `null` bars."""
    return int((_slice(ticker, rows)["Close"] != "null").sum())


def _csv(ticker: str, rows: int = ROWS) -> bytes:
    frame = _slice(ticker, rows)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def _announce(cloud, name: str, event_id: str | None = None):
    """POST the CloudEvent Cloud Storage sends when ``name`` is finalized (binary mode)."""
    bucket = cloud["bucket"].name
    return cloud["client"].post(
        "/",
        json={"bucket": bucket, "name": name, "contentType": "text/csv"},
        headers={
            "ce-specversion": "1.0",
            "ce-id": event_id or uuid.uuid4().hex,
            "ce-source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
            "ce-type": "google.cloud.storage.object.v1.finalized",
            "ce-subject": f"objects/{name}",
            "ce-time": "2026-11-25T20:00:00Z",
            "Content-Type": "application/json",
        },
    )


def _snapshot(ctx) -> dict[str, pd.DataFrame]:
    wh = ctx.warehouse
    order = {
        "raw.daily_prices": "ticker, trade_date",
        "raw.rejected_rows": "source_file, line_number",
        "raw.ingested_files": "source_file",
    }
    return {
        table: wh.query_df(f"select * from {wh.table(table)} order by {keys}")
        for table, keys in order.items()
    }


def _assert_same(before, after) -> None:
    for table in before:
        pd.testing.assert_frame_equal(before[table], after[table], obj=table)


def _upload_all(cloud) -> None:
    """Put every test ticker's slice into the bucket and announce it (a duplicate when it is
    there already)."""
    for ticker in TICKERS:
        name = f"uploads/{ticker}.csv"
        cloud["bucket"].blob(name).upload_from_string(_csv(ticker), content_type="text/csv")
        assert _announce(cloud, name, event_id=f"evt-{ticker}").status_code == 200


def test_an_uploaded_csv_ends_as_rows_in_raw_and_a_duplicate_event_changes_nothing(cloud):
    _upload_all(cloud)
    state = _snapshot(cloud["ctx"])
    prices = state["raw.daily_prices"]
    assert sorted(prices["ticker"].unique()) == sorted(TICKERS)
    assert len(prices) == sum(_accepted(t) for t in TICKERS)
    ledger = state["raw.ingested_files"]
    bucket = cloud["bucket"].name
    assert sorted(ledger["source_file"]) == [
        f"gs://{bucket}/uploads/{t}.csv" for t in sorted(TICKERS)
    ]
    assert ledger["rows_inserted"].tolist() == [_accepted(t) for t in sorted(TICKERS)]
    assert ledger["rows_read"].tolist() == [ROWS, ROWS]

    # At-least-once delivery: the same event again (same id) and a new event for the same
    # object leave every table exactly as it was, load times included.
    assert _announce(cloud, "uploads/KO.csv", event_id="evt-KO").status_code == 200
    assert _announce(cloud, "uploads/KO.csv").status_code == 200
    _assert_same(state, _snapshot(cloud["ctx"]))


def test_a_refused_file_is_quarantined_with_its_reason_and_changes_nothing(cloud):
    before = _snapshot(cloud["ctx"])
    name = "uploads/batch-7/NOTES.csv"
    cloud["bucket"].blob(name).upload_from_string(b"hello,world\n1,2\n", content_type="text/csv")
    assert _announce(cloud, name).status_code == 200  # handled: no retry for a bad file
    assert cloud["bucket"].get_blob(name) is None
    assert cloud["bucket"].get_blob("quarantine/batch-7/NOTES.csv") is not None
    reason = cloud["bucket"].blob("quarantine/batch-7/NOTES.csv.reason.txt").download_as_text()
    assert f"gs://{cloud['bucket'].name}/{name}" in reason
    assert "layout" in reason  # names the problem: the header matches no known layout
    _assert_same(before, _snapshot(cloud["ctx"]))
    # The event delivered again finds the object gone and changes nothing.
    assert _announce(cloud, name).status_code == 200
    _assert_same(before, _snapshot(cloud["ctx"]))


def test_objects_outside_the_upload_prefix_are_ignored(cloud):
    from ml.upload import handle_object

    cloud["bucket"].blob("quarantine/KO.csv").upload_from_string(_csv("KO", 30))
    outcome = handle_object(
        cloud["ctx"], cloud["bucket"].client, cloud["bucket"].name, "quarantine/KO.csv"
    )
    assert outcome.status == "ignored"


def test_a_failure_mid_load_leaves_the_tables_as_before_and_the_event_is_retried(
    cloud, monkeypatch
):
    """The merge, the refused rows and the ledger are one transaction: an error after the MERGE
    has run (injected before COMMIT) rolls all of it back."""
    from ml.upload import TransientUploadError, handle_object

    warehouse = cloud["ctx"].warehouse
    before = _snapshot(cloud["ctx"])
    name = "uploads/AAPL.csv"
    cloud["bucket"].blob(name).upload_from_string(_csv("AAPL", ROWS + 40))  # 40 older bars
    real_run = warehouse._run

    def failing_run(sql, params=None):
        if "commit transaction" in sql:
            sql = sql.replace("commit transaction;", "select error('injected failure');")
        return real_run(sql, params)

    monkeypatch.setattr(warehouse, "_run", failing_run)
    with pytest.raises(TransientUploadError, match="injected failure"):
        handle_object(cloud["ctx"], cloud["bucket"].client, cloud["bucket"].name, name)
    _assert_same(before, _snapshot(cloud["ctx"]))
    assert cloud["bucket"].get_blob(name) is not None  # left in place for the retry

    monkeypatch.setattr(warehouse, "_run", real_run)
    outcome = handle_object(cloud["ctx"], cloud["bucket"].client, cloud["bucket"].name, name)
    older = _accepted("AAPL", ROWS + 40) - _accepted("AAPL")
    assert outcome.status == "loaded" and f" {older} inserted" in outcome.detail


def _scaled_csv(ticker: str, factor: float) -> bytes:
    frame = _slice(ticker)
    for column in ("Open", "High", "Low", "Close", "Adj Close"):
        values = pd.to_numeric(frame[column], errors="coerce") * factor
        frame[column] = values.map(lambda v: "null" if pd.isna(v) else f"{v:.6f}")
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def test_a_file_disagreeing_with_the_history_is_quarantined_with_evidence_or_replaces_it(cloud):
    """Uploaded beside the stored history, an unadjusted (x2) KO file is quarantined with the
    evidence; under uploads/replace/ it replaces KO's history; the original file uploaded there
    puts it back."""
    ctx, bucket = cloud["ctx"], cloud["bucket"]
    _upload_all(cloud)
    before = _snapshot(ctx)
    name = "uploads/other-vendor/KO.csv"
    bucket.blob(name).upload_from_string(_scaled_csv("KO", 2.0), content_type="text/csv")
    assert _announce(cloud, name).status_code == 200
    reason = bucket.blob("quarantine/other-vendor/KO.csv.reason.txt").download_as_text()
    assert "disagree with the stored history of KO" in reason
    assert "upload it under uploads/replace/" in reason and "--replace" not in reason
    assert "2:1 split" in reason.splitlines()[1]  # the evidence, line by line
    _assert_same(before, _snapshot(ctx))

    def ko_sources() -> set[str]:
        rows = ctx.warehouse.read_table(
            "raw.daily_prices", ["source_file"], filter_in={"ticker": ["KO"]}
        )
        return set(rows["source_file"])

    replace = "uploads/replace/KO.csv"
    for factor in (2.0, 1.0):  # replace, then put the original values back
        bucket.blob(replace).upload_from_string(_scaled_csv("KO", factor), content_type="text/csv")
        assert _announce(cloud, replace).status_code == 200
        assert bucket.get_blob("quarantine/replace/KO.csv") is None
        assert ko_sources() == {f"gs://{bucket.name}/{replace}"}
    after = _snapshot(ctx)["raw.daily_prices"]
    restored = after[after["ticker"] == "KO"].reset_index(drop=True)
    original = before["raw.daily_prices"]
    original = original[original["ticker"] == "KO"].reset_index(drop=True)
    pd.testing.assert_series_equal(restored["close"], original["close"], rtol=1e-6)


def test_after_the_refresh_job_the_uploads_end_as_forecasts(cloud):
    """The separate job (dbt build on BigQuery -> train -> score -> marts) on what the function
    loaded."""
    from ml.pipeline import refresh

    tiny = tiny_train_config()
    ctx = cloud["ctx"]
    _upload_all(cloud)
    report = refresh(ctx, train_config=tiny, say=lambda message: None)
    assert report.trained_version is not None and report.forecasts_written == len(TICKERS) * 10
    wh = ctx.warehouse
    forecasts = wh.query_df(f"select * from {wh.table('marts.fct_forecasts_vs_actuals')}")
    assert sorted(forecasts["ticker"].unique()) == sorted(TICKERS)
    assert (forecasts["horizon"].sort_values().unique() == range(1, 11)).all()


FUNCTION_CHECK = """
import json, sys
from cloudevents.http import CloudEvent
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

import main  # the deployed source root

bucket_name, name, csv_path = sys.argv[1:4]
bucket = storage.Client(project="p", credentials=AnonymousCredentials()).bucket(bucket_name)
bucket.blob(name).upload_from_filename(csv_path)
event = CloudEvent(
    {"type": "google.cloud.storage.object.v1.finalized", "source": "//storage.googleapis.com/x"},
    {"bucket": bucket_name, "name": name},
)
main.on_upload(event)
from ml.upload import _runtime

wh = _runtime["ctx"].warehouse
rows = wh.query_df(f"select count(*) as n from {wh.table('raw.daily_prices')}")["n"].iloc[0]
heavy = sorted(m for m in ("tensorflow", "keras", "mlflow", "dbt", "duckdb") if m in sys.modules)
print(json.dumps({"rows": int(rows), "heavy_modules": heavy}))
"""


def test_the_built_function_loads_an_upload_in_its_own_environment_without_heavy_deps(
    emulator_env, tmp_path
):
    """scripts/build_function.sh's folder, installed from its requirements.txt alone into a
    fresh virtualenv (as Cloud Functions does), loads an upload through `main.on_upload`, and
    never imports TensorFlow, Keras, MLflow, dbt or DuckDB."""
    import json
    import os
    import shutil
    import subprocess

    from helpers import REPO

    build = tmp_path / "function"
    subprocess.run([str(REPO / "scripts" / "build_function.sh"), str(build)], check=True)
    requirements = (build / "requirements.txt").read_text().lower()
    for heavy in ("tensorflow", "keras", "mlflow", "dbt-", "duckdb"):
        assert heavy not in requirements
    uv = [shutil.which("uv")] if shutil.which("uv") else ["python3", "-m", "uv"]
    venv = tmp_path / "venv"
    subprocess.run([*uv, "venv", "--quiet", "--python", "3.11", str(venv)], check=True)
    subprocess.run(
        [*uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
         "-r", str(build / "requirements.txt")],
        check=True,
    )  # fmt: skip
    csv = tmp_path / "KO.csv"
    csv.write_bytes(_csv("KO", 50))
    expected = _accepted("KO", 50)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("STOCKCAST_", "VIRTUAL_ENV"))},
        **emulator_env,
        "STOCKCAST_BQ_DATASET": f"fn_{uuid.uuid4().hex[:8]}",
        "STOCKCAST_HOME": str(tmp_path / "home"),
    }
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", FUNCTION_CHECK, env["STOCKCAST_GCS_BUCKET"],
         "uploads/fn/KO.csv", str(csv)],
        cwd=build, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"rows": expected, "heavy_modules": []}

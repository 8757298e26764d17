"""Upload-triggered loading: the Cloud Function behind the upload bucket.

A CSV finalized under the upload prefix (``STOCKCAST_UPLOAD_PREFIX``, default ``uploads/``) is
downloaded, validated and merged into ``raw`` by the same ingest step as the CLI, recorded under
its ``gs://`` name. A file refused as a whole is moved to the quarantine prefix
(``STOCKCAST_QUARANTINE_PREFIX``, default ``quarantine/``) with ``<name>.reason.txt`` beside it;
refused rows of an accepted file go to ``raw.rejected_rows`` as always. Events are delivered at
least once: the same event twice changes nothing (the load is an idempotent upsert; an object
already quarantined is gone). A failure that is not the file's fault raises, so the platform
retries the event; the load is atomic, so a failure mid-load leaves the tables as before.

A file whose closes disagree with the stored history of a ticker (another vendor, another split
adjustment) is quarantined with the evidence; uploaded under ``<upload prefix>replace/`` it
replaces those tickers' rows from the files it disagrees with (the CLI's ``--replace``).

No TensorFlow, dbt or MLflow here (cold start, size): dbt build and scoring run as the separate
``stockcast refresh`` job, started on a schedule or, if ``STOCKCAST_REFRESH_JOB`` names a Cloud
Run job (``projects/P/locations/R/jobs/J``), after each successful load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ml.ingest import CSV_SUFFIXES, ingest_file

if TYPE_CHECKING:
    from ml.context import RunContext

log = logging.getLogger("stockcast.upload")


class TransientUploadError(RuntimeError):
    """Not the file's fault: raised so that the event is delivered again."""


@dataclass(frozen=True)
class UploadOutcome:
    status: str  # loaded | duplicate | quarantined | ignored | gone
    object_name: str
    detail: str = ""


def upload_prefix() -> str:
    return os.environ.get("STOCKCAST_UPLOAD_PREFIX", "uploads/")


def quarantine_prefix() -> str:
    return os.environ.get("STOCKCAST_QUARANTINE_PREFIX", "quarantine/")


def handle_object(
    ctx: RunContext, storage_client, bucket_name: str, object_name: str
) -> UploadOutcome:
    """Load one uploaded object; quarantine it if the file is refused."""
    prefix, quarantine = upload_prefix(), quarantine_prefix()
    name = PurePosixPath(object_name).name
    if not object_name.startswith(prefix) or object_name.startswith(quarantine):
        return UploadOutcome("ignored", object_name, f"outside {prefix}")
    if not name.lower().endswith(CSV_SUFFIXES):
        return UploadOutcome("ignored", object_name, "not a .csv or .csv.gz file")
    bucket = storage_client.bucket(bucket_name)
    blob = bucket.get_blob(object_name)
    if blob is None:  # a repeated event for a file already quarantined (or deleted)
        return UploadOutcome("gone", object_name, "object no longer exists")
    uri = f"gs://{bucket_name}/{object_name}"
    with tempfile.TemporaryDirectory(prefix="stockcast-upload-") as tmp:
        local = Path(tmp) / name  # keeps the name: the ticker may come from it
        blob.download_to_filename(str(local))
        if _already_loaded(ctx, uri, hashlib.sha256(local.read_bytes()).hexdigest()):
            return UploadOutcome("duplicate", object_name, f"{uri} is loaded with this content")
        replace = object_name.startswith(f"{prefix}replace/")
        result = ingest_file(ctx, local, source_name=uri, replace=replace)
    if result.ok:
        detail = "\n".join(result.summary_lines()).replace(local.name, uri, 1)
        log.info(detail)
        return UploadOutcome("loaded", object_name, detail)
    reason = (
        (result.error or "refused")
        .replace(str(local), uri)
        .replace("load it with --replace", f"upload it under {prefix}replace/")
    )
    if result.retryable:
        raise TransientUploadError(reason)
    target = quarantine + object_name[len(prefix) :]
    evidence = "".join(f"  {line}\n" for line in result.details)
    bucket.blob(f"{target}.reason.txt").upload_from_string(
        f"{uri} was not loaded: {reason}\n{evidence}", content_type="text/plain"
    )
    bucket.copy_blob(blob, bucket, target)
    bucket.delete_blob(object_name)
    log.warning("quarantined %s: %s", uri, reason)
    return UploadOutcome("quarantined", object_name, reason)


def _already_loaded(ctx: RunContext, uri: str, sha256: str) -> bool:
    """True when the ledger holds ``uri`` with this exact content: a repeated event (delivery is
    at least once) then changes nothing at all, the ledger's times and counts included."""
    from ml.contracts import INGESTED_FILES

    if not ctx.warehouse.table_exists(INGESTED_FILES.full_name):
        return False
    ledger = ctx.warehouse.read_table(
        INGESTED_FILES.full_name, ["content_sha256"], filter_in={"source_file": [uri]}
    )
    return bool((ledger["content_sha256"] == sha256).any())


def start_refresh_job(job_name: str) -> None:
    """Run the Cloud Run job ``projects/P/locations/R/jobs/J`` (the dbt build + score job)."""
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    response = AuthorizedSession(credentials).post(
        f"https://run.googleapis.com/v2/{job_name}:run", json={}
    )
    if response.status_code >= 300:
        raise TransientUploadError(f"starting {job_name}: HTTP {response.status_code}")


_runtime: dict = {}


def _context_and_storage():
    """Built once per function instance, reused by every event it serves."""
    if not _runtime:
        from google.cloud import storage

        from ml.context import build_context

        _runtime["ctx"] = build_context()
        _runtime["storage"] = storage.Client()
    return _runtime["ctx"], _runtime["storage"]


def on_upload(cloud_event) -> None:
    """Cloud Function entry point (CloudEvent ``google.cloud.storage.object.v1.finalized``)."""
    data = cloud_event.data
    ctx, storage_client = _context_and_storage()
    outcome = handle_object(ctx, storage_client, data["bucket"], data["name"])
    log.info("%s %s %s", outcome.status, outcome.object_name, outcome.detail)
    job = os.environ.get("STOCKCAST_REFRESH_JOB")
    if job and outcome.status == "loaded":
        start_refresh_job(job)

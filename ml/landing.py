"""The landing folder: price files dropped into a folder, loaded by the daily flow.

The local twin of the Cloud Storage trigger. The rules:

- **What is picked up**: the files directly in the folder (not in sub-folders), whatever their
  name, except hidden files (``.name``), this module's own files and names that say a copy is
  still under way (:data:`IN_PROGRESS_SUFFIXES`: ``.part``, ``.tmp``, ``.crdownload``, ...).
  Files that arrived while nothing was watching are picked up at the next look.
- **Not read half-way**: a file is read only once its size and modification time are the same
  at two looks ``settle_seconds`` apart (:meth:`LandingFolder.ready`). Copying under a
  temporary name and renaming when done (what ``rsync``, ``gsutil`` and browsers do) is the
  sure way; the two looks catch a plain ``cp`` that is still writing.
- **Where files go**: a loaded file moves to ``processed/``; a refused one (a file problem:
  unreadable, unknown layout, every row refused, ...) to ``quarantine/`` with
  ``<name>.reason.txt`` beside it saying why. A file that failed for a reason that is not its
  own (the warehouse was busy or unreachable) stays where it is, for the next look. A name
  already taken in the destination gets the time it was filed added.
- **Never twice**: a ledger (``.stockcast-landing.json`` in the folder) records each file's
  content hash once it has been loaded. A file with the same content dropped again is not
  loaded again: it moves to ``processed/`` and the run says which earlier file it repeats.
  The ledger is written before the file is moved, so a crash in between files it away at the
  next look without loading it a second time. A lock (``.stockcast-landing.lock``) keeps two
  watchers of one folder from taking the same files.

This module knows files only: loading them is :func:`ml.flows.daily`'s work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

PROCESSED = "processed"
QUARANTINE = "quarantine"
LEDGER_NAME = ".stockcast-landing.json"
LOCK_NAME = ".stockcast-landing.lock"
REASON_SUFFIX = ".reason.txt"
# Names that writers give a file while it is being copied, to rename it when complete.
IN_PROGRESS_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".filepart", "~")
DEFAULT_SETTLE_SECONDS = 2.0


class LandingError(ValueError):
    """The folder cannot be used as a landing folder (missing, a file, not writable)."""


class LandingBusyError(LandingError):
    """Another watcher is filing this folder's files right now."""


def landing_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be a landing folder, with the fix; None if it can."""
    if not folder.exists():
        return (
            f"the landing folder {folder} does not exist: create it (`mkdir -p {folder}`) or "
            "pass the folder the price files are dropped into"
        )
    if not folder.is_dir():
        return (
            f"{folder} is a file, not a folder: pass the folder the price files are dropped "
            f"into (e.g. {folder.parent})"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"cannot write to the landing folder {folder} (files are moved to {PROCESSED}/ and "
            f"{QUARANTINE}/ inside it): give this user write access to it"
        )
    return None


@dataclass(frozen=True)
class Landed:
    """A file claimed for loading: where it is and its content hash."""

    path: Path
    sha256: str


@dataclass
class Claim:
    """What one look at the folder found."""

    to_load: list[Landed] = field(default_factory=list)
    # (file, the ledger's entry for the earlier file with the same content)
    repeats: list[tuple[Landed, dict]] = field(default_factory=list)
    still_writing: list[Path] = field(default_factory=list)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LandingFolder:
    def __init__(self, root: Path | str, settle_seconds: float = DEFAULT_SETTLE_SECONDS):
        self.root = Path(root).expanduser().resolve()
        self.settle_seconds = settle_seconds
        self.processed = self.root / PROCESSED
        self.quarantine = self.root / QUARANTINE
        self.ledger_path = self.root / LEDGER_NAME

    def check(self) -> None:
        problem = landing_problem(self.root)
        if problem:
            raise LandingError(problem)

    # -- looking ----------------------------------------------------------------------------
    def candidates(self) -> list[Path]:
        """The files waiting in the folder, by name (no file is opened)."""
        found = []
        for path in self.root.iterdir():
            name = path.name
            if name.startswith(".") or name.lower().endswith(IN_PROGRESS_SUFFIXES):
                continue
            if path.is_file():
                found.append(path)
        return sorted(found)

    def _look(self) -> dict[Path, tuple[int, int]]:
        sizes = {}
        for path in self.candidates():
            with contextlib.suppress(FileNotFoundError):  # moved away between the looks
                stat = path.stat()
                sizes[path] = (stat.st_size, stat.st_mtime_ns)
        return sizes

    def ready(self) -> tuple[list[Path], list[Path]]:
        """(files complete, files still being written): two looks ``settle_seconds`` apart; a
        file is complete if its size and modification time did not change in between."""
        first = self._look()
        if not first:
            return [], []
        time.sleep(self.settle_seconds)
        second = self._look()
        complete = sorted(p for p, seen in second.items() if first.get(p) == seen)
        writing = sorted(p for p in second if p not in complete)
        return complete, writing

    # -- claiming and filing ------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[LandingFolder]:
        """Hold the folder while its files are claimed, loaded and filed away: a second watcher
        of the same folder gets :class:`LandingBusyError` instead of the same files."""
        import fcntl

        self.check()
        with open(self.root / LOCK_NAME, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another watcher"
                raise LandingBusyError(
                    f"{holder} is filing the files of {self.root}: they are left to it"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"stockcast (PID {os.getpid()})")
            handle.flush()
            try:
                yield self
            finally:
                handle.seek(0)
                handle.truncate()
                handle.flush()
                fcntl.flock(handle, fcntl.LOCK_UN)

    def claim(self) -> Claim:
        """The complete files, split into those to load and repeats of files loaded before."""
        complete, writing = self.ready()
        claim = Claim(still_writing=writing)
        loaded = self._ledger()["loaded"]
        for path in complete:
            landed = Landed(path, file_sha256(path))
            earlier = loaded.get(landed.sha256)
            if earlier is None:
                claim.to_load.append(landed)
            else:
                claim.repeats.append((landed, earlier))
        return claim

    def file_loaded(self, landed: Landed) -> Path:
        """Record ``landed`` as loaded, then move it to ``processed/``."""
        ledger = self._ledger()
        ledger["loaded"][landed.sha256] = {
            "name": landed.path.name,
            "loaded_at": _now(),
        }
        self._write_ledger(ledger)
        return _move(landed.path, self.processed)

    def file_repeat(self, landed: Landed) -> Path:
        """Move a file whose content was loaded before to ``processed/`` (not loaded again)."""
        return _move(landed.path, self.processed)

    def file_refused(self, landed: Landed, reason: str) -> Path:
        """Move a refused file to ``quarantine/`` with ``<name>.reason.txt`` beside it."""
        moved = _move(landed.path, self.quarantine)
        note = moved.with_name(moved.name + REASON_SUFFIX)
        note.write_text(
            f"{moved.name} was refused by `stockcast watch` at {_now()} and not loaded.\n"
            f"sha256 {landed.sha256}\n\n{reason.rstrip()}\n\n"
            f"Fix the file and drop it into {self.root} again.\n"
        )
        return moved

    # -- the ledger ---------------------------------------------------------------------------
    def _ledger(self) -> dict:
        try:
            ledger = json.loads(self.ledger_path.read_text())
        except FileNotFoundError:
            return {"loaded": {}}
        except (OSError, ValueError) as exc:
            raise LandingError(
                f"cannot read the landing ledger {self.ledger_path} ({exc}): move it away to "
                "start a new one (files already loaded would then load again, which changes "
                "nothing in the warehouse)"
            ) from exc
        ledger.setdefault("loaded", {})
        return ledger

    def _write_ledger(self, ledger: dict) -> None:
        temporary = self.ledger_path.with_name(self.ledger_path.name + ".tmp")
        temporary.write_text(json.dumps(ledger, indent=1, sort_keys=True))
        os.replace(temporary, self.ledger_path)  # whole or not at all


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _split_name(name: str) -> tuple[str, str]:
    """``("AAPL", ".csv.gz")`` from ``AAPL.csv.gz``: the stem and all of its extensions."""
    lowered = name.lower()
    for suffix in (".csv.gz", ".csv", ".gz"):
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    stem, dot, extension = name.rpartition(".")
    return (stem, dot + extension) if stem else (name, "")


def _move(path: Path, folder: Path) -> Path:
    """Move ``path`` into ``folder`` without replacing a file there (a later copy of the same
    name gets the time it was filed: ``AAPL.20260105T223001.csv.gz``)."""
    folder.mkdir(exist_ok=True)
    target = folder / path.name
    if target.exists():
        stem, extension = _split_name(path.name)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        target = folder / f"{stem}.{stamp}{extension}"
        counter = 1
        while target.exists():
            counter += 1
            target = folder / f"{stem}.{stamp}-{counter}{extension}"
    os.replace(path, target)
    return target

"""Before long work: can this stage write (or read) where it must?

``score``, ``transform`` and ``train`` spend seconds to minutes (TensorFlow, MLflow, dbt) before
they first write. A read-only, full or damaged disk must be reported before that work, as one
line naming the path, the cause and the fix (:class:`StorageError`, exit code 4 in the CLI), not
as a traceback at the end. The checks are cheap: a small probe file written and fsynced in the
folder, the file opened for update, and a DuckDB connection opened and closed.

A disk that fills up *during* the work is not caught here; the stages surface the cause then
(see :mod:`ml.transform`).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from ml.warehouse import Warehouse, WarehouseError

# A probe this large must fit: a disk with less room than this cannot take a stage's writes
# (DuckDB grows its file in 256 KiB blocks, and writes a WAL beside it).
PROBE_BYTES = 1 << 20

# What to do when the disk refuses a write, by errno (the OS's wording names the cause).
FIXES = {
    errno.EROFS: "remount it read-write, or point STOCKCAST_HOME at a writable folder",
    errno.EACCES: "give this user write access to it, or point STOCKCAST_HOME at a writable folder",
    errno.EPERM: "give this user write access to it, or point STOCKCAST_HOME at a writable folder",
    errno.ENOSPC: "free some space on that disk (`df -h` shows it), then rerun",
    errno.EDQUOT: "free some of your disk quota, then rerun",
    errno.EFBIG: "a file size limit is set (`ulimit -f`): raise it, then rerun",
}
NOT_DUCKDB_MARKERS = ("not a valid duckdb database", "not a duckdb", "invalid magic")


class StorageError(WarehouseError):
    """A stage cannot write (or read) its storage: read-only, full, no permission, damaged."""


def _cause(exc: OSError) -> str:
    return exc.strerror or os.strerror(exc.errno or 0) or str(exc)


def _fix(exc: OSError) -> str:
    return FIXES.get(exc.errno, "fix the disk or the folder, or point STOCKCAST_HOME elsewhere")


def storage_fix(text: str) -> str | None:
    """The fix for the first write refusal named in ``text`` (another program's message, e.g.
    dbt's log: "... No space left on device"), or None if it names none."""
    found = [(at, code) for code in FIXES if (at := text.find(os.strerror(code))) >= 0]
    return FIXES[min(found)[1]] if found else None


def check_folder_writable(folder: Path, what: str) -> None:
    """Reserve (or, where the file system cannot reserve, write and fsync) a probe file of
    :data:`PROBE_BYTES` in ``folder`` and delete it; raise :class:`StorageError` (path, cause,
    fix) if that fails. Folders made for the probe are removed again: the check leaves no
    trace."""
    folder = Path(folder)
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    probe = folder / f".stockcast-write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _reserve(fd, PROBE_BYTES)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(
            f"cannot write the {what} folder {folder}: {_cause(exc)}: {_fix(exc)}"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
        for path in made:  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()


def _reserve(fd: int, size: int) -> None:
    """Make the file take ``size`` bytes of disk now. Allocating the blocks fails at once on a
    full disk (or past the file-size limit), as writing them would, without the fsync that
    writing needs to be sure (a quarter of a second of every command here)."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    except AttributeError:  # no posix_fallocate (macOS)
        pass
    block = b"\0" * 65536
    left = size
    while left > 0:
        # A short write is how a nearly full disk answers first; the next one fails.
        left -= os.write(fd, block[: min(left, len(block))])
    os.fsync(fd)


def check_local_store(uri: str, what: str) -> None:
    """Check the folder of a local store (``sqlite:///path``, ``file://`` URI or plain path)."""
    if uri.startswith("sqlite:///"):
        check_folder_writable(Path(uri.removeprefix("sqlite:///")).parent, what)
    elif uri.startswith("file:"):
        check_folder_writable(Path(unquote(urlparse(uri).path)), what)
    elif uri and "://" not in uri:
        check_folder_writable(Path(uri), what)
    # Anything else (an MLflow server, gs://, ...) is checked by its own client when used.


def check_warehouse(warehouse: Warehouse, write: bool = True) -> None:
    """The warehouse can be opened (and written, with ``write``) before long work starts.

    DuckDB: the folder takes a probe write, the file opens for update, and DuckDB accepts it
    as a database (waiting, bounded, while another command holds its lock, like every stage).
    Other engines are remote services: their clients report their own errors.
    """
    path = getattr(warehouse, "path", None)
    if warehouse.engine != "duckdb" or path is None:
        return
    path = Path(path)
    if write:
        check_folder_writable(path.parent, "warehouse")
    if not path.exists():
        return
    try:
        with open(path, "r+b" if write else "rb"):
            pass
    except OSError as exc:
        verb = "write" if write else "read"
        raise StorageError(
            f"cannot {verb} the warehouse {path}: {_cause(exc)}: {_fix(exc)}"
        ) from None
    try:
        with warehouse.connect(read_only=not write):
            pass
    except WarehouseError as exc:
        text = str(exc.__cause__ or exc)
        if any(marker in text.lower() for marker in NOT_DUCKDB_MARKERS):
            raise StorageError(
                f"the warehouse {path} is not a DuckDB database (damaged, or another kind of "
                f"file): move it aside (`mv {path} {path}.damaged`) and rebuild it with "
                "`stockcast ingest` on your price files, or restore a backup"
            ) from None
        raise

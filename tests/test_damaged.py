"""A damaged file or disk: a price file cut short is refused, not half loaded; `score`,
`transform` and `train` on a corrupt, read-only or full warehouse fail at once, before any long
work, with one `error:` line naming the path, the cause and the fix (exit code 4); a disk that
fills up while dbt builds is named in dbt's final error.

Read-only and full disks are made for real where the test may: as root, a read-only bind mount
and a small tmpfs; as another user, chmod (read-only) and RLIMIT_FSIZE (a full disk then reads
"File too large"). Otherwise the test is skipped and says why.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import YAHOO

from ml.cli import main

KO_TEXT = gzip.decompress((YAHOO / "KO.csv.gz").read_bytes()).decode() if YAHOO.is_dir() else ""
needs_data = pytest.mark.skipif(not YAHOO.is_dir(), reason=f"shared data not found at {YAHOO}")
STOCKCAST = Path(sys.executable).with_name("stockcast")
IS_ROOT = os.geteuid() == 0


# --- price files cut short ---------------------------------------------------------------------


def _ingest(path: Path):
    return CliRunner().invoke(main, ["ingest", str(path)])


def _loaded(home: Path) -> int:
    import duckdb

    path = home / "warehouse" / "stockcast.duckdb"
    if not path.exists():
        return 0
    with duckdb.connect(str(path), read_only=True) as con:
        tables = con.execute(
            "select count(*) from information_schema.tables where table_name = 'daily_prices'"
        ).fetchone()[0]
        return con.execute("select count(*) from raw.daily_prices").fetchone()[0] if tables else 0


@needs_data
def test_a_gzip_cut_in_half_fails_and_loads_nothing(stockcast_home, tmp_path):
    data = (YAHOO / "KO.csv.gz").read_bytes()
    path = tmp_path / "KO.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    result = _ingest(path)
    assert result.exit_code == 1
    assert "FAILED" in result.stdout and "cut short" in result.stdout
    assert _loaded(stockcast_home) == 0


@needs_data
@pytest.mark.parametrize(
    "cut, says",
    [
        # In the middle of the Close field: 5 of 7 fields.
        (lambda line: ",".join(line.split(",")[:4]) + "," + line.split(",")[4][:3],
         "has 5 of 7 fields: it stops in column 'Close' and 'Adj Close', 'Volume' are missing"),
        # Right after the last separator: the Volume is empty, as a complete row's could be.
        (lambda line: line[: line.rindex(",") + 1], "ends in an empty 'Volume'"),
    ],
    ids=["mid-field", "after-separator"],
)  # fmt: skip
def test_a_csv_cut_mid_row_fails_naming_the_line_and_columns(stockcast_home, tmp_path, cut, says):
    lines = KO_TEXT.splitlines()
    keep = len(lines) // 2
    path = tmp_path / "KO.csv"
    path.write_text("\n".join([*lines[: keep - 1], cut(lines[keep - 1])]))
    result = _ingest(path)
    assert result.exit_code == 1
    assert f"the file looks cut short: its last line (line {keep})" in result.stdout
    assert says in result.stdout
    assert "nothing was loaded" in result.stdout
    assert _loaded(stockcast_home) == 0


@needs_data
def test_a_complete_file_without_a_final_line_break_loads(stockcast_home, tmp_path):
    lines = KO_TEXT.splitlines()[:200]
    path = tmp_path / "KO.csv"
    path.write_text("\n".join(lines))  # the last row is whole: nothing says it was cut
    result = _ingest(path)
    assert result.exit_code == 0, result.output
    assert _loaded(stockcast_home) == 199


# --- the checks themselves (no mount needed) --------------------------------------------------


def test_an_unwritable_folder_is_named_with_its_cause_and_fix(tmp_path):
    from ml.warehouse import WarehouseError
    from ml.warehouse.preflight import StorageError, check_folder_writable, storage_fix

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # A folder under a file cannot be made, root or not.
    with pytest.raises(StorageError, match=r"cannot write the warehouse folder .*a-file/w: Not a"):
        check_folder_writable(blocker / "w", "warehouse")
    assert issubclass(StorageError, WarehouseError)  # exit code 4 in the CLI
    check_folder_writable(tmp_path / "new" / "folder", "warehouse")
    assert not (tmp_path / "new").exists()  # made for the probe, removed again
    assert "df -h" in storage_fix('Could not write file "x.wal": No space left on device')
    assert "read-write" in storage_fix("IO Error: Read-only file system")
    assert storage_fix("Binder Error: column not found") is None


def test_dbt_failing_on_a_full_disk_names_the_cause_and_fix_in_the_first_line(tmp_path):
    from ml.transform import DbtError, DbtLog, DbtStorageError, _failure
    from ml.warehouse import WarehouseError

    long_sql = "select " + ", ".join(f"c{i}" for i in range(900)) + " from x"
    text = (
        "Running with dbt=1.11.16\n"
        "1 of 2 START sql table model intermediate.int_rsi_computed ... [RUN]\n"
        "1 of 2 ERROR creating sql table model intermediate.int_rsi_computed [ERROR in 0.6s]\n"
        "Completed with 1 error, 0 partial successes, and 0 warnings:\n"
        "Runtime Error in model int_rsi_computed (models/intermediate/int_rsi_computed.sql)\n"
        f"  {long_sql}\n"
        '  TransactionContext Error: Failed to commit: Could not write file "/d/w.duckdb.wal": '
        "No space left on device\n"
        "Done. PASS=0 WARN=0 ERROR=1 SKIP=0 NO-OP=0 TOTAL=2\n"
    )
    log = DbtLog()
    for line in text.splitlines(keepends=True):
        log.add(line)
    error = _failure(["build"], 1, log, tmp_path / "dbt.log")
    assert isinstance(error, DbtStorageError) and isinstance(error, WarehouseError)
    first, *rest = str(error).splitlines()
    assert first.startswith("dbt build failed (exit 1). dbt: 1 model (1 error).")
    assert " Cause: TransactionContext Error: Failed to commit" in first
    assert "No space left on device: free some space on that disk" in first
    assert len(first) < 500
    assert long_sql in "\n".join(rest)  # the failure in full, below the first line

    plain = DbtLog()
    plain.add("Compilation Error in model x (models/x.sql)\n")
    error = _failure(["build"], 2, plain, tmp_path / "dbt.log")
    assert type(error) is DbtError
    assert str(error).splitlines()[0] == "dbt build failed (exit 2)."


# --- a damaged warehouse, with real disks -----------------------------------------------------


@contextlib.contextmanager
def _read_only(folder: Path):
    """Make ``folder`` read-only while the block runs; yields the OS's wording of the cause."""
    if not IS_ROOT:
        modes = {p: p.stat().st_mode for p in [folder, *folder.iterdir()]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield os.strerror(errno.EACCES)
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    # Root ignores file modes: a read-only bind mount of the folder onto itself.
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"root without permission to mount (chmod binds no root): {done.stderr}")
    try:
        if os.access(folder, os.W_OK) and _writable(folder):
            pytest.skip("this mount ignored `ro`: no read-only folder to test with")
        yield os.strerror(errno.EROFS)
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("x")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


@contextlib.contextmanager
def _full_disk(folder: Path, free_kib: int = 0):
    """Put ``folder`` on a disk with ``free_kib`` left while the block runs. Yields (the OS's
    wording of the cause, a preexec_fn for the processes that should see it, or None).

    As root: a tmpfs just large enough. Otherwise RLIMIT_FSIZE in the child: writes past the
    limit fail with EFBIG ("File too large"), which the checks treat like a full disk."""
    if IS_ROOT:
        aside = folder.with_name(folder.name + ".aside")
        folder.rename(aside)
        folder.mkdir()
        used = sum(p.stat().st_size for p in aside.iterdir()) // 1024
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={used + free_kib + 64}k", "tmpfs", str(folder)],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode == 0:
            try:
                for p in aside.iterdir():
                    shutil.copy2(p, folder / p.name)
                filler = folder / "filler"
                with open(filler, "wb") as file, contextlib.suppress(OSError):
                    while True:  # until the disk is full
                        file.write(b"\0" * 65536)
                        file.flush()
                os.truncate(filler, max(filler.stat().st_size - free_kib * 1024, 0))
                yield os.strerror(errno.ENOSPC), None
            finally:
                subprocess.run(["umount", str(folder)], check=True)
                folder.rmdir()
                aside.rename(folder)
            return
        folder.rmdir()
        aside.rename(folder)
    if free_kib:
        pytest.skip("a disk that fills up part-way needs a tmpfs (root with mount permission)")
    limit = 256 * 1024  # below the checks' 1 MiB probe

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    yield os.strerror(errno.EFBIG), preexec


# One process runs the four commands in turn (as the CLI would) and reports, for each, its
# exit code, stderr and time, and then whether anything slow was loaded or started.
PROBE = """
import json, sys, time
from click.testing import CliRunner
import ml.transform
from ml.cli import main

def no_dbt(args, *rest, **kwargs):
    raise AssertionError(f"dbt {' '.join(args)} was started")

ml.transform.run_dbt = no_dbt
out = []
for args in (["ingest", sys.argv[1]], ["score"], ["transform"], ["train", "--epochs", "1"]):
    start = time.monotonic()
    result = CliRunner().invoke(main, args)
    out.append(dict(args=args, code=result.exit_code, stderr=result.stderr,
                    seconds=round(time.monotonic() - start, 2)))
loaded = [m for m in ("tensorflow", "keras", "mlflow", "dbt") if m in sys.modules]
print(json.dumps(dict(commands=out, loaded=loaded)))
"""


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKCAST_", "MLFLOW_"))}
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        # Without bytecode every process compiles its libraries again: cache them apart from
        # the environment, for these processes only.
        env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "stockcast-test-pycache")
    return {**env, "STOCKCAST_HOME": str(home), "STOCKCAST_LOCK_WAIT_SECONDS": "5"}


@pytest.fixture(scope="module")
def loaded_home(tmp_path_factory) -> Path:
    """A home whose warehouse holds one ticker's prices (what the stages check, not a model)."""
    if not YAHOO.is_dir():
        pytest.skip(f"shared data not found at {YAHOO}")
    home = tmp_path_factory.mktemp("loaded") / "home"
    subprocess.run([str(STOCKCAST), "ingest", str(YAHOO / "KO.csv.gz")], env=_env(home),
                   check=True, capture_output=True)  # fmt: skip
    return home


def _probe(home: Path, preexec=None) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, str(YAHOO / "KO.csv.gz")], env=_env(home),
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=preexec)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_one_line_exit_4(report: dict, *says: str) -> None:
    for command in report["commands"]:
        lines = command["stderr"].splitlines()
        assert command["code"] == 4, command
        assert len(lines) == 1 and lines[0].startswith("error: "), command
        for text in says:
            assert text in lines[0], command
    # Nothing slow ran before the error: no TensorFlow, MLflow or dbt.
    assert report["loaded"] == []


@pytest.mark.parametrize("damage", ["corrupt", "read-only", "full"])
def test_ingest_score_transform_and_train_refuse_a_damaged_warehouse_at_once(
    loaded_home, tmp_path, damage
):
    home = tmp_path / "home"
    shutil.copytree(loaded_home, home)
    folder = home / "warehouse"
    path = folder / "stockcast.duckdb"
    if damage == "corrupt":
        with open(path, "r+b") as file:
            file.write(os.urandom(4096))
        report = _probe(home)
        _assert_one_line_exit_4(report, str(path), "is not a DuckDB database", "mv ")
    elif damage == "read-only":
        with _read_only(folder) as cause:
            report = _probe(home)
        # train only reads the warehouse: a read-only one is fine for it (its MLflow store is
        # elsewhere in the home, writable), so it gets past the check and fails for lack of
        # indicators instead; score and transform must write.
        train = report["commands"].pop()
        assert "Traceback" not in train["stderr"] and "Read-only" not in train["stderr"]
        report["loaded"] = [m for m in report["loaded"] if m not in ("mlflow",)]
        _assert_one_line_exit_4(report, str(folder), cause, "STOCKCAST_HOME")
    else:
        with _full_disk(folder) as (cause, preexec):
            report = _probe(home, preexec)
        if preexec is None:  # the tmpfs holds only the warehouse: train does not write there
            report["commands"].pop()
            report["loaded"] = [m for m in report["loaded"] if m not in ("mlflow",)]
        _assert_one_line_exit_4(report, cause)


@pytest.mark.slow
def test_a_disk_that_fills_up_during_dbt_build_is_named_in_the_final_error(loaded_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(loaded_home, home)
    with _full_disk(home / "warehouse", free_kib=1400) as (cause, _):
        start = time.monotonic()
        done = subprocess.run([str(STOCKCAST), "transform"], env=_env(home),
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        seconds = time.monotonic() - start
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr
    assert lines[-1].startswith("error: dbt build failed"), done.stderr
    assert cause in lines[-1] and "df -h" in lines[-1], lines[-1]
    assert cause in done.stdout  # the failure in full, above
    assert seconds < 300

"""The landing folder's rules (ml.landing) and `stockcast watch`'s checks, without Prefect:
which files are picked up, a file still being written is left alone, where files go, and a
file's content is never loaded twice."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import YAHOO

from ml.landing import (
    LEDGER_NAME,
    LandingBusyError,
    LandingFolder,
    landing_problem,
)


@pytest.fixture
def folder(tmp_path: Path) -> LandingFolder:
    root = tmp_path / "landing"
    root.mkdir()
    return LandingFolder(root, settle_seconds=0.3)


def _drop(folder: LandingFolder, name: str, text: str = "Date,Open,High,Low,Close\n") -> Path:
    path = folder.root / name
    path.write_text(text)
    return path


def test_only_finished_files_directly_in_the_folder_are_candidates(folder):
    for name in ("KO.csv", "notes.txt", ".hidden.csv", "AAPL.csv.part", "MSFT.csv.tmp",
                 "X.csv.crdownload", "Y.csv~"):  # fmt: skip
        _drop(folder, name)
    (folder.root / "sub").mkdir()
    _drop(folder, "sub/INNER.csv")
    assert [p.name for p in folder.candidates()] == ["KO.csv", "notes.txt"]


def test_a_file_still_growing_is_left_for_the_next_look(folder):
    done = _drop(folder, "DONE.csv", "Date,Close\n2020-01-02,1\n")
    growing = _drop(folder, "GROWING.csv", "Date,Close\n")

    def keep_writing() -> None:
        with open(growing, "a") as handle:
            for i in range(8):
                handle.write(f"2020-01-{i + 2:02d},1\n")
                handle.flush()
                time.sleep(0.08)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    complete, writing = folder.ready()
    writer.join()
    assert complete == [done] and writing == [growing]
    complete, writing = folder.ready()  # finished now: its size stays put between the looks
    assert complete == [done, growing] and writing == []


def test_loaded_content_is_never_loaded_twice_even_under_another_name(folder):
    first = _drop(folder, "KO.csv", "Date,Close\n2020-01-02,1\n")
    with folder.batch():
        claim = folder.claim()
        assert [c.path for c in claim.to_load] == [first] and not claim.repeats
        moved = folder.file_loaded(claim.to_load[0])
    assert moved == folder.processed / "KO.csv" and not first.exists()

    again = _drop(folder, "KO-again.csv", "Date,Close\n2020-01-02,1\n")
    other = _drop(folder, "PEP.csv", "Date,Close\n2020-01-02,2\n")
    # A new process reads the ledger from the folder.
    claim = LandingFolder(folder.root, settle_seconds=0.1).claim()
    assert [c.path for c in claim.to_load] == [other]
    assert [(c.path, earlier["name"]) for c, earlier in claim.repeats] == [(again, "KO.csv")]
    ledger = json.loads((folder.root / LEDGER_NAME).read_text())
    assert [entry["name"] for entry in ledger["loaded"].values()] == ["KO.csv"]


def test_a_crash_after_recording_but_before_moving_files_it_away_without_loading(folder):
    path = _drop(folder, "KO.csv", "Date,Close\n2020-01-02,1\n")
    landed = folder.claim().to_load[0]
    folder.file_loaded(landed)
    shutil.copy(folder.processed / "KO.csv", path)  # as if the move had not happened
    claim = folder.claim()
    assert claim.to_load == [] and [c.path for c, _ in claim.repeats] == [path]
    assert folder.file_repeat(claim.repeats[0][0]).parent == folder.processed


def test_refused_files_go_to_quarantine_with_their_reason_and_names_never_clash(folder):
    for attempt in range(2):
        _drop(folder, "bad.csv.gz", f"not gzip {attempt}")
        landed = folder.claim().to_load[0]
        moved = folder.file_refused(landed, f"bad.csv.gz: not a gzip file (attempt {attempt})")
        reason = moved.with_name(moved.name + ".reason.txt").read_text()
        assert f"attempt {attempt}" in reason and landed.sha256 in reason
    names = sorted(p.name for p in folder.quarantine.iterdir())
    assert len(names) == 4 and "bad.csv.gz" in names and "bad.csv.gz.reason.txt" in names
    stamped = [n for n in names if n != "bad.csv.gz" and not n.endswith(".reason.txt")]
    assert stamped[0].startswith("bad.") and stamped[0].endswith(".csv.gz")
    assert (folder.quarantine / "bad.csv.gz").read_text() == "not gzip 0"  # the first is kept


def test_two_watchers_never_take_the_same_files(folder):
    with (
        folder.batch(),
        pytest.raises(LandingBusyError, match=r"PID \d+\) is filing the files of"),
        LandingFolder(folder.root).batch(),
    ):
        pass
    with LandingFolder(folder.root).batch():  # released
        pass


def test_landing_problems_name_the_fix(tmp_path):
    assert "mkdir -p" in landing_problem(tmp_path / "missing")
    file = tmp_path / "prices.csv"
    file.write_text("x")
    assert "is a file, not a folder" in landing_problem(file)
    assert landing_problem(tmp_path) is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["watch", "{tmp}/missing"], "does not exist: create it (`mkdir -p"),
        (["watch", "{tmp}/prices.csv"], "is a file, not a folder"),
        (["watch", "--interval", "0", "{tmp}"], "x>=0.1"),
        (["serve", "--landing", "{tmp}/missing"], "does not exist"),
    ],
)
def test_watch_and_serve_check_their_folder_before_any_work(tmp_path, args, expected):
    from ml.cli import EXIT_USAGE, main

    (tmp_path / "prices.csv").write_text("x")
    result = CliRunner().invoke(main, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == EXIT_USAGE, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]


def test_watch_once_on_an_empty_folder_says_so_without_starting_prefect(tmp_path):
    (tmp_path / "processed").mkdir()  # sub-folders and hidden files are not new files
    (tmp_path / LEDGER_NAME).write_text("{}")
    code = (
        "import sys; from ml.cli import main\n"
        "try:\n    main(['watch', '--once', sys.argv[1]])\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print('prefect' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.splitlines() == [f"no new files in {tmp_path}: nothing to do", "False"]


def test_real_price_files_hash_by_content(folder):
    if not YAHOO.is_dir():
        pytest.skip(f"shared developer data not found at {YAHOO}")
    shutil.copy(YAHOO / "KO.csv.gz", folder.root / "KO.csv.gz")
    (folder.root / "KO-plain.csv").write_bytes(gzip.decompress((YAHOO / "KO.csv.gz").read_bytes()))
    claim = folder.claim()
    # The same bars in another encoding are another file: the warehouse's upsert makes the
    # second load change nothing.
    assert len(claim.to_load) == 2 and len({c.sha256 for c in claim.to_load}) == 2

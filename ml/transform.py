"""Transform stage: dbt build (models + data tests + unit tests) against the configured target.

dbt runs as a child process that never outlives Stockcast: on Linux the kernel sends it SIGTERM
when the parent dies, even by SIGKILL (``PR_SET_PDEATHSIG``), and a SIGTERM or SIGINT to the
parent is forwarded to it. An orphaned dbt would otherwise keep the DuckDB file locked.

By default the ~500 START/PASS lines of a full build are condensed into a few progress lines
and a summary; failures are shown in full. ``verbose=True`` passes every line through.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ml.config import DBT_PROJECT_DIR, Settings, data_dir, profiles_dir
from ml.warehouse import WarehouseError
from ml.warehouse.preflight import check_folder_writable, check_warehouse, storage_fix

if TYPE_CHECKING:
    from collections.abc import Callable

    from ml.context import RunContext


class DbtError(RuntimeError):
    pass


class DbtStorageError(DbtError, WarehouseError):
    """dbt failed because the disk refused a write (full, read-only, no permission): a
    warehouse problem (exit code 4 in the CLI), not a data problem."""


def dbt_command(args: list[str], settings: Settings) -> list[str]:
    dbt = Path(sys.executable).with_name("dbt")
    return [
        str(dbt) if dbt.exists() else "dbt",
        *args,
        "--project-dir", str(DBT_PROJECT_DIR),
        "--profiles-dir", str(profiles_dir()),
        "--target", settings.target,
    ]  # fmt: skip


# --- the child process: dies with its parent ---------------------------------------------------

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks the Linux kernel to SIGTERM the child when its parent dies.

    libc is loaded here, in the parent: the hook itself only makes the system call (no imports
    or allocation between fork and exec). None where prctl does not exist (macOS, Windows).
    Note: the "parent" is the *thread* that forks; run_dbt waits for the child in that thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


class _ForwardSignals:
    """While dbt runs, SIGTERM and SIGINT to this process are passed on to dbt; once dbt has
    exited, the signal takes its usual course here (KeyboardInterrupt, or termination).

    A second signal kills dbt outright. Only in the main thread (where Python handles signals);
    elsewhere the parent-death signal alone guards against orphans.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> _ForwardSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.process.poll() is not None:
            return
        if self.received is None:
            self.received = signum
            self.process.send_signal(signum)
        else:
            self.process.kill()

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if self.received is not None:
            self.process.wait()
            handler = self.previous.get(self.received)
            if callable(handler):
                handler(self.received, None)  # e.g. KeyboardInterrupt for SIGINT
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), self.received)


def _stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Make sure the child is gone (used when leaving run_dbt on an exception)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- the log: progress, summary and failures ------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # dbt colours its output even into a pipe
_TIMESTAMP = re.compile(r"^\d\d:\d\d:\d\d(\s{1,2}|$)")
_START = re.compile(r"^(\d+) of (\d+) START (.+?)\s(\S+?)\s*\.*\s*\[RUN\]$")
_RESULT = re.compile(r"^(\d+) of (\d+) (PASS|OK|ERROR|FAIL|WARN|SKIP|NO-OP)\b")
_FINISHED = re.compile(r"^Finished running .* in .*\(([\d.]+)s\)")
_COMPLETED = re.compile(r"^Completed with ")
_DONE = re.compile(r"^Done\. PASS=")
# Causes outside dbt that explain a failure better than dbt's own wording; shown first.
ROOT_CAUSES = (
    "No space left on device",
    "Read-only file system",
    "Could not set lock on file",
    "Conflicting lock is held",
    "Cannot open file",
    "Permission denied",
    "Disk quota exceeded",
    "Out of Memory",
    "database is locked",
    "Too many open files",
    "File too large",
)
CAUSE_CHARS = 300  # the cause in the one-line error, at most


def _kind(start_text: str) -> str:
    if start_text.startswith("unit_test"):
        return "unit test"
    if start_text.startswith("test"):
        return "data test"
    if "model" in start_text:
        return "model"
    return start_text.split()[0] if start_text else "node"


@dataclass
class DbtLog:
    """dbt's text log, read line by line as it arrives."""

    lines: list[str] = field(default_factory=list)
    kinds: dict[int, str] = field(default_factory=dict)
    statuses: dict[int, str] = field(default_factory=dict)
    total: int = 0
    seconds: float | None = None

    def add(self, raw: str) -> tuple[int, int] | None:
        """Record one line; returns (done, total) when it finishes a node."""
        line = _TIMESTAMP.sub("", _ANSI.sub("", raw.rstrip("\n")))
        self.lines.append(line)
        if match := _START.match(line):
            self.total = int(match[2])
            self.kinds[int(match[1])] = _kind(match[3])
        elif match := _RESULT.match(line):
            self.total = int(match[2])
            self.statuses[int(match[1])] = match[3]
            if match[3] == "NO-OP" and int(match[1]) not in self.kinds:  # e.g. an exposure
                self.kinds[int(match[1])] = line[match.end() :].split()[0]
            return len(self.statuses), self.total
        elif match := _FINISHED.match(line):
            self.seconds = float(match[1])
        return None

    def counts(self) -> dict[str, Counter]:
        by_kind: dict[str, Counter] = {}
        for index, status in self.statuses.items():
            status = {"OK": "pass", "NO-OP": "no-op"}.get(status, status.lower())
            by_kind.setdefault(self.kinds.get(index, "node"), Counter())[status] += 1
        return by_kind

    def summary(self) -> str:
        order = ("model", "data test", "unit test")
        by_kind = self.counts()
        parts = []
        for kind in sorted(by_kind, key=lambda k: (order.index(k) if k in order else 9, k)):
            counter = by_kind[kind]
            n = sum(counter.values())
            detail = ", ".join(f"{v} {k}" for k, v in sorted(counter.items()))
            parts.append(f"{n} {kind}{'s' if n != 1 else ''} ({detail})")
        took = f" in {self.seconds:.1f}s" if self.seconds is not None else ""
        return "dbt: " + ("; ".join(parts) or "no nodes ran") + took

    def problems(self) -> list[str]:
        """dbt's closing block of errors and warnings (every line of it), if it printed one."""
        for i, line in enumerate(self.lines):
            if _COMPLETED.match(line):
                block = self.lines[i:]
                end = next((j for j, text in enumerate(block) if _DONE.match(text)), len(block))
                return _trim_blank(block[:end])
        return []

    def causes(self) -> list[str]:
        """The log lines that name a root cause (:data:`ROOT_CAUSES`), each cause once."""
        causes, seen = [], set()
        for line in self.lines:
            text = line.strip()
            at = min((i for c in ROOT_CAUSES if (i := text.lower().find(c.lower())) >= 0),
                     default=-1)  # fmt: skip
            # One line per cause, however many times dbt repeats it (traceback, summary).
            key = re.sub(r"^[\w.]*(Exception|Error): ", "", text)
            if at >= 0 and key not in seen:
                seen.add(key)
                causes.append(text)
        return causes

    def failure_detail(self) -> str:
        """Root causes first, then the failing nodes' lines and dbt's error block in full."""
        causes = self.causes()
        failed = [line for line in self.lines if (m := _RESULT.match(line)) and m[3] in (
            "ERROR", "FAIL")]  # fmt: skip
        block = self.problems()
        if not block:
            # dbt stopped before or outside the nodes (parse error, connection, crash): every
            # line that is not per-node progress.
            block = _trim_blank(
                _fold_tracebacks(
                    [line for line in self.lines if not (_START.match(line) or _RESULT.match(line))]
                )
            )
        parts = []
        if causes:
            parts.append("cause: " + "\n       ".join(causes))
        if failed:
            parts.append("\n".join(failed))
        parts.append("\n".join(block))
        return "\n\n".join(part for part in parts if part)


def _fold_tracebacks(lines: list[str]) -> list[str]:
    """Python tracebacks (dbt prints one per chained exception) as one line each: the frames
    say where in dbt, not why; the exception line after them is kept, once."""
    out: list[str] = []
    frames = None
    for line in lines:
        if line.startswith("Traceback (most recent call last):"):
            frames = 0
            continue
        if frames is not None:
            if line.startswith(" ") or not line.strip():
                frames += 1
                continue
            out.append(f"(Python traceback, {frames} lines, in the dbt log)")
            frames = None
        if (line.strip() and line in out) or (not line.strip() and out and not out[-1].strip()):
            continue
        out.append(line)
    return out


def _trim_blank(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def dbt_env(settings: Settings) -> dict[str, str]:
    """The environment of a dbt child: the profile's settings, and its artefacts and logs in
    the data folder (not in dbt_project/)."""
    env = settings.dbt_env()
    work = data_dir() / "dbt"
    env.setdefault("DBT_TARGET_PATH", str(work / "target"))
    env.setdefault("DBT_LOG_PATH", str(work / "logs"))
    env.setdefault("DBT_PARTIAL_PARSE", "true")
    return env


def _failure(args: list[str], returncode: int, log: DbtLog, log_file: Path) -> DbtError:
    """The error for a failed dbt run. Its first line (the CLI's one-line error) has the
    counts, the first root cause and, for a disk that refused a write, the fix; the lines
    after it hold the failure in full."""
    headline = f"dbt {' '.join(args)} failed (exit {returncode})."
    if log.statuses:
        headline += f" {log.summary()}."
    causes = log.causes()
    storage = None
    if causes:
        cause = causes[0]
        if len(cause) > CAUSE_CHARS:
            cause = cause[: CAUSE_CHARS // 2 - 2] + " ... " + cause[-(CAUSE_CHARS // 2 - 3) :]
        headline += f" Cause: {cause}"
        storage = storage_fix("\n".join(causes))
        if storage:
            headline += f": {storage}"
    message = f"{headline}\n{log.failure_detail()}\n\n(dbt's full log: {log_file})"
    return (DbtStorageError if storage else DbtError)(message)


def run_dbt(
    args: list[str],
    settings: Settings,
    echo: Callable[[str], None] | None = None,
    verbose: bool = False,
) -> str:
    """Run a dbt command and return its whole log; raise DbtError (cause first) on failure.

    ``echo`` receives every log line when ``verbose``; otherwise progress at each quarter of the
    nodes, a summary of counts, and dbt's warning block if any.
    """
    env = dbt_env(settings)
    say = echo or (lambda line: None)
    log = DbtLog()
    output: list[str] = []
    posix = os.name == "posix"
    process = subprocess.Popen(
        dbt_command(args, settings),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_die_with_parent_hook(),
        # Its own process group: a terminal's Ctrl-C reaches dbt once, forwarded by us.
        **({"process_group": 0} if posix else {}),
    )
    try:
        with process, _ForwardSignals(process):
            next_quarter = 1
            for line in process.stdout:
                output.append(line)
                progress = log.add(line)
                if verbose:
                    say(line.rstrip("\n"))
                elif progress:
                    done, total = progress
                    if done * 4 >= next_quarter * total:
                        failed = sum(s in ("ERROR", "FAIL") for s in log.statuses.values())
                        say(
                            f"dbt {args[0]}: {done}/{total} nodes done"
                            + (f", {failed} failed" if failed else "")
                        )
                        while next_quarter <= 4 and done * 4 >= next_quarter * total:
                            next_quarter += 1
    finally:
        _stop(process)
    text = "".join(output)
    if process.returncode != 0:
        raise _failure(args, process.returncode, log, Path(env["DBT_LOG_PATH"]) / "dbt.log")
    if not verbose:
        say(log.summary())
        for line in log.problems():  # warnings, in full
            say(line)
    return text


def transform(
    ctx: RunContext,
    select: str | None = None,
    echo: Callable[[str], None] | None = None,
    verbose: bool = False,
) -> str:
    """``dbt build``: build every model and run every data and unit test.

    The warehouse's own tables are created first, so dbt's sources exist on a new warehouse.
    Returns dbt's whole log; ``echo`` gets a summary, or every line when ``verbose``.
    """
    # A read-only, full or damaged disk is one early error, not a failed dbt build later.
    check_warehouse(ctx.warehouse, write=True)
    env = dbt_env(ctx.settings)
    for name in ("DBT_TARGET_PATH", "DBT_LOG_PATH"):
        check_folder_writable(Path(env[name]), "dbt " + name.removeprefix("DBT_").lower())
    ctx.warehouse.ensure_schema()
    args = ["build"]
    if select:
        args += ["--select", select]
    return run_dbt(args, ctx.settings, echo, verbose=verbose)

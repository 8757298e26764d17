"""One subprocess, measured: wall seconds, the peak resident memory of its whole process tree
(the command and every child it starts, e.g. dbt's), the load average around it, its output.

Shared by the benchmarks (scale.py, indicator_speed.py, bench_run.py) so that every figure in
docs/benchmarks.md is taken the same way.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path

import psutil


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants (0 for any that has exited)."""
    total = 0
    with contextlib.suppress(psutil.Error):
        for proc in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
    return total


def run_measured(
    command: list[str],
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    echo: bool = False,
    interval: float = 0.05,
) -> dict:
    """Run ``command`` to its end; sample its tree's memory every ``interval`` seconds.

    Returns ``exit_status``, ``seconds`` (wall clock), ``peak_rss_mib``, ``load_average``
    (the 1-minute load at the start and at the end) and ``output`` (stdout and stderr, merged;
    printed as it comes with ``echo``).
    """
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    watched = psutil.Process(process.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(watched))
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lines = []
    for line in process.stdout:
        lines.append(line)
        if echo:
            print(line, end="", flush=True)
    process.wait()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    return {
        "command": " ".join(map(str, command)),
        "exit_status": process.returncode,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak / 2**20, 1),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "output": "".join(lines),
    }

"""Benchmark: `stockcast run` on a folder of price files, in a fresh data folder.

Reports wall time per stage (from the run's own stage timer), total wall time, and the peak
resident memory of the whole process tree (the CLI plus its dbt subprocesses), sampled every
0.2 s. Usage: python benchmarks/bench_run.py --data ../shared/data/yahoo_sp500_daily
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--home", type=Path, help="data folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/run.json"))
    parser.add_argument("extra", nargs="*", help="extra arguments for `stockcast run`")
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="stockcast-bench-"))
    env = dict(os.environ, STOCKCAST_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("STOCKCAST_DUCKDB_PATH", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    stockcast = Path(sys.executable).with_name("stockcast")
    command = [str(stockcast), "run", str(args.data), *args.extra]
    print("$", " ".join(command), f"(STOCKCAST_HOME={home})", flush=True)

    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    watched = psutil.Process(process.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(watched))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = []
    for line in process.stdout:
        output.append(line)
        print(line, end="", flush=True)
    process.wait()
    done.set()
    sampler.join()
    total = time.perf_counter() - started

    stage_line = next((s for s in reversed(output) if s.startswith("stage seconds:")), "")
    stages = {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+)", stage_line)}
    result = {
        "command": " ".join(command),
        "exit_code": process.returncode,
        "total_seconds": round(total, 1),
        "stage_seconds": stages,
        "peak_rss_gib": round(peak / 2**30, 2),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    sys.exit(process.returncode)


if __name__ == "__main__":
    main()

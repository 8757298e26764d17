"""Benchmark: `stockcast run` on a folder of price files, in a fresh data folder.

Reports wall time per stage (from the run's own stage timer), total wall time, and the peak
resident memory of the whole process tree (the CLI plus its dbt subprocesses), sampled every
0.2 s. Usage: python benchmarks/bench_run.py --data ../shared/data/yahoo_sp500_daily
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured


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

    measured = run_measured(command, env, echo=True, interval=0.2)
    output = measured["output"].splitlines()
    stage_line = next((s for s in reversed(output) if s.startswith("stage seconds:")), "")
    stages = {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+)", stage_line)}
    result = {
        "command": " ".join(command),
        "exit_code": measured["exit_status"],
        "total_seconds": round(measured["seconds"], 1),
        "stage_seconds": stages,
        "peak_rss_gib": round(measured["peak_rss_mib"] / 1024, 2),
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
    sys.exit(measured["exit_status"])


if __name__ == "__main__":
    main()

"""Scale benchmark (issue 11): each figure beside its reference, measured in the same run.

    uv run --frozen python benchmarks/scale.py --shared ../shared/data     # = make benchmark

Rows, each a subprocess timed on the wall clock with the peak resident memory of its process
tree (sampled every 50 ms, so each step's peak is its own):

- ``stockcast ingest`` beside a plain ``pyarrow.csv.read_csv`` of the same files, on the
  shared Yahoo + Kaggle folders (442 tickers), on the Kaggle file alone, and on a synthetic
  universe (500 tickers x 20 years, ``benchmarks/synthetic.py``; SYNTHETIC data);
- the indicator rows (``benchmarks/indicator_speed.py``): the dbt full build of
  ``fct_daily_indicators`` beside TA-Lib in Python (read + compute + write), and a one-day
  incremental run beside the full build, on the 442 shared tickers and on the synthetic
  universe (the issue's "S&P 500 with twenty years of bars");
- ``stockcast score`` of the 500 synthetic tickers, model load included, with a tiny model
  trained (and forced to champion) on them first; its reference is the 30 s target.

Both sides of a row start a fresh Python, so interpreter and import time is in both. The
machine (cores, CPU, RAM) and the load average beside each row are recorded: on a shared
machine, compare the ratios rather than the seconds. Results: ``benchmarks/results/scale.json``
and a table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

import synthetic  # noqa: E402  (a sibling script, not a package)
from _measure import run_measured  # noqa: E402

SCORE_TARGET_SECONDS = 30.0
INGEST_TARGET_SECONDS = 10.0
KAGGLE_TARGET_SECONDS = 3.0
# Train just enough of a model to have a champion to load: the benchmark times scoring.
TINY_TRAINING = [
    "--epochs", "1", "--units", "8", "--layers", "1", "--window", "20",
    "--max-train-samples", "2000", "--train-years", "1", "--force",
]  # fmt: skip

PLAIN_READ = """
import sys
from pathlib import Path
import pyarrow.csv as pacsv
rows = 0
for name in sys.argv[1:]:
    path = Path(name)
    files = sorted(p for p in path.rglob("*") if p.name.endswith((".csv", ".csv.gz"))) if path.is_dir() else [path]
    for file in files:
        rows += pacsv.read_csv(file).num_rows
print(rows)
"""


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import duckdb
    import pyarrow

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "duckdb": duckdb.__version__,
        # Without compiled site-packages every process compiles pandas, TensorFlow, ... first.
        "site_packages_compiled": (Path(pyarrow.__file__).parent / "__pycache__").is_dir(),
    }


def measure(command: list[str], env: dict[str, str]) -> dict:
    """Run a command; its wall time, the peak RSS of its process tree and the load average."""
    result = run_measured(command, env)
    output = result.pop("output")
    result["load_average"] = round(sum(result["load_average"]) / 2, 2)
    result["output_tail"] = output.strip().splitlines()[-3:]
    return result


def fresh_home(work: Path, name: str) -> dict[str, str]:
    home = work / name
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = dict(os.environ, STOCKCAST_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="2")
    for variable in ("STOCKCAST_DUCKDB_PATH", "MLFLOW_TRACKING_URI", "STOCKCAST_TARGET"):
        env.pop(variable, None)
    return env


def stockcast(*arguments: str) -> list[str]:
    return [str(Path(sys.executable).with_name("stockcast")), *arguments]


def ingest_row(label: str, paths: list[Path], env: dict[str, str], target: float | None) -> dict:
    ingest = measure(stockcast("ingest", *map(str, paths)), env)
    read = measure([sys.executable, "-c", PLAIN_READ, *map(str, paths)], dict(os.environ))
    return {
        "row": f"ingest {label}",
        "measured": ingest,
        "reference": {"what": "plain pyarrow.csv.read_csv of the same files", **read},
        "ratio": round(ingest["seconds"] / read["seconds"], 1) if read["seconds"] else None,
        "target_seconds": target,
    }


def indicator_rows(
    work: Path, shared: Path, synthetic_duckdb: Path | None, results: Path
) -> list[dict]:
    """The indicator rows (``benchmarks/indicator_speed.py``): full build beside TA-Lib and the
    one-day increment beside the full build, on the shared tickers and the synthetic universe,
    shaped like :func:`ingest_row`'s; the shared tickers' whole result goes to ``results``."""
    import indicator_speed

    try:
        return list(indicator_speed.scale_rows(work, shared, synthetic_duckdb, results))
    except Exception as exc:  # one broken part must not lose the rows already measured
        reason = f"{type(exc).__name__}: {exc}"
        return [{"row": "indicators (full build, one-day incremental)", "not_measured": reason}]


def score_rows(universe: Path, env: dict[str, str]) -> list[dict]:
    """Build and train a tiny champion on the synthetic universe (ingested into ``env``'s
    home), then time scoring."""
    steps = {
        "transform": measure(stockcast("transform"), env),
        "train (tiny, forced champion)": measure(stockcast("train", *TINY_TRAINING), env),
    }
    for name, step in steps.items():
        if step["exit_status"] != 0:
            return [{"row": "score 500 tickers", "not_measured": f"{name} failed", **step}]
    scored = measure(stockcast("score"), env)
    return [
        {
            "row": f"score {len(synthetic_tickers(universe))} tickers (model load included)",
            "measured": scored,
            "reference": {"what": "target", "seconds": SCORE_TARGET_SECONDS},
            "setup": {
                name: {k: s[k] for k in ("seconds", "peak_rss_mib")} for name, s in steps.items()
            },
        }
    ]


def synthetic_tickers(universe: Path) -> list[Path]:
    return sorted(universe.glob("SYN*.csv*"))


def _ratio(ratio: float | None) -> str:
    if ratio is None:
        return ""
    return f"{ratio:.1f}x" if ratio >= 1 else f"{100 * ratio:.1f}%"


def table(rows: list[dict]) -> str:
    lines = [
        f"{'row':<48} {'seconds':>8} {'peak MiB':>9} {'load':>5} | "
        f"{'reference':>9} {'peak MiB':>9} {'ratio':>6}  reference is",
        "-" * 130,
    ]
    for row in rows:
        if "not_measured" in row:
            lines.append(f"{row['row']:<48} not measured: {row['not_measured']}")
            continue
        got, ref = row["measured"], row["reference"]
        failed = "" if got.get("exit_status", 0) == 0 else f" (exit {got['exit_status']})"
        ratio = row.get("ratio")
        lines.append(
            f"{row['row']:<48} {got['seconds']:>8.2f} {got['peak_rss_mib']:>9.0f} "
            f"{got['load_average']:>5.1f} | {ref['seconds']:>9.2f} "
            f"{ref.get('peak_rss_mib', float('nan')):>9.0f} "
            f"{_ratio(ratio):>6}  {ref['what']}{failed}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--years", type=int, default=20)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--skip-score", action="store_true", help="no training and scoring")
    parser.add_argument("--out", type=Path, default=BENCHMARKS / "results" / "scale.json")
    args = parser.parse_args(argv)
    work = (args.work or Path(tempfile.mkdtemp(prefix="stockcast-scale-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    shared = args.shared.resolve()
    yahoo, kaggle = shared / "yahoo_sp500_daily", shared / "kaggle_sp500_5yr"

    started = time.perf_counter()
    universe = synthetic.write_universe(work / "data", args.tickers, args.years)
    generated = round(time.perf_counter() - started, 1)
    print(f"synthetic universe: {universe} ({generated} s)", flush=True)

    synthetic_home = fresh_home(work, "synthetic")
    rows = [
        ingest_row(
            "shared yahoo+kaggle (442 tickers)",
            [yahoo, kaggle],
            fresh_home(work, "shared"),
            INGEST_TARGET_SECONDS,
        ),
        ingest_row(
            "kaggle long table (514,743 rows)",
            [kaggle],
            fresh_home(work, "kaggle"),
            KAGGLE_TARGET_SECONDS,
        ),
        ingest_row(
            f"SYNTHETIC {args.tickers} tickers x {args.years} y", [universe], synthetic_home, None
        ),
    ]
    print(table(rows), flush=True)

    def save() -> None:  # after each part: a long run cut short keeps what it measured
        result = {
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(),
            "synthetic_universe": {"folder": universe.name, "generate_seconds": generated},
            "rows": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    save()
    synthetic_duckdb = Path(synthetic_home["STOCKCAST_HOME"]) / "warehouse" / "stockcast.duckdb"
    # scale.json -> indicator_speed.json, scale_2000.json -> indicator_speed_2000.json
    indicator_results = args.out.with_name(args.out.name.replace("scale", "indicator_speed", 1))
    if indicator_results == args.out:
        indicator_results = args.out.with_name(f"{args.out.stem}_indicators.json")
    synthetic_built = synthetic_duckdb if synthetic_duckdb.is_file() else None
    rows += indicator_rows(work, shared, synthetic_built, indicator_results)
    save()
    if not args.skip_score:
        rows += score_rows(universe, synthetic_home)
        save()
    print()
    print(table(rows))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

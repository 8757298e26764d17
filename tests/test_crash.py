"""Killing `stockcast ingest`, `score` or `train` at any point and rerunning it gives the
uninterrupted result: nothing lost, nothing duplicated, no half-written file or forecast set; a
model whose promotion was killed keeps no alias, is tagged as such and is never promoted by the
recovery (the rerun's promotion gate judges a new version).

Real processes, real SIGKILL. Some kills are timed from outside (after a delay, or on a line
of output); the others land at exact points inside a write transaction: a small wrapper runs
the real CLI and SIGKILLs its own process there (after a file's prices are upserted but before
its ledger row and commit; after the old forecasts are deleted but before the new ones are
inserted; after they are inserted but before the commit).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import YAHOO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not YAHOO.is_dir(), reason=f"shared developer data not found at {YAHOO}"),
]

STOCKCAST = Path(sys.executable).with_name("stockcast")
# Six real files with short histories (1,320 .. 1,851 rows, each with Yahoo's null bar).
FILES = [YAHOO / f"{t}.csv.gz" for t in ("HWM", "FTV", "KHC", "PYPL", "QRVO", "CFG")]

# Runs the real CLI; SIGKILLs itself at a point given as `<point> <n>`: the n-th time the
# warehouse inserts into `<table>` (`before-insert:<table>`: just before; `before-commit:<table>`:
# just after, inside the same transaction), or once the n-th file is loaded (`after-file`).
KILLER = """
import os, signal, sys
from ml.contracts import TABLES
import ml.ingest as ingest
import ml.warehouse.duckdb_engine as engine

point, n, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
calls = 0

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if point.startswith(("before-insert:", "before-commit:")):
    when, table = point.split(":")
    insert = engine.DuckDBWarehouse._insert

    def _insert(self, con, target, frame):
        global calls
        if target.full_name == table:
            calls += 1
            if calls == n and when == "before-insert":
                die()
        insert(self, con, target, frame)
        if target.full_name == table and calls == n and when == "before-commit":
            die()

    engine.DuckDBWarehouse._insert = _insert
elif point == "after-file":
    ingest_file = ingest.ingest_file

    def counted(*a, **k):
        global calls
        result = ingest_file(*a, **k)
        calls += 1
        if calls == n:
            die()
        return result

    ingest.ingest_file = counted
else:
    raise SystemExit(f"unknown point {point}")

from ml.cli import main
main(args, prog_name="stockcast")
"""


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKCAST_", "MLFLOW_"))}
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        # Without bytecode every process compiles TensorFlow again (~20 s): cache it apart
        # from the environment, for these processes only.
        env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "stockcast-test-pycache")
    return {**env, "STOCKCAST_HOME": str(home)}


def _run(home: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(STOCKCAST), *args], env=_env(home), capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def _kill_at(home: Path, point: str, n: int, *args: str) -> None:
    done = subprocess.run([sys.executable, "-c", KILLER, point, str(n), *args], env=_env(home),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, (
        f"the kill point {point} #{n} was never reached (exit {done.returncode}): "
        + done.stdout[-2000:] + done.stderr[-2000:]
    )  # fmt: skip


def _kill_after(home: Path, seconds: float, *args: str) -> None:
    process = subprocess.Popen([str(STOCKCAST), *args], env=_env(home),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(seconds)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _table(home: Path, name: str, drop: tuple[str, ...], order: list[str]) -> pd.DataFrame:
    import duckdb

    path = home / "warehouse" / "stockcast.duckdb"
    if not path.exists():
        return pd.DataFrame()
    with duckdb.connect(str(path), read_only=True) as con:
        schema, table = name.split(".")
        exists = con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchone()[0]
        if not exists:
            return pd.DataFrame()
        frame = con.execute(f"select * from {name} order by {', '.join(order)}").df()
    return frame.drop(columns=list(drop)).reset_index(drop=True)


# --- ingest ------------------------------------------------------------------------------------


def _loaded_state(home: Path) -> dict[str, pd.DataFrame]:
    prices = _table(home, "raw.daily_prices", ("ingested_at",), ["ticker", "trade_date"])
    rejected = _table(home, "raw.rejected_rows", ("rejected_at",), ["source_file", "line_number"])
    ledger = _table(home, "raw.ingested_files", ("ingested_at",), ["source_file"])
    if not ledger.empty:
        # A file loaded again reports its rows as unchanged instead of inserted: compare what
        # it holds, not how the last run found it.
        ledger["rows_loaded"] = ledger.pop("rows_inserted") + ledger.pop("rows_updated")
        ledger["rows_loaded"] += ledger.pop("rows_unchanged")
    return {"prices": prices, "rejected": rejected, "ledger": ledger}


def _assert_consistent(state: dict[str, pd.DataFrame]) -> None:
    """After a kill: every file is loaded whole (prices, refusals and ledger row) or not at all."""
    prices, ledger, rejected = state["prices"], state["ledger"], state["rejected"]
    if ledger.empty:
        assert prices.empty and rejected.empty
        return
    assert not prices.duplicated(["ticker", "trade_date"]).any()
    per_file = prices.groupby("source_file").size()
    assert sorted(per_file.index) == sorted(ledger["source_file"])
    for row in ledger.itertuples():
        assert per_file[row.source_file] == row.rows_loaded
        assert (rejected["source_file"] == row.source_file).sum() == row.rows_refused
    assert set(rejected["source_file"]) <= set(ledger["source_file"])


def _assert_same(state: dict[str, pd.DataFrame], expected: dict[str, pd.DataFrame]) -> None:
    for name in expected:
        pd.testing.assert_frame_equal(state[name], expected[name], obj=name)


def test_killed_ingest_reruns_to_the_uninterrupted_load(tmp_path):
    paths = [str(p) for p in FILES]
    clean = tmp_path / "clean"
    start = time.monotonic()
    _run(clean, "ingest", *paths)
    took = time.monotonic() - start
    expected = _loaded_state(clean)
    assert len(expected["ledger"]) == len(FILES)
    assert expected["prices"].groupby("ticker").size().min() > 1000

    kills = [
        ("inside file 2's transaction", lambda h: _kill_at(
            h, "before-insert:raw.ingested_files", 2, "ingest", *paths)),
        ("after file 4", lambda h: _kill_at(h, "after-file", 4, "ingest", *paths)),
        ("timed", lambda h: _kill_after(h, took * 0.7, "ingest", *paths)),
    ]  # fmt: skip
    for name, kill in kills:
        home = tmp_path / name.replace(" ", "-").replace("'", "")
        kill(home)
        _assert_consistent(_loaded_state(home))
        _run(home, "ingest", *paths)
        state = _loaded_state(home)
        _assert_consistent(state)
        _assert_same(state, expected)


def test_an_ingest_killed_while_reloading_keeps_the_earlier_load(tmp_path):
    """Files loaded before, loaded again with more rows; killed inside a file's transaction,
    after its new rows went in: the warehouse holds the earlier load, untouched; the rerun gives
    the load of the longer files."""
    import gzip

    folder = tmp_path / "in"
    folder.mkdir()
    texts = {
        p.name.removesuffix(".gz"): gzip.decompress(p.read_bytes()).decode() for p in FILES[:3]
    }
    for name, text in texts.items():
        lines = text.splitlines()
        (folder / name).write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    home = tmp_path / "home"
    _run(home, "ingest", str(folder))
    before = _loaded_state(home)
    for name, text in texts.items():
        (folder / name).write_text(text)
    _kill_at(home, "before-commit:raw.ingested_files", 2, "ingest", str(folder))
    state = _loaded_state(home)
    _assert_consistent(state)
    # File 1 committed its new rows; files 2 and 3 are exactly as the first load left them.
    first = sorted(texts)[0]
    for name in ("prices", "rejected", "ledger"):
        frame, old = state[name], before[name]
        keep = ~frame["source_file"].str.endswith(first)
        pd.testing.assert_frame_equal(
            frame[keep].reset_index(drop=True),
            old[~old["source_file"].str.endswith(first)].reset_index(drop=True),
        )
    _run(home, "ingest", str(folder))
    clean = tmp_path / "clean"
    _run(clean, "ingest", str(folder))
    after = _loaded_state(home)
    _assert_consistent(after)
    _assert_same(after, _loaded_state(clean))


# --- score -------------------------------------------------------------------------------------


# Two tickers loaded and their indicator mart built (what it needs, without the tests); TRAIN
# also registers a tiny champion. In a child process: it gets the bytecode cache of _env.
PREPARE = """
import sys
from pathlib import Path
from ml.context import build_context
from ml.ingest import ingest_paths
from ml.transform import run_dbt

ctx = build_context()
assert ingest_paths(ctx, [Path(p) for p in sys.argv[1:]]).ok
ctx.warehouse.ensure_schema()
run_dbt(["build", "--select", "+fct_daily_indicators", "--exclude-resource-type", "test",
         "--exclude-resource-type", "unit_test"], ctx.settings)
"""

TRAIN = (
    PREPARE
    + """
from ml.fitting import TrainConfig
from ml.model import ModelParams
from ml.promote import promote
from ml.train import train

trained = train(ctx, TrainConfig(
    params=ModelParams(window=10, units=4, dropout=0.0, epochs=1, batch_size=256, seed=1),
    validation_days=60, calibration_days=30, stop_days=30, max_train_samples=2000, use_tuned=False, gate_folds=1,
))
# The score tests need a champion; a one-epoch model need not pass the gate, so it is forced.
assert promote(ctx, trained, force=True).alias == "champion"
"""
)


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory) -> Path:
    """A home with prices, the indicator mart and a champion, and no forecasts yet."""
    pytest.importorskip("tensorflow")
    home = tmp_path_factory.mktemp("crash") / "home"
    done = subprocess.run(
        [sys.executable, "-c", TRAIN, str(YAHOO / "HWM.csv.gz"), str(YAHOO / "FTV.csv.gz")],
        env=_env(home), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return home


PREDICTION_ORDER = ["ticker", "as_of_date", "horizon"]


def _forecasts(home: Path) -> pd.DataFrame:
    return _table(home, "ml.predicted_prices", ("scored_at",), PREDICTION_ORDER)


@pytest.fixture(scope="module")
def scored(trained_home, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """An uninterrupted `stockcast score` on a copy of the trained home, and its forecasts."""
    home = tmp_path_factory.mktemp("scored") / "home"
    shutil.copytree(trained_home, home)
    _run(home, "score")
    forecasts = _forecasts(home)
    assert len(forecasts) == 2 * 10
    return home, forecasts


def _copy(source: Path, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(source, home)
    return home


def test_a_first_score_killed_midway_reruns_to_the_uninterrupted_forecasts(
    trained_home, scored, tmp_path
):
    _, expected = scored
    home = _copy(trained_home, tmp_path)
    # Killed while forecasting, once it has said so (the model is loaded, the write is next).
    process = subprocess.Popen([str(STOCKCAST), "score"], env=_env(home), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    for line in process.stdout:
        if line.startswith("forecasting"):
            process.send_signal(signal.SIGKILL)
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert _forecasts(home).empty
    # Killed inside the write, its rows inserted but not committed.
    _kill_at(home, "before-commit:ml.predicted_prices", 1, "score")
    assert _forecasts(home).empty
    _run(home, "score")
    pd.testing.assert_frame_equal(_forecasts(home), expected)


def test_a_rescore_killed_inside_its_write_keeps_the_old_forecasts_then_reruns(scored, tmp_path):
    """Scoring again replaces forecasts (delete, then insert, in one transaction): killed
    after the delete, or after the insert, the old forecasts are all still there; the rerun
    gives the uninterrupted forecasts."""
    source, expected = scored
    home = _copy(source, tmp_path)
    for point in ("before-insert", "before-commit"):
        _kill_at(home, f"{point}:ml.predicted_prices", 1, "score")
        pd.testing.assert_frame_equal(_forecasts(home), expected, obj=point)
    _run(home, "score")
    pd.testing.assert_frame_equal(_forecasts(home), expected)


# --- train -------------------------------------------------------------------------------------

# The real CLI, SIGKILLed when promotion is about to set the alias: the version is registered,
# its run logged, and no alias points at it.
KILL_BEFORE_ALIAS = """
import os, signal, sys
import ml.registry as registry

def die(*args, **kwargs):
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

registry.set_alias = die
from ml.cli import main
main(sys.argv[1:], prog_name="stockcast")
"""

TINY_TRAIN = ("train", "--epochs", "1", "--window", "10", "--units", "4",
              "--max-train-samples", "2000", "--ignore-tuned")  # fmt: skip


def _store(home: Path) -> dict:
    """The MLflow store of a home: champion version, versions and run states."""
    from mlflow.tracking import MlflowClient

    from ml.config import CHAMPION_ALIAS, MODEL_NAME

    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    # Both URIs: the registry would otherwise be the one an earlier test set process-wide.
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    # Aliases live on the registered model (search results leave them empty).
    aliases = client.get_registered_model(MODEL_NAME).aliases if versions else {}
    champion = [str(aliases[CHAMPION_ALIAS])] if CHAMPION_ALIAS in aliases else []
    aliased = {int(v) for v in aliases.values()}
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], max_results=1000
    )
    return {
        "champion": champion,
        "versions": sorted(int(v.version) for v in versions),
        "version_states": {v.status for v in versions},
        "without_alias": sorted(int(v.version) for v in versions if int(v.version) not in aliased),
        "recovered": {
            int(v.version): v.tags["stockcast.recovered"]
            for v in versions
            if "stockcast.recovered" in v.tags
        },
        "run_states": sorted(r.info.status for r in runs),
    }


def test_a_train_killed_between_registering_and_promoting_converges_on_rerun(tmp_path):
    pytest.importorskip("tensorflow")
    home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, "-c", PREPARE, str(YAHOO / "HWM.csv.gz"), str(YAHOO / "FTV.csv.gz")],
        env=_env(home), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    killed = subprocess.run([sys.executable, "-c", KILL_BEFORE_ALIAS, *TINY_TRAIN],
                            env=_env(home), capture_output=True, text=True,
                            timeout=900)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    before = _store(home)
    assert before["versions"] == [1] and before["champion"] == []  # the half-done state

    rerun = _run(home, *TINY_TRAIN)
    after = _store(home)
    assert after["versions"] == [1, 2]  # the interrupted version is kept, not re-registered
    assert after["version_states"] == {"READY"}
    assert "RUNNING" not in after["run_states"]  # the killed run is marked FAILED
    # Recovery never promotes: v1 keeps no alias and says why; the rerun's gate judged v2.
    assert 1 in after["without_alias"] and 2 not in after["without_alias"], after
    assert after["recovered"][1].startswith("promotion interrupted: "), after["recovered"]
    assert 2 not in after["recovered"]
    assert after["champion"] in ([], ["2"]), after  # v2 if it passed the gate, else none
    assert "registered stockcast-lstm v2 as " in rerun.stdout

    scored = _run(home, "score")
    forecasts = _forecasts(home)
    assert len(forecasts) == 20
    if after["champion"]:
        assert "wrote 20 rows to ml.predicted_prices for 2 tickers (model v2" in scored.stdout
        assert forecasts["model_name"].eq("stockcast-lstm").all()
        assert forecasts["model_version"].eq("2").all()
    else:  # nothing has passed the gate: the baseline is published, and says so
        assert (
            "no model has passed the promotion gate: published the naive_ewma baseline for 2 "
            "tickers" in scored.stdout
        )
        assert forecasts["model_name"].eq("naive_ewma").all()
        assert forecasts["model_version"].eq("baseline").all()

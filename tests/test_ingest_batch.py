"""Files ingested together are written in batches (one transaction each), yet each file stays
all or nothing. Real DuckDB files in tmp_path, no mocks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import ml.ingest as ingest
from ml.contracts import INGESTED_FILES
from ml.ingest import ingest_paths
from ml.warehouse.duckdb_engine import create_table_sql

TABLES = ("raw.daily_prices", "raw.rejected_rows", "raw.ingested_files")
HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"
ROWS = [
    "2021-03-01,10.0,11.0,9.5,10.5,10.4,1000",
    "2021-03-02,10.5,12.0,10.0,11.5,11.4,2000",
    "2021-03-03,11.5,11.8,11.0,11.2,11.1,1500",
    "2021-03-04,11.2,11.9,10.8,11.0,10.9,1200",
]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def contents(wh) -> dict[str, pd.DataFrame]:
    out = {}
    for table in TABLES:
        frame = wh.query_df(f"select * from {table}").drop(
            columns=["ingested_at", "rejected_at"], errors="ignore"
        )
        out[table] = frame.sort_values(list(frame.columns)[:3]).reset_index(drop=True)
    return out


def of_file(wh, table: str, path: Path) -> pd.DataFrame:
    return wh.query_df(f"select * from {table} where source_file = ?", [str(path.resolve())])


def folder_of_good_files(root: Path, tickers: list[str]) -> Path:
    root.mkdir()
    for ticker in tickers:
        write(root / f"{ticker}.csv", [HEADER, *ROWS])
    return root


def test_refused_files_in_a_batch_leave_nothing_and_the_others_land(ctx, warehouse, tmp_path):
    root = folder_of_good_files(tmp_path / "in", ["AAA", "CCC", "EEE"])
    every_row_refused = write(root / "BBB.csv", [HEADER, "2021-03-01,0,0,0,0,0,0"])
    not_a_price_file = write(root / "DDD.csv", ["404: Not Found"])
    report = ingest_paths(ctx, [root])

    by_name = {f.file.name: f for f in report.files}
    assert [by_name[n].ok for n in ("AAA.csv", "CCC.csv", "EEE.csv")] == [True] * 3
    assert not by_name["BBB.csv"].ok and "every data row was refused" in by_name["BBB.csv"].error
    assert not by_name["DDD.csv"].ok and not by_name["DDD.csv"].retryable
    stored = warehouse.query_df("select ticker, count(*) n from raw.daily_prices group by 1")
    assert dict(zip(stored["ticker"], stored["n"], strict=True)) == {"AAA": 4, "CCC": 4, "EEE": 4}
    # The refused file left its refusal and its ledger row only; the unreadable one nothing.
    assert of_file(warehouse, "raw.daily_prices", every_row_refused).empty
    (refusal,) = of_file(warehouse, "raw.rejected_rows", every_row_refused).itertuples()
    assert refusal.line_number == 2 and refusal.reason.startswith("non-positive price")
    for table in TABLES:
        assert of_file(warehouse, table, not_a_price_file).empty


def test_a_file_refused_by_the_history_of_an_earlier_file_of_the_same_run(ctx, warehouse, tmp_path):
    """A file sharing a ticker with one before it in the same ingest is judged against it, as
    if that one had been committed first: the two never share a batch."""
    root = tmp_path / "in"
    for part in ("1", "2", "3"):
        (root / part).mkdir(parents=True)
    write(root / "1" / "AAA.csv", [HEADER, *ROWS])
    doubled = [",".join([r.split(",")[0], *(str(2 * float(v)) for v in r.split(",")[1:6]), "1"])
               for r in ROWS]  # fmt: skip
    long_table = write(root / "2" / "long.csv", ["date,open,high,low,close,adj close,volume,Name",
                                *(f"{r},AAA" for r in doubled),
                                *(f"{r},BBB" for r in ROWS)])  # fmt: skip
    write(root / "3" / "CCC.csv", [HEADER, *ROWS])
    report = ingest_paths(ctx, [root])

    first, refused, last = report.files
    assert first.ok and last.ok
    assert not refused.ok and "disagree with the stored history of AAA" in refused.error
    assert "2:1 split" in " ".join(refused.details)
    tickers = warehouse.query_df("select distinct ticker from raw.daily_prices order by 1")
    assert list(tickers["ticker"]) == ["AAA", "CCC"]
    for table in TABLES:
        assert of_file(warehouse, table, long_table).empty


def test_a_later_file_of_the_same_run_updates_an_earlier_ones_rows(ctx, warehouse, tmp_path):
    root = tmp_path / "in"
    for part in ("1", "2"):
        (root / part).mkdir(parents=True)
    first = write(root / "1" / "AAA.csv", [HEADER, *ROWS])
    corrected = [ROWS[0], ROWS[1].replace("11.5,11.4", "11.6,11.5"), *ROWS[2:]]
    write(root / "2" / "AAA.csv", [HEADER, *corrected])
    report = ingest_paths(ctx, [root])

    assert report.ok, report.summary_lines()
    second = report.files[1]
    assert (second.inserted, second.updated, second.unchanged) == (0, 1, 3)
    assert second.replaced_from == {str(first.resolve()): 1}
    stored = warehouse.query_df("select close from raw.daily_prices order by trade_date")
    assert list(stored["close"]) == [10.5, 11.6, 11.2, 11.0]


def test_a_warehouse_error_in_a_batch_falls_back_to_loading_file_by_file(
    ctx, warehouse, tmp_path, caplog
):
    """The ledger refuses one file's row (a CHECK constraint of this warehouse): the batch's
    transaction fails and is rolled back, then every other file loads on its own and the
    failing one is reported as retryable and leaves nothing."""
    ledger = warehouse.table(INGESTED_FILES.full_name)
    with warehouse.connect() as con:
        con.execute(f"drop table {ledger}")
        con.execute(
            create_table_sql(INGESTED_FILES, ledger).replace(
                "primary key", "check (source_file not like '%BROKEN%'), primary key"
            )
        )
    root = folder_of_good_files(tmp_path / "in", ["AAA", "CCC"])
    broken = write(root / "BROKEN.csv", [HEADER, *ROWS])
    report = ingest_paths(ctx, [root])

    assert "loading 3 files in one transaction failed" in caplog.text
    by_name = {f.file.name: f for f in report.files}
    assert by_name["AAA.csv"].ok and by_name["CCC.csv"].ok
    assert (by_name["AAA.csv"].inserted, by_name["CCC.csv"].inserted) == (4, 4)
    failed = by_name["BROKEN.csv"]
    assert not failed.ok and failed.retryable and "Constraint" in failed.error
    assert failed.error.startswith(f"{broken}: ")
    for table in TABLES:
        assert of_file(warehouse, table, broken).empty
    assert len(warehouse.query_df("select * from raw.ingested_files")) == 2


def test_batches_of_any_size_give_the_same_tables_and_reruns_change_nothing(
    ctx, warehouse, tmp_path, monkeypatch
):
    root = folder_of_good_files(tmp_path / "in", ["AAA", "BBB", "CCC", "DDD", "EEE"])
    write(root / "FFF.csv", [HEADER, *ROWS, "2021-03-05,null,null,null,null,null,null"])
    report = ingest_paths(ctx, [root])
    assert report.ok
    together = contents(warehouse)

    monkeypatch.setenv("STOCKCAST_DUCKDB_PATH", str(tmp_path / "one_by_one.duckdb"))
    from ml.context import build_context

    other = build_context()
    monkeypatch.setattr(ingest, "BATCH_ROWS", 1)  # every file a batch of its own
    assert ingest_paths(other, [root]).ok
    for table, frame in contents(other.warehouse).items():
        pd.testing.assert_frame_equal(frame, together[table], obj=table)

    monkeypatch.setattr(ingest, "BATCH_ROWS", 10)  # batches of two files
    again = ingest_paths(ctx, [root])
    assert again.ok
    assert {(f.inserted, f.updated, f.unchanged) for f in again.files} == {(0, 0, 4)}
    after = contents(warehouse)
    ledger = after.pop("raw.ingested_files")
    for table, frame in after.items():
        pd.testing.assert_frame_equal(frame, together[table], obj=table)
    # The ledger says how the last load found each file: all its rows already there.
    assert (ledger["rows_unchanged"] == together["raw.ingested_files"]["rows_inserted"]).all()
    counts = ["rows_inserted", "rows_updated", "rows_unchanged"]
    pd.testing.assert_frame_equal(
        ledger.drop(columns=counts), together["raw.ingested_files"].drop(columns=counts)
    )


@pytest.mark.parametrize("files", [1, 3])
def test_progress_is_reported_once_per_file_in_order(ctx, tmp_path, files):
    root = folder_of_good_files(tmp_path / "in", [f"T{i}" for i in range(files)])
    write(root / "zz_bad.csv", ["not,a,price,file"])
    calls = []
    ingest_paths(ctx, [root], progress=lambda *a: calls.append(a))
    assert [c[:2] for c in calls] == [(i, files + 1) for i in range(1, files + 2)]
    assert [c[2].name for c in calls] == [*(f"T{i}.csv" for i in range(files)), "zz_bad.csv"]


def test_a_started_parser_loads_with_its_own_ticker_and_refuses_another(ctx, warehouse, tmp_path):
    path = write(tmp_path / "prices.csv", [HEADER, *ROWS])
    with ingest.FileParser([path], ticker="ABC") as parser:
        with pytest.raises(ValueError, match="its own ticker"):
            ingest_paths(ctx, parser, ticker="XYZ")
        assert warehouse.query_df("select * from raw.daily_prices").empty
        report = ingest_paths(ctx, parser, ticker="ABC")
    assert report.ok
    stored = warehouse.query_df("select distinct ticker from raw.daily_prices")
    assert stored["ticker"].tolist() == ["ABC"]

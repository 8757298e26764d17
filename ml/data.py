"""Reading the published marts the ML stages consume (through the warehouse module)."""

from __future__ import annotations

from datetime import date

import pandas as pd

from ml.contracts import INDICATOR_MART
from ml.features import INDICATOR_COLUMNS
from ml.warehouse import Warehouse


def load_indicators(warehouse: Warehouse, tickers: list[str] | None = None) -> pd.DataFrame:
    _require_mart(warehouse)
    frame = warehouse.read_table(
        INDICATOR_MART,
        INDICATOR_COLUMNS,
        filter_in={"ticker": [t.upper() for t in tickers or []]},
        order_by=["ticker", "trade_date"],
    )
    frame["trade_date"] = pd.to_datetime(frame["trade_date"])
    return frame


def load_recent_indicators(
    warehouse: Warehouse,
    rows: int,
    tickers: list[str] | None = None,
    *,
    since: date | None = None,
    common_start: bool = False,
) -> pd.DataFrame:
    """Each ticker's last ``rows`` bars of the indicator mart; with ``since``, its last ``rows``
    bars before that date and every bar from it on. ``common_start``: every ticker's bars from
    the earliest date that rule keeps (and the bar before), for features that are
    cross-sections of the universe by date (see
    :meth:`~ml.warehouse.Warehouse.read_table_tail`)."""
    _require_mart(warehouse)
    frame = warehouse.read_table_tail(
        INDICATOR_MART,
        INDICATOR_COLUMNS,
        partition_by="ticker",
        order_by="trade_date",
        rows=rows,
        kept_from=since,
        filter_in={"ticker": [t.upper() for t in tickers or []]},
        common_start=common_start,
    )
    frame["trade_date"] = pd.to_datetime(frame["trade_date"])
    return frame


def _require_mart(warehouse: Warehouse) -> None:
    if not warehouse.table_exists(INDICATOR_MART):
        raise LookupError(
            f"{INDICATOR_MART} does not exist yet: run `stockcast transform` after ingesting"
        )

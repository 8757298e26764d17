"""Reading the published marts the ML stages consume (through the warehouse module)."""

from __future__ import annotations

import pandas as pd

from ml.contracts import INDICATOR_MART
from ml.features import INDICATOR_COLUMNS
from ml.warehouse import Warehouse


def load_indicators(warehouse: Warehouse, tickers: list[str] | None = None) -> pd.DataFrame:
    if not warehouse.table_exists(INDICATOR_MART):
        raise LookupError(
            f"{INDICATOR_MART} does not exist yet: run `stockcast transform` after ingesting"
        )
    frame = warehouse.read_table(
        INDICATOR_MART,
        INDICATOR_COLUMNS,
        filter_in={"ticker": [t.upper() for t in tickers or []]},
        order_by=["ticker", "trade_date"],
    )
    frame["trade_date"] = pd.to_datetime(frame["trade_date"])
    return frame

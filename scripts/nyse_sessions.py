"""Generate the dbt seed of NYSE trading sessions from `exchange_calendars` (XNYS).

    uv run --frozen python scripts/nyse_sessions.py           # rewrites the seed below
    uv run --frozen python scripts/nyse_sessions.py --check   # exit 1 if the seed is stale

One `session_date` per line, 1990-01-02 .. 2027-12-31 (the first and last sessions of the
fixed span below: fixed, so the output does not depend on the day it is run). The
data-quality marts judge gaps only between dates inside this span; bars before 1990 (e.g.
^GSPC from 1927) or after the last session are not judged. Move END forward (and rerun) when
the calendar's years run out; tests/test_dbt_quality.py fails when the checked-in seed differs
from what this script generates with the installed exchange_calendars.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

START = "1990-01-01"
END = "2027-12-31"
SEED = Path(__file__).resolve().parent.parent / "dbt_project" / "seeds" / "nyse_sessions.csv"


def sessions_csv(start: str = START, end: str = END) -> str:
    """The seed's text: a header line, then one ISO session date per line."""
    import exchange_calendars as xc

    sessions = xc.get_calendar("XNYS", start=start, end=end).sessions
    lines = ["session_date", *(day.strftime("%Y-%m-%d") for day in sessions)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    text = sessions_csv()
    if args.check:
        current = SEED.read_text() if SEED.is_file() else ""
        if current != text:
            print(f"{SEED} is stale: rerun scripts/nyse_sessions.py", file=sys.stderr)
            return 1
        return 0
    SEED.parent.mkdir(parents=True, exist_ok=True)
    SEED.write_text(text)
    print(f"wrote {SEED} ({text.count(chr(10)) - 1} sessions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

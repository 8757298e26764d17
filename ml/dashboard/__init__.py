"""The dashboard (`stockcast dashboard`): forecasts, indicators and model health over the marts.

* :mod:`ml.dashboard.data` reads the published marts through :mod:`ml.warehouse` (read-only,
  filtered in SQL, cached; the last answer while a flow writes);
* :mod:`ml.dashboard.figures` builds the Plotly figures (DataFrames in, figures out);
* :mod:`ml.dashboard.pages` lays out the three pages with Streamlit; ``app.py`` is the script
  Streamlit runs.

None of it loads TensorFlow: the dashboard reads tables and MLflow's registry only.
"""

from __future__ import annotations

from pathlib import Path

APP_SCRIPT = Path(__file__).with_name("app.py")

"""The run context: settings, the warehouse and the MLflow configuration, built once.

The CLI, the pipeline and the flows build one :class:`RunContext` and pass it to every stage;
stages never resolve settings or open a warehouse themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ml.config import Settings, load_settings
from ml.warehouse import Warehouse, open_warehouse


@dataclass
class RunContext:
    settings: Settings
    warehouse: Warehouse
    _experiment_id: str | None = field(default=None, repr=False)

    def tracking(self) -> str:
        """Point MLflow at this context's store; the experiment's id (looked up once).

        Lazy, so stages that never touch MLflow (ingest) never import it. MLflow's store is
        process-global, so it is pointed again on every call: two contexts in one process
        (tests, a long-lived worker) cannot write into each other's store.
        """
        from ml import registry

        self._experiment_id = registry.configure(self.settings, self._experiment_id)
        return self._experiment_id


def build_context(settings: Settings | None = None) -> RunContext:
    settings = settings or load_settings()
    return RunContext(settings=settings, warehouse=open_warehouse(settings))

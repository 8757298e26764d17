"""Transform stage: dbt build (models + data tests + unit tests) against the configured target."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ml.config import DBT_PROJECT_DIR, Settings, data_dir, profiles_dir

if TYPE_CHECKING:
    from ml.context import RunContext


class DbtError(RuntimeError):
    pass


def dbt_command(args: list[str], settings: Settings) -> list[str]:
    dbt = Path(sys.executable).with_name("dbt")
    return [
        str(dbt) if dbt.exists() else "dbt",
        *args,
        "--project-dir", str(DBT_PROJECT_DIR),
        "--profiles-dir", str(profiles_dir()),
        "--target", settings.target,
    ]  # fmt: skip


def run_dbt(args: list[str], settings: Settings, echo=None) -> str:
    """Run a dbt command, streaming its log lines to ``echo``; raise DbtError on failure."""
    env = settings.dbt_env()
    work = data_dir() / "dbt"
    env.setdefault("DBT_TARGET_PATH", str(work / "target"))
    env.setdefault("DBT_LOG_PATH", str(work / "logs"))
    env.setdefault("DBT_PARTIAL_PARSE", "true")
    output = []
    with subprocess.Popen(
        dbt_command(args, settings),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        for line in process.stdout:
            output.append(line)
            if echo is not None:
                echo(line.rstrip("\n"))
    text = "".join(output)
    if process.returncode != 0:
        failures = [line for line in output if "ERROR" in line or "FAIL" in line]
        detail = "".join(failures[-20:]) or text[-3000:]
        raise DbtError(f"dbt {' '.join(args)} failed (exit {process.returncode}):\n{detail}")
    return text


def transform(ctx: RunContext, select: str | None = None, echo=None) -> str:
    """``dbt build``: build every model and run every data and unit test.

    The warehouse's own tables are created first, so dbt's sources exist on a new warehouse.
    """
    ctx.warehouse.ensure_schema()
    args = ["build"]
    if select:
        args += ["--select", select]
    return run_dbt(args, ctx.settings, echo)

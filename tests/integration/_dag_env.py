"""Run real DAG files with ``dag.test()`` against the emulator, in an isolated Airflow DB.

Import the fixtures into a test module::

    from tests.integration import _dag_env

    airflow_db = _dag_env.airflow_db
    dag_env = _dag_env.dag_env

``dag_env`` gives a fresh dags folder, an ``openai_default`` connection (an
``AIRFLOW_CONN_`` env var, as users define it) pointing at ``batch_emulator``, and
helpers to write a DAG file, run it and read task states and XComs back from the DB.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sqlite3
import sys
import textwrap
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory: pytest.TempPathFactory):
    """Point Airflow's ORM at a migrated sqlite DB of this session (a cached template)."""
    import airflow
    from airflow import settings

    home = tmp_path_factory.mktemp("airflow_home")
    db_file = home / "airflow.db"
    template = Path(f"/tmp/airflow-batch-provider-test-{airflow.__version__}.db")
    old = {
        k: os.environ.get(k) for k in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__DAGS_FOLDER")
    }
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{db_file}"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(home / "dags")
    (home / "dags").mkdir()
    if template.exists():
        shutil.copyfile(template, db_file)
    settings.dispose_orm(do_log=False)
    settings.configure_vars()
    settings.configure_orm()
    if not template.exists():
        from airflow.utils.db import initdb

        initdb()
        tmp = template.with_suffix(f".{uuid.uuid4().hex}.tmp")
        # The backup API copies a consistent snapshot, whatever the journal mode.
        with sqlite3.connect(db_file) as src, sqlite3.connect(tmp) as dst:
            src.backup(dst)
        tmp.replace(template)  # atomic: a concurrent session sees all of it or nothing
    _warm_up(home / "dags")
    yield db_file
    settings.dispose_orm(do_log=False)
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    settings.configure_vars()
    settings.configure_orm()


def _warm_up(dags: Path) -> None:
    """Run one trivial DAG: the first ``dag.test()`` of a process loads plugins and the
    in-process API server (seconds), which should not count against the first test."""
    from airflow import settings

    (dags / "warm_up.py").write_text(
        "from airflow.sdk import DAG, task\n"
        "with DAG('warm_up', schedule=None) as dag:\n"
        "    task(lambda: None, task_id='noop')()\n"
    )
    settings.DAGS_FOLDER = str(dags)
    spec = importlib.util.spec_from_file_location("_dagfile_warm_up", dags / "warm_up.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.dag.test()


@dataclass
class DagEnv:
    dags: Path
    data: Path
    emulator: Any

    def write_dag(self, dag_id: str, body: str) -> Any:
        """Write ``body`` (indented freely) as ``<dags>/<dag_id>.py``, import it, return its ``dag``."""
        path = self.dags / f"{dag_id}.py"
        path.write_text(textwrap.dedent(body))
        name = f"_dagfile_{dag_id}_{uuid.uuid4().hex[:8]}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module.dag

    def run(self, dag: Any, *, when: datetime | None = None) -> Any:
        """``dag.test()``; a fixed ``when`` gives the same run_id every time (a clear, in effect)."""
        if when is None:
            return dag.test()
        return dag.test(logical_date=when, run_after=when)

    @staticmethod
    def states(dag_run: Any) -> dict[str, str | None]:
        from airflow.utils.session import create_session

        with create_session() as session:
            return {ti.task_id: ti.state for ti in dag_run.get_task_instances(session=session)}

    @staticmethod
    def try_number(dag_run: Any, task_id: str) -> int:
        from airflow.utils.session import create_session

        with create_session() as session:
            return next(
                ti.try_number for ti in dag_run.get_task_instances(session=session) if ti.task_id == task_id
            )

    @staticmethod
    def xcom(dag_run: Any, task_id: str, key: str = "return_value") -> Any:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            row = session.scalar(
                select(XComModel.value).where(
                    XComModel.dag_id == dag_run.dag_id,
                    XComModel.run_id == dag_run.run_id,
                    XComModel.task_id == task_id,
                    XComModel.key == key,
                )
            )
        if row is None or not isinstance(row, (str, bytes)):
            return row
        try:
            return json.loads(row)
        except ValueError:  # extra links are stored as the bare URL
            return row.decode() if isinstance(row, bytes) else row


FIXED_DATE = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture
def dag_env(airflow_db, batch_emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DagEnv:
    dags = tmp_path / "dags"
    data = tmp_path / "data"
    dags.mkdir()
    data.mkdir()
    from airflow import settings

    # The dags-folder bundle reads settings.DAGS_FOLDER (set from the env at configure time).
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags))
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(dags))
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_DEFAULT",
        json.dumps(
            {"conn_type": "openai", "host": batch_emulator.base_url, "password": batch_emulator.api_key}
        ),
    )
    return DagEnv(dags=dags, data=data, emulator=batch_emulator)


def chat_lines(n: int, *, model: str = "gpt-4o-mini", prefix: str = "q") -> str:
    """``n`` valid chat request lines."""
    return "".join(
        json.dumps(
            {
                "custom_id": f"{prefix}-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": model, "messages": [{"role": "user", "content": f"question {prefix} {i}"}]},
            }
        )
        + "\n"
        for i in range(n)
    )

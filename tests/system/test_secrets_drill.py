"""Secrets drill: the API key of every connection is a distinctive ``sk-SECRET-DRILL-<hex>``
(the emulators accept no other); two Azure OpenAI connections use an Azure-shaped key (32 hex
characters) and an Entra ID token (a JWT), which no ``sk-`` pattern finds, and run a batch
each. After all the runs of the session no secret
appears anywhere Airflow keeps things: log files (tasks, triggers, services, DAG processor),
the metadata DB (every table, Fernet-encrypted values such as trigger kwargs decrypted),
XComs and rendered template fields through the REST API, every trigger row seen while tasks
were deferred, OpenLineage events, landed files, and every page and JSON answer of the UI
plugin (each task's tab, each connection's Batches page).

The drill makes its own preconditions (:func:`exercised`): the example DAGs and the baseline
drill run (deferred, landed, with lineage) whatever ran before it, so it also means something
alone (``pytest tests/system/test_secrets_drill.py``) or in another file order.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.system.airflow_stack import AirflowStack
from tests.system.conftest import DrillRun, DrillRunner
from tests.system.drills import DRILL_DAG

# Alone, this module starts the stack and makes its own runs (examples, baseline, Azure): minutes.
pytestmark = pytest.mark.timeout(900)


class Scanner:
    """Finds any of ``needles`` in files, DB cells (decrypting Fernet tokens) and JSON values."""

    def __init__(self, needles: list[str], decrypt: Any) -> None:
        self.needles = [n.encode() for n in needles]
        self.decrypt = decrypt
        self.hits: list[str] = []
        self.scanned = {"files": 0, "bytes": 0, "db_cells": 0, "decrypted": 0, "values": 0}

    def _check(self, data: bytes, where: str) -> None:
        for needle in self.needles:
            if needle in data:
                at = data.index(needle)
                self.hits.append(f"{where}: ...{data[max(0, at - 80) : at + 60]!r}...")

    def file(self, path: Path) -> None:
        data = path.read_bytes()
        self.scanned["files"] += 1
        self.scanned["bytes"] += len(data)
        self._check(data, str(path))

    def tree(self, root: Path) -> None:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            self.file(path)

    def value(self, value: Any, where: str) -> None:
        self.scanned["values"] += 1
        self._check(json.dumps(value, default=str).encode(), where)

    def database(self, db: Path) -> None:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                for row in conn.execute(f'SELECT * FROM "{table}"'):
                    for cell in row:
                        self.cell(cell, table)

    def cell(self, cell: Any, table: str) -> None:
        if cell is None or isinstance(cell, (int, float)):
            return
        data = cell if isinstance(cell, bytes) else str(cell).encode()
        self.scanned["db_cells"] += 1
        self._check(data, f"table {table}")
        if data.startswith(b"gAAAAA"):  # a Fernet token: look inside too
            try:
                plain = self.decrypt(data.decode())
            except Exception:
                return
            self.scanned["decrypted"] += 1
            self._check(plain.encode(), f"table {table} (decrypted)")

    def text(self, text: str, where: str) -> None:
        self.scanned["values"] += 1
        self._check(text.encode(), where)


@pytest.fixture(scope="module")
def scanner(stack: AirflowStack, secret_key: str, azure_key: str, entra_token: str) -> Scanner:
    # Each secret whole and its unique part (the key's hex, the token's signature): a leak of
    # either is a leak.
    needles = [
        secret_key,
        secret_key.rsplit("-", 1)[1],
        azure_key,
        entra_token,
        entra_token.rsplit(".", 1)[1],
    ]
    return Scanner(needles, stack.decrypt)


@pytest.fixture(scope="module")
def azure_runs(drill_runner: DrillRunner) -> list[DrillRun]:
    """One drill run through each Azure connection: the key and the token are really used."""
    runs = [
        drill_runner.run(f"secrets_{conn_id}", conn_id=conn_id)
        for conn_id in ("openai_azure", "openai_entra")
    ]
    for run in runs:
        assert run.record.state == "success", (run.conn_id, run.record)
        assert run.delta("batches_created") >= 1
    return runs


@pytest.fixture(scope="module")
def exercised(stack: AirflowStack, example_runs: dict[str, Any], baseline: DrillRun) -> dict[str, Any]:
    """Runs that used the key on every path the scan covers, made here, not left by earlier files."""
    records = [*example_runs["records"].values(), baseline.record]
    assert all(r.state == "success" for r in records), [(r.dag_id, r.run_id, r.state) for r in records]
    assert baseline.observed["deferred"], "the baseline's submit was never seen deferred"
    return {"runs": len(records)}


def test_the_key_is_in_use_and_the_scanner_finds_it_where_it_is(
    stack: AirflowStack,
    emulators: dict[str, Any],
    secret_key: str,
    azure_key: str,
    entra_token: str,
    scanner: Scanner,
    azure_runs: list[DrillRun],
    tmp_path: Path,
) -> None:
    """The drill means something only if the keys were really used and a leak would be found."""
    for emulator in emulators.values():
        wrong = httpx.get(f"{emulator.base_url}/batches", headers={"Authorization": "Bearer sk-wrong"})
        assert wrong.status_code == 401
        right = httpx.get(f"{emulator.base_url}/batches", headers={"Authorization": f"Bearer {secret_key}"})
        assert right.status_code == 200
    azure = f"{emulators['drill'].root_url}/openai/batches"
    version = {"api-version": "2024-10-21"}
    assert httpx.get(azure, params=version, headers={"api-key": azure_key}).status_code == 200
    assert (
        httpx.get(azure, params=version, headers={"Authorization": f"Bearer {entra_token}"}).status_code
        == 200
    )
    assert httpx.get(azure, params=version, headers={"api-key": "0" * 32}).status_code == 401
    assert secret_key in stack.env["AIRFLOW_CONN_OPENAI_DEFAULT"]
    assert azure_key in stack.env["AIRFLOW_CONN_OPENAI_AZURE"]
    assert entra_token in stack.env["AIRFLOW_CONN_OPENAI_ENTRA"]
    canary = Scanner([n.decode() for n in scanner.needles], stack.decrypt)
    (tmp_path / "leak.log").write_text(f"key={secret_key} azure={azure_key} entra={entra_token}")
    canary.tree(tmp_path)
    from cryptography.fernet import Fernet

    canary.cell(Fernet(stack.fernet_key.encode()).encrypt(secret_key.encode()).decode(), "canary")
    # every needle in the file; the sk- key's two in the token
    assert len(canary.hits) == len(scanner.needles) + 2, canary.hits


def test_no_secret_in_the_ui_plugins_pages_or_json(
    stack: AirflowStack, baseline: DrillRun, azure_runs: list[DrillRun], scanner: Scanner
) -> None:
    """Every task's tab (HTML and JSON) and every connection's Batches page, as an admin sees them."""
    headers = {"Authorization": f"Bearer {stack.token()}"}

    def get(path: str, params: dict[str, Any]) -> str:
        response = httpx.get(
            f"{stack.base_url}/openai-batch{path}", params=params, headers=headers, timeout=60
        )
        assert response.status_code == 200, (path, params, response.text[:300])
        scanner.text(response.text, f"plugin {path} {params}")
        return response.text

    from tests.system.conftest import CONNECTIONS

    for conn_id in CONNECTIONS:
        listing = json.loads(get("/api/batches", {"conn_id": conn_id, "limit": 100}))
        assert listing["error"] is None, (conn_id, listing["error"])
        assert listing["batches"] or conn_id not in ("openai_azure", "openai_entra"), conn_id
        get("/batches", {"conn_id": conn_id, "limit": 100})
    tabs = 0
    for dag in stack.api("GET", "/dags", params={"limit": 100})["dags"]:
        for run in stack.api("GET", f"/dags/{dag['dag_id']}/dagRuns", params={"limit": 100})["dag_runs"]:
            for ti in stack.task_instances(dag["dag_id"], run["dag_run_id"]):
                params = {
                    "dag_id": dag["dag_id"],
                    "run_id": run["dag_run_id"],
                    "task_id": ti["task_id"],
                    "map_index": str(ti.get("map_index", -1)),
                }
                view = json.loads(get("/api/ti", params))
                get("/ti", params)
                tabs += bool(view["batches"])
    live_azure = [
        b
        for run in azure_runs
        for b in json.loads(
            get(
                "/api/ti", {"dag_id": DRILL_DAG, "run_id": run.run_id, "task_id": "submit", "map_index": "-1"}
            )
        )["batches"]
    ]
    assert [b["source"] for b in live_azure] == ["live", "live"]  # read through each Azure connection
    assert tabs >= 3, tabs
    assert not scanner.hits, "a secret leaked:\n" + "\n".join(scanner.hits[:20])


def test_no_secret_in_logs_db_xcom_rendered_fields_triggers_lineage_or_landed_files(
    stack: AirflowStack,
    exercised: dict[str, Any],
    azure_runs: list[DrillRun],
    system_root: Path,
    scanner: Scanner,
) -> None:
    # 1. Every file of AIRFLOW_HOME: task attempt logs, trigger logs, service and DAG processor
    #    logs, airflow.cfg, and the DB's raw bytes (freed pages keep deleted rows, such as fired
    #    triggers); 2. the metadata DB row by row, Fernet-encrypted values decrypted.
    scanner.tree(stack.home)
    scanner.database(stack.db_path)
    # 3. XComs and rendered template fields of every task instance of every run, via the API.
    runs = 0
    for dag in stack.api("GET", "/dags", params={"limit": 100})["dags"]:
        for run in stack.api("GET", f"/dags/{dag['dag_id']}/dagRuns", params={"limit": 100})["dag_runs"]:
            runs += 1
            scanner.value(run.get("conf"), f"conf of {dag['dag_id']}/{run['dag_run_id']}")
            for entry in stack.xcom_entries(dag["dag_id"], run["dag_run_id"]):
                scanner.value(
                    entry, f"XCom {dag['dag_id']}/{run['dag_run_id']}/{entry['task_id']}/{entry['key']}"
                )
            for ti in stack.task_instances(dag["dag_id"], run["dag_run_id"]):
                scanner.value(ti.get("rendered_fields"), f"rendered fields of {ti['task_id']}")
                scanner.value(ti, f"task instance {ti['task_id']}")
    # 4. Every trigger row sampled while tasks were deferred (kwargs decrypted).
    assert stack.trigger_samples, "no trigger row was ever seen: the drill saw no deferral"
    for (trigger_id, _, _), row in stack.trigger_samples.items():
        scanner.value(row, f"trigger {trigger_id} kwargs")
    # 5. OpenLineage events (file transport) and 6. every landed file.
    lineage = system_root / "openlineage"
    assert any(p.stat().st_size for p in lineage.rglob("*") if p.is_file()), (
        "no OpenLineage event was written"
    )
    scanner.tree(lineage)
    scanner.tree(system_root / "landed")

    assert runs >= exercised["runs"] + len(azure_runs) and scanner.scanned["files"] > 10, scanner.scanned
    assert not scanner.hits, "a secret leaked:\n" + "\n".join(scanner.hits[:20])

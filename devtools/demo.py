"""``make demo``: run the example DAGs end to end against a local emulator, no key, no network.

    python -m devtools.demo [--profile fast] [--output demo-output]

1. An Airflow home under ``.demo/airflow`` (sqlite), migrated once per Airflow version.
2. The emulator (fake backend) in a background process; ``openai_default`` points at it
   through ``AIRFLOW_CONN_OPENAI_DEFAULT``, as a deployment would set it.
3. ``nightly_eval``, then ``embedding_refresh`` and its Asset consumer ``embedding_search``,
   each with ``dag.test()`` (tasks in this process, deferred waits run in line).
4. Everything lands under ``demo-output/``; a summary (requests, tokens, estimated cost from
   the fetch manifests) says where to look. The emulator stops at the end.

Run from the repository root (it needs ``dags_examples/``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: The fetch tasks of each DAG the demo runs, in order; their XComs carry counts, usage and cost.
DAG_FETCHES: dict[str, list[str]] = {
    "nightly_eval": ["fetch_results"],
    "embedding_refresh": ["fetch_vectors"],
    "embedding_search": ["fetch_queries"],
}


def find_root(start: Path | None = None) -> Path:
    """The repository root: the first of the working directory and this package's parent that
    has ``dags_examples/``."""
    for candidate in (start or Path.cwd(), Path(__file__).resolve().parents[1]):
        if (candidate / "dags_examples").is_dir():
            return candidate.resolve()
    raise SystemExit("The demo runs the example DAGs of the repository: run it from the repository root.")


def airflow_environment(root: Path, output: Path) -> dict[str, str]:
    """Environment variables for an Airflow home under ``.demo/`` and the example DAGs."""
    home = root / ".demo" / "airflow"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags_examples"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("BATCH_DEMO_LOG_LEVEL", "WARNING"),
        "BATCH_DEMO_DESTINATION": output.as_uri(),
        "BATCH_DEMO_POLL_INTERVAL": "1",
    }


def fernet_key(home: Path) -> str:
    """A Fernet key kept in the demo's Airflow home, so connections and variables are encrypted."""
    key_file = home / "fernet.key"
    if not key_file.exists():
        from cryptography.fernet import Fernet

        key_file.write_bytes(Fernet.generate_key())
    return key_file.read_text().strip()


def migrate_once(home: Path) -> bool:
    """Create or upgrade the sqlite DB, once per Airflow version; return whether it ran."""
    import airflow
    from airflow.utils.db import initdb

    stamp = home / f".migrated-{airflow.__version__}"
    if stamp.exists():
        return False
    initdb()  # `airflow db migrate`, in process
    stamp.touch()
    return True


@contextmanager
def emulator(root: Path, profile: str) -> Iterator[Any]:
    """The emulator in a child process with a fresh data dir (runs are independent)."""
    from airflow_batch_provider.emulator.testing import running_emulator

    data_dir = root / ".demo" / "emulator"
    shutil.rmtree(data_dir, ignore_errors=True)
    with running_emulator(profile=profile, mode="subprocess", data_dir=data_dir) as handle:
        yield handle


def _xcom(dag_run: Any, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(
            select(XComModel.value).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == "return_value",
            )
        )
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _task_states(dag_run: Any) -> dict[str, str]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances(session=session)}


def _relative(uri: str | None, root: Path) -> str:
    path = (uri or "").removeprefix("file://")
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return uri or "?"


def run_dag(dag: Any, conf: Mapping[str, Any] | None = None) -> tuple[Any, float]:
    """``dag.test()``, timed; raises with the failed tasks if the run did not succeed."""
    started = time.monotonic()
    dag_run = dag.test(run_conf=dict(conf) if conf else None)
    elapsed = time.monotonic() - started
    if str(dag_run.state) != "success":
        failed = {t: s for t, s in _task_states(dag_run).items() if s not in ("success", "skipped")}
        raise SystemExit(
            f"{dag.dag_id} ended {dag_run.state}: {failed}. "
            "Rerun with BATCH_DEMO_LOG_LEVEL=INFO to see the task logs."
        )
    return dag_run, elapsed


def _money(usd: float | None) -> str:
    return "n/a" if usd is None else f"${usd:.4f}"


def summarize(runs: list[tuple[Any, float]], root: Path, output: Path, stats: Mapping[str, Any]) -> str:
    """The closing summary: per DAG counts, tokens, cost and files; totals; where to look."""
    lines = ["", f"Results are under {_relative(output.as_uri(), root)}/:"]
    total_requests = total_in = total_out = 0
    total_cost = 0.0
    for dag_run, elapsed in runs:
        dag_id = dag_run.dag_id
        fetched = [f for f in (_xcom(dag_run, t) for t in DAG_FETCHES.get(dag_id, [])) if f]
        lines.append(f"  {dag_id} ({elapsed:.1f} s)")
        if not fetched:
            lines.append("      no batch this run: nothing changed since the last run")
        for f in fetched:
            counts = ", ".join(f"{v} {k}" for k, v in (f.get("counts") or {}).items() if v) or "none"
            usage = f.get("usage") or {}
            total_requests += int(f.get("total") or 0)
            total_in += int(usage.get("input_tokens") or 0)
            total_out += int(usage.get("output_tokens") or 0)
            total_cost += float(f.get("cost_usd") or 0.0)
            batches = len(f.get("batch_ids") or [])
            lines.append(
                f"      {batches} batch(es), {f.get('total')} requests ({counts}); "
                f"tokens {usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out; "
                f"est. {_money(f.get('cost_usd'))} ({f.get('model')})"
            )
            lines.append(f"      results:  {_relative(f.get('results_uri'), root)}")
            lines.append(f"      manifest: {_relative(f.get('manifest_uri'), root)}")
        lines += _extras(dag_run, root)
    lines += [
        "",
        f"Total: {total_requests} requests, {total_in} input + {total_out} output tokens, "
        f"estimated {_money(total_cost)} at Batch API prices (the emulator bills nothing).",
        f"Emulator saw: {stats.get('files_uploaded')} files uploaded, {stats.get('batches_created')} batches "
        f"created, {stats.get('requests_executed')} requests executed.",
    ]
    return "\n".join(lines)


def _extras(dag_run: Any, root: Path) -> list[str]:
    """What each DAG's last task reports (the eval report, the vectors, the search answers)."""
    if dag_run.dag_id == "nightly_eval":
        report = _xcom(dag_run, "score_and_report") or {}
        overall = report.get("overall") or {}
        return [
            f"      report:   {_relative(report.get('report'), root)} (+ accuracy.svg, scores.json)",
            f"      accuracy: exact match {overall.get('exact_accuracy', 0):.1%}, "
            f"contains {overall.get('contains_accuracy', 0):.1%} (the fake model echoes each question)",
        ]
    if dag_run.dag_id == "embedding_refresh":
        published = _xcom(dag_run, "publish")
        if not published:
            return ["      vectors unchanged (content hashes match): no Asset event"]
        return [
            f"      vectors:  {published['vectors']} in vectors.jsonl, {published['embedded']} embedded "
            "this run; Asset event emitted -> embedding_search"
        ]
    if dag_run.dag_id == "embedding_search":
        answers = _xcom(dag_run, "answer") or []
        return [f"      answers:  {len(answers)} queries answered, see answers.md beside the results"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.demo", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--profile",
        default="fast",
        choices=["instant", "fast", "realistic"],
        help="emulator timing profile (default: fast)",
    )
    parser.add_argument("--output", default="demo-output", help="where results land (default: demo-output)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    root = find_root()
    output = (root / args.output).resolve()
    env = airflow_environment(root, output)
    os.environ.update(env)
    os.environ.pop("BATCH_DEMO_STORAGE_CONN_ID", None)  # local files
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("AIRFLOW__CORE__FERNET_KEY", fernet_key(home))

    print(f"Airflow home: {_relative(env['AIRFLOW_HOME'], root)} (sqlite); DAGs: dags_examples/", flush=True)
    if migrate_once(Path(env["AIRFLOW_HOME"])):
        print(f"Migrated the Airflow database ({time.monotonic() - started:.0f} s).", flush=True)

    try:
        from airflow.dag_processing.dagbag import BundleDagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag as BundleDagBag  # type: ignore[no-redef]

    # After importing Airflow (it sets warning filters): Airflow 3.3 reads .airflowignore with a
    # pathspec class that newer pathspec versions deprecate; not something a demo user can fix.
    warnings.filterwarnings("ignore", message="GitWildMatchPattern", category=DeprecationWarning)
    # dag.test() warns "No tasks to run" while a skip propagates through its loop: not a problem.
    logging.getLogger("airflow.sdk.definitions.dag").setLevel(logging.ERROR)

    with emulator(root, args.profile) as handle:
        name, value = handle.connection_env("openai_default")
        os.environ[name] = value
        print(
            f"Emulator ({args.profile} profile, fake model) at {handle.base_url}; "
            f"batches: {handle.root_url}/_emulator/batches",
            flush=True,
        )
        examples = root / "dags_examples"
        bag = BundleDagBag(dag_folder=examples, bundle_path=examples, bundle_name="dags-folder")
        if bag.import_errors:
            raise SystemExit(f"The example DAGs do not import: {bag.import_errors}")

        runs = []
        for dag_id in DAG_FETCHES:
            print(f"Running {dag_id} ...", flush=True)
            runs.append(run_dag(bag.dags[dag_id]))
            print(f"  {dag_id}: success in {runs[-1][1]:.1f} s", flush=True)
        stats = handle.stats()

    print(summarize(runs, root, output, stats))
    print(
        f"\nDone in {time.monotonic() - started:.0f} s. Start with "
        f"{_relative((_xcom(runs[0][0], 'score_and_report') or {}).get('report'), root)}; "
        "`make airflow` shows the same DAGs in the UI."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

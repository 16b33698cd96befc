"""Where the examples read their data and land their results.

Set by environment variables so the same DAG files run everywhere:

- ``BATCH_DEMO_DESTINATION``: root URL for results, e.g. ``s3://batch-results/``
  (default: ``file://$AIRFLOW_HOME/batch-results/``).
- ``BATCH_DEMO_STORAGE_CONN_ID``: the Airflow connection of that storage
  (e.g. ``aws_minio``); unset for local files.
- ``BATCH_DEMO_POLL_INTERVAL``: seconds between batch status checks (default 60;
  the demo and the tests use 1 because the emulator finishes in seconds).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

#: The data shipped with the examples (eval set, documents, tickets CSV).
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def destination_root() -> str:
    """The results root URL, always ending in ``/``."""
    default = "file://" + os.path.join(
        os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "batch-results"
    )
    root = os.environ.get("BATCH_DEMO_DESTINATION") or default
    return root.rstrip("/") + "/"


def storage_conn_id() -> str | None:
    """The Airflow connection of the results storage, or ``None`` for local files."""
    return os.environ.get("BATCH_DEMO_STORAGE_CONN_ID") or None


def poll_interval() -> float:
    """Seconds between batch status checks."""
    return float(os.environ.get("BATCH_DEMO_POLL_INTERVAL") or 60)


def destination(*parts: str) -> str:
    """A URL under the results root: ``destination("nightly_eval", "run-1")``."""
    return destination_root() + "/".join(p.strip("/") for p in parts if p)


def slug(text: str) -> str:
    """``text`` made safe as one path segment (run ids contain ``:`` and ``+``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "_"


def path(url: str) -> ObjectStoragePath:
    """An ``ObjectStoragePath`` for ``url`` on the results storage (its connection attached)."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url, conn_id=storage_conn_id())


def read_json(url: str, default: Any = None) -> Any:
    """The JSON document at ``url``, or ``default`` when it does not exist."""
    target = path(url)
    if not target.exists():
        return default
    return json.loads(target.read_text())


def write_text(url: str, text: str) -> str:
    """Write ``text`` to ``url`` (parent folders created); return ``url``."""
    target = path(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return url


def read_all(root_url: str, name: str) -> list[Any]:
    """The JSON document ``name`` of every folder directly under ``root_url`` that has one."""
    root = path(root_url)
    if not root.exists():
        return []
    found = []
    for folder in root.iterdir():
        candidate = folder / name
        if folder.is_dir() and candidate.exists():
            found.append(json.loads(candidate.read_text()))
    return found


def documents_root() -> ObjectStoragePath:
    """The folder (or prefix) of documents to embed: ``BATCH_DEMO_DOCUMENTS`` (a URL on the
    results storage) or the ``data/documents`` folder shipped with the examples."""
    from airflow.sdk import ObjectStoragePath

    url = os.environ.get("BATCH_DEMO_DOCUMENTS")
    if url:
        return path(url)
    return ObjectStoragePath((DATA_DIR / "documents").as_uri())


def iter_jsonl(url: str) -> Iterator[dict[str, Any]]:
    """Stream the JSON lines of ``url`` (a missing file yields nothing)."""
    target = path(url)
    if not target.exists():
        return
    with target.open("r") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)

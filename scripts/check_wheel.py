"""Check a built wheel's contents: the package and its data files, no tests or venvs, one version.

Usage: python scripts/check_wheel.py WHEEL VERSION
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

REQUIRED = (
    "airflow_batch_provider/__init__.py",
    "airflow_batch_provider/py.typed",
    "airflow_batch_provider/get_provider_info.py",
    "airflow_batch_provider/plugins/static/",
)
#: Never shipped: tests, venvs, caches, the examples, and the dev tooling (devtools/: make demo,
#: make airflow), which needs a checkout.
FORBIDDEN = (
    "tests/",
    ".venv",
    "__pycache__",
    ".pyc",
    "dags_examples/",
    ".demo/",
    "demo-output/",
    "scripts/",
    "devtools/",
    "/demo.py",
    "/devstack.py",
)
#: Data files the UI plugin serves: each file of the source tree's folder must be in the wheel.
STATIC = Path(__file__).resolve().parents[1] / "airflow_batch_provider" / "plugins" / "static"


def _required() -> list[str]:
    static = sorted(
        f"airflow_batch_provider/plugins/static/{p.relative_to(STATIC).as_posix()}"
        for p in STATIC.rglob("*")
        if p.is_file()
    )
    return [*REQUIRED, *static]


def main(wheel: str, version: str) -> int:
    names = zipfile.ZipFile(wheel).namelist()
    problems = [f"missing {r}" for r in _required() if not any(n.startswith(r) for n in names)]
    problems += [f"unexpected {n}" for n in names if any(f in n for f in FORBIDDEN)]
    tops = {n.split("/", 1)[0] for n in names}
    problems += [
        f"unexpected top-level {t}"
        for t in tops - {"airflow_batch_provider", f"airflow_batch_provider-{version}.dist-info"}
    ]
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(f"airflow_batch_provider-{version}.dist-info/METADATA").decode()
        entry_points = zf.read(f"airflow_batch_provider-{version}.dist-info/entry_points.txt").decode()
    if f"\nVersion: {version}\n" not in meta:
        problems.append(f"METADATA does not say Version: {version}")
    for group in ("[apache_airflow_provider]", "[airflow.plugins]", "[console_scripts]"):
        if group not in entry_points:
            problems.append(f"entry_points.txt lacks {group}")
    for problem in problems:
        print(f"check_wheel: {wheel}: {problem}")
    if not problems:
        print(f"check_wheel: {wheel}: {len(names)} files, contents OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

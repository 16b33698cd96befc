#!/usr/bin/env bash
# Build the sdist and wheel, check their metadata (twine) and the wheel's contents, then install
# the wheel (with the constraints) into a fresh venv and run one DAG on the emulator from it.
# Usage: scripts/release_check.sh [AIRFLOW_VERSION]   (default 3.3.2); needs .venv (make venv).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
airflow_version=${1:-3.3.2}
venv_bin=${VENV_BIN:-.venv/bin}
python=${PYTHON:-python3}
pyver=$("$python" -c "import sys; print('%d.%d' % sys.version_info[:2])")
constraints=$root/constraints/constraints-$airflow_version-py$pyver.txt
work=${RELEASE_CHECK_DIR:-/tmp/airflow-batch-provider-release-check}
rm -rf "$work" && mkdir -p "$work/dist"
t0=$(date +%s)
"$venv_bin/python" -m build -q --outdir "$work/dist" . >/dev/null
"$venv_bin/twine" check --strict "$work"/dist/*
version=$("$venv_bin/python" -c "import ast,sys; t=ast.parse(open('airflow_batch_provider/__init__.py').read()); print([n.value.value for n in t.body if isinstance(n, ast.Assign) and n.targets[0].id == '__version__'][0])")
wheel=$(ls "$work"/dist/airflow_batch_provider-"$version"-py3-none-any.whl)
ls "$work"/dist/airflow_batch_provider-"$version".tar.gz >/dev/null
"$venv_bin/python" scripts/check_wheel.py "$wheel" "$version"
"$python" -m venv "$work/venv"
TIMEFORMAT="release-check: plain pip installed the wheel in %0R s (CPU %0U s user + %0S s sys)"
time "$work/venv/bin/pip" install -q "$wheel" -c "$constraints"
"$work/venv/bin/pip" check
"$work/venv/bin/python" scripts/check_pins.py "$constraints" airflow-batch-provider
cd "$work"  # import the installed wheel, not the source tree's
"$work/venv/bin/python" "$root/scripts/smoke_dag.py" --installed
echo "release-check: $wheel OK in $(($(date +%s) - t0)) s"

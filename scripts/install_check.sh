#!/usr/bin/env bash
# Install as a user would, with plain pip (not uv) in a fresh venv: README's command with its
# constraints file, beside the official OpenAI and common.ai providers. Then land a batch's
# results on s3:// (a moto server), and check `airflow providers list` and `airflow plugins`.
# Usage: scripts/install_check.sh [AIRFLOW_VERSION]   (default 3.3.2)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
airflow_version=${1:-3.3.2}
python=${PYTHON:-python3}
pyver=$("$python" -c "import sys; print('%d.%d' % sys.version_info[:2])")
constraints=$root/constraints/constraints-$airflow_version-py$pyver.txt
test -f "$constraints" || { echo "no $constraints: run make constraints"; exit 1; }
work=${INSTALL_CHECK_DIR:-/tmp/airflow-batch-provider-install-check}
rm -rf "$work" && mkdir -p "$work"
"$python" -m venv "$work/venv"
bin=$work/venv/bin
t0=$(date +%s)
echo "install-check: $("$bin/pip" --version | cut -d' ' -f1-2), load average $(cut -d' ' -f1-3 /proc/loadavg)"
# README's install command, plus the providers users already have. CPU time beside wall time:
# on a shared machine the wall time is mostly waiting for a core.
TIMEFORMAT="install-check: plain pip resolved and installed in %0R s (CPU %0U s user + %0S s sys)"
time "$bin/pip" install -q --log "$work/pip-install.log" -e ".[s3,openlineage]" -c "$constraints" \
  apache-airflow-providers-openai apache-airflow-providers-common-ai
"$bin/python" scripts/pip_phases.py "$work/pip-install.log"
"$bin/pip" check
# Every distribution pip picked is pinned: nothing left for pip to choose (or backtrack over).
"$bin/python" scripts/check_pins.py "$constraints" airflow-batch-provider
"$bin/pip" install -q "moto[server]" -c "$constraints"  # the S3 server of the check, not the user's
export AIRFLOW_HOME=$work/home AIRFLOW__CORE__LOAD_EXAMPLES=False
mkdir -p "$AIRFLOW_HOME"
providers=$("$bin/airflow" providers list -o plain)
for p in airflow-batch-provider apache-airflow-providers-openai apache-airflow-providers-common-ai \
  apache-airflow-providers-amazon apache-airflow-providers-openlineage; do
  grep -q "^$p " <<<"$providers" || { echo "install-check: $p missing from airflow providers list"; echo "$providers"; exit 1; }
done
"$bin/airflow" plugins -o plain | grep -q openai_batch_monitor \
  || { echo "install-check: openai_batch_monitor missing from airflow plugins"; exit 1; }
echo "install-check: providers list and plugins OK"
cd "$work"  # import the installed package, not the source tree's
"$bin/python" "$root/scripts/smoke_dag.py" --s3
echo "install-check: done in $(($(date +%s) - t0)) s"

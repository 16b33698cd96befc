# One command for the demo, one for the tests; each makes its own venv.
PYTHON ?= python3
AIRFLOW_VERSION ?= 3.3.2
AIRFLOW_OLDEST ?= 3.1.8
OPENAI_FLOOR ?= 1.100.0
OPENAI_FLOOR_TESTS ?= tests/integration/test_hook_emulator.py tests/integration/test_trigger_openai_batch.py \
  tests/integration/test_submit_dag.py tests/integration/test_fetch_land.py tests/unit/test_hook_async.py \
  tests/unit/test_hook_http.py
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(AIRFLOW_VERSION)
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
export PYTHONDONTWRITEBYTECODE := 1
# tiktoken's encoding files, seeded offline when the venv is made (tests/tiktoken_cache.py):
# exact token estimates without internet; nothing downloads them at run time.
export TIKTOKEN_CACHE_DIR ?= $(CURDIR)/.tiktoken-cache

.PHONY: venv test test-storage test-oldest test-lowest constraints install-check release-check lint demo airflow stop \
	system-test stack-test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade uv || true
	( $(BIN)/uv pip install -q --python $(BIN)/python -e ".[dev,emulator,s3,openlineage,bench]" "apache-airflow==$(AIRFLOW_VERSION)" ) \
	  || $(BIN)/python -m pip install -q -e ".[dev,emulator,s3,openlineage,bench]" "apache-airflow==$(AIRFLOW_VERSION)"
	rm -f $(VENV)/.installed-*
	$(BIN)/python -m tests.tiktoken_cache "$(TIKTOKEN_CACHE_DIR)"
	touch $@

lint: venv
	$(BIN)/ruff check airflow_batch_provider devtools tests dags_examples
	$(BIN)/ruff format --check airflow_batch_provider devtools tests dags_examples
	$(BIN)/mypy airflow_batch_provider devtools

test: venv
	$(MAKE) lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit tests/integration

# Landing, input reading and lineage on Google Cloud Storage (gcp-storage-emulator) and Azure Blob
# Storage (Azurite, from npm into .azurite/), through Airflow's Google and Microsoft Azure providers:
# tests/storage_backends/, in .venv-storage. Its own venv: the Google provider (~1 GB) caps openai
# below the newest, so the openai SDK is pinned to our floor or above rather than left to drift.
STORAGE_VENV ?= .venv-storage
STORAGE_STAMP := $(STORAGE_VENV)/.installed-$(AIRFLOW_VERSION)
AZURITE_VERSION ?= 3.37.0

$(STORAGE_STAMP): pyproject.toml
	test -x $(STORAGE_VENV)/bin/python || $(PYTHON) -m venv $(STORAGE_VENV)
	test -x $(STORAGE_VENV)/bin/uv || $(STORAGE_VENV)/bin/python -m pip install -q uv
	$(STORAGE_VENV)/bin/uv pip install -q --python $(STORAGE_VENV)/bin/python \
	  -e ".[gcs,azure,openlineage,storage-tests]" "apache-airflow==$(AIRFLOW_VERSION)" "openai>=$(OPENAI_FLOOR)"
	rm -f $(STORAGE_VENV)/.installed-*
	touch $@

.azurite/node_modules/.bin/azurite-blob:
	npm install --prefix .azurite --no-audit --no-fund --loglevel=error "azurite@$(AZURITE_VERSION)"

# The venv and Azurite install side by side (both mostly wait on downloads).
test-storage:
	$(MAKE) -j2 $(STORAGE_STAMP) .azurite/node_modules/.bin/azurite-blob
	AZURITE_BLOB=$(CURDIR)/.azurite/node_modules/.bin/azurite-blob \
	  $(STORAGE_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/storage_backends

# The oldest Airflow we support, in a venv of its own: unit and DAG tests.
test-oldest:
	$(MAKE) VENV=.venv-oldest AIRFLOW_VERSION=$(AIRFLOW_OLDEST) venv
	.venv-oldest/bin/python -m pytest -q -p no:cacheprovider tests/unit tests/integration

# The lowest versions pyproject.toml's bounds allow for our direct dependencies (uv's
# lowest-direct resolution), in .venv-lowest: unit and integration tests. Then the openai SDK
# floor, below what the official provider in the dev extra needs, for the tests of our hook.
test-lowest:
	test -x .venv-lowest/bin/python || $(PYTHON) -m venv .venv-lowest
	test -x .venv-lowest/bin/uv || .venv-lowest/bin/python -m pip install -q uv
	.venv-lowest/bin/uv pip install -q --python .venv-lowest/bin/python --resolution lowest-direct \
	  -e ".[dev,emulator,s3,openlineage]"
	.venv-lowest/bin/python -m tests.tiktoken_cache "$(TIKTOKEN_CACHE_DIR)"
	.venv-lowest/bin/python -m pytest -q -p no:cacheprovider tests/unit tests/integration
	.venv-lowest/bin/uv pip install -q --python .venv-lowest/bin/python "openai==$(OPENAI_FLOOR)"
	.venv-lowest/bin/python -m pytest -q -p no:cacheprovider $(OPENAI_FLOOR_TESTS)

# constraints/constraints-<airflow>-py<python>.txt: the exact resolution the tests ran with
# (make test, make test-oldest), written by `uv pip freeze` from those venvs.
constraints:
	$(MAKE) venv
	bash scripts/write_constraints.sh $(VENV)
	$(MAKE) VENV=.venv-oldest AIRFLOW_VERSION=$(AIRFLOW_OLDEST) venv
	bash scripts/write_constraints.sh .venv-oldest

# Plain pip in a fresh venv: README's install command with its constraints, beside the official
# OpenAI and common.ai providers; then an s3:// landing, `airflow providers list`, `airflow plugins`.
install-check:
	timeout -k 30 1800 bash scripts/install_check.sh $(AIRFLOW_VERSION)

# sdist + wheel, twine check, wheel contents, then the wheel in a fresh venv runs a DAG on the emulator.
release-check: venv
	timeout -k 30 1800 bash scripts/release_check.sh $(AIRFLOW_VERSION)

demo: venv
	$(BIN)/python -m devtools.demo

# A full local Airflow (api-server, scheduler, dag-processor, triggerer) with the emulator and
# the example DAGs, in the background, on 127.0.0.1 only: UI at http://127.0.0.1:8080, pids in .demo/,
# `make stop` ends it.
airflow: venv
	$(BIN)/python -m devtools.devstack start

stop:
	if [ -x $(BIN)/python ]; then $(BIN)/python -m devtools.devstack stop; fi

# Real Airflow processes (api-server, scheduler, dag-processor, triggerer) with emulators: the
# example DAGs, the fault, secrets and bad-input drills (tests/system/README.md). Artifacts
# (AIRFLOW_HOME, logs, landed files) stay in /tmp/airflow-batch-provider-system-test.
system-test: venv
	timeout -k 60 1500 $(BIN)/python -m pytest -q -p no:cacheprovider --durations=10 \
	  --basetemp=/tmp/airflow-batch-provider-system-test tests/system

# The production topology (tests/stack/topology.py), natively: PostgreSQL, Redis, moto's S3,
# api-server, scheduler, dag-processor, two triggerers, a Celery worker, with the fan-out,
# failover, worker-kill, Postgres-restart and example drills (needs the Debian packages
# postgresql and redis-server: scripts/install_stack_packages.sh). Artifacts stay in
# /tmp/airflow-batch-provider-stack-test; every process it starts ends with it.
stack-test: venv
	$(BIN)/uv pip install -q --python $(BIN)/python -e ".[dev,emulator,s3,openlineage,bench,stack]" "apache-airflow==$(AIRFLOW_VERSION)"
	timeout -k 60 3600 $(BIN)/python -m pytest -q -p no:cacheprovider --durations=10 \
	  --basetemp=/tmp/airflow-batch-provider-stack-test tests/stack

bench: venv
	for f in tests/benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf .venv .venv-oldest .venv-lowest .venv-storage .azurite .demo demo-output dist build

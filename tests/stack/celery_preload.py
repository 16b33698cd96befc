"""``[celery] celery_config_options`` of the native stack's Celery worker: Airflow's default
Celery config, with the provider's heavy imports done once in the worker.

The worker runs each task in a process forked from it (the task supervisor forks the task
runner), which then imports what the DAG file needs: the ``openai`` SDK, the provider and
tiktoken's encoding take about 1.7 s of CPU, most of a small task's cost. Imported here, in
the worker's main process, every forked task process inherits them: a hundred-task fan-out
on two shared cores spends its CPU on the tasks, not on importing the same modules again.
A production worker can do the same (``[celery] celery_config_options``, README "Deployment").
"""

from __future__ import annotations

import airflow.sdk.execution_time.task_runner  # noqa: F401  (what every task process runs)
from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

import airflow_batch_provider.operators.fetch  # noqa: F401  (and with it the openai SDK)
import airflow_batch_provider.operators.submit  # noqa: F401
from airflow_batch_provider.batch_file.estimate import load_encoding

load_encoding("o200k_base")  # submit's token estimate; cached in the module for forked tasks

CONFIG = DEFAULT_CELERY_CONFIG

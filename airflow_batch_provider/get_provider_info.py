"""Provider metadata, read by Airflow's ProvidersManager through the entry point."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-batch-provider",
        "name": "OpenAI Batch",
        "description": "Run OpenAI Batch API jobs as deferrable, idempotent, observable Airflow tasks.",
        "versions": ["0.1.0"],
        "hooks": [
            {
                "integration-name": "OpenAI Batch",
                "python-modules": ["airflow_batch_provider.hooks.openai_batch"],
            }
        ],
        "operators": [
            {
                "integration-name": "OpenAI Batch",
                "python-modules": [
                    "airflow_batch_provider.operators.submit",
                    "airflow_batch_provider.operators.fetch",
                ],
            }
        ],
        "sensors": [
            {"integration-name": "OpenAI Batch", "python-modules": ["airflow_batch_provider.sensors.openai_batch"]}
        ],
        "triggers": [
            {"integration-name": "OpenAI Batch", "python-modules": ["airflow_batch_provider.triggers.openai_batch"]}
        ],
        "task-decorators": [
            {
                "class-name": "airflow_batch_provider.decorators.openai_batch.openai_batch_task",
                "name": "openai_batch",
            }
        ],
    }

"""Provider metadata, read by Airflow's ProvidersManager through the entry point."""

from __future__ import annotations

from typing import Any

from airflow_batch_provider import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-batch-provider",
        "name": "OpenAI Batch",
        "description": "Run OpenAI Batch API jobs as deferrable, idempotent, observable Airflow tasks.",
        "versions": [__version__],  # the one version, also read by pyproject.toml
        "hooks": [
            {
                "integration-name": "OpenAI Batch",
                "python-modules": ["airflow_batch_provider.hooks.openai_batch"],
            }
        ],
        # The standard ``openai`` connection, read unchanged; the fields below are optional
        # extras (stored unprefixed in ``extra``), declared here rather than in hook methods.
        "connection-types": [
            {
                "hook-class-name": "airflow_batch_provider.hooks.openai_batch.OpenAIBatchHook",
                "hook-name": "OpenAI",
                "connection-type": "openai",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"password": "API Key", "host": "Base URL"},
                    "placeholders": {
                        "host": "https://api.openai.com/v1 (or any OpenAI-compatible server)",
                        "extra": '{"openai_client_kwargs": {"default_headers": {}}}',
                    },
                },
                "conn-fields": {
                    "organization": {
                        "label": "Organization",
                        "description": "OpenAI organization id (org-...), sent as OpenAI-Organization.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "project": {
                        "label": "Project",
                        "description": "OpenAI project id (proj_...), sent as OpenAI-Project.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "description": "Retries of 429, 5xx and network errors (default 5).",
                        "schema": {"type": ["integer", "null"], "minimum": 0},
                    },
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "description": "Per-request timeout; the SDK's default (600 s) when empty.",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                    },
                    "console_url": {
                        "label": "Console URL template",
                        "description": "Link shown for a batch, with {batch_id}; empty to use the default.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "azure_endpoint": {
                        "label": "Azure endpoint",
                        "description": "Azure: https://<resource>.openai.azure.com (default: host).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "api_version": {
                        "label": "Azure API version",
                        "description": "Azure OpenAI, e.g. 2025-03-01-preview; setting it selects Azure.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "azure_deployment": {
                        "label": "Azure deployment",
                        "description": "Azure OpenAI only: the model deployment name.",
                        "schema": {"type": ["string", "null"]},
                    },
                },
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
            {
                "integration-name": "OpenAI Batch",
                "python-modules": ["airflow_batch_provider.sensors.openai_batch"],
            }
        ],
        "triggers": [
            {
                "integration-name": "OpenAI Batch",
                "python-modules": ["airflow_batch_provider.triggers.openai_batch"],
            }
        ],
        "plugins": [
            {
                "name": "openai_batch_monitor",
                "plugin-class": "airflow_batch_provider.plugins.batch_monitor.OpenAIBatchMonitorPlugin",
            }
        ],
        "task-decorators": [
            {
                "class-name": "airflow_batch_provider.decorators.openai_batch.openai_batch_task",
                "name": "openai_batch",
            }
        ],
    }

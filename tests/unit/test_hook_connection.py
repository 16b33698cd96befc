"""How OpenAIBatchHook reads the standard ``openai`` connection, and what it never shows."""

from __future__ import annotations

import importlib
import json
import logging

import openai
import pytest

from airflow_batch_provider.exceptions import BatchAuthError, BatchProviderError
from airflow_batch_provider.get_provider_info import get_provider_info
from airflow_batch_provider.hooks.clients import DEFAULT_MAX_RETRIES, redact
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook

KEY = "sk-unit-test-secret-0123456789"


def test_plain_connection_is_read_like_the_official_provider(openai_connection):
    conn_id = openai_connection("openai_plain", host="http://127.0.0.1:9/v1", password=KEY)
    hook = OpenAIBatchHook(conn_id)
    client = hook.get_conn()
    assert type(client) is openai.OpenAI
    assert client.api_key == KEY
    assert str(client.base_url) == "http://127.0.0.1:9/v1/"
    assert client.max_retries == DEFAULT_MAX_RETRIES
    assert hook.get_conn() is client  # cached per hook


def test_official_provider_extras_win_and_pass_through(openai_connection):
    conn_id = openai_connection(
        "openai_kwargs",
        host="http://ignored:1/v1",
        password="sk-from-password",
        extra={
            "openai_client_kwargs": {
                "base_url": "http://127.0.0.1:8/v1",
                "api_key": KEY,
                "default_headers": {"X-Team": "evals"},
            },
            "organization": "org-123",
            "project": "proj_456",
            "max_retries": 1,
            "timeout": 12.5,
        },
    )
    client = OpenAIBatchHook(conn_id).get_conn()
    assert client.api_key == KEY
    assert str(client.base_url) == "http://127.0.0.1:8/v1/"
    assert client.organization == "org-123"
    assert client.project == "proj_456"
    assert client.max_retries == 1
    assert client.timeout == 12.5
    assert client.default_headers["X-Team"] == "evals"


def test_bare_host_means_https(openai_connection):
    conn_id = openai_connection("openai_bare", host="llm.internal", port=8443, password=KEY)
    assert str(OpenAIBatchHook(conn_id).get_conn().base_url).rstrip("/") == "https://llm.internal:8443"


def test_no_host_means_openai(openai_connection, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    conn_id = openai_connection("openai_nohost", password=KEY)
    hook = OpenAIBatchHook(conn_id)
    assert str(hook.get_conn().base_url) == "https://api.openai.com/v1/"
    assert hook.settings.base_url == "https://api.openai.com/v1"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"max_retries": "many"}, "max_retries"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout": "soon"}, "timeout"),
        ({"auth_type": "magic"}, "auth_type"),
        ({"openai_client_kwargs": ["x"]}, "openai_client_kwargs"),
    ],
)
def test_bad_extras_say_which_one(openai_connection, extra, needle):
    conn_id = openai_connection("openai_bad", host="http://127.0.0.1:9/v1", password=KEY, extra=extra)
    with pytest.raises(BatchProviderError, match=needle) as info:
        OpenAIBatchHook(conn_id).get_conn()
    assert KEY not in str(info.value)


def test_missing_key_says_where_to_put_it(openai_connection, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    conn_id = openai_connection("openai_nokey", host="http://127.0.0.1:9/v1")
    with pytest.raises(BatchAuthError, match="password"):
        OpenAIBatchHook(conn_id).get_conn()


def test_azure_extras_build_an_azure_client(openai_connection):
    conn_id = openai_connection(
        "openai_azure",
        host="https://myres.openai.azure.com",
        password=KEY,
        extra={"api_version": "2025-03-01-preview", "azure_deployment": "gpt-4o-batch"},
    )
    hook = OpenAIBatchHook(conn_id)
    client = hook.get_conn()
    assert isinstance(client, openai.AzureOpenAI)
    assert str(client.base_url) == "https://myres.openai.azure.com/openai/deployments/gpt-4o-batch/"
    assert hook.settings.azure and hook.settings.base_url == "https://myres.openai.azure.com"


def test_azure_endpoint_extra_beats_host_and_ad_token_replaces_key(openai_connection):
    conn_id = openai_connection(
        "openai_azure2",
        host="https://ignored.example",
        extra={
            "azure_endpoint": "https://other.openai.azure.com/",
            "api_version": "2024-10-21",
            "azure_ad_token": "ad-token-secret",
        },
    )
    hook = OpenAIBatchHook(conn_id)
    client = hook.get_conn()
    assert isinstance(client, openai.AzureOpenAI)
    assert str(client.base_url) == "https://other.openai.azure.com/openai/"
    assert "ad-token-secret" in hook.settings.secrets


def test_azure_without_api_version_says_so(openai_connection, monkeypatch):
    monkeypatch.delenv("OPENAI_API_VERSION", raising=False)
    conn_id = openai_connection(
        "openai_azure3", password=KEY, extra={"azure_endpoint": "https://x.openai.azure.com"}
    )
    with pytest.raises(BatchProviderError, match="api_version"):
        OpenAIBatchHook(conn_id).get_conn()


async def test_async_client_has_the_same_settings(openai_connection):
    conn_id = openai_connection(
        "openai_async",
        host="https://myres.openai.azure.com",
        password=KEY,
        extra={"api_version": "2024-10-21", "organization": "org-9"},
    )
    client = await OpenAIBatchHook(conn_id).get_async_conn()
    assert isinstance(client, openai.AsyncAzureOpenAI)
    assert client.organization == "org-9"


def test_workload_identity_uses_the_official_reader(openai_connection):
    pytest.importorskip("airflow.providers.openai")
    conn_id = openai_connection(
        "openai_wi",
        host="http://127.0.0.1:9/v1",
        extra={"auth_type": "workload_identity", "workload_identity_provider": "kubernetes"},
    )
    with pytest.raises(BatchProviderError, match="identity_provider_id"):
        OpenAIBatchHook(conn_id).get_conn()


def test_no_secret_in_repr_settings_or_logs(openai_connection, caplog):
    conn_id = openai_connection(
        "openai_repr",
        host="http://127.0.0.1:9/v1",
        password=KEY,
        extra={"openai_client_kwargs": {"default_headers": {"X-A": "b"}}},
    )
    hook = OpenAIBatchHook(conn_id)
    with caplog.at_level(logging.DEBUG):
        hook.get_conn()
    shown = [repr(hook), str(hook), repr(hook.settings), hook.settings.fingerprint, caplog.text]
    assert not any(KEY in text for text in shown)
    assert "openai_repr" in repr(hook)


def test_fingerprint_changes_with_the_key_but_never_contains_it(openai_connection):
    first = OpenAIBatchHook(openai_connection("openai_fp", host="http://h/v1", password=KEY)).settings
    second = OpenAIBatchHook(openai_connection("openai_fp", host="http://h/v1", password=KEY + "x")).settings
    assert first.fingerprint != second.fingerprint
    assert KEY not in first.fingerprint and len(first.fingerprint) == 16


def test_redact_scrubs_keys_and_key_shaped_text():
    text = f"Incorrect API key provided: {KEY}. Also sk-proj-abcdEFGH1234 and Bearer tok123 api-key: zz9"
    out = redact(text, (KEY,))
    assert KEY not in out and "abcdEFGH1234" not in out and "tok123" not in out and "zz9" not in out
    assert "task-1234" in redact("task-1234")


@pytest.mark.parametrize(
    ("host", "extra", "expected"),
    [
        ("https://api.openai.com/v1", {}, "https://platform.openai.com/batches/batch_abc"),
        (None, {}, "https://platform.openai.com/batches/batch_abc"),
        ("http://127.0.0.1:8123/v1", {}, "http://127.0.0.1:8123/_emulator/batches/batch_abc"),
        ("http://emulator:8000/v1/", {}, "http://emulator:8000/_emulator/batches/batch_abc"),
        (
            "http://127.0.0.1:8123/v1",
            {"console_url": "https://ops.example/b/{batch_id}?x=1"},
            "https://ops.example/b/batch_abc?x=1",
        ),
        ("https://r.openai.azure.com", {"api_version": "2024-10-21"}, None),
    ],
)
def test_batch_console_url(openai_connection, monkeypatch, host, extra, expected):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    fields = {"password": KEY, "extra": extra}
    if host:
        fields["host"] = host
    hook = OpenAIBatchHook(openai_connection("openai_console", **fields))
    assert hook.batch_console_url("batch_abc") == expected


def test_provider_info_declares_the_openai_connection_form():
    (entry,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "openai"]
    module, _, name = entry["hook-class-name"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is OpenAIBatchHook
    assert entry["ui-field-behaviour"]["relabeling"]["password"] == "API Key"
    assert set(entry["ui-field-behaviour"]["hidden-fields"]) == {"schema", "port", "login"}
    # Every declared field is an extra the hook reads; schemas are valid JSON.
    assert set(entry["conn-fields"]) == {
        "organization",
        "project",
        "max_retries",
        "timeout",
        "console_url",
        "azure_endpoint",
        "api_version",
        "azure_deployment",
    }
    json.dumps(entry)


def _airflow_version() -> tuple[int, int]:
    from airflow import __version__

    major, minor = __version__.split(".")[:2]
    return int(major), int(minor)


@pytest.mark.skipif(
    _airflow_version() < (3, 2),
    reason="ProvidersManager reads conn-fields/ui-field-behaviour from provider info from Airflow 3.2 "
    "(apache/airflow#60410); Airflow 3.1 takes connection forms from hook methods only",
)
def test_provider_manager_registers_the_form():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    manager.initialize_providers_hooks()
    widgets = manager.connection_form_widgets
    assert "extra__openai__organization" in widgets
    assert "extra__openai__api_version" in widgets
    assert manager.field_behaviours["openai"]["relabeling"]["password"] == "API Key"


AZURE_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # Azure OpenAI keys: 32 hex characters
ENTRA_TOKEN = (  # an Entra ID access token: a JWT
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2NvZ25pdGl2ZXNlcnZpY2VzLmF6dXJlLmNvbSJ9."
    "c2lnbmF0dXJlLXBhcnQtMDEyMzQ1Njc4OQ"
)


def test_redact_masks_an_azure_key_and_an_entra_token_of_the_connection(openai_connection):
    keyed = OpenAIBatchHook(
        openai_connection(
            "openai_azure_key",
            password=AZURE_KEY,
            extra={"azure_endpoint": "https://r.openai.azure.com", "api_version": "2024-10-21"},
        )
    ).settings
    entra = OpenAIBatchHook(
        openai_connection(
            "openai_azure_entra",
            password=AZURE_KEY,  # left in the password while the token is used: still a secret
            extra={
                "azure_endpoint": "https://r.openai.azure.com",
                "api_version": "2024-10-21",
                "azure_ad_token": ENTRA_TOKEN,
            },
        )
    ).settings
    text = f"key {AZURE_KEY}, api-key={AZURE_KEY}; token {ENTRA_TOKEN}, Authorization: Bearer {ENTRA_TOKEN}"
    for settings in (keyed, entra):
        out = redact(text, settings.secrets)
        assert AZURE_KEY not in out and ENTRA_TOKEN not in out, out
        assert AZURE_KEY[8:24] not in out and ENTRA_TOKEN.split(".")[1] not in out, out
    # A token's shape is masked even where the connection is not known (a trigger's error text).
    assert ENTRA_TOKEN.split(".")[1] not in redact(f"token {ENTRA_TOKEN}")

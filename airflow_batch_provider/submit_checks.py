"""Argument checks of the submit operator: what can be seen when the DAG is parsed fails there.

:func:`check_submit_arguments` runs in ``OpenAIBatchSubmitOperator.__init__`` (so a broken
DAG shows up as an import error, with one message per mistake); :func:`open_input` and
:func:`record_without_template` run at execute, before anything is uploaded, for what only
exists then (the input file, records returned by a function or an XCom).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_batch_provider.batch_file import normalize_endpoint
from airflow_batch_provider.destination_probe import PROVIDER_FOR_SCHEME
from airflow_batch_provider.exceptions import BatchFileError
from airflow_batch_provider.storage import as_object_storage_path, public_text, uri_of

#: The fields of a request line; a mapping with none of them is a record for a template.
_LINE_FIELDS = frozenset({"custom_id", "method", "url", "body"})
_TEMPLATES = "ChatTemplate, EmbeddingTemplate or ResponsesTemplate"


def _templated(value: Any) -> bool:
    """A Jinja string or an XComArg: known only at execute."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    return hasattr(value, "iter_references") or hasattr(value, "resolve")


def check_submit_arguments(
    *,
    input_path: Any,
    requests: Any,
    request_template: Any,
    custom_id_field: str | None,
    endpoint: Any,
) -> None:
    """Raise ``ValueError`` for a combination of submit arguments that can never work.

    :raises ValueError: neither or both of ``input_path`` and ``requests``; an ``endpoint``
        that is no batch endpoint or disagrees with ``request_template``; records, or
        ``custom_id_field``, without a ``request_template``.
    """
    if input_path is None and requests is None:
        raise ValueError(
            "Give the batch's requests: input_path (a JSONL file of request lines) or requests "
            "(records with request_template, or request lines); neither was given."
        )
    if input_path is not None and requests is not None:
        raise ValueError(
            "Give input_path (a JSONL file) or requests (records or request lines), not both: "
            "remove one of them."
        )
    if endpoint is not None and not _templated(endpoint):
        try:
            canonical = normalize_endpoint(str(endpoint))
        except ValueError as err:  # it names the batch endpoints
            raise ValueError(f"endpoint: {err}") from None
        wanted = getattr(request_template, "endpoint", None)
        if wanted is not None and canonical != wanted:
            raise ValueError(
                f"endpoint={endpoint!r} disagrees with request_template, a "
                f"{type(request_template).__name__}, which writes {wanted} requests. Remove endpoint "
                f"(the template sets it) or use a template of {canonical}."
            )
    if request_template is None and custom_id_field is not None:
        raise ValueError(
            f"custom_id_field={custom_id_field!r} names a field of records, which need a "
            f"request_template ({_TEMPLATES}) to become requests; request lines carry their own "
            "custom_id. Add request_template or remove custom_id_field."
        )
    if request_template is None and isinstance(requests, (list, tuple)):
        for index, item in enumerate(requests):
            message = record_without_template(item, index)
            if message:
                raise ValueError(message)


def record_without_template(item: Any, index: int) -> str | None:
    """The message for a record given where a request line is due (no template), else ``None``.

    Names the record's fields, never their values.
    """
    if not isinstance(item, Mapping) or _LINE_FIELDS & set(item):
        return None
    fields = ", ".join(repr(str(k)) for k in list(item)[:8]) or "none"
    return (
        f"requests[{index}] is a record (fields {fields}), not a request line, and no request_template "
        f"was given. Pass request_template ({_TEMPLATES}, e.g. ChatTemplate.from_prompt(model, "
        "'... {field} ...')) to render records, or give request lines with custom_id, method, url "
        "and body."
    )


def open_input(input_path: Any) -> Any:
    """``input_path`` as an ``ObjectStoragePath``, checked to be a readable file.

    :raises BatchFileError: it does not exist, is a directory, or cannot be read; the message
        names ``input_path`` and the URI without secrets.
    """
    try:
        path = as_object_storage_path(input_path)
    except ValueError as err:
        raise BatchFileError(
            f"input_path {public_text(str(input_path))!r} is not a path Airflow can read ({err}); "
            "nothing was uploaded. Use a local path or a URL whose storage provider is installed."
        ) from None
    uri = uri_of(path)
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise BatchFileError(
            f"input_path {uri} does not exist; nothing was uploaded. Check the path (and the task "
            "that should have written it), then clear the task."
        ) from None
    except IsADirectoryError:
        raise BatchFileError(
            f"input_path {uri} is a directory; give the JSONL file itself. Nothing was uploaded."
        ) from None
    except (ValueError, ImportError) as err:  # no filesystem for the scheme
        package = PROVIDER_FOR_SCHEME.get(path.protocol or "")
        install = f"it with `pip install '{package}'`" if package else "the Airflow provider of that scheme"
        raise BatchFileError(
            f"input_path {uri} cannot be read: no filesystem for {path.protocol}:// is installed "
            f"({public_text(str(err))}). Install {install}. Nothing was uploaded."
        ) from None
    except Exception as err:
        raise BatchFileError(
            f"input_path {uri} cannot be read ({type(err).__name__}: {public_text(str(err))}); nothing "
            "was uploaded. Check its storage connection and permissions."
        ) from None
    return path

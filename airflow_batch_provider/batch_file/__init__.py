"""Stage 1 of the data path, the request input: pure (no Airflow, no HTTP).

- :mod:`~airflow_batch_provider.batch_file.lines`: the request-line model, the streaming
  validator and sharding.
- :mod:`~airflow_batch_provider.batch_file.templates`: records to request lines
  (:class:`ChatTemplate`, :class:`EmbeddingTemplate`, :class:`ResponsesTemplate`,
  :class:`ImageTemplate`).
- :mod:`~airflow_batch_provider.batch_file.bodies`: what each endpoint's request body needs.
- :mod:`~airflow_batch_provider.batch_file.estimate`: token and cost estimates, the budget guard.

The names users write in DAGs are re-exported here::

    from airflow_batch_provider.batch_file import ChatTemplate, build_request_lines, validate_file
"""

from __future__ import annotations

from airflow_batch_provider.batch_file.lines import (
    BATCH_ENDPOINTS,
    EMBEDDINGS_ENDPOINT,
    MAX_BYTES,
    MAX_EMBEDDING_INPUTS,
    MAX_IDS_IN_MEMORY,
    MAX_LINE_BYTES,
    MAX_REQUESTS,
    PROBLEM_MESSAGES,
    UNVERSIONED_ENDPOINTS,
    Problem,
    RequestLine,
    ShardInfo,
    ShardLimits,
    ValidationReport,
    count_embedding_inputs,
    iter_lines,
    iter_shard_lines,
    normalize_endpoint,
    plan_shards,
    plural,
    validate_file,
    validate_lines,
)
from airflow_batch_provider.batch_file.templates import (
    ChatTemplate,
    EmbeddingTemplate,
    ImageTemplate,
    ResponsesTemplate,
    build_request_lines,
)

__all__ = [
    "BATCH_ENDPOINTS",
    "EMBEDDINGS_ENDPOINT",
    "MAX_BYTES",
    "MAX_EMBEDDING_INPUTS",
    "MAX_IDS_IN_MEMORY",
    "MAX_LINE_BYTES",
    "MAX_REQUESTS",
    "PROBLEM_MESSAGES",
    "UNVERSIONED_ENDPOINTS",
    "ChatTemplate",
    "EmbeddingTemplate",
    "ImageTemplate",
    "Problem",
    "RequestLine",
    "ResponsesTemplate",
    "ShardInfo",
    "ShardLimits",
    "ValidationReport",
    "build_request_lines",
    "count_embedding_inputs",
    "iter_lines",
    "iter_shard_lines",
    "normalize_endpoint",
    "plan_shards",
    "plural",
    "validate_file",
    "validate_lines",
]

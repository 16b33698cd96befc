"""Stage 4 of the data path, the results: pure (no Airflow, no HTTP).

- :mod:`~airflow_batch_provider.results.join`: result and error files joined to their input
  requests (``results.jsonl``), the lines worth resubmitting.
- :mod:`~airflow_batch_provider.results.reconciliation`: the counts, usage and cost of a join.
- :mod:`~airflow_batch_provider.results.manifest`: the fetch manifest and the fetch's state.

The join's public names are re-exported here::

    from airflow_batch_provider.results import BatchResults, InputShard, join_results
"""

from __future__ import annotations

from airflow_batch_provider.results.join import (
    BatchResults,
    InputShard,
    Outcome,
    ResultError,
    ResultLine,
    ResultResponse,
    classify,
    is_retryable,
    is_retryable_error,
    iter_retryable_lines,
    join_results,
)
from airflow_batch_provider.results.reconciliation import STATUSES, Reconciliation, ResultStatus

__all__ = [
    "STATUSES",
    "BatchResults",
    "InputShard",
    "Outcome",
    "Reconciliation",
    "ResultError",
    "ResultLine",
    "ResultResponse",
    "ResultStatus",
    "classify",
    "is_retryable",
    "is_retryable_error",
    "iter_retryable_lines",
    "join_results",
]

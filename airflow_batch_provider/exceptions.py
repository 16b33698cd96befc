"""Every error type of the package, in one place.

Pure modules raise these too, so they do not derive from ``AirflowException``;
Airflow fails a task on any exception. Each message says what is wrong, where
(file, line, custom_id, batch id) and what to do about it.
"""

from __future__ import annotations


class BatchProviderError(Exception):
    """Base class of every error raised by airflow-batch-provider."""


class BatchFileError(BatchProviderError):
    """A batch input file (or the records it was built from) is invalid.

    Raised before anything is uploaded; ``report`` holds the validator's
    line-numbered report when there is one.
    """

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class BatchAuthError(BatchProviderError):
    """The service refused the credentials (401) or the permission (403)."""


class BatchNotFoundError(BatchProviderError):
    """A batch or file id is unknown to the service (404)."""


class BatchServiceError(BatchProviderError):
    """The service kept failing (5xx, 429, network) after every retry."""


class BatchFailedError(BatchProviderError):
    """A batch ended ``failed`` (validation errors) or with no usable result."""


class BatchTimeoutError(BatchProviderError):
    """The wall-clock budget ran out before every batch was terminal."""


class BatchIdentityConflictError(BatchProviderError):
    """Batches for this task's identity exist but were made from another input."""


class ReconciliationError(BatchProviderError):
    """Results do not account for every request, or too few succeeded."""


class TransferError(BatchProviderError):
    """A file could not be landed at its destination after every retry."""


class UnsafeIdError(BatchProviderError):
    """An id (from the service or from the task's arguments) or a name under the destination
    is not safe to put into a path or a request: see :mod:`airflow_batch_provider.ids`."""


class BudgetExceededError(BatchProviderError):
    """The estimated cost's upper bound exceeds ``max_cost_usd``: raised before any upload.

    ``estimate`` holds the estimate (``Estimate.to_dict()``), ``budget`` the limit in USD.
    """

    def __init__(self, message: str, estimate: dict | None = None, budget: float | None = None) -> None:
        super().__init__(message)
        self.estimate = estimate
        self.budget = budget


class DestinationError(BatchProviderError):
    """A fetch destination cannot be written (no filesystem for its scheme, no such bucket or
    directory, a wrong storage connection): raised by the submit before anything is uploaded."""

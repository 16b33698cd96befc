"""Stage 3 of the data path, the waiting: pure (no Airflow, no HTTP).

- :mod:`~airflow_batch_provider.waiting.status`: batch statuses and the batch summary.
- :mod:`~airflow_batch_provider.waiting.outcome`: terminal summaries to success or a
  clear error (:func:`~airflow_batch_provider.waiting.outcome.resolve_event`).
"""

"""Stage 2 of the data path, the submission: who a batch belongs to and whether to create it.

- :mod:`~airflow_batch_provider.submission.identity`: the task identity, the input
  fingerprint, the re-attach plan and the submit manifest (pure).
"""

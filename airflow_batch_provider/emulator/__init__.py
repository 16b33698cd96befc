"""A local, OpenAI-compatible Files + Batches server (the batch emulator).

It imports nothing from Airflow, so it can run in any CI. Start it with
``airflow-batch emulator`` or ``python -m airflow_batch_provider.emulator``, or in
tests with :func:`airflow_batch_provider.emulator.testing.running_emulator`.
"""

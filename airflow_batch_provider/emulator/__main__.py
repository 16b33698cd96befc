"""``python -m airflow_batch_provider.emulator``: run the emulator server."""

from airflow_batch_provider.emulator.server import main

raise SystemExit(main())

"""Developer tools that need a checkout (``make demo``, ``make airflow``); not shipped in the wheel."""

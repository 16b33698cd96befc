"""Every difference between the Airflow versions this provider supports (3.1.2 up to 3.x).

Import Airflow names that moved or appeared between versions from here, never with an
``except ImportError`` of your own: when the oldest supported version rises, this module
shrinks and nothing else changes.
"""

from __future__ import annotations

from typing import Any

try:  # Airflow 3.2+
    from airflow.sdk.configuration import conf
except ImportError:  # Airflow < 3.2
    from airflow.configuration import conf  # type: ignore[no-redef]

try:  # Airflow 3.2+
    from airflow.sdk.exceptions import AirflowSensorTimeout
except ImportError:  # Airflow < 3.2
    from airflow.exceptions import AirflowSensorTimeout  # type: ignore[no-redef,attr-defined]

try:  # Airflow 3.2+
    from airflow.sdk.bases.decorator import determine_kwargs
except ImportError:  # Airflow < 3.2 has it in airflow.utils.operator_helpers only
    from airflow.utils.operator_helpers import determine_kwargs  # type: ignore[no-redef]

__all__ = ["AirflowSensorTimeout", "conf", "connection_has_async_extras", "determine_kwargs"]


def connection_has_async_extras(connection_class: Any) -> bool:
    """Whether ``Connection`` fetches and masks its extras without blocking (Airflow 3.3.2+:
    ``aextra_dejson``); before, masking secrets is a blocking call to keep off the event loop."""
    return hasattr(connection_class, "aextra_dejson")

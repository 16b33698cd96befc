"""A real auth manager with per-DAG access on every supported Airflow, for the UI plugin's tests.

Airflow's SimpleAuthManager has global roles; it scopes DAGs by team only from Airflow 3.2.
This subclass adds a DAG allow-list per user name and overrides only ``is_authorized_dag``,
so everything else (JWTs, roles, ``get_authorized_dag_ids``) is SimpleAuthManager's own.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


class DagAllowListAuthManager(SimpleAuthManager):
    """SimpleAuthManager, where a user listed in :attr:`allowed` may read only those DAGs."""

    allowed: ClassVar[dict[str, set[str]]] = {}

    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        allowed = self.allowed.get(user.get_name())
        if allowed is not None and (details is None or details.id not in allowed):
            return False  # no details: "every DAG", which a listed user may not read
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )

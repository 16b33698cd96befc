"""The Airflow plugin: OpenAI batch views in the Airflow UI, served by the api-server.

- A task-instance tab, "OpenAI Batches": the task's batches with status, progress,
  timings and ETA, usage and estimated cost, validation errors, landed files.
- A top-level "Batches" page: recent batches of a connection, with a status filter,
  paging and auto-refresh.

Both are pages of a FastAPI app (``plugins/app.py``) that the api-server mounts under
:data:`PREFIX`; the UI shows them in a frame. Registered through the ``airflow.plugins``
entry point and the provider info's ``plugins``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from airflow.plugins_manager import AirflowPlugin

from airflow_batch_provider.plugins.routes import NAV_ROUTE, PREFIX, TAB_ROUTE


def base_path() -> str:
    """The path the api-server is served under (``[api] base_url``), without a trailing slash."""
    from airflow.configuration import conf

    base_url = conf.get("api", "base_url", fallback="/") or "/"
    path = urlsplit(base_url).path if "://" in base_url else base_url
    return path.rstrip("/")


class _LazyApp:
    """An ASGI app that imports the FastAPI app on its first request.

    Every Airflow process loads plugins; only the api-server serves pages. Deferring the
    import keeps FastAPI routes and Airflow's API security out of schedulers and workers.
    """

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from airflow_batch_provider.plugins.app import app

            self._app = app
        await self._app(scope, receive, send)


_TI_QUERY = "dag_id={DAG_ID}&run_id={RUN_ID}&task_id={TASK_ID}&map_index={MAP_INDEX}"


def ui_views(base: str = "") -> list[dict[str, Any]]:
    """The UI entries: the task-instance tab and the top-level Batches page.

    :param base: the api-server's base path (see :func:`base_path`).
    """
    root = f"{base}{PREFIX}"
    return [
        {
            "name": "OpenAI Batches",
            # The UI fills in the placeholders (URL-encoded) when it opens the tab.
            "href": f"{root}/ti?{_TI_QUERY}",
            "destination": "task_instance",
            "url_route": TAB_ROUTE,
            "icon": f"{root}/static/icon.svg",
        },
        {
            "name": "Batches",
            "href": f"{root}/batches",
            "destination": "nav",
            "url_route": NAV_ROUTE,
            "nav_top_level": True,
            "icon": f"{root}/static/icon.svg",
        },
    ]


class OpenAIBatchMonitorPlugin(AirflowPlugin):
    """OpenAI batch views for the Airflow UI (task tab and Batches page)."""

    name = "openai_batch_monitor"
    fastapi_apps = [{"name": "openai-batch-monitor", "app": _LazyApp(), "url_prefix": PREFIX}]
    external_views = ui_views(base_path())

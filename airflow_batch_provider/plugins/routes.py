"""Where the plugin's pages live: shared by the plugin (``batch_monitor``) and its app (``app``)."""

from __future__ import annotations

#: Path the api-server mounts the plugin's FastAPI app under.
PREFIX = "/openai-batch"
#: ``url_route`` of the task-instance tab (``.../tasks/<task>/plugin/openai-batch``).
TAB_ROUTE = "openai-batch"
#: ``url_route`` of the Batches page (``/plugin/openai-batches``).
NAV_ROUTE = "openai-batches"

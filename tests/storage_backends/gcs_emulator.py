"""Run gcp-storage-emulator with the one JSON API call it lacks: ``objects.move``.

Google Cloud Storage has ``POST /storage/v1/b/{bucket}/o/{object}/moveTo/o/{dest}`` (an atomic
rename within a bucket), and gcsfs's ``mv`` calls it first. The emulator answers 501 there, which
gcsfs retries six times with backoff (~30 s) before it falls back to copy and delete: every landing
would wait that long. This adds the route, done the emulator's way (copy, then delete the source),
so the landing code runs the call it makes against GCS.

``python -m tests.storage_backends.gcs_emulator --port N --data-dir DIR`` serves on 127.0.0.1 until killed.
"""

from __future__ import annotations

import argparse
import logging
from http import HTTPStatus
from typing import Any

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import Conflict, NotFound
from gcp_storage_emulator.handlers import objects

_BUCKET = r"(?P<bucket_name>[-.\w]+)"


def move(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> None:
    bucket, source = request.params["bucket_name"], request.params["object_id"]
    try:
        moved = objects._copy(
            request.base_url, storage, bucket, source, bucket, request.params["dest_object_id"]
        )
        objects._delete(storage, bucket, source)
    except NotFound:
        response.status = HTTPStatus.NOT_FOUND
        return
    except Conflict as err:
        objects._handle_conflict(response, err)
        return
    response.json(moved)


def install_move_route() -> None:
    route = (
        rf"^{server.settings.API_ENDPOINT}/b/{_BUCKET}/o/(?P<object_id>.*[^/]+)/moveTo/o/(?P<dest_object_id>.*[^/]+)$",
        {server.POST: move},
    )
    server.HANDLERS = (route, *server.HANDLERS)  # before the generic object route, which would 501


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    install_move_route()
    server.create_server("127.0.0.1", args.port, in_memory=False, data_dir=args.data_dir).run()


if __name__ == "__main__":
    main()

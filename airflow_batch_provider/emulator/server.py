"""Command line: ``airflow-batch emulator`` / ``python -m airflow_batch_provider.emulator``.

Prints ``Emulator listening on http://HOST:PORT/v1`` first (``--port 0`` picks a free port).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from airflow_batch_provider.emulator.config import DEFAULT_API_KEY, Limits, Settings, UpstreamSettings
from airflow_batch_provider.emulator.profiles import PROFILES, resolve_profile

UPSTREAM_KEY_ENV = "EMULATOR_UPSTREAM_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="airflow-batch emulator",
        description="A local OpenAI-compatible Files + Batches server.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    add("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    add("--data-dir", type=Path, help="state directory, kept across restarts (default: a temporary one)")
    add("--profile", choices=sorted(PROFILES), default="fast", help="lifecycle timing (default fast)")
    add("--validation-delay", type=float, help="seconds a batch stays validating")
    add("--requests-per-second", type=float, help="execution speed, 0 = unlimited")
    add("--finalization-delay", type=float, help="seconds a batch stays finalizing or cancelling")
    add("--completion-window-seconds", type=float, help="seconds before an unfinished batch expires")
    add(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"accepted Bearer key, repeatable (default {DEFAULT_API_KEY})",
    )
    add("--accept-any-key", action="store_true", help="accept any non-empty Bearer key")
    add("--backend", choices=("fake", "upstream"), default="fake", help="who answers requests (default fake)")
    add(
        "--upstream-url",
        help="OpenAI-compatible base URL for --backend upstream, e.g. http://localhost:11434/v1",
    )
    add("--upstream-api-key", help=f"key for the upstream (default: ${UPSTREAM_KEY_ENV})")
    add("--upstream-concurrency", type=int, default=8, help="upstream requests in flight (default 8)")
    add("--upstream-model", help="replace every request's model with this upstream model name")
    add("--upstream-timeout", type=float, default=600.0, help="seconds per upstream request")
    add("--fault-500", type=float, default=0.0, metavar="RATE", help="share of /v1 requests answered 500")
    add("--fault-503", type=float, default=0.0, metavar="RATE", help="share answered 503")
    add("--fault-429", type=float, default=0.0, metavar="RATE", help="share answered 429 with Retry-After")
    add("--retry-after", type=float, default=1.0, metavar="S", help="Retry-After of injected 429s")
    add("--fault-latency", type=float, default=0.0, metavar="S", help="seconds added to every /v1 request")
    add("--fault-cut-off", type=float, default=0.0, metavar="RATE", help="share of downloads cut halfway")
    add(
        "--faults",
        metavar="JSON",
        help='full fault config, e.g. \'{"routes": {"batches.retrieve": {"error_429": 0.5}}}\'',
    )
    add("--seed", type=int, help="seed of the fault dice")
    add("--max-upload-bytes", type=int, default=Limits.max_upload_bytes)
    add("--max-batch-bytes", type=int, default=Limits.max_batch_bytes)
    add("--max-requests", type=int, default=Limits.max_requests)
    add("--max-embedding-inputs", type=int, default=Limits.max_embedding_inputs)
    add("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    add("--access-log", action="store_true", help="log every request")
    return parser


def _faults(args: argparse.Namespace) -> dict[str, Any]:
    if args.faults:
        return dict(json.loads(args.faults))
    spec = {
        "error_500": args.fault_500,
        "error_503": args.fault_503,
        "error_429": args.fault_429,
        "latency": args.fault_latency,
        "cut_off": args.fault_cut_off,
    }
    if not any(spec.values()):
        return {}
    return {"routes": {"*": {**spec, "retry_after": args.retry_after}}}


def settings_from_args(args: argparse.Namespace, data_dir: Path) -> Settings:
    """Build :class:`Settings` from parsed arguments.

    :param args: parsed CLI arguments.
    :param data_dir: the state directory to use.
    :raises ValueError: for inconsistent options.
    """
    upstream = None
    if args.backend == "upstream":
        if not args.upstream_url:
            raise ValueError("--backend upstream needs --upstream-url")
        upstream = UpstreamSettings(
            base_url=args.upstream_url,
            api_key=args.upstream_api_key or os.environ.get(UPSTREAM_KEY_ENV),
            concurrency=max(1, args.upstream_concurrency),
            timeout=args.upstream_timeout,
            model=args.upstream_model,
        )
    return Settings(
        data_dir=data_dir,
        profile=resolve_profile(
            args.profile,
            validation_delay=args.validation_delay,
            requests_per_second=args.requests_per_second,
            finalization_delay=args.finalization_delay,
            completion_window_seconds=args.completion_window_seconds,
        ),
        api_keys=tuple(args.api_keys or (DEFAULT_API_KEY,)),
        accept_any_key=args.accept_any_key,
        backend=args.backend,
        upstream=upstream,
        limits=Limits(
            max_upload_bytes=args.max_upload_bytes,
            max_batch_bytes=args.max_batch_bytes,
            max_requests=args.max_requests,
            max_embedding_inputs=args.max_embedding_inputs,
        ),
        faults=_faults(args),
        seed=args.seed,
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 = a free port), bound before the server starts.

    :param host: interface.
    :param port: port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def base_url(host: str, port: int) -> str:
    """The ``/v1`` base URL clients use.

    :param host: interface.
    :param port: port.
    """
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


def make_server(
    settings: Settings,
    *,
    log_level: str = "warning",
    access_log: bool = False,
    configure_logging: bool = True,
) -> Any:
    """A ``uvicorn.Server`` for the emulator (call ``.run(sockets=[...])``).

    :param settings: the server settings.
    :param log_level: uvicorn log level.
    :param access_log: log every request.
    :param configure_logging: let uvicorn configure logging (not inside a test process).
    """
    import uvicorn

    from airflow_batch_provider.emulator.app import create_app

    kwargs: dict[str, Any] = {} if configure_logging else {"log_config": None}
    config = uvicorn.Config(
        create_app(settings),
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=3,
        timeout_keep_alive=30,
        **kwargs,
    )
    return uvicorn.Server(config)


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until interrupted.

    :param argv: arguments (default ``sys.argv[1:]``).
    :return: the exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    temporary = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="batch-emulator-")) if temporary else args.data_dir
    try:
        settings = settings_from_args(args, data_dir)
        sock = bind_socket(args.host, args.port)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    port = sock.getsockname()[1]
    print(f"Emulator listening on {base_url(args.host, port)}", flush=True)
    print(
        f"  data dir {data_dir}{' (temporary)' if temporary else ''}; profile {settings.profile.name}; "
        f"backend {settings.backend}; batches page {base_url(args.host, port)[:-3]}/_emulator/batches",
        flush=True,
    )
    # uvicorn re-raises SIGTERM after its graceful shutdown: turn it into a normal exit so the
    # temporary data dir is removed and the exit status is 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        make_server(settings, log_level=args.log_level, access_log=args.access_log).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

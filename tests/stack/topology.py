"""The production topology, described once.

``docker/docker-compose.yaml`` and the native stack of ``make stack-test``
(:mod:`tests.stack.native`) both follow this module, and
``tests/unit/test_stack_topology.py`` fails when a service or a setting is in one of
them and not in the other.

- :data:`SERVICES`: every long-running service, its compose name and how many run;
- :data:`SETTINGS`: Airflow settings (``AIRFLOW__*``) every Airflow service gets, with the same value in
  both stacks;
- :data:`PER_DEPLOYMENT`: settings both stacks must set, to values of their own
  (addresses, secrets, the DAGs folder);
- :data:`NATIVE_ONLY`: what only the native test harness sets, and why.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    """One service of the topology.

    :param compose: its name in ``docker/docker-compose.yaml``.
    :param command: for Airflow services, the arguments after ``airflow``.
    :param replicas: how many run (compose: ``deploy.replicas``; native: one process each).
    :param native: what the native stack runs in its place (for the non-Airflow services).
    """

    compose: str
    command: tuple[str, ...] = ()
    replicas: int = 1
    native: str = ""


SERVICES: dict[str, Service] = {
    "postgres": Service("postgres", native="postgres from the Debian package, initdb under a temp dir"),
    "redis": Service("redis", native="redis-server, no persistence"),
    "emulator": Service("emulator", native="airflow-batch emulator"),
    "s3": Service("minio", native="moto's S3 server (python -m moto.server)"),
    "api-server": Service("airflow-apiserver", ("api-server",)),
    "scheduler": Service("airflow-scheduler", ("scheduler",)),
    "dag-processor": Service("airflow-dag-processor", ("dag-processor",)),
    "triggerer": Service("airflow-triggerer", ("triggerer",), replicas=2),
    "celery-worker": Service("airflow-worker", ("celery", "worker"), replicas=1),
}

#: What happens to an Airflow service that exits with an error (e.g. while the database is
#: down): compose's ``restart`` of every Airflow service; natively, ``native.Supervisor``.
RESTART = "on-failure"

#: One-shot jobs that run before the services (compose names).
INIT_JOBS = ("airflow-init", "minio-init")

SETTINGS: dict[str, str] = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__CORE__AUTH_MANAGER": (
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    ),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
    "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "true",
    # Two triggerers for availability: a dead one's triggers move to the other once its
    # heartbeat is older than the threshold (defaults 5 s and 30 s).
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
    # Measured in make stack-test (README, "Deployment"); the default is 1000.
    "AIRFLOW__TRIGGERER__CAPACITY": "1000",
    # Below capacity, so that one triggerer does not claim every new trigger (Airflow's advice).
    "AIRFLOW__TRIGGERER__MAX_TRIGGER_TO_SELECT_PER_LOOP": "20",
}

PER_DEPLOYMENT: frozenset[str] = frozenset(
    {
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__API_AUTH__JWT_SECRET",
    }
)

#: Settings only the native harness sets: ports and secrets of a throwaway deployment,
#: faster timers for the drills, and runs triggered by the tests only.
NATIVE_ONLY: dict[str, str] = {
    "AIRFLOW__CORE__PARALLELISM": "executor slots: the worker's and as many waiting in Redis",
    "AIRFLOW__CORE__FERNET_KEY": "a fresh key per run (compose: unset, the image generates one)",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": "a known random admin password",
    "AIRFLOW__API__SECRET_KEY": "random per run",
    "AIRFLOW__API__PORT": "a free port",
    "AIRFLOW__API__HOST": "127.0.0.1 only",
    "AIRFLOW__API__WORKERS": "one api-server worker on two cores",
    "AIRFLOW__API__BASE_URL": "the free port",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "a free port (no log server runs: NATIVE_ARGS)",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "a free port each (no log server runs: NATIVE_ARGS)",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "triggerers on one host: tests.stack.hostname tells them apart",
    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "on (Airflow's default): the examples run on schedules",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "only runs the tests trigger",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "two shared cores queue slowly",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "a killed worker's task retries after 60 s",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "new DAG files seen in seconds",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "less parsing on two cores",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "sized for two cores",
    "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "the worker imports the provider once (celery_preload)",
    "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "one api-server worker on two busy cores answers slowly",
    "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "a DAG import takes over 30 s on two busy cores",
    "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "the same, in the dag-processor",
    "AIRFLOW__TRIGGERER__BLOCKED_MAIN_THREAD_WARNING_THRESHOLD": "log every loop stall over 100 ms",
}


#: Arguments only the native stack adds to a service's command, and why. Airflow's log servers
#: (``serve-logs``, started by the worker and each triggerer) listen on every interface and
#: take no host setting; natively all services share one host and one log folder, so the
#: api-server reads the log files directly and the native stack runs no log server (it binds
#: 127.0.0.1 only). In compose each container serves its own logs on the compose network.
NATIVE_ARGS: dict[str, tuple[str, ...]] = {
    "triggerer": ("--skip-serve-logs",),
    "celery-worker": ("--skip-serve-logs",),
}


def airflow_services(*, native: bool = False) -> dict[str, tuple[str, ...]]:
    """``{process name: argv after "airflow"}``: one entry per replica (``triggerer-1``, ``-2``).

    :param native: with the arguments of :data:`NATIVE_ARGS`.
    """
    out: dict[str, tuple[str, ...]] = {}
    for name, service in SERVICES.items():
        if not service.command:
            continue
        argv = (*service.command, *NATIVE_ARGS.get(name, ())) if native else service.command
        if service.replicas == 1:
            out[name] = argv
        else:
            for i in range(1, service.replicas + 1):
                out[f"{name}-{i}"] = argv
    return out


#: Settings the deployed Airflow (3.2+) reads that the oldest supported Airflow (3.1) does not know:
#: there they are ignored, so the checks that name real options accept them on older versions.
ADDED_AFTER_OLDEST = {
    "AIRFLOW__TRIGGERER__MAX_TRIGGER_TO_SELECT_PER_LOOP": (3, 2),
    "AIRFLOW__TRIGGERER__BLOCKED_MAIN_THREAD_WARNING_THRESHOLD": (3, 2),
}


def is_airflow_option(name: str) -> bool:
    """Whether ``AIRFLOW__SECTION__KEY`` is an option of the installed Airflow (or one newer than it)."""
    from airflow import __version__
    from airflow.configuration import conf
    from packaging.version import Version

    section, key = name.removeprefix("AIRFLOW__").lower().split("__", 1)
    options = conf.configuration_description.get(section, {}).get("options", {})
    if key in options or conf.has_option(section, key):
        return True
    if section == "celery" and not _celery_provider_installed():
        # Owned by the celery provider (the `stack` extra, the image): without it, the ones we set.
        return key in {"broker_url", "result_backend", "worker_concurrency", "celery_config_options"}
    added = ADDED_AFTER_OLDEST.get(name)
    return added is not None and Version(__version__).release < added


def _celery_provider_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("airflow.providers.celery") is not None

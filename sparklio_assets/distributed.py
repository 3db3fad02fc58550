"""The distributed deployment: every step of every job runs on a Celery worker (dagster-celery),
with Redis as broker and result backend, and the instance (runs, events, schedules) in Postgres
(deploy/dagster.production.yaml).

    SPARKLIO_EXECUTOR=celery            use the Celery executor for every job (default: in-process /
                                        multiprocess, one machine)
    SPARKLIO_CELERY_BROKER              default redis://127.0.0.1:6379/0
    SPARKLIO_CELERY_BACKEND             default redis://127.0.0.1:6379/1
    SPARKLIO_CELERY_PREFIX              optional key prefix in Redis, to keep two deployments (or test
                                        runs) sharing one Redis apart

Steps tagged `dagster-celery/queue: gpu` (scene_key_image, scene_motion_clip) go to the `gpu` queue;
everything else to dagster-celery's default queue, `dagster`. Workers:

    dagster-celery worker start -A dagster_celery.app -y deploy/celery_worker.yaml -q gpu -n gpu
    dagster-celery worker start -A dagster_celery.app -y deploy/celery_worker.yaml -q dagster -n cpu

The module is not called `celery.py` so that nothing can shadow the `celery` package itself. It
imports dagster_celery only when the Celery executor is asked for: the base install (no
`[distributed]` extra) loads the definitions without it.
"""

import os
from typing import Any

EXECUTOR_ENV = "SPARKLIO_EXECUTOR"
BROKER_ENV = "SPARKLIO_CELERY_BROKER"
BACKEND_ENV = "SPARKLIO_CELERY_BACKEND"
PREFIX_ENV = "SPARKLIO_CELERY_PREFIX"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/1"
GPU_QUEUE = "gpu"
DEFAULT_QUEUE = "dagster"  # dagster_celery.defaults.task_default_queue


def celery_config(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The Celery executor's config; the same block is the workers' `-y` config (`execution: config:`)."""
    env = os.environ if env is None else env
    # dagster-celery replaces its default config_source wholesale with ours: keep its defaults.
    transport: dict[str, Any] = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
    if env.get(PREFIX_ENV):
        transport["global_keyprefix"] = env[PREFIX_ENV]
    return {
        "broker": env.get(BROKER_ENV) or DEFAULT_BROKER,
        "backend": env.get(BACKEND_ENV) or DEFAULT_BACKEND,
        "config_source": {"broker_transport_options": transport, "worker_prefetch_multiplier": 1,
                          "result_backend_transport_options": {"global_keyprefix": env[PREFIX_ENV]}
                          if env.get(PREFIX_ENV) else {}},
    }


def worker_config_yaml(env: dict[str, str] | None = None) -> str:
    """The file to pass to `dagster-celery worker start -y`: the executor's own config."""
    import yaml

    return yaml.safe_dump({"execution": {"config": celery_config(env)}}, sort_keys=False)


def celery_executor_def():
    from dagster_celery import celery_executor

    return celery_executor.configured(celery_config(), name="sparklio_celery")


def executor_from_env():
    """The executor every job uses: Celery when SPARKLIO_EXECUTOR=celery, else Dagster's default."""
    choice = (os.environ.get(EXECUTOR_ENV) or "").strip().lower()
    if choice in ("", "default", "multiprocess", "in_process"):
        return None
    if choice == "celery":
        return celery_executor_def()
    raise ValueError(f"{EXECUTOR_ENV}={choice!r}: use 'celery', or leave it unset for the default executor")

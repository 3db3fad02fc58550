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
everything else to dagster-celery's default queue, `dagster`. Workers read this same config
(sparklio_assets/celery_app.py), from the same environment:

    celery -A sparklio_assets.celery_app worker -Q gpu -n gpu@%h --prefetch-multiplier=1
    celery -A sparklio_assets.celery_app worker -Q dagster -n cpu@%h --prefetch-multiplier=1

The module is not called `celery.py` so that nothing can shadow the `celery` package itself. It
imports dagster_celery only when the Celery executor is asked for: the base install (no
`[distributed]` extra) loads the definitions without it.
"""

import os
from typing import Any

from dagster import execute_job
from dagster._core.definitions.reconstruct import ReconstructableRepository

EXECUTOR_ENV = "SPARKLIO_EXECUTOR"
BROKER_ENV = "SPARKLIO_CELERY_BROKER"
BACKEND_ENV = "SPARKLIO_CELERY_BACKEND"
PREFIX_ENV = "SPARKLIO_CELERY_PREFIX"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/1"
DEFINITIONS_MODULE = "sparklio_assets.definitions"  # where the code server and the workers load `defs`


def celery_config(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The Celery executor's config, read from the environment; the workers build their app from
    the same function (celery_app.py), so the two cannot drift apart."""
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


def celery_executor_def():
    from dagster_celery import celery_executor  # noqa: PLC0415 (the [distributed] extra, asked for by env)

    return celery_executor.configured(celery_config(), name="sparklio_celery")


def cluster_executor() -> str | None:
    """'celery' when SPARKLIO_EXECUTOR asks for it, None for Dagster's default (one machine)."""
    choice = (os.environ.get(EXECUTOR_ENV) or "").strip().lower()
    if choice in ("", "default", "multiprocess", "in_process"):
        return None
    if choice == "celery":
        return choice
    raise ValueError(f"{EXECUTOR_ENV}={choice!r}: use 'celery', or leave it unset for the default executor")


def executor_from_env():
    """The executor every job uses: Celery when SPARKLIO_EXECUTOR=celery, else Dagster's default."""
    return celery_executor_def() if cluster_executor() else None


def execute_on_cluster(defs, job_name: str, partition_key, instance, tags: dict[str, str], run_config: dict,
                       module: str = DEFINITIONS_MODULE):
    """One run through the job's own executor: unlike execute_in_process, execute_job honours it,
    so the steps go to the workers (which load `defs` from the same module, by name)."""
    recon = ReconstructableRepository.for_module(module, "defs").get_reconstructable_job(job_name)
    partitions = defs.resolve_job_def(job_name).partitions_def
    return execute_job(recon, instance, run_config=run_config, raise_on_error=False,
                       tags={**partitions.get_tags_for_partition_key(partition_key), **tags})

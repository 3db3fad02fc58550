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


def execute_on_cluster(defs, job_name: str, partition_key: str, instance, tags: dict[str, str], run_config: dict,
                       module: str = "sparklio_assets.definitions"):
    """One run through the job's own executor: unlike execute_in_process, execute_job honours it,
    so the steps go to the workers (which load `defs` from the same module)."""
    from dagster import execute_job
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    recon = ReconstructableRepository.for_module(module, "defs").get_reconstructable_job(job_name)
    partitions = defs.resolve_job_def(job_name).partitions_def
    return execute_job(recon, instance, run_config=run_config, raise_on_error=False,
                       tags={**partitions.get_tags_for_partition_key(partition_key), **tags})


def main(argv: list[str] | None = None) -> int:
    """python -m sparklio_assets.distributed run JOB_ID   (the job must exist: sparklio / the API / a campaign)

    The same as `sparklio run-job`, with a run config (e.g. resource overrides) and one
    `stage<TAB>run id` line per stage."""
    import argparse

    from dagster import DagsterInstance

    from resources.artifacts import ArtifactStore

    parser = argparse.ArgumentParser(prog="python -m sparklio_assets.distributed")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="make one existing job through the configured executor")
    run.add_argument("job_id")
    run.add_argument("--run-config", default="", help="run config as JSON (e.g. resource overrides)")
    sub.add_parser("worker-config", help="print the workers' -y config for the current environment")
    args = parser.parse_args(argv)
    if args.command == "worker-config":
        print(worker_config_yaml(), end="")
        return 0
    import json

    from .definitions import defs
    from .pipeline import run_job

    with DagsterInstance.get() as instance:
        run_job(args.job_id, defs, instance, ArtifactStore(),
                on_stage=lambda stage: print(f"{stage.stage}\t{stage.run_id}", flush=True),
                run_config=json.loads(args.run_config) if args.run_config else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

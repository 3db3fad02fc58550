"""The distributed deployment for real: the production instance config (deploy/dagster.production.yaml)
on a fresh PostgreSQL database, two real Celery workers (dagster-celery, Redis broker) — one on the
`gpu` queue, one on the default `dagster` queue — and a whole job made through the Celery executor.
The event log in Postgres says which worker ran which step.

Needs PostgreSQL and Redis (tests/require_services.py): skipped without them, failed in CI."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from local_servers import stop_group
from require_services import fresh_database, postgres_admin_url, redis_url, unavailable  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = ROOT / "sparklio_assets" / "data"
JOB = "distributed-ad"
FAST = {"resources": {"ffmpeg": {"config": {"preset": "ultrafast"}}}}
GPU_STEPS = {"scene_key_image", "scene_motion_clip"}
STAGE_LINE = re.compile(r"^  ✓ (\S+) .*\(run ([0-9a-f-]+)\)$", re.M)  # `sparklio run-job`'s report of each stage


def _start_worker(name: str, queue: str, env: dict, log: Path) -> subprocess.Popen:
    """A Celery worker on the product's app (sparklio_assets/celery_app.py: the executor's own config,
    read from the same environment), in a new session so that stopping the group stops it and nothing else."""
    return subprocess.Popen(
        [str(BIN / "celery"), "-A", "sparklio_assets.celery_app", "worker", "-Q", queue, "-n", f"{name}@%h",
         "--prefetch-multiplier=1", "--pool=solo", "--loglevel=INFO"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    stop_group(proc, grace_s=20)
    with contextlib.suppress(ProcessLookupError):  # the celery child may outlive its parent for a moment
        os.killpg(proc.pid, signal.SIGKILL)


def _wait_ready(workers: dict[str, tuple[subprocess.Popen, Path]], timeout: float = 90) -> dict[str, str]:
    """Worker name → hostname (name@host), once each says 'ready'."""
    deadline, ready = time.monotonic() + timeout, {}
    while len(ready) < len(workers):
        for name, (proc, log) in workers.items():
            text = log.read_text(errors="replace") if log.exists() else ""
            for line in text.splitlines():
                if line.rstrip().endswith(" ready.") and f"{name}@" in line:
                    ready[name] = line.rsplit(" ", 2)[-2]
            if proc.poll() is not None and name not in ready:
                raise AssertionError(f"worker {name} exited {proc.returncode}:\n{text[-3000:]}")
        assert time.monotonic() < deadline, f"workers not ready: {set(workers) - set(ready)}"
        time.sleep(0.5)
    return ready


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, fresh_database, redis_url):  # noqa: F811 (fixtures)
    from dagster import DagsterInstance

    root = tmp_path_factory.mktemp("cluster")
    home, sparklio_home = root / "dagster", root / "home"
    home.mkdir()
    shutil.copyfile(ROOT / "deploy" / "dagster.production.yaml", home / "dagster.yaml")
    tag = uuid.uuid4().hex[:8]
    env = {**os.environ, "DAGSTER_HOME": str(home), "SPARKLIO_HOME": str(sparklio_home),
           "DAGSTER_PG_URL": fresh_database, "SPARKLIO_EXECUTOR": "celery",
           "SPARKLIO_CELERY_BROKER": f"{redis_url}/0", "SPARKLIO_CELERY_BACKEND": f"{redis_url}/1",
           "SPARKLIO_CELERY_PREFIX": f"sparklio-test-{tag}:",  # this run's queues only
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    names = {"gpu": f"gpu-{tag}", "dagster": f"cpu-{tag}"}
    workers = {name: (_start_worker(name, queue, env, root / f"{name}.log"), root / f"{name}.log")
               for queue, name in names.items()}
    old_pg = os.environ.get("DAGSTER_PG_URL")
    os.environ["DAGSTER_PG_URL"] = fresh_database  # for this process's view of the same instance
    try:
        hosts = _wait_ready(workers)
        instance = DagsterInstance.from_config(str(home))
        yield {"env": env, "instance": instance, "home": sparklio_home, "hosts": hosts, "names": names,
               "logs": {name: log for name, (_, log) in workers.items()}}
        instance.dispose()
    finally:
        for proc, _ in workers.values():
            _stop(proc)
        if old_pg is None:
            os.environ.pop("DAGSTER_PG_URL", None)
        else:
            os.environ["DAGSTER_PG_URL"] = old_pg
        import redis

        for db in (0, 1):
            client = redis.Redis.from_url(f"{redis_url}/{db}")
            for key in client.scan_iter(match=f"*sparklio-test-{tag}:*"):
                client.delete(key)


def _worker_of_each_step(instance, run_ids: list[str]) -> list[tuple[str, str, str]]:
    """(job name, step, Celery worker hostname) from the engine events the workers wrote to Postgres."""
    from dagster import DagsterEventType

    rows = []
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
            data = entry.dagster_event.engine_event_data
            if data and "Celery worker" in data.metadata:
                rows.append((run.job_name, entry.step_key, data.metadata["Celery worker"].value))
    return rows


def test_a_job_through_celery_workers_gpu_steps_on_the_gpu_queue(cluster):
    from resources.artifacts import ArtifactStore
    from sparklio_assets import store_paths as layout
    from sparklio_assets.jobs import create_job
    from sparklio_assets.models import JobSpec

    instance, env = cluster["instance"], cluster["env"]
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    store = ArtifactStore(home=str(cluster["home"]))
    brief = {**json.loads((DATA / "demo_brief.json").read_text()), "duration": 5}
    create_job(JobSpec(job_id=JOB, brief=brief), instance, store)

    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "sparklio_assets.cli", "run-job", JOB,
                             "--run-config", json.dumps(FAST)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    stages = dict(STAGE_LINE.findall(result.stdout))
    assert list(stages) == ["storyboard", "scene_001", "scene_002", "scene_003", "final_video"]

    placed = _worker_of_each_step(instance, list(stages.values()))
    table = "\n".join(f"  {job:<16} {step:<20} {host}" for job, step, host in placed)
    print(f"\nwhich worker ran which step ({time.monotonic() - started:.0f} s):\n{table}")
    gpu, cpu = cluster["hosts"][cluster["names"]["gpu"]], cluster["hosts"][cluster["names"]["dagster"]]
    assert {step for _, step, _ in placed} == GPU_STEPS | {"storyboard", "soundtrack", "final_video",
                                                           "final_video_quality"}
    assert len(placed) == 1 + 3 * 2 + 3, table
    for job, step, host in placed:
        assert host == (gpu if step in GPU_STEPS else cpu), f"{job}/{step} ran on {host}\n{table}"

    logs = {name: log.read_text(errors="replace") for name, log in cluster["logs"].items()}
    assert logs[cluster["names"]["gpu"]].count("Task execute_plan[") >= 6 * 2  # received + succeeded
    assert logs[cluster["names"]["dagster"]].count("Task execute_plan[") >= 4 * 2

    for run_id in stages.values():
        assert instance.get_run_by_id(run_id).is_success
    assert layout.video_path(store, JOB).is_file()
    report = json.loads(layout.checks_path(store, JOB).read_text())
    assert report["passed"], report["failed"]


def test_missing_server_fails_in_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        unavailable("PostgreSQL at 127.0.0.1:1", "connection refused")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="start it"):
        unavailable("PostgreSQL at 127.0.0.1:1", "connection refused")

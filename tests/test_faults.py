"""Faults never wedge the instance, strand a job or lose a video (issue 14), with real processes:
`sparklio generate` killed with SIGKILL at the storyboard, in the middle of a scene and during the
final video; `sparklio remake-scene` killed while it re-assembles a finished job; the API's worker
canceled in the middle of a scene. After each, a second job completes, the first one resumes from
what it had finished, every Dagster run has ended, no pool slot is held, and no good file is lost.

Deadlines are generous (a loaded machine is slow); what is asserted is behaviour.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.instance.ref import InstanceRef
from fastapi.testclient import TestClient

from api import jobs, worker
from api.app import create_app
from api.status import status
from llm_standins import OllamaStandIn, Slow
from resources.artifacts import ArtifactStore
from sparklio_assets import liveness
from sparklio_assets.jobs import stage_name
from sparklio_assets.video_probe import probe

BRIEF = {
    "brand_id": "2f0c6a2e-3c55-4d7e-9a57-2d1f3b8c9e10",
    "product": "Daily Eye Care Moisturizer",
    "target_audience": "20-30대 직장인",
    "goal": "제품 인지도 + 전환",
    "duration": 5,  # the shortest brief: 5 one-second scenes
    "tone": "professional_warm",
    "channels": ["instagram_reels"],
}
FRAMES = 5 * 24
DEADLINE_S = 400.0
JOB_TAG = "sparklio/job_id"
ENDED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
# A guard against a hang, not a speed limit: these tests run several real jobs in real processes,
# and on a loaded machine one job can take minutes.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("faults_home")
    (home / "dagster").mkdir()
    shutil.copyfile(str(files("sparklio_assets") / "data" / "dagster.yaml"), home / "dagster" / "dagster.yaml")
    (home / "brief.json").write_text(json.dumps(BRIEF, ensure_ascii=False), encoding="utf-8")
    patch = pytest.MonkeyPatch()
    patch.setenv("SPARKLIO_HOME", str(home))
    patch.setenv("DAGSTER_HOME", str(home / "dagster"))
    for name in ("SPARKLIO_API_KEY", "SPARKLIO_CORS_ORIGINS", "SPARKLIO_PUBLIC_URL", "SPARKLIO_MAX_BODY_BYTES"):
        patch.delenv(name, raising=False)
    started: list[subprocess.Popen] = []
    yield home, started
    for process in started:  # nothing this module started may outlive it
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
    for record_file in (home / "jobs").glob("*/worker/worker.json"):
        record = worker.read_record(record_file.parent.parent)
        if record and record.pid and worker.is_running(record_file.parent.parent):
            os.killpg(record.pid, signal.SIGKILL)
    patch.undo()


@pytest.fixture(scope="module")
def instance(home):
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home[0] / "dagster"))) as instance:
        # One GPU, as on a desktop worker: scenes take the slot one at a time, so "killed while
        # scene_002 holds the slot" means scene_001 is finished, and a second job waits for the slot.
        instance.event_log_storage.set_concurrency_slots("gpu", 1)
        yield instance


def env_for(home: Path, **changes: str | None) -> dict[str, str]:
    env = {**os.environ, "SPARKLIO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def sparklio(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparklio_assets.cli", *args, "--out", str(home)],
                          capture_output=True, text=True, env=env or env_for(home), timeout=DEADLINE_S)


def start(home_and_started, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A sparklio command in its own process group (so SIGKILL takes its ffmpeg children too)."""
    home, started = home_and_started
    log = open(home / f"{args[0]}-{len(started)}.log", "wb")  # noqa: SIM115 (Popen writes to it; closed below)
    process = subprocess.Popen([sys.executable, "-m", "sparklio_assets.cli", *args, "--out", str(home)],
                               stdout=log, stderr=subprocess.STDOUT, env=env or env_for(home), start_new_session=True)
    log.close()
    started.append(process)
    return process


def kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def stop_outside_sqlite(pgid: int, dagster_home: Path) -> None:
    """SIGSTOP a worker's process group, but never inside a SQLite write: a writer stopped while it
    holds a database lock would block everyone who reads the instance (this test included) for
    as long as it stays stopped. Stop, try a shared lock on every database of the instance, and
    let the worker run a moment longer while any is locked."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        os.killpg(pgid, signal.SIGSTOP)
        try:
            for db in dagster_home.rglob("*.db"):
                with contextlib.closing(sqlite3.connect(db, timeout=0.2)) as connection:
                    connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return
        except sqlite3.OperationalError:  # "database is locked": the writer is inside a transaction
            os.killpg(pgid, signal.SIGCONT)
            assert time.monotonic() < deadline, "the worker never left its SQLite transactions"
            time.sleep(0.02)


def wait_until(condition, what: str, process: subprocess.Popen | None = None, poll_s: float = 0.05):
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process ended (rc {process.returncode}) before {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll_s)


def job_runs(instance: DagsterInstance, job_id: str):
    return list(reversed(instance.get_runs(RunsFilter(tags={JOB_TAG: job_id}))))  # oldest first


def stage_of(run) -> str:
    return stage_name(run.job_name, run.tags)


def gpu_slots(instance: DagsterInstance) -> tuple[set[str], set[str]]:
    """Runs holding a `gpu` slot, and runs queued for one."""
    info = instance.event_log_storage.get_concurrency_info("gpu")
    return {s.run_id for s in info.claimed_slots}, {p.run_id for p in info.pending_steps}


def running_stage(instance: DagsterInstance, job_id: str, stage: str):
    """The job's run for `stage`, once it is STARTED (and, for a scene, holds the gpu slot)."""
    for run in job_runs(instance, job_id):
        if stage_of(run) == stage and run.status == DagsterRunStatus.STARTED:
            if stage.startswith("scene_") and run.run_id not in gpu_slots(instance)[0]:
                return None
            if stage == "final_video" and not instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START):
                return None
            return run
    return None


def failure_message(instance: DagsterInstance, run_id: str) -> str:
    events = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
    return events[-1].dagster_event.message if events else ""


def api_status(home: Path, instance: DagsterInstance, job_id: str):
    return status(jobs.load(job_id, ArtifactStore(home=str(home)), instance))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(job_dir: Path, scene_id: str) -> dict[Path, tuple[str, int]]:
    return {p: (sha(p), p.stat().st_mtime_ns) for p in (job_dir / "scenes" / scene_id).iterdir() if p.is_file()}


def assert_settled(instance: DagsterInstance, home: Path) -> None:
    """Every run has ended, no gpu slot is held or queued for, no half-written file is left."""
    in_flight = [(r.run_id, stage_of(r), r.status) for r in instance.get_runs() if r.status not in ENDED]
    assert not in_flight, in_flight
    assert gpu_slots(instance) == (set(), set())
    assert not list((home / "jobs").rglob(".*.part*"))


def assert_complete(home: Path, job_id: str) -> None:
    info = probe(home / "jobs" / job_id / "final" / "ad.mp4")
    assert (info.width, info.height, info.frames) == (1080, 1920, FRAMES)


def scene_ids(home: Path, job_id: str) -> list[str]:
    return [s["id"] for s in json.loads((home / "jobs" / job_id / "storyboard.json").read_text())["scenes"]]


def made_stages(stdout: str) -> list[str]:
    """The stages a `sparklio generate` made (its ✓ stage lines; not its ✓ check lines)."""
    return [line.split()[1] for line in stdout.splitlines()
            if line.strip().startswith("✓") and line.split()[1] != "check"]


@pytest.fixture(scope="module")
def killed(home, instance):
    """Three `sparklio generate` killed with SIGKILL: at the storyboard (the LLM is slow to answer),
    while scene_002 holds the gpu slot, and during the final video. Returns their runs in flight
    and what each had finished."""
    root = home[0]
    brief = str(root / "brief.json")
    victims, faults = {}, []
    ollama = OllamaStandIn()
    ollama.default = Slow(120)
    try:
        process = start(home, "generate", brief, "--job-id", "killed-at-storyboard",
                        env=env_for(root, SPARKLIO_LLM=None, OLLAMA_HOST=ollama.url))
        victims["killed-at-storyboard"] = wait_until(
            lambda: ollama.chat_requests() and running_stage(instance, "killed-at-storyboard", "storyboard"),
            "the storyboard asks the LLM", process)
        kill(process)
    finally:
        ollama.server.shutdown()
    # The fault as it was: the dead process's run stays STARTED (until the next sparklio command).
    faults.append(instance.get_run_by_id(victims["killed-at-storyboard"].run_id).status)
    for job_id, stage in (("killed-mid-scene", "scene_002"), ("killed-at-final", "final_video")):
        process = start(home, "generate", brief, "--job-id", job_id)
        victims[job_id] = wait_until(lambda j=job_id, s=stage: running_stage(instance, j, s), f"{job_id}: {stage} runs",
                                     process)
        kill(process)
        faults.append(instance.get_run_by_id(victims[job_id].run_id).status)
        if stage.startswith("scene_"):
            faults.append(victims[job_id].run_id in gpu_slots(instance)[0])
    kept = {job_id: {s: snapshot(root / "jobs" / job_id, s) for s in scene_ids(root, job_id)[:n]}
            for job_id, n in (("killed-mid-scene", 1), ("killed-at-final", 99))}
    return {"victims": victims, "faults": faults, "kept": kept}


@pytest.fixture(scope="module")
def another_job(home, killed):
    """After the faults, another job is made from start to finish."""
    root = home[0]
    other = sparklio(root, "generate", str(root / "brief.json"), "--job-id", "another-job")
    assert other.returncode == 0, other.stdout + other.stderr
    return "another-job"


def test_kill_9_leaves_runs_started_and_the_slot_held(killed):
    """The faults as they were found: reproduced, before any later command has looked."""
    assert killed["faults"] == [DagsterRunStatus.STARTED, DagsterRunStatus.STARTED, True, DagsterRunStatus.STARTED]


def test_after_kill_9_at_each_stage_another_job_completes(home, instance, killed, another_job):
    root = home[0]
    assert_complete(root, another_job)
    for job_id, victim in killed["victims"].items():
        assert instance.get_run_by_id(victim.run_id).status == DagsterRunStatus.FAILURE
        assert liveness.WORKER_DIED in failure_message(instance, victim.run_id)
        status = api_status(root, instance, job_id)
        assert status.status == "failed" and liveness.WORKER_DIED in status.error.reason, status
        assert status.error.stage == stage_of(victim)
    assert_settled(instance, root)


def test_remake_killed_while_it_reassembles_keeps_the_video(home, instance, another_job):
    root = home[0]
    video = root / "jobs" / another_job / "final" / "ad.mp4"
    digest = sha(video)
    remake = start(home, "remake-scene", another_job, "scene_002")
    remade = wait_until(lambda: running_stage(instance, another_job, "final_video"), "the re-assembly runs", remake)
    kill(remake)
    status = api_status(root, instance, another_job)
    assert status.status == "failed" and liveness.WORKER_DIED in status.error.reason, status
    assert instance.get_run_by_id(remade.run_id).status == DagsterRunStatus.FAILURE
    assert sha(video) == digest, "the good video was kept"
    assert_complete(root, another_job)
    assert not worker.is_running(root / "jobs" / another_job), "the job is free for the next writer"
    assert_settled(instance, root)


def test_killed_at_the_storyboard_is_made_from_the_start(home, instance, another_job):
    root = home[0]
    resumed = sparklio(root, "generate", str(root / "brief.json"), "--job-id", "killed-at-storyboard")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" not in resumed.stdout  # nothing was finished
    assert made_stages(resumed.stdout) == ["storyboard", *scene_ids(root, "killed-at-storyboard"), "final_video"]
    assert_complete(root, "killed-at-storyboard")
    assert api_status(root, instance, "killed-at-storyboard").status == "completed"


def test_killed_mid_scene_resumes_from_its_finished_scenes(home, instance, killed, another_job):
    root = home[0]
    resumed = sparklio(root, "generate", str(root / "brief.json"), "--job-id", "killed-mid-scene")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    first, *rest = scene_ids(root, "killed-mid-scene")
    assert f"resuming: storyboard, {first} already made" in resumed.stdout
    assert made_stages(resumed.stdout) == [*rest, "final_video"], resumed.stdout
    kept = killed["kept"]["killed-mid-scene"]
    assert {s: snapshot(root / "jobs" / "killed-mid-scene", s) for s in kept} == kept
    assert_complete(root, "killed-mid-scene")
    assert api_status(root, instance, "killed-mid-scene").status == "completed"


def test_killed_in_the_final_video_resumes_with_only_the_final_video(home, instance, killed, another_job):
    root = home[0]
    resumed = sparklio(root, "generate", str(root / "brief.json"), "--job-id", "killed-at-final")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert made_stages(resumed.stdout) == ["final_video"], resumed.stdout
    kept = killed["kept"]["killed-at-final"]
    assert {s: snapshot(root / "jobs" / "killed-at-final", s) for s in kept} == kept
    assert_complete(root, "killed-at-final")
    assert api_status(root, instance, "killed-at-final").status == "completed"
    assert_settled(instance, root)


def wait_status(client: TestClient, job_id: str, until) -> dict:
    return wait_until(lambda: (s := client.get(f"/video/status/{job_id}").json()) and until(s) and s,
                      f"job {job_id} to reach the state", poll_s=0.2)


def runs_succeeded(instance: DagsterInstance, job_id: str, stage: str) -> bool:
    return any(stage_of(r) == stage and r.status == DagsterRunStatus.SUCCESS for r in job_runs(instance, job_id))


def test_api_worker_killed_then_canceled_mid_scene_then_another_job_completes(home, instance):
    """Through the API. Job A's worker holds the gpu slot and job B's worker waits for it; A's worker
    is killed (SIGKILL) and B completes by itself (its worker frees the dead holder's slot; nothing
    else looks: the test reads the instance only). A reads failed ("worker died"); generate resumes
    it; canceled mid-scene, its slot is freed at once; B can be re-made right after it completed;
    A, generated again, completes with the scene it finished first kept."""
    root = home[0]
    with TestClient(create_app()) as client:
        job_a = client.post("/video/storyboard", json=BRIEF).json()["storyboard_id"]
        job_b = client.post("/video/storyboard", json=BRIEF).json()["storyboard_id"]
        dir_a = root / "jobs" / job_a
        first, second, *_ = scene_ids(root, job_a)
        assert client.post("/video/generate", json={"storyboard_id": job_a, "quality": "draft"}).status_code == 202
        wait_until(lambda: running_stage(instance, job_a, second), f"A: {second} holds the gpu slot")
        worker_a = worker.read_record(dir_a).pid
        stop_outside_sqlite(worker_a, root / "dagster")  # A stays put, holding the slot, until it is killed
        (victim,) = [r for r in job_runs(instance, job_a) if r.run_id in gpu_slots(instance)[0]]
        assert client.post("/video/generate", json={"storyboard_id": job_b, "quality": "draft"}).status_code == 202
        wait_until(lambda: any(stage_of(r).startswith("scene_") and r.run_id in gpu_slots(instance)[1] - gpu_slots(
            instance)[0] for r in job_runs(instance, job_b)), "B waits for the gpu slot")
        os.killpg(worker_a, signal.SIGKILL)
        wait_until(lambda: runs_succeeded(instance, job_b, "final_video"), "B completes", poll_s=0.5)
        assert instance.get_run_by_id(victim.run_id).status == DagsterRunStatus.FAILURE

        status = client.get(f"/video/status/{job_a}").json()
        assert status["status"] == "failed" and liveness.WORKER_DIED in status["error"]["reason"], status
        done = wait_status(client, job_b, lambda s: s["status"] in ("completed", "failed", "canceled"))
        assert done["status"] == "completed", done
        assert not worker.is_running(root / "jobs" / job_b), "terminal only once the lock is released"
        assert_complete(root, job_b)
        assert_settled(instance, root)
        kept = snapshot(dir_a, first)

        digest = sha(root / "jobs" / job_b / "final" / "ad.mp4")
        again = client.post(f"/video/regenerate/{job_b}/scenes/{first}")
        assert again.status_code == 202, again.text  # no 409 right after completion
        assert client.post(f"/video/cancel/{job_b}").json()["status"] == "canceled"
        assert sha(root / "jobs" / job_b / "final" / "ad.mp4") == digest

        assert client.post("/video/generate", json={"storyboard_id": job_a, "quality": "draft"}).status_code == 202
        victim = wait_until(lambda: next((r for r in job_runs(instance, job_a) if r.run_id in gpu_slots(instance)[0]),
                                         None), "A holds the gpu slot again")
        stop_outside_sqlite(worker.read_record(dir_a).pid, root / "dagster")  # cancel it there, mid-scene
        (victim,) = [r for r in job_runs(instance, job_a) if r.run_id in gpu_slots(instance)[0]]
        canceled = client.post(f"/video/cancel/{job_a}")
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled", canceled.text
        assert instance.get_run_by_id(victim.run_id).status == DagsterRunStatus.CANCELED
        assert gpu_slots(instance) == (set(), set()), "cancel freed the slot at once"
        assert_settled(instance, root)

        assert client.post("/video/generate", json={"storyboard_id": job_a, "quality": "draft"}).status_code == 202
        assert wait_status(client, job_a, lambda s: s["status"] in ("completed", "failed"))["status"] == "completed"
        assert snapshot(dir_a, first) == kept, "the scene finished before the faults was not re-made"
        assert_complete(root, job_a)
        assert_settled(instance, root)


def test_leftovers_are_swept(home):
    root = home[0]
    store = ArtifactStore(home=str(root))
    job_dir = root / "jobs" / "left-debris"
    (job_dir / "scenes" / "scene_001").mkdir(parents=True)
    (job_dir / "job.json").write_text("{}")
    leftover = job_dir / "scenes" / "scene_001" / ".clip.abc.part.mp4"
    leftover.write_bytes(b"half")
    empty = root / "jobs" / "never-written"
    (empty / "worker").mkdir(parents=True)
    (empty / "worker" / "run.lock").touch()
    fresh = root / "jobs" / "being-created"
    fresh.mkdir()
    old = time.time() - 2 * liveness.SWEEP_AGE_S
    for path in (leftover, empty):
        os.utime(path, (old, old))
    held = root / "jobs" / "held-job"
    held.mkdir()
    with liveness.hold(held, "held-job", "test"):
        held_leftover = held / ".x.part.png"
        held_leftover.write_bytes(b"in progress")
        os.utime(held_leftover, (old, old))
        liveness.sweep(store)
        assert held_leftover.exists(), "a job someone holds is not swept"
    held_leftover.unlink()
    assert not leftover.exists() and not empty.exists()
    assert fresh.exists(), "a folder just made may be about to get its job.json"
    assert (job_dir / "job.json").exists()


def test_the_chain_sensor_leaves_a_job_another_writer_holds(tmp_path):
    """One writer per job: the chain sensor requests nothing for a job a CLI or API worker holds."""
    from dagster import DagsterRun

    from sensors.campaigns import AUTO, CHAIN_TAG
    from sensors.chain import next_run_requests

    store = ArtifactStore(home=str(tmp_path))
    job_dir = store.job_dir("chained")
    job_dir.mkdir(parents=True)
    shutil.copyfile(Path(__file__).parent / "data" / "spec_storyboard.json", job_dir / "storyboard.json")
    run = DagsterRun(job_name="storyboard_job", run_id="0" * 36, tags={CHAIN_TAG: AUTO, JOB_TAG: "chained"})
    with DagsterInstance.ephemeral() as instance:
        assert len(next_run_requests(run, instance, store)) == 5
        with liveness.hold(job_dir, "chained", "test"):
            assert next_run_requests(run, instance, store) == []
        assert len(next_run_requests(run, instance, store)) == 5

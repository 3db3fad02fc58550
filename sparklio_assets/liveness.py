"""Liveness of a job's writer: one lease per job, so nothing a dead process leaves behind blocks
anything else.

Every writer of a job (the API's worker `sparklio run-job`, `sparklio generate`, `sparklio
remake-scene`, the API's own storyboard run) holds the job's lease while it writes: an exclusive
`flock` on `<job>/worker/run.lock` (the kernel drops it the moment its holder dies, however it dies,
and after a reboot nobody holds it) plus `<job>/worker/lease.json` naming the holder, refreshed by a
heartbeat thread (its mtime), for a checker on another host that cannot see the lock. Every Dagster
run a lease holder starts is tagged `sparklio/lease=<lease id>`.

`reap` is what any later CLI call, API request, live worker (its heartbeat thread, every
`REAP_EVERY_S`) or the daemon (sensors/liveness.py, every 30 s) runs: a run that is still in flight
although the lease that started it is gone ends as FAILURE ("worker died ..."), and every pool slot
(`gpu`) held or queued for by a run that has ended is freed, which Dagster itself does only with
the daemon's `run_monitoring.free_slots_after_run_end_seconds` and never for in-process runs whose
process died. Runs the daemon launched carry no lease; while the instance is SQLite (so every run
worker is on this machine) they are checked by the pid their launcher recorded.

Bound: a dead worker's runs are ended and their slots freed at the next CLI command or API request
about any job, within `REAP_EVERY_S` (10 s) while any other worker is alive (a worker waiting for
the slot is one), and within 30 s while the daemon runs; a cancel frees them at once. After a
reboot the locks are gone, so the first of those reaps everything. Leftover `.part` files and empty
job folders are swept (see `sweep`).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from .tags import JOB_TAG, LEASE_TAG

HEARTBEAT_S = 5.0
STALE_S = 30.0  # a lease on another host whose heartbeat is older than this is dead
REAP_EVERY_S = 10.0
SWEEP_AGE_S = 60.0  # a .part file or empty job folder untouched this long, in a job nobody holds, is debris
WORKER_DIED = "worker died"
# Dagster's engine events that name the process a run executes in (the launcher's run worker, the
# in-process executor), with its pid in their metadata.
RUN_PROCESS_EVENTS = ("Started process for run", "Executing steps in process")

logger = logging.getLogger("sparklio.liveness")


class JobBusy(RuntimeError):
    """Another live writer holds the job."""


class Lease(BaseModel):
    """`worker/lease.json`: who holds the job (the lock says whether they still do)."""

    lease_id: str
    job_id: str
    owner: str  # generate | run-job | remake-scene | api ...
    pid: int
    host: str
    started_at: datetime


def lock_path(job_dir: Path) -> Path:
    return job_dir / "worker" / "run.lock"


def lease_path(job_dir: Path) -> Path:
    return job_dir / "worker" / "lease.json"


def try_lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on path, or None when someone else holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def is_locked(path: Path) -> bool:
    """True while some process (this one included) holds the lock file."""
    if not path.exists():
        return False
    fd = try_lock(path)
    if fd is None:
        return True
    os.close(fd)  # closing releases the probe's lock
    return False


def read_lease(job_dir: Path) -> Lease | None:
    try:
        return Lease.model_validate_json(lease_path(job_dir).read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError):
        return None


def is_held(job_dir: Path) -> bool:
    """Whether a live writer holds the job: the lock is held here, or (a holder on another host,
    where the lock may not be visible) its lease's heartbeat is fresh."""
    if is_locked(lock_path(job_dir)):
        return True
    lease = read_lease(job_dir)
    return lease is not None and lease.host != socket.gethostname() and _heartbeat_age(job_dir) < STALE_S


def _heartbeat_age(job_dir: Path) -> float:
    try:
        return time.time() - lease_path(job_dir).stat().st_mtime
    except OSError:
        return float("inf")


def holder_alive(job_dir: Path, lease_id: str) -> bool:
    """Whether the writer that took lease `lease_id` still holds the job."""
    lease = read_lease(job_dir)
    if lease is None or lease.lease_id != lease_id:
        return False  # replaced by a later holder (or released): the lease that made the run is over
    if is_locked(lock_path(job_dir)):
        return True
    return lease.host != socket.gethostname() and _heartbeat_age(job_dir) < STALE_S


class _Held:
    def __init__(self, fd: int, lease: Lease, job_dir: Path) -> None:
        self.fd, self.lease, self.job_dir, self.count = fd, lease, job_dir, 1
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None


_held: dict[str, _Held] = {}
_guard = threading.Lock()


def current(job_id: str) -> Lease | None:
    """The lease this process holds for the job, if any."""
    with _guard:
        held = next((h for h in _held.values() if h.lease.job_id == job_id), None)
        return held.lease if held else None


def run_tags(job_id: str) -> dict[str, str]:
    """Tags for a Dagster run this process starts for the job: which lease it runs under."""
    lease = current(job_id)
    return {LEASE_TAG: lease.lease_id} if lease else {}


@contextmanager
def hold(job_dir: Path, job_id: str, owner: str, instance=None, store=None, fd: int | None = None) -> Iterator[Lease]:
    """Hold the job's lease for the block; re-entrant within this process (threads included).

    `fd`: an already locked descriptor handed down by the API (`worker.launch`); it becomes this
    lease's lock and is closed when the block ends. With an instance and a store, the heartbeat
    thread also reaps other dead writers every REAP_EVERY_S, so a worker waiting for a pool slot
    frees it from a dead holder by itself. Raises JobBusy when another live writer holds the job."""
    key = str(job_dir.resolve())
    with _guard:
        held = _held.get(key)
        if held is not None:
            held.count += 1
        else:
            if fd is None:
                fd = try_lock(lock_path(job_dir))
                if fd is None:
                    lease = read_lease(job_dir)
                    who = f" ({lease.owner}, pid {lease.pid} on {lease.host})" if lease else ""
                    raise JobBusy(f"job {job_id} is being made by another process{who}")
            lease = Lease(lease_id=uuid.uuid4().hex, job_id=job_id, owner=owner, pid=os.getpid(),
                          host=socket.gethostname(), started_at=datetime.now(UTC))
            path = lease_path(job_dir)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(lease.model_dump_json(), encoding="utf-8")
            os.replace(tmp, path)
            held = _held[key] = _Held(fd, lease, job_dir)
            held.thread = threading.Thread(target=_heartbeat, args=(held, instance, store),
                                           name=f"lease-{job_id}", daemon=True)
            held.thread.start()
    try:
        yield held.lease
    finally:
        with _guard:
            held.count -= 1
            done = held.count == 0
            if done:
                del _held[key]
        if done:
            held.stop.set()
            if held.thread is not None:
                held.thread.join(timeout=30)
            lease_path(job_dir).unlink(missing_ok=True)
            os.close(held.fd)  # the lock goes last: status turns terminal only once it is released


def _heartbeat(held: _Held, instance, store) -> None:
    last_reap = time.monotonic()
    while not held.stop.wait(HEARTBEAT_S):
        try:
            os.utime(lease_path(held.job_dir))
        except OSError:
            pass
        if instance is not None and store is not None and time.monotonic() - last_reap >= REAP_EVERY_S:
            last_reap = time.monotonic()
            try:
                reap(instance, store)
            except Exception:  # housekeeping must never kill the worker
                logger.exception("reaping dead workers failed")


# --- ending what dead writers left --------------------------------------------------------------

def _in_flight():
    from dagster import DagsterRunStatus

    return [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
            DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def _process_started(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), or None when there is no such live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):
            return None
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0  # alive, start time unknown


def _launched_worker_alive(instance, record) -> bool:
    """For a run the daemon (or the UI) launched: is its run worker process still there? Only
    answered for a SQLite instance (every run worker is on this machine); otherwise True, and
    Dagster's run monitoring is in charge."""
    from dagster import DagsterEventType
    from dagster._core.storage.event_log.sqlite import SqliteEventLogStorage

    if not isinstance(instance.event_log_storage, SqliteEventLogStorage):
        return True
    pid = None
    for entry in instance.all_logs(record.dagster_run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        if event is None or not (event.message or "").startswith(RUN_PROCESS_EVENTS):
            continue  # not the run's own process (a multiprocess executor's step subprocess, say)
        value = event.engine_event_data.metadata.get("pid") if event.engine_event_data else None
        if value is not None:
            pid = int(getattr(value, "value", value))
    if pid is None:
        return True  # not started as a process yet (or not by a launcher): the run monitor's start timeout
    started = _process_started(pid)
    if started is None:
        return False
    return started <= (record.start_time or record.create_timestamp.timestamp()) + 5  # a newer process: pid reused


def reap(instance, store, job_id: str | None = None) -> list[str]:
    """End the in-flight runs (of one job, or all) whose writer died, and free every pool slot
    held by a run that has ended. Returns the run ids ended here."""
    from dagster import DagsterRunStatus, RunsFilter

    ended: list[str] = []
    filters = RunsFilter(statuses=_in_flight(), tags={JOB_TAG: job_id} if job_id else {})
    for record in instance.get_run_records(filters):
        run = record.dagster_run
        job = run.tags.get(JOB_TAG)
        lease_id = run.tags.get(LEASE_TAG)
        if not job:
            continue
        try:
            job_dir = store.job_dir(job)
        except ValueError:
            continue
        if lease_id:
            if holder_alive(job_dir, lease_id):
                continue
            lease = read_lease(job_dir)
            who = f"{lease.owner}, pid {lease.pid} on {lease.host}" if lease and lease.lease_id == lease_id else \
                "its process is gone"
            message = f"{WORKER_DIED}: the process running this stage ended without finishing it ({who})"
        elif run.status in (DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING) and \
                not _launched_worker_alive(instance, record):
            message = f"{WORKER_DIED}: the run worker process the daemon launched is gone"
        else:
            continue
        fresh = instance.get_run_by_id(run.run_id)
        if fresh is None or fresh.status not in _in_flight():
            continue  # it ended on its own meanwhile
        if fresh.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(fresh, message=message)
        else:
            instance.report_run_failed(fresh, message=message)
        free_slots(instance, run.run_id)
        ended.append(run.run_id)
        logger.warning(f"run {run.run_id} of job {job}: {message}")
        if not is_held(job_dir):
            sweep_job(job_dir, min_age_s=0.0)
    free_ended_slots(instance)
    return ended


def free_slots(instance, run_id: str) -> None:
    """Free the pool slots (and queue places) a run holds: what Dagster does when a step ends."""
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        storage.free_concurrency_slots_for_run(run_id)


def free_ended_slots(instance) -> list[str]:
    """Free the slots held, or queued for, by runs that have ended (or no longer exist)."""
    from dagster import RunsFilter
    from dagster._core.storage.dagster_run import FINISHED_STATUSES

    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders = set(storage.get_concurrency_run_ids())
    for key in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(key)
        holders |= {slot.run_id for slot in info.claimed_slots}
        holders |= {step.run_id for step in info.pending_steps}
    holders.discard(None)
    if not holders:
        return []
    records = instance.get_run_records(RunsFilter(run_ids=list(holders)))
    live = {r.dagster_run.run_id for r in records if r.dagster_run.status not in FINISHED_STATUSES}
    freed = sorted(holders - live)
    for run_id in freed:
        storage.free_concurrency_slots_for_run(run_id)
    return freed


# --- debris -------------------------------------------------------------------------------------

def sweep_job(job_dir: Path, min_age_s: float = SWEEP_AGE_S) -> int:
    """Remove a job's leftover `.part` files (untouched for min_age_s) when nobody holds the job;
    remove the job folder itself when it holds nothing but its worker bookkeeping and no job.json."""
    if not job_dir.is_dir() or is_held(job_dir):
        return 0
    now, removed = time.time(), 0
    for path in job_dir.rglob(".*.part*"):
        try:
            if path.is_file() and now - path.stat().st_mtime >= min_age_s:
                path.unlink(missing_ok=True)
                removed += 1
        except OSError:
            continue
    if not (job_dir / "job.json").exists():
        files = [p for p in job_dir.rglob("*") if p.is_file()]
        bookkeeping = job_dir / "worker"
        try:
            age = now - job_dir.stat().st_mtime
        except OSError:
            return removed
        if age >= max(min_age_s, SWEEP_AGE_S) and all(p.parent == bookkeeping for p in files):
            shutil.rmtree(job_dir, ignore_errors=True)
            removed += 1
    return removed


def sweep(store) -> int:
    """`sweep_job` over every job folder of the store."""
    root = store.root
    if not root.is_dir():
        return 0
    return sum(sweep_job(job_dir) for job_dir in root.iterdir() if job_dir.is_dir())


def owner() -> str:
    """How this process is named in a lease: the sparklio command it runs (or the program)."""
    import sys

    argv = [Path(sys.argv[0]).name, *sys.argv[1:2]] if sys.argv and sys.argv[0] else ["python"]
    if argv[0] in ("cli.py", "__main__.py", "-m", "-c"):
        argv[0] = "sparklio"
    return " ".join(argv)[:80]

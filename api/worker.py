"""Detached workers: one `sparklio run-job` process per generation request.

The API never renders in its own process. `launch` starts the worker in a new session (its own
process group), so it outlives an API restart, and hands it an open file description holding an
exclusive `flock` on the job's `worker/run.lock`. The lock is held exactly as long as the worker
lives, whoever its parent is and however it ends (even SIGKILL), so "is this job's worker alive?"
is answered from the lock, never from a PID that could have been reused.

What the API asked for is kept beside the job's media in `worker/worker.json` (kind, scene,
request time, pid, cancel time); the worker's output goes to `worker/worker.log`. Everything
else about progress is read from the Dagster instance. This module is stdlib only (and the job
lease, sparklio_assets/liveness.py): the CLI's worker imports it without loading FastAPI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sparklio_assets import liveness
from sparklio_assets.liveness import is_locked as is_running_lock
from sparklio_assets.liveness import lock_path
from sparklio_assets.liveness import try_lock as _try_lock

LOCK_FD_ENV = "SPARKLIO_WORKER_LOCK_FD"
SLOT_FD_ENV = "SPARKLIO_WORKER_SLOT_FD"
MAX_WORKERS_ENV = "SPARKLIO_MAX_WORKERS"
DEFAULT_MAX_WORKERS = 2


class WorkerBusy(RuntimeError):
    """Another worker holds the job."""


def worker_dir(job_dir: Path) -> Path:
    return job_dir / "worker"


def record_path(job_dir: Path) -> Path:
    return worker_dir(job_dir) / "worker.json"


def log_path(job_dir: Path) -> Path:
    return worker_dir(job_dir) / "worker.log"


@dataclass
class WorkerRecord:
    kind: str  # generate | regenerate
    requested_at: str  # ISO 8601 UTC; Dagster runs created from then on belong to this request
    scene_id: str | None = None
    pid: int | None = None
    canceled_at: str | None = None
    argv: list[str] = field(default_factory=list)

    @property
    def requested(self) -> datetime:
        return datetime.fromisoformat(self.requested_at)


def read_record(job_dir: Path) -> WorkerRecord | None:
    path = record_path(job_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    known = WorkerRecord.__dataclass_fields__
    return WorkerRecord(**{k: v for k, v in data.items() if k in known})


def write_record(job_dir: Path, record: WorkerRecord) -> None:
    path = record_path(job_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    tmp.write_text(json.dumps(asdict(record), indent=2), encoding="utf-8")
    os.replace(tmp, path)


def progress_path(job_dir: Path) -> Path:
    return worker_dir(job_dir) / "progress.json"


def read_progress(job_dir: Path) -> float:
    """The highest progress shown for the job's current request (0 for a new request)."""
    record = read_record(job_dir)
    try:
        data = json.loads(progress_path(job_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0.0
    if record is None or data.get("requested_at") != record.requested_at:
        return 0.0
    return float(data.get("progress", 0.0))


def write_progress(job_dir: Path, progress: float) -> None:
    record = read_record(job_dir)
    if record is None:
        return
    path = progress_path(job_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    tmp.write_text(json.dumps({"requested_at": record.requested_at, "progress": progress}), encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def is_running(job_dir: Path) -> bool:
    """True while a writer (this API's worker, a `sparklio` command, the API's storyboard run)
    holds the job's lease (sparklio_assets/liveness.py)."""
    return liveness.is_held(job_dir)


def slot_count() -> int:
    return max(1, int(os.environ.get(MAX_WORKERS_ENV) or DEFAULT_MAX_WORKERS))


def _slot_paths(home: Path) -> list[Path]:
    return [home / "worker-slots" / f"slot-{i}.lock" for i in range(slot_count())]


def wait_for_slot(home: Path, on_wait=lambda: None) -> int:
    """An fd holding one of the $SPARKLIO_MAX_WORKERS (default 2) slot locks of this machine,
    waiting as long as all are taken. A slot is a flock, freed when its holder dies."""
    waited = False
    while True:
        for path in _slot_paths(home):
            fd = _try_lock(path)
            if fd is not None:
                return fd
        if not waited:
            on_wait()
            waited = True
        time.sleep(0.5)


@contextmanager
def worker_slot(home: Path, on_wait=lambda: None) -> Iterator[int]:
    """Held while a worker renders: the slot its small waiter process took before starting it
    (`SPARKLIO_WORKER_SLOT_FD`), else one taken here (a worker started by hand)."""
    inherited = os.environ.pop(SLOT_FD_ENV, None)
    fd = int(inherited) if inherited else wait_for_slot(home, on_wait)
    if inherited:
        os.set_inheritable(fd, False)  # the slot stays with this process, not its children
    try:
        yield fd
    finally:
        os.close(fd)


def busy_slots(home: Path) -> int:
    return sum(1 for path in _slot_paths(home) if is_running_lock(path))


def waiting_count(home: Path) -> int:
    """Jobs whose worker is alive but waits for a slot: the queue."""
    alive = sum(1 for lock in (home / "jobs").glob("*/worker/run.lock") if is_running_lock(lock))
    return max(0, alive - busy_slots(home))


def _wait_then_exec(home: str, argv: list[str]) -> None:
    """The queued state of a job: this small stdlib-only process (not a full worker with Dagster
    loaded) waits for a slot, then becomes the worker, handing it the slot's lock."""
    fd = wait_for_slot(Path(home), on_wait=lambda: print("waiting for a free worker slot", flush=True))
    os.set_inheritable(fd, True)
    os.environ[SLOT_FD_ENV] = str(fd)
    os.execv(argv[0], argv)


def _reap(process: subprocess.Popen) -> None:
    threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()


def launch(job_dir: Path, kind: str, args: list[str], env: dict[str, str], scene_id: str | None = None) -> WorkerRecord:
    """Start `sparklio run-job ...` detached. Raises WorkerBusy when the job already has a worker."""
    fd = _try_lock(lock_path(job_dir))
    if fd is None:
        raise WorkerBusy(f"job {job_dir.name} is already being generated")
    try:
        argv = [sys.executable, "-m", "sparklio_assets.cli", "run-job", *args]
        record = WorkerRecord(kind=kind, scene_id=scene_id, requested_at=datetime.now(UTC).isoformat(),
                              argv=argv[2:])
        home = env.get("SPARKLIO_HOME") or str(job_dir.parent.parent)
        write_record(job_dir, record)
        log = log_path(job_dir)
        with open(log, "ab") as out:
            out.write(f"--- {record.requested_at} {' '.join(argv[2:])}\n".encode())
            out.flush()
            process = subprocess.Popen(
                [sys.executable, "-m", "api.worker", home, *argv], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=str(worker_dir(job_dir)),
                env={**env, LOCK_FD_ENV: str(fd), "PYTHONUNBUFFERED": "1"}, pass_fds=(fd,),
                start_new_session=True, close_fds=True)
        _reap(process)
        record.pid = process.pid
        write_record(job_dir, record)
        return record
    finally:
        os.close(fd)  # the worker's inherited copy keeps the lock


def kill(job_dir: Path, record: WorkerRecord, timeout: float = 10.0) -> bool:
    """Kill the worker's whole process group (the worker, ffmpeg, log tailers). Returns True
    when a live worker was killed.

    Dagster's in-process executor defers SIGTERM/SIGINT until a run ends, so a polite signal
    would let the current stage finish; cancel means now, so the group gets SIGKILL. Every media
    file is written to a temporary name and renamed when whole, so nothing half-written replaces a
    good file; `clean_partial_files` removes the leftovers."""
    if not record.pid or not is_running(job_dir):
        return False
    try:
        os.killpg(record.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        return False
    deadline = time.monotonic() + timeout
    while is_running(job_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def clean_partial_files(job_dir: Path) -> int:
    removed = 0
    for path in job_dir.rglob(".*.part*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def log_tail(job_dir: Path, lines: int = 5) -> str:
    try:
        text = log_path(job_dir).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    useful = [line for line in text.splitlines()[-200:] if line.strip() and "Warning" not in line
              and not line.startswith("--- ")]
    return "\n".join(useful[-lines:])


if __name__ == "__main__":  # python -m api.worker HOME ARGV...: see _wait_then_exec
    _wait_then_exec(sys.argv[1], sys.argv[2:])

"""The scene stage with the `gpu` pool at 1 and at 2, and the 15 s demo end to end, in one run.

    python bench/scenes.py                          # scene stage: pool 1 vs 2, 2 runs each, alternating
    python bench/scenes.py --runs 1 --end-to-end    # and `sparklio demo` end to end at pool 1 and 2
    python bench/scenes.py --end-to-end --baseline-src /tmp/before   # and the demo from an older tree

The scene stage is the 5 scene runs of the 15 s demo job (built-in engines), made by the product's
own runner (pipeline.run_stages) on a fresh local instance after one storyboard run; the pool's
limit is set on the instance (`dagster instance concurrency set gpu N`) before each measurement,
and the runs alternate between the limits so a change in the machine's load hits both alike.
With --celery the same stage goes through the Celery executor instead: two `gpu`-queue workers and
one `dagster`-queue worker on this machine (sparklio_assets.celery_app), Redis from
SPARKLIO_TEST_REDIS (default redis://127.0.0.1:6379), the instance in SQLite shared by all.

Figures are wall seconds (median of the runs) and the ratio pool 1 / pool 2."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "sparklio_assets" / "data"


def scene_stage(limits: list[int], runs: int, work: Path) -> dict[int, list[float]]:
    """Seconds of the scene stage per pool limit, on one local instance."""
    os.environ["SPARKLIO_HOME"] = str(work / "home")
    os.environ["DAGSTER_HOME"] = str(work / "dagster")
    from dagster import DagsterInstance

    from resources.artifacts import ArtifactStore
    from sparklio_assets import store_paths
    from sparklio_assets.assets import GPU_POOL
    from sparklio_assets.definitions import defs
    from sparklio_assets.jobs import STORYBOARD, create_job, next_stages
    from sparklio_assets.models import BrandKit, Brief, JobSpec
    from sparklio_assets.pipeline import ensure_dagster_home, make_storyboard, run_stages

    store = ArtifactStore()
    ensure_dagster_home(store.folder)
    brief = Brief.model_validate_json((DATA / "demo_brief.json").read_text(encoding="utf-8"))
    brand = BrandKit.model_validate_json((DATA / "demo_brand.json").read_text(encoding="utf-8"))
    seconds: dict[int, list[float]] = {limit: [] for limit in limits}
    with DagsterInstance.get() as instance:
        spec = create_job(JobSpec(job_id="bench-scenes", brief=brief, brand=brand), instance, store)
        make_storyboard(spec.job_id, defs, instance, store)
        scene_ids = [s.id for s in store_paths.read_storyboard(store, spec.job_id).scenes]
        stages = next_stages(spec.job_id, scene_ids, {STORYBOARD})
        print(f"job {spec.job_id}: {len(stages)} scenes, {os.cpu_count()} CPU cores", flush=True)
        for run in range(runs):
            for limit in limits:
                instance.event_log_storage.set_concurrency_slots(GPU_POOL, limit)
                started = time.perf_counter()
                run_stages(stages, spec.job_id, defs, instance, store)
                seconds[limit].append(time.perf_counter() - started)
                print(f"  run {run + 1}: pool {limit}: scene stage {seconds[limit][-1]:.2f} s", flush=True)
    return seconds


def start_celery_workers(work: Path) -> list[subprocess.Popen]:
    """Two gpu-queue workers and one dagster-queue worker, one task at a time each, in their own
    sessions; the env (executor, broker, prefix, homes) is this process's."""
    procs = []
    for name, queue in (("gpu1", "gpu"), ("gpu2", "gpu"), ("cpu", "dagster")):
        log = (work / f"{name}.log").open("w")
        procs.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "sparklio_assets.celery_app", "worker", "-Q", queue,
             "-n", f"{name}@%h", "--pool=solo", "--prefetch-multiplier=1", "--loglevel=INFO"],
            cwd=ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    deadline = time.monotonic() + 180
    while not all(" ready." in (work / f"{n}.log").read_text(errors="replace") for n in ("gpu1", "gpu2", "cpu")):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            stop_workers(procs)
            raise SystemExit(f"Celery workers did not start; see {work}/*.log")
        time.sleep(0.5)
    return procs


def stop_workers(procs: list[subprocess.Popen]) -> None:
    import signal

    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def end_to_end(limit: int, work: Path, src: Path = ROOT) -> float:
    """`sparklio demo` in a fresh home with the gpu pool at `limit`, from the given source tree."""
    home = work / f"e2e-{limit}-{src.name}"
    (home / "dagster").mkdir(parents=True)
    config = (DATA / "dagster.yaml").read_text(encoding="utf-8").replace("default_limit: 4", f"default_limit: {limit}")
    (home / "dagster" / "dagster.yaml").write_text(config, encoding="utf-8")
    env = {**os.environ, "DAGSTER_HOME": str(home / "dagster"), "SPARKLIO_HOME": str(home),
           "PYTHONPATH": str(src), "SPARKLIO_LLM": "off", "SPARKLIO_TTS": "off"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "sparklio_assets.cli", "demo", "--out", str(home)], cwd=src,
                            env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"demo failed ({src}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    print("\n".join("    " + line for line in result.stdout.splitlines() if "✓" in line), flush=True)
    return elapsed


def _table(seconds: dict[int, list[float]], what: str) -> None:
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    for limit, value in medians.items():
        print(f"{what}, pool {limit}: {value:.2f} s (runs: {', '.join(f'{s:.2f}' for s in seconds[limit])})")
    if 1 in medians and 2 in medians:
        print(f"{what}: pool 1 / pool 2 = {medians[1] / medians[2]:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--limits", default="1,2", help="pool limits to compare (default 1,2)")
    parser.add_argument("--end-to-end", action="store_true", help="also time `sparklio demo` at each --e2e-limits")
    parser.add_argument("--e2e-limits", default="1,2", help="pool limits for the end-to-end demo (default 1,2)")
    parser.add_argument("--baseline-src", type=Path, help="a source tree to time `sparklio demo` from as 'before'")
    parser.add_argument("--skip-scenes", action="store_true")
    parser.add_argument("--celery", action="store_true", help="the scene stage through Celery workers instead")
    args = parser.parse_args()
    limits = [int(x) for x in args.limits.split(",")]
    with tempfile.TemporaryDirectory(prefix="sparklio-bench-") as tmp:
        work = Path(tmp)
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        if args.celery:
            # dagster-celery builds its `execute_plan` task again for every run of this one process;
            # Celery then warns that the name is taken, by what is the same callable: noise here.
            from celery.exceptions import DuplicateTaskNameWarning

            warnings.simplefilter("ignore", DuplicateTaskNameWarning)
            redis = os.environ.get("SPARKLIO_TEST_REDIS", "redis://127.0.0.1:6379")
            os.environ.update({"SPARKLIO_EXECUTOR": "celery", "SPARKLIO_CELERY_BROKER": f"{redis}/0",
                               "SPARKLIO_CELERY_BACKEND": f"{redis}/1",
                               "SPARKLIO_CELERY_PREFIX": f"sparklio-bench-{os.getpid()}:",
                               "SPARKLIO_HOME": str(work / "scenes" / "home"),
                               "DAGSTER_HOME": str(work / "scenes" / "dagster")})
            (work / "scenes" / "dagster").mkdir(parents=True)
            (work / "scenes" / "dagster" / "dagster.yaml").write_text((DATA / "dagster.yaml").read_text())
            workers = start_celery_workers(work)
            try:
                _table(scene_stage(limits, args.runs, work / "scenes"), "scene stage (5 scenes, Celery, 2 gpu workers)")
            finally:
                stop_workers(workers)
                import redis as redis_client

                for db in (0, 1):  # this run's queues and results only
                    client = redis_client.Redis.from_url(f"{redis}/{db}")
                    for key in client.scan_iter(match=f"*{os.environ['SPARKLIO_CELERY_PREFIX']}*"):
                        client.delete(key)
        elif not args.skip_scenes:
            _table(scene_stage(limits, args.runs, work / "scenes"), "scene stage (5 scenes)")
        if args.end_to_end or args.baseline_src:
            e2e: dict[int, list[float]] = {int(x): [] for x in args.e2e_limits.split(",")}
            before: list[float] = []
            for _ in range(args.runs):
                if args.baseline_src:
                    before.append(end_to_end(1, work, args.baseline_src.resolve()))
                    print(f"  before ({args.baseline_src}): demo {before[-1]:.2f} s", flush=True)
                for limit in e2e:
                    e2e[limit].append(end_to_end(limit, work))
                    print(f"  pool {limit}: demo {e2e[limit][-1]:.2f} s", flush=True)
            if before:
                print(f"15 s demo end to end, before: {statistics.median(before):.2f} s")
            _table(e2e, "15 s demo end to end")
        print(f"load average at end: {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Carry a sensor-made job through the graph with the daemon: storyboard → every scene → final_video.

A job takes 2 + N runs because a run targets one partitions definition (see jobs.py): the
storyboard [job], one run per scene [job × scene], the final video [job]. For jobs the campaign
sensor or the recurring schedule made (runs tagged `sparklio/chain=auto`), this sensor reads the
instance's run-success events since its cursor and requests what jobs.next_stages says each
finished run unlocks (the same rule the CLI and the API's worker follow):

    storyboard_job succeeded → one scene_job run per scene *in that job's storyboard*
    scene_job succeeded      → when every scene of the same chain has succeeded, final_video_job
                               (requested once: by the scene run that finished last)

and, for a scene re-made from the Dagster UI (tagged `sparklio/remake=ui` by the asset itself),
final_video_job for its job, so one launch in the UI ends in a new ad.

Why a sensor over run-success events, not declarative automation or an asset sensor: the scene
dimension holds as many scenes as the longest storyboard so far (partitions.py), and how many of
those a job has is known only from its storyboard file. AutomationCondition.eager() on the
multi-partitioned assets would ask for every cell of every job (the missing ones fail by design),
and would also chase every manual re-materialization in the UI and every in-process CLI run; an
asset sensor sees materializations, not the run tags that say a job is chained. This sensor sees
exactly the runs that finished, reads the storyboard to know the scenes, follows only runs tagged
for chaining (the CLI and the UI stay in charge of their own runs), and dedupes with run keys, so
replaying events is harmless. (Dagster's @run_status_sensor does the same but acts on one finished
run per tick; this one handles every run that finished since the last tick, which a 100-brief
campaign needs.) It needs only the daemon, and `next_run_requests` is a plain function that tests
call without one.
"""

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from resources.artifacts import ArtifactStore
from sparklio_assets import liveness, store_paths
from sparklio_assets.jobs import (
    AUTO,
    CARRIED_TAGS,
    CHAIN_ID_TAG,
    CHAIN_TAG,
    FINAL_VIDEO_JOB,
    JOB_TAG,
    REMAKE_TAG,
    SCENE_JOB,
    SCENE_TAG,
    STORYBOARD,
    STORYBOARD_JOB,
    UI,
    next_stages,
)


def _tags(run: DagsterRun, chain_id: str) -> dict[str, str]:
    return {**{k: run.tags[k] for k in CARRIED_TAGS if k in run.tags}, CHAIN_ID_TAG: chain_id}


def _scenes_done_by(run: DagsterRun, chain_id: str, job_id: str, instance: DagsterInstance) -> set[str] | None:
    """The chain's scenes that had succeeded when `run` did (its own included). Several scene runs
    may finish together and each be seen complete: ordering by (end time, run id) leaves exactly
    one of them, the last, to see every scene done (the run key is a second guard)."""
    records = instance.get_run_records(RunsFilter(job_name=SCENE_JOB, statuses=[DagsterRunStatus.SUCCESS],
                                                  tags={CHAIN_ID_TAG: chain_id, JOB_TAG: job_id}))
    order = {r.dagster_run.run_id: (r.end_time or 0.0, r.dagster_run.run_id) for r in records}
    if run.run_id not in order:
        return None
    return {r.dagster_run.tags.get(SCENE_TAG) for r in records if order[r.dagster_run.run_id] <= order[run.run_id]}


def _reassembly(run: DagsterRun, store: ArtifactStore) -> list[RunRequest]:
    """A scene re-made from the Dagster UI (assets.SceneRemake tags it): the job's final video
    again, once every scene of its storyboard has been made."""
    job_id = run.tags[JOB_TAG]
    if liveness.is_held(store.job_dir(job_id)):
        return []  # a writer (the API's worker, a sparklio command) owns the job and assembles itself
    scene_ids = [scene.id for scene in store_paths.read_storyboard(store, job_id).scenes]
    made = {s for s in scene_ids if store_paths.motion_path(store, job_id, s).is_file()}
    if made != set(scene_ids):
        return []
    return [RunRequest(job_name=FINAL_VIDEO_JOB, partition_key=job_id, run_key=f"remake:{run.run_id}",
                       tags={JOB_TAG: job_id, REMAKE_TAG: UI})]


def next_run_requests(run: DagsterRun, instance: DagsterInstance, store: ArtifactStore) -> list[RunRequest]:
    """What `run` (just succeeded) unlocks by jobs.next_stages, for a chained job, and the
    re-assembly after a scene re-made from the UI: nothing for anything else."""
    if run.job_name == SCENE_JOB and run.tags.get(REMAKE_TAG) == UI and JOB_TAG in run.tags:
        return _reassembly(run, store)
    if run.tags.get(CHAIN_TAG) != AUTO or JOB_TAG not in run.tags:
        return []
    job_id = run.tags[JOB_TAG]
    if liveness.is_held(store.job_dir(job_id)):
        return []  # one writer per job: another (the API's worker, a sparklio command) has taken it over
    if run.job_name == STORYBOARD_JOB:
        chain_id, finished, done = run.run_id, STORYBOARD, {STORYBOARD}
    elif run.job_name == SCENE_JOB and run.tags.get(CHAIN_ID_TAG):
        chain_id, finished = run.tags[CHAIN_ID_TAG], run.tags.get(SCENE_TAG)
        scenes = _scenes_done_by(run, chain_id, job_id, instance)
        if scenes is None:
            return []
        done = {STORYBOARD, *scenes}
    else:
        return []
    scene_ids = [scene.id for scene in store_paths.read_storyboard(store, job_id).scenes]
    return [RunRequest(job_name=stage.job_name, partition_key=stage.partition_key,
                       run_key=f"{chain_id}:{stage.name}", tags=_tags(run, chain_id))
            for stage in next_stages(job_id, scene_ids, done, finished)]


def build_chain_sensor(scene_job, final_video_job, minimum_interval_seconds: int = 10, batch: int = 500):
    @sensor(name="job_chain_sensor", jobs=[scene_job, final_video_job],
            minimum_interval_seconds=minimum_interval_seconds,
            default_status=DefaultSensorStatus.RUNNING,
            description="Carries campaign jobs on (storyboard → each scene → final_video) and re-assembles "
                        "the final video after a scene is re-made from the UI.")
    def job_chain_sensor(context: SensorEvaluationContext, store: ArtifactStore):
        instance = context.instance
        result = instance.fetch_run_status_changes(DagsterEventType.RUN_SUCCESS, limit=batch, cursor=context.cursor,
                                                   ascending=True)
        requests = []
        for record in result.records:
            run = instance.get_run_by_id(record.run_id)
            if run is None:
                continue
            for request in next_run_requests(run, instance, store):
                context.log.info(f"{run.job_name} {run.run_id[:8]} ({run.tags.get(JOB_TAG)}) succeeded → "
                                 f"{request.job_name} {request.partition_key}")
                requests.append(request)
        cursor = result.cursor if result.records else context.cursor
        if not requests:
            return SensorResult(skip_reason=SkipReason(f"{len(result.records)} finished run(s), none to carry on"),
                                cursor=cursor)
        return SensorResult(run_requests=requests, cursor=cursor)

    return job_chain_sensor

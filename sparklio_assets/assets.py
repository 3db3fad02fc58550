"""The asset graph: storyboard[job] → scene_key_image[job, scene] → scene_motion_clip[job, scene]
→ final_video[job], with storyboard[job] → soundtrack[job] → final_video[job] beside the scenes.

Assets write their media through the ArtifactStore (one folder per job) and return a
MaterializeResult whose metadata says which engine made what, how long it took, where the files
are, and a preview the Dagster UI can show. Data flows through files, not an IO manager, so that
re-materializing one scene and then final_video re-assembles the job from its current scenes.
"""


import base64
import os
import shutil
import time
from pathlib import Path

import cv2
from dagster import (
    AssetDep,
    AssetExecutionContext,
    Backoff,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)
from dagster._core.errors import DagsterInvalidPropertyError  # not exported at the top level
from PIL import Image
from pydantic import Field, ValidationError

from resources.artifacts import ArtifactStore
from resources.comfyui import ComfyError, ComfyUIResource
from resources.comfyui.preflight import PreflightReport
from resources.ffmpeg import FFmpegError, FFmpegRunner
from resources.llm import LLMRouter, summarize_calls
from resources.tts import TTSResource

from . import liveness, previews, segments
from . import store_paths as layout
from .comfy_engines import layer_path, make_key_image, make_motion_clip, missing_for, packshot_of, use_comfy
from .comfy_engines import preflight as comfy_preflight
from .files import atomic_path, write_model
from .formats import MASTER, SIZES, file_tag, renditions_for
from .image_engine import ENGINE as BUILTIN_IMAGE_ENGINE
from .image_engine import render_key_image
from .language import language_of
from .models import (
    FPS,
    AudioSummary,
    JobSpec,
    KeyImageRecord,
    MotionRecord,
    Scene,
    Storyboard,
    VideoRecord,
    describe_validation_error,
)
from .overlay import HEIGHT, WIDTH, render_overlay
from .partitions import JOBS, SCENES, SCENES_TO_JOB, register_scenes
from .render import SceneInput, frames_i420
from .renditions import relaid_inputs
from .soundtrack import SoundtrackRecord
from .soundtrack import build as build_soundtrack
from .tags import GPU_WAIT_TAG, JOB_TAG, REMAKE_TAG, UI
from .versions import CODE_VERSIONS, content_version
from .video_probe import VideoInvalid, verify

# Spec 8.1: generation steps get 3 tries with exponential backoff.
GENERATION_RETRY = RetryPolicy(max_retries=2, delay=5, backoff=Backoff.EXPONENTIAL)
# The scene steps hold a slot of the `gpu` pool each (its limit: how many run at once, fleet-wide).
# With the Celery executor (SPARKLIO_EXECUTOR=celery) they go to the `gpu` queue, served by workers
# on GPU machines; every other step goes to the default `dagster` queue.
GPU_POOL = "gpu"
GPU_QUEUE = {"dagster-celery/queue": "gpu"}


def served_image(store: ArtifactStore, path: Path, caption: str) -> MetadataValue:
    """A picture shown in place in the UI's metadata table. The UI renders markdown in place only
    under 1,000 characters (longer, such as embedded_image's data: URI, behind "[Show Markdown]"),
    so this links the file on the media server that `sparklio ui` runs (ArtifactStore.url)."""
    return MetadataValue.md(f"![{caption}]({store.url(path)})\n\n{caption}")


def embedded_image(path: Path, caption: str) -> MetadataValue:
    """The same picture inside the event log (a data: URI): shown without the media server, one click away."""
    kind = {".jpg": "jpeg", ".webp": "webp"}[path.suffix]
    data = base64.b64encode(path.read_bytes()).decode()
    return MetadataValue.md(f"![{caption}](data:image/{kind};base64,{data})\n\n{caption}")


def _scene_context(context: AssetExecutionContext, store: ArtifactStore) -> tuple[JobSpec, Storyboard, str]:
    keys = context.partition_key.keys_by_dimension
    job_id, scene_id = keys["job"], keys["scene"]
    job = layout.read_job(store, job_id)
    storyboard = layout.read_storyboard(store, job_id)
    if why := storyboard.lacks(job_id, [scene_id]):
        raise Failure(description=why, allow_retries=False)
    return job, storyboard, scene_id


@asset(partitions_def=JOBS, group_name="ad", kinds={"python"}, code_version=CODE_VERSIONS["storyboard"],
       description="The scene plan (spec 3.1) written from the job's brief and brand kit by the LLM router "
                   "(Qwen on Ollama, GPT-4o, Claude; spec 2.1) or, when none answers, the built-in planner.")
def storyboard(context: AssetExecutionContext, store: ArtifactStore, llm: LLMRouter) -> MaterializeResult:
    started = time.perf_counter()
    job = layout.read_job(store, context.partition_key)
    plan = llm.plan(job, log=context.log)
    write_model(layout.storyboard_path(store, job.job_id), plan)
    register_scenes(context.instance, [s.id for s in plan.scenes])  # the scene cells this job has
    seconds = time.perf_counter() - started
    calls = summarize_calls(plan.metadata.llm_calls)
    context.log.info(f"storyboard for job {job.job_id}: {len(plan.scenes)} scenes by {plan.metadata.planner_engine}")
    rows = "\n".join(f"| {s.id} | {s.purpose} | {s.duration_seconds:g} s | {s.onscreen_text} | {s.motion_style} |"
                     for s in plan.scenes)
    call_rows = "\n".join(f"| {c['role']} | {c['provider']}:{c['model']} | {c['outcome']} | {c['seconds']:g} s | "
                          f"{c['input_tokens']} / {c['output_tokens']} | ${c['cost_usd']:.4f} |"
                          for c in plan.metadata.llm_calls)
    calls_md = (f"\n\n| role | model | outcome | latency | tokens in / out | cost |\n|---|---|---|---|---|---|\n"
                f"{call_rows}" if call_rows else "")
    return MaterializeResult(data_version=DataVersion(content_version(layout.storyboard_path(store, job.job_id))),
                             metadata={
        "title": plan.title,  # with the readable job id (jobs.readable_job_id): how a person finds the job
        "product": job.brief.product,
        "engine": plan.metadata.planner_engine,
        "scenes": len(plan.scenes),
        "duration_seconds": plan.duration_seconds,
        "estimated_cost": plan.metadata.estimated_cost,
        "cost_usd": calls["cost_usd"],
        "seconds": round(seconds, 3),
        "llm_seconds": calls["seconds"],
        "llm_input_tokens": calls["input_tokens"],
        "llm_output_tokens": calls["output_tokens"],
        "llm_calls": MetadataValue.json(plan.metadata.llm_calls),
        "path": MetadataValue.path(str(layout.storyboard_path(store, job.job_id))),
        "preview": MetadataValue.md(f"**{plan.title}**\n\n| scene | purpose | length | on-screen text | motion |\n"
                                    f"|---|---|---|---|---|\n{rows}{calls_md}"),
    })


class SceneRemake(Config):
    """What the launchpad offers when one scene is re-made from the Dagster UI (scene_job, one
    (job, scene) cell). Empty fields keep what the scene has. Copy, prompt and motion changes are
    written to the job's storyboard first (checked like the API's scene edits, under the job's
    lease); the chain sensor then re-assembles the final video."""

    onscreen_text: str | None = Field(default=None, description="new on-screen copy (at most 40 characters)")
    narration: str | None = Field(default=None, description="new narration line")
    image_prompt: str | None = Field(default=None, description="new English text-to-image prompt")
    motion_style: str | None = Field(default=None, description="slow zoom-in | parallax movement | rotation + "
                                                                 "glow effect | dynamic transitions | text animation")
    seed: int | None = Field(default=None, description="another picture: any whole number; empty keeps the "
                                                        "scene's current one (ComfyUI draws a new image; the "
                                                        "built-in engine re-arranges its shapes, copy, logo and "
                                                        "packshot keep their places)")

    def changes(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump(exclude={"seed"}).items() if v is not None}


def _from_the_ui(context: AssetExecutionContext, store: ArtifactStore, config: SceneRemake) -> None:
    """A scene run launched from the Dagster UI gets the job's tag (so the API and the CLI see it)
    and the remake tag (so the chain sensor re-assembles), and applies the launchpad's edits."""
    keys = context.partition_key.keys_by_dimension
    job_id, scene_id = keys["job"], keys["scene"]
    try:
        tags = context.run.tags
    except DagsterInvalidPropertyError:  # invoked directly (tests): there is no run to tag
        tags = {JOB_TAG: job_id}
    if JOB_TAG not in tags:  # the CLI, the API's worker and the sensors tag their own runs
        context.instance.add_run_tags(context.run.run_id, {JOB_TAG: job_id, REMAKE_TAG: UI})
    if not config.changes():
        return
    with liveness.hold(store.job_dir(job_id), job_id, "dagster-ui", context.instance, store):
        plan = layout.read_storyboard(store, job_id)
        ids = [s.id for s in plan.scenes]
        if scene_id not in ids:
            return  # _scene_context names the missing scene
        data = plan.model_dump()
        data["scenes"][ids.index(scene_id)].update(config.changes())
        try:
            edited = Storyboard.model_validate(data)
        except ValidationError as error:
            raise Failure(description=f"{scene_id}: the launchpad's edit is refused: "
                                      f"{describe_validation_error(error)}", allow_retries=False) from None
        write_model(layout.storyboard_path(store, job_id), edited)
    context.log.info(f"{scene_id}: storyboard edited from the launchpad: {', '.join(config.changes())}")


def _key_seed(store: ArtifactStore, job_id: str, scene_id: str, seed: int | None) -> str:
    """The key image's seed: the launchpad's, else the one the scene was last made with, else the
    scene's own (the same inputs make the same picture)."""
    own = f"{job_id}/{scene_id}"
    if seed is not None:
        return f"{own}/seed-{seed}"
    previous = layout.key_image_record_path(store, job_id, scene_id)
    if previous.is_file():
        try:
            return store.read(previous, KeyImageRecord).seed or own
        except (ValueError, OSError):
            return own
    return own


@asset(partitions_def=SCENES, deps=[storyboard], group_name="ad", pool=GPU_POOL, kinds={"python"},
       retry_policy=GENERATION_RETRY, op_tags=GPU_QUEUE,
       code_version=CODE_VERSIONS["scene_key_image"],
       description="The scene's 1080x1920 key image (built-in engine, or ComfyUI when configured). Launched "
                   "from the UI, its config edits the scene's copy, prompt or motion, or asks for another seed.")
def scene_key_image(context: AssetExecutionContext, config: SceneRemake, store: ArtifactStore,
                    comfy: ComfyUIResource) -> MaterializeResult:
    _from_the_ui(context, store, config)
    job, plan, scene_id = _scene_context(context, store)
    scene = plan.scene(scene_id)
    seed = _key_seed(store, job.job_id, scene_id, config.seed)
    started = time.perf_counter()
    path = layout.key_image_path(store, job.job_id, scene_id)
    if use_comfy(job.quality, comfy):
        record = _comfy_key_image(context, comfy, store, job, scene, path, seed)
        with Image.open(path) as generated:
            image = generated.convert("RGB")
    else:
        if job.quality != "draft":
            context.log.info(f"{scene_id}: quality {job.quality} but no ComfyUI URL configured; built-in engine")
        if config.seed is not None:
            context.log.info(f"{scene_id}: seed {config.seed}: the built-in engine arranges the scene's shapes by "
                             "it; the copy, the logo and the product keep their designed places")
        image = render_key_image(scene, job.brand_kit, job.brief.product, seed=seed)
        with atomic_path(path) as tmp:
            image.save(tmp, "PNG")
        record = KeyImageRecord(scene_id=scene_id, path=str(path), engine=BUILTIN_IMAGE_ENGINE,
                                seconds=round(time.perf_counter() - started, 3), width=image.width, height=image.height)
    record = record.model_copy(update={"seed": seed})
    write_model(layout.key_image_record_path(store, job.job_id, scene_id), record)
    context.log.info(f"{scene_id}: key image by {record.engine} in {record.seconds:.2f} s")
    layer = layer_path(path)
    thumb = previews.write_still(image, layout.key_preview_path(store, job.job_id, scene_id))
    caption = f"{scene_id} · {scene.purpose} · {record.engine}"
    return MaterializeResult(data_version=DataVersion(content_version(path, layer if layer.is_file() else None)),
                             metadata={
        "preview": served_image(store, thumb, caption),
        "engine": record.engine,
        "seconds": record.seconds,
        "path": MetadataValue.path(record.path),
        "prompt": scene.image_prompt,
        **({"note": record.note} if record.note else {}),
        "preview_embedded": embedded_image(thumb, caption),
    })


def _comfy_key_image(context: AssetExecutionContext, comfy: ComfyUIResource, store: ArtifactStore, job: JobSpec,
                     scene: Scene, path: Path, seed: str) -> KeyImageRecord:
    """ComfyUI key image, after the job's worker preflight. An unready worker fails the step at
    once with the list of what is missing (or, with `key_image_fallback: builtin`, makes the
    built-in image and records why). The client itself waits for a down worker (spec 8.2), so
    any ComfyError here is final and its message is the root cause: no blind step retries."""
    scene_id = scene.id
    report = _comfy_preflight(context, comfy, store, job)
    missing = missing_for(report, job.quality, "key image")
    if missing or not report.version_ok:
        reason = (f"GPU worker {comfy.base_url} is not ready: missing {report.summary(missing)} "
                  "(see `sparklio worker check`)")
        if comfy.key_image_fallback != "builtin":
            raise Failure(description=f"{scene_id}: {reason}", allow_retries=False)
        context.log.warning(f"{scene_id}: {reason}; built-in key image (key_image_fallback: builtin)")
        started = time.perf_counter()
        image = render_key_image(scene, job.brand_kit, job.brief.product, seed=seed)
        with atomic_path(path) as tmp:
            image.save(tmp, "PNG")
        layer_path(path).unlink(missing_ok=True)
        return KeyImageRecord(scene_id=scene_id, path=str(path), engine=BUILTIN_IMAGE_ENGINE,
                              seconds=round(time.perf_counter() - started, 3), width=image.width,
                              height=image.height, note=f"fallback: {reason}")
    packshot = packshot_of(job.brand_kit)
    reference = None  # premium without a packshot: scene_001's picture steers the others' style
    first = layout.key_image_record_path(store, job.job_id, "scene_001")
    if job.quality == "premium" and not packshot and scene_id != "scene_001" and first.is_file():
        first_record = store.read(first, KeyImageRecord)
        reference = Path(first_record.path) if first_record.engine.startswith("comfyui") else None
    try:
        return make_key_image(comfy, scene, job.brand_kit, job.brief.product, seed=seed,
                              out_path=path, quality=job.quality, job_id=job.job_id, style_reference=reference,
                              product_image=packshot[0] if packshot else None,
                              product_mask=packshot[1] if packshot else None,
                              log=context.log.info, on_wait=_comfy_wait_hook(context, scene_id))
    except ComfyError as error:
        raise Failure(description=f"{scene_id}: ComfyUI could not make the key image: {type(error).__name__}: "
                                  f"{error}", allow_retries=False) from error


@asset(partitions_def=SCENES, deps=[scene_key_image], group_name="ad", pool=GPU_POOL, kinds={"python"},
       retry_policy=GENERATION_RETRY, op_tags=GPU_QUEUE,
       code_version=CODE_VERSIONS["scene_motion_clip"],
       description="How the scene moves (Ken Burns or an AnimateDiff clip) and its overlay of copy and brand elements.")
def scene_motion_clip(context: AssetExecutionContext, store: ArtifactStore,
                      comfy: ComfyUIResource) -> MaterializeResult:
    job, plan, scene_id = _scene_context(context, store)
    scene = plan.scene(scene_id)
    started = time.perf_counter()
    key = store.read(layout.key_image_record_path(store, job.job_id, scene_id), KeyImageRecord)
    with Image.open(key.path) as picture:  # the overlay plates copy only where this picture needs it
        backdrop = picture.convert("RGB").resize((WIDTH, HEIGHT))
    overlay, placed = render_overlay(scene, job.brand_kit, job.brief.product, language_of(job.brief), backdrop=backdrop)
    overlay_path = layout.overlay_path(store, job.job_id, scene_id)
    with atomic_path(overlay_path) as tmp:
        overlay.save(tmp, "PNG")
    motion = MotionRecord(scene_id=scene_id, engine="kenburns", motion_style=scene.motion_style,
                          duration_seconds=scene.duration_seconds, image_path=key.path)
    if use_comfy(job.quality, comfy):
        motion = _comfy_motion(context, comfy, store, job, scene, motion)
    preview_path = layout.preview_path(store, job.job_id, scene_id)
    first_frame = previews.write_scene_preview(SceneInput(scene.frames, motion, overlay_path), preview_path)
    motion = motion.model_copy(update={"preview_path": str(preview_path),
                                       "seconds": round(time.perf_counter() - started, 3)})
    write_model(layout.motion_path(store, job.job_id, scene_id), motion)
    context.log.info(f"{scene_id}: {motion.engine} '{motion.motion_style}', {scene.frames} frames")
    picture = Path(motion.clip_path or motion.image_path)
    caption = f"{scene_id} · {motion.engine} · {motion.motion_style} (animated)"
    first_frame = previews.write_still(first_frame, layout.first_frame_path(store, job.job_id, scene_id))
    return MaterializeResult(data_version=DataVersion(content_version(
        motion.engine, motion.motion_style, f"{motion.duration_seconds:g}", picture, overlay_path)), metadata={
        "preview": served_image(store, preview_path, caption),
        "first_frame": served_image(store, first_frame, f"{scene_id}: first frame"),
        "engine": motion.engine,
        "motion_style": motion.motion_style,
        "frames": scene.frames,
        "fps": FPS,
        "seconds": motion.seconds,
        "fallback_reason": motion.fallback_reason or "",
        **({"clip_path": MetadataValue.path(motion.clip_path)} if motion.clip_path else {}),
        "text_boxes": [vars(b) for b in placed.text_boxes],
        "preview_path": MetadataValue.path(str(preview_path)),
        "preview_embedded": embedded_image(preview_path, caption),
    })


def _comfy_wait_hook(context: AssetExecutionContext, scene_id: str):
    """Tell the user (log, and the run's tag the status reads) that the step waits for the worker."""
    def hook(reason: str) -> None:
        if reason:
            context.log.warning(f"{scene_id}: waiting_for_gpu_worker: {reason}")
        try:
            context.instance.add_run_tags(context.run.run_id, {GPU_WAIT_TAG: reason[:400]})
        except Exception:
            pass
    return hook


def _comfy_preflight(context: AssetExecutionContext, comfy: ComfyUIResource, store: ArtifactStore,
                     job: JobSpec) -> PreflightReport:
    """The worker check, once per job: a ready report is kept in the job's folder and reused by
    the other scenes; an unready one is checked again next time (the user may have fixed it)."""
    saved = store.job_dir(job.job_id) / "comfy_preflight.json"
    if saved.is_file():
        report = store.read(saved, PreflightReport)
        if report.ready and report.url == comfy.base_url.rstrip("/"):
            return report
    try:
        report = comfy_preflight(comfy, log=context.log.info, on_wait=_comfy_wait_hook(context, "preflight"))
    except ComfyError as error:
        raise Failure(description=f"GPU worker preflight: {type(error).__name__}: {error}",
                      allow_retries=False) from error
    write_model(saved, report)
    context.log.info(f"GPU worker preflight ({comfy.base_url}): "
                     + ("ready" if report.ready else f"missing {report.summary()}"))
    return report


def _comfy_motion(context: AssetExecutionContext, comfy: ComfyUIResource, store: ArtifactStore, job: JobSpec,
                  scene: Scene, kenburns: MotionRecord) -> MotionRecord:
    """AnimateDiff on ComfyUI; an unready worker or any failure falls back to Ken Burns with the
    reason recorded (spec 8.2). The client has already waited for a down worker."""
    scene_id = scene.id
    try:
        report = _comfy_preflight(context, comfy, store, job)
    except Failure as failure:
        reason = failure.description or "GPU worker preflight failed"
    else:
        missing = missing_for(report, job.quality, "motion")
        reason = f"GPU worker not ready for AnimateDiff: missing {report.summary(missing)}" if missing else ""
    if not reason:
        try:
            return make_motion_clip(comfy, scene, Path(kenburns.image_path),
                                    layout.clip_path(store, job.job_id, scene_id),
                                    seed=f"{_key_seed(store, job.job_id, scene_id, None)}/motion",
                                    quality=job.quality, job_id=job.job_id,
                                    log=context.log.info, on_wait=_comfy_wait_hook(context, scene_id))
        except ComfyError as error:
            reason = f"AnimateDiff failed: {type(error).__name__}: {error}"
    reason = reason if len(reason) <= 400 else reason[:397] + "..."
    context.log.warning(f"{scene_id}: {reason}; falling back to Ken Burns (spec 8.2)")
    return kenburns.model_copy(update={"fallback_reason": reason})


@asset(partitions_def=JOBS, deps=[storyboard], group_name="ad", kinds={"python"},
       code_version=CODE_VERSIONS["soundtrack"],
       description="The ad's soundtrack: a music bed for the storyboard's bgm_mood marking each scene change, "
                   "the scenes' narration (OpenAI TTS, when configured) with the music ducked under it, mixed "
                   "to -14 LUFS, true peak ≤ -1 dBTP.")
def soundtrack(context: AssetExecutionContext, store: ArtifactStore, tts: TTSResource,
               ffmpeg: FFmpegRunner) -> MaterializeResult:
    job_id = context.partition_key
    job, plan = layout.read_job(store, job_id), layout.read_storyboard(store, job_id)
    record = build_soundtrack(job, plan, layout.soundtrack_path(store, job_id), tts, ffmpeg, log=context.log.warning)
    write_model(layout.soundtrack_record_path(store, job_id), record)
    context.log.info(f"soundtrack: {record.music_engine} '{record.mood}' {record.bpm:g} BPM; narration "
                     f"{record.narration_engine} ({len(record.narration)} lines); {record.loudness_lufs:.1f} LUFS")
    rows = "\n".join(f"| {line.scene_id} | {line.start:.2f} s | {line.seconds:.2f} s | {line.text} |"
                     for line in record.narration)
    return MaterializeResult(metadata={
        "music_engine": record.music_engine,
        "mood": record.mood,
        "bpm": record.bpm,
        "narration_engine": record.narration_engine,
        "narration_lines": len(record.narration),
        "loudness_lufs": record.loudness_lufs,
        "true_peak_dbtp": record.true_peak_dbtp,
        "duration": record.duration,
        "cost_usd": record.cost_usd,
        "seconds": record.seconds,
        "notes": MetadataValue.json(record.notes),
        "path": MetadataValue.path(record.path),
        **({"narration": MetadataValue.md("| scene | at | length | line |\n|---|---|---|---|\n" + rows)}
           if rows else {}),
    })


@asset(partitions_def=JOBS, deps=[AssetDep(scene_motion_clip, partition_mapping=SCENES_TO_JOB), soundtrack],
       group_name="ad", code_version=CODE_VERSIONS["final_video"],
       kinds={"ffmpeg"}, description="The finished 1080x1920 H.264 ad, its JPEG thumbnail, and 4:5 / 1:1 / 16:9 "
                                     "renditions for the feed channels the brief names, all with the soundtrack.")
def final_video(context: AssetExecutionContext, store: ArtifactStore, ffmpeg: FFmpegRunner) -> MaterializeResult:
    started = time.perf_counter()
    job_id = context.partition_key
    plan = layout.read_storyboard(store, job_id)
    missing = [s.id for s in plan.scenes if not layout.motion_path(store, job_id, s.id).is_file()]
    if missing:
        raise Failure(description=f"job {job_id}: scenes {', '.join(missing)} are not made yet; "
                                  "materialize scene_motion_clip for them first", allow_retries=False)
    motions = [store.read(layout.motion_path(store, job_id, s.id), MotionRecord) for s in plan.scenes]
    keys = [store.read(layout.key_image_record_path(store, job_id, s.id), KeyImageRecord) for s in plan.scenes]
    scenes = [SceneInput(s.frames, m, layout.overlay_path(store, job_id, s.id)) for s, m in zip(plan.scenes, motions)]
    sound = store.read(layout.soundtrack_record_path(store, job_id), SoundtrackRecord)
    if abs(sound.duration - plan.duration_seconds) > 1 / FPS:
        raise Failure(description=f"job {job_id}: the soundtrack is {sound.duration:g} s but the storyboard "
                                  f"{plan.duration_seconds:g} s; materialize soundtrack again", allow_retries=False)
    audio = Path(sound.path)
    job = layout.read_job(store, job_id)

    video_path, thumb_path = layout.video_path(store, job_id), layout.thumbnail_path(store, job_id)
    # Everything new is made in a staging folder and probed there; only a complete, valid set
    # replaces the published one (issue 14: a video is replaced only by a better one).
    staging = store.final_dir(job_id) / ".next"
    shutil.rmtree(staging, ignore_errors=True)
    sizes = {MASTER: SIZES[MASTER], **{fmt: SIZES[fmt] for fmt in renditions_for(job.brief.channels)}}
    finals = {MASTER: video_path, **{fmt: layout.rendition_path(store, job_id, fmt) for fmt in sizes if fmt != MASTER}}
    staged = {fmt: staging / path.name for fmt, path in finals.items()}
    segment_dir = segments.folder(store.job_dir(job_id))
    # Every rendition gets its own layout (renditions.py).
    layouts = {fmt: relaid_inputs(job, plan, scenes, keys, fmt,
                                  store.job_dir(job_id) / "renditions" / file_tag(fmt))
               for fmt in sizes if fmt != MASTER}
    try:
        assembly = segments.assemble(scenes, sizes, staged, segment_dir, ffmpeg, audio,
                                     context=job.brand_kit.model_dump_json(), log=context.log.warning,
                                     layouts=layouts)
        thumbnail = _thumbnail(scenes)
        thumbnail.save(staging / thumb_path.name, "JPEG", quality=90)
        ad_preview = staging / layout.ad_preview_path(store, job_id).name
        previews.write_ad_preview([Path(m.preview_path) for m in motions if m.preview_path
                                   and Path(m.preview_path).is_file()] or [staging / thumb_path.name], ad_preview)
        total = sum(s.frames for s in scenes)
        infos = {fmt: verify(staged[fmt], *sizes[fmt], total, FPS) for fmt in sizes}
        _verify_thumbnail(staging / thumb_path.name)
    except (FFmpegError, VideoInvalid) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise Failure(description=f"job {job_id}: the new video was not made, the published one is kept: {error}",
                      allow_retries=False) from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    renditions = {fmt: str(path) for fmt, path in finals.items() if fmt != MASTER}
    for fmt in renditions:
        context.log.info(f"rendition {fmt} ({sizes[fmt][0]}x{sizes[fmt][1]}) for the brief's channels: {finals[fmt]}")
    context.log.info(f"final_video: {assembly.summary()}")

    info = infos[MASTER]
    engines = {"storyboard": plan.metadata.planner_engine}
    for key, motion in zip(keys, motions):
        engines[f"{key.scene_id}.image"] = key.engine
        engines[f"{key.scene_id}.motion"] = motion.engine + (f" (fallback: {motion.fallback_reason})"
                                                             if motion.fallback_reason else "")
    engines["music"] = f"{sound.music_engine} ({sound.mood}, {sound.bpm:g} BPM)"
    engines["narration"] = sound.narration_engine
    engines["assembly"] = (f"ffmpeg libx264 {ffmpeg.preset} + aac; {len(scenes)} segments per format "
                           f"joined by stream copy")
    audio_summary = AudioSummary(codec=info.audio_codec or "none", sample_rate=info.audio_sample_rate or 0,
                                 channels=info.audio_channels or 0, loudness_lufs=sound.loudness_lufs,
                                 true_peak_dbtp=sound.true_peak_dbtp, music=engines["music"],
                                 narration=sound.narration_engine, narration_lines=len(sound.narration),
                                 cost_usd=sound.cost_usd, notes=sound.notes)
    record = VideoRecord(job_id=job_id, video_path=str(video_path), thumbnail_path=str(thumb_path),
                         duration=info.duration, resolution=f"{info.width}x{info.height}", fps=info.fps,
                         bitrate=info.bit_rate, size_bytes=staged[MASTER].stat().st_size, scenes_count=len(scenes),
                         engines=engines, seconds=round(time.perf_counter() - started, 3), renditions=renditions,
                         audio=audio_summary)
    _replace_together([*(staged[fmt] for fmt in renditions), staging / thumb_path.name, ad_preview, staged[MASTER]],
                      store.final_dir(job_id))
    write_model(layout.video_record_path(store, job_id), record)  # last: it describes the files now in place
    shutil.rmtree(staging, ignore_errors=True)
    segments.publish_manifest(store.job_dir(job_id), assembly)
    context.log.info(f"final video {video_path}: {record.duration:.3f} s {record.resolution} "
                     f"{record.bitrate / 1e6:.1f} Mbps in {record.seconds:.1f} s")
    small_thumbnail = previews.write_still(thumbnail, layout.thumbnail_preview_path(store, job_id))
    return MaterializeResult(data_version=DataVersion(content_version(*(r.key for r in assembly.segments))), metadata={
        "preview": served_image(store, layout.ad_preview_path(store, job_id), f"{plan.title} (animated, every scene)"),
        "thumbnail_preview": served_image(store, small_thumbnail, f"{plan.title}: thumbnail"),
        "video_url": MetadataValue.url(store.url(video_path)),
        "path": MetadataValue.path(record.video_path),
        "thumbnail": MetadataValue.path(record.thumbnail_path),
        "duration": record.duration,
        "storyboard_duration": plan.duration_seconds,
        "resolution": record.resolution,
        "fps": record.fps,
        "bitrate_mbps": round(record.bitrate / 1e6, 2),
        "size_mb": round(record.size_bytes / 1e6, 2),
        "codec": info.codec,
        "pix_fmt": info.pix_fmt,
        "audio": MetadataValue.json(audio_summary.model_dump()),
        "scenes": record.scenes_count,
        "seconds": record.seconds,
        "engines": MetadataValue.json(engines),
        "renditions": MetadataValue.json(renditions),
        "segments_reused": assembly.reused,
        "segments_encoded": assembly.encoded,
        "segments_seconds_saved": assembly.seconds_saved,
        "segments_encode_seconds": assembly.encode_seconds,
        "segments_join_seconds": assembly.join_seconds,
        "segments": MetadataValue.md(
            "| format | segment | frames | scenes | reused | encode s |\n|---|---|---|---|---|---|\n"
            + "\n".join(f"| {r.format} | {r.index + 1} | {r.start}-{r.stop - 1} | {', '.join(r.scenes)} | "
                        f"{'yes' if r.reused else 'no'} | {r.encode_seconds:g} |" for r in assembly.segments)),
        "preview_embedded": embedded_image(layout.ad_preview_path(store, job_id),
                                           f"{plan.title} (animated, every scene)"),
    })


def _thumbnail(scenes: list[SceneInput]) -> Image.Image:
    """The first scene's frame at 60% of its length: copy fully faded in, motion under way (that
    one frame only: a frame depends on its index alone)."""
    target = int(scenes[0].frames * 0.6)
    frame = next(frames_i420(scenes[:1], crossfade=0, start=target, stop=target + 1))
    return Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_YUV2RGB_I420))


def _verify_thumbnail(path: Path) -> None:
    """The staged thumbnail decodes and is full size (raises VideoInvalid, like the videos)."""
    try:
        with Image.open(path) as image:
            image.load()
            size = image.size
    except OSError as error:
        raise VideoInvalid(f"{path.name} does not decode: {error}") from error
    if size != (WIDTH, HEIGHT):
        raise VideoInvalid(f"{path.name} is {size[0]}x{size[1]}, expected {WIDTH}x{HEIGHT}")


def _replace_together(staged: list[Path], final_dir: Path) -> None:
    """Move probed files into place, each by an atomic rename on the same file system; the
    caller writes video.json after them, so it never describes a file that is not there yet."""
    for path in staged:
        os.replace(path, final_dir / path.name)

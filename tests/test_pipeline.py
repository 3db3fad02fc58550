"""End to end: the CLI makes a real ad through a real Dagster instance; we look at the MP4."""

import hashlib
import itertools
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance, RunsFilter
from PIL import Image

from sparklio_assets.models import Storyboard, VideoRecord
from sparklio_assets.music import SAMPLE_RATE
from sparklio_assets.overlay import SAFE_AREA
from sparklio_assets.partitions import SCENES, register_scenes
from sparklio_assets.soundtrack import loudness, read_audio, true_peak_dbtp
from sparklio_assets.video_probe import probe

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "sparklio_assets" / "data"
JOB = "demo-eye-cream"


def sparklio(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(home / "dagster")}
    return subprocess.run([sys.executable, "-m", "sparklio_assets.cli", *args], capture_output=True, text=True,
                          env=env, timeout=1800)  # generous: a shared CI machine can be many times slower


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def frames_at(path: Path, indices: set[int]) -> dict[int, np.ndarray]:
    out = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in indices:
                out[i] = frame.to_ndarray(format="rgb24")
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    result = sparklio("generate", str(DATA / "demo_brief.json"), "--brand", str(DATA / "demo_brand.json"),
                      "--out", str(home), "--job-id", JOB, home=home)
    assert result.returncode == 0, result.stdout + result.stderr
    job_dir = home / "jobs" / JOB
    return home, job_dir, result.stdout


def test_cli_reports_video_and_engines(made):
    _, job_dir, stdout = made
    assert f"video: {job_dir / 'final' / 'ad.mp4'}" in stdout
    assert "15.00 s, 1080x1920, 24 fps" in stdout
    for stage in ("storyboard", "scene_001", "scene_005", "final_video"):
        assert stage in stdout
    assert "image by builtin, motion by kenburns" in stdout


def test_mp4_matches_the_product_spec(made):
    _, job_dir, _ = made
    info = probe(job_dir / "final" / "ad.mp4")
    plan = Storyboard.model_validate_json((job_dir / "storyboard.json").read_text())
    assert (info.codec, info.pix_fmt, info.width, info.height) == ("h264", "yuv420p", 1080, 1920)
    assert info.fps == 24 and info.frames == 360
    assert abs(info.duration - plan.duration_seconds) <= 1 / 24
    assert 5e6 <= info.bit_rate <= 10e6, info.bit_rate
    with av.open(str(job_dir / "final" / "ad.mp4")) as container:
        video = container.streams.video[0].codec_context
        # BT.601 matrix, limited range, BT.709 primaries and transfer (FFmpeg's enum values).
        assert (video.colorspace, video.color_range, video.color_primaries, video.color_trc) == (6, 1, 1, 1)
    with av.open(str(job_dir / "final" / "thumbnail.jpg")) as thumb:
        assert (thumb.streams.video[0].width, thumb.streams.video[0].height) == (1080, 1920)


def test_ad_has_a_soundtrack_at_platform_loudness_that_ends_softly(made):
    _, job_dir, stdout = made
    video = job_dir / "final" / "ad.mp4"
    info = probe(video)
    assert (info.audio_codec, info.audio_sample_rate, info.audio_channels) == ("aac", 48000, 2)
    audio = read_audio(video)
    assert abs(len(audio) / SAMPLE_RATE - info.duration) < 0.05
    assert abs(loudness(audio) + 14) < 1.0, loudness(audio)
    assert true_peak_dbtp(audio) <= -0.5
    level = lambda a: 20 * np.log10(np.sqrt(np.mean(np.square(a, dtype=np.float64))) + 1e-12)
    assert level(audio[-SAMPLE_RATE // 20:]) < level(audio[7 * SAMPLE_RATE:8 * SAMPLE_RATE]) - 30, "fades out"
    record = VideoRecord.model_validate_json((job_dir / "final" / "video.json").read_text())
    assert record.audio.music.startswith("builtin synth") and record.audio.codec == "aac"
    assert record.audio.narration == "none (SPARKLIO_TTS=off)"
    assert "music by builtin synth" in stdout and "narration by none (SPARKLIO_TTS=off)" in stdout
    assert "  audio: aac 48 kHz, -14." in stdout


def test_text_is_on_screen_inside_the_safe_area(made):
    _, job_dir, _ = made
    motion_meta = json.loads((job_dir / "scenes" / "scene_001" / "motion.json").read_text())
    assert motion_meta["engine"] == "kenburns"
    frame = frames_at(job_dir / "final" / "ad.mp4", {40})[40]
    box = frame[560:700, SAFE_AREA.left:SAFE_AREA.right].astype(int)
    ink = (np.abs(box - np.median(box.reshape(-1, 3), axis=0)).max(axis=2) > 80).mean()
    assert ink > 0.03, "the copy (in the scene's text colour) should cover part of the headline box"
    outside = np.concatenate([frame[:SAFE_AREA.top].reshape(-1, 3), frame[SAFE_AREA.bottom + 40:].reshape(-1, 3)])
    assert (outside.min(axis=1) > 245).mean() < 0.01, "no white type outside the safe area"


def test_scene_moves_and_crossfade_mixes(made):
    _, job_dir, _ = made
    video = job_dir / "final" / "ad.mp4"
    # scene_001 is frames 0-71, scene_002 72-143; the crossfade is centred on frame 72.
    f = frames_at(video, {6, 60, 66, 72, 78}).copy()
    # The designed scenes are flat colour fields with shapes, so count the pixels that visibly
    # changed (a still picture changes none) rather than averaging over the whole frame.
    moved = (np.abs(f[6].astype(int) - f[60].astype(int)).max(axis=2) > 12).mean()
    assert moved > 0.01, f"Ken Burns must move the picture within a scene ({moved:.2%} of pixels changed)"
    a, mid, b = (f[i][1400:1900].astype(float) for i in (66, 72, 78))
    # The middle frame of the fade is close to the average of its neighbours on either side.
    assert np.abs(mid - (a + b) / 2).mean() < np.abs(a - b).mean() / 3


def test_runs_are_on_the_dagster_instance(made):
    home, _, _ = made
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(tags={"sparklio/job_id": JOB}))
        assert len(runs) == 7  # storyboard + 5 scenes + final video
        assert all(r.is_success for r in runs)
        assert instance.has_dynamic_partition("jobs", JOB)
        # The scene dimension holds this job's five scenes, not the twelve a storyboard may have,
        # so the UI's row for the job has no empty cells.
        assert instance.get_dynamic_partitions("scenes") == [f"scene_{i:03d}" for i in range(1, 6)]
        cells = SCENES.get_partition_keys(dynamic_partitions_store=instance)
        made_cells = instance.get_materialized_partitions(AssetKey("scene_motion_clip"))
        assert len(cells) == 5 and set(cells) == made_cells


def test_previews_play_in_the_ui_metadata(made):
    """Each scene and the whole ad: an animated WebP in place in the materialization (markdown
    short enough for the UI to render in place, linking the media server), the same embedded in the
    event log, and the MP4's URL; the media server serves those and nothing else."""
    import base64
    import io
    import re

    from fastapi.testclient import TestClient

    from api.media import create_media_app
    from resources.artifacts import ArtifactStore

    home, job_dir, _ = made
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    with DagsterInstance.get() as instance:
        final = instance.get_latest_materialization_event(AssetKey("final_video")).asset_materialization.metadata
        scene = instance.fetch_materializations(AssetKey("scene_motion_clip"), limit=1).records[0]
        scene_meta = scene.asset_materialization.metadata
        key = instance.fetch_materializations(AssetKey("scene_key_image"), limit=1).records[0]
        key_meta = key.asset_materialization.metadata
    media = TestClient(create_media_app(ArtifactStore(home=str(home))))
    base = "http://127.0.0.1:3001/"  # the default media URL (the test's environment sets none)

    def served(entry) -> bytes:
        assert len(entry.value) < 1000, "the UI renders markdown in place only below 1,000 characters"
        url = re.search(r"\]\((http[^)]+)\)", entry.value).group(1)
        assert url.startswith(base)
        answer = media.get("/" + url.removeprefix(base))
        assert answer.status_code == 200, (url, answer.text)
        return answer.content

    assert final["video_url"].value == base + f"{JOB}/final/ad.mp4"
    clip = media.get(f"/{JOB}/final/ad.mp4", headers={"Range": "bytes=0-99"})
    assert clip.status_code == 206 and len(clip.content) == 100 and clip.headers["content-type"] == "video/mp4"
    scenes = len(json.loads((job_dir / "storyboard.json").read_text())["scenes"])
    for meta, least_frames, width in ((scene_meta, 8, 270), (final, 8 * scenes, 180)):
        raw = served(meta["preview"])
        embedded = re.search(r"data:image/webp;base64,([A-Za-z0-9+/=]+)", meta["preview_embedded"].value).group(1)
        assert base64.b64decode(embedded) == raw and len(raw) < 400_000, "small enough to live in the event log"
        with Image.open(io.BytesIO(raw)) as animation:
            assert animation.format == "WEBP" and animation.n_frames >= least_frames and animation.width == width
            animation.seek(animation.n_frames // 2)
            assert np.asarray(animation.convert("L")).std() > 10, "a picture, not a blank"
    assert (job_dir / "final" / "preview.webp").read_bytes() == raw, "published beside the video"
    scene_id = key.asset_materialization.partition.split("|")[-1]
    with Image.open(job_dir / "scenes" / scene_id / "preview.webp") as animation:
        first = animation.convert("RGB")
    sources = {"key image": (key_meta["preview"], Image.open(job_dir / "scenes" / scene_id / "key.png")),
               "first frame": (scene_meta["first_frame"], first),
               "thumbnail": (final["thumbnail_preview"], Image.open(job_dir / "final" / "thumbnail.jpg"))}
    for what, (entry, source) in sources.items():
        with Image.open(io.BytesIO(served(entry))) as picture:
            assert picture.format == "JPEG" and picture.size == (270, 480), what
            small = np.asarray(source.convert("RGB").resize((270, 480), Image.Resampling.BOX), dtype=np.int16)
            assert np.abs(np.asarray(picture.convert("RGB"), dtype=np.int16) - small).mean() < 6, what
    for private in (f"{JOB}/job.json", f"{JOB}/storyboard.json", f"{JOB}/../../dagster/dagster.yaml",
                    f"{JOB}/final/video.json", "../jobs/../dagster/history/runs.db"):
        assert media.get("/" + private).status_code == 404, private


def test_remake_one_scene_keeps_the_others(made):
    home, job_dir, _ = made
    video = job_dir / "final" / "ad.mp4"
    before = frames_at(video, {10, 200})
    untouched = {p: (sha(p), p.stat().st_mtime_ns) for p in (job_dir / "scenes").glob("scene_00[!3]/*")}
    plan_path = job_dir / "storyboard.json"
    plan = json.loads(plan_path.read_text())
    plan["scenes"][2]["onscreen_text"] = "새 카피: 100% \"verbatim\" \\ 테스트"
    plan_path.write_text(json.dumps(plan, ensure_ascii=False))

    result = sparklio("remake-scene", JOB, "scene_003", "--out", str(home), home=home)
    assert result.returncode == 0, result.stdout + result.stderr
    # scene_003 shows in its own segment and in scene_004's crossfade: 2 of 5 encoded again.
    assert "segments: 3 reused, 2 re-encoded" in result.stdout
    after = frames_at(video, {10, 200})
    assert np.array_equal(before[10], after[10]) or np.abs(before[10].astype(int) - after[10]).mean() < 1
    assert np.abs(before[200].astype(int) - after[200]).mean() > 1, "scene_003 shows the new copy"
    for path, (digest, mtime) in untouched.items():
        assert (sha(path), path.stat().st_mtime_ns) == (digest, mtime), f"{path} was touched"


def test_failed_rerun_keeps_the_existing_video(made):
    home, job_dir, _ = made
    video = job_dir / "final" / "ad.mp4"
    digest = sha(video)
    motion = job_dir / "scenes" / "scene_002" / "motion.json"
    saved = motion.read_bytes()
    motion.unlink()
    try:
        result = sparklio("remake-scene", JOB, "scene_003", "--out", str(home), home=home)
    finally:
        motion.write_bytes(saved)
    assert result.returncode == 1
    assert "final_video failed" in result.stderr and "scene_002" in result.stderr
    # One line and a pointer, never Dagster's traceback; the traceback is in the pointed-at log.
    assert "Traceback" not in result.stdout + result.stderr
    error, pointer = result.stderr.strip().splitlines()
    assert error.startswith("error: final_video failed (run ") and pointer.startswith("  full log: ")
    log = Path(pointer.removeprefix("  full log: "))
    assert log.parent == job_dir / "logs" and "Stack Trace" in log.read_text() and "scene_002" in log.read_text()
    assert sha(video) == digest
    assert not list(job_dir.rglob("*.part*")), "no half-written files left behind"


def test_unknown_scene_is_named(made):
    home, _, _ = made
    result = sparklio("remake-scene", JOB, "scene_009", "--out", str(home), home=home)
    assert result.returncode == 1
    assert "scene_009 does not exist" in result.stderr


def test_bad_brief_is_rejected_with_the_field_and_nothing_written(tmp_path):
    brief = json.loads((DATA / "demo_brief.json").read_text())
    brief["duration"] = 90
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(brief))
    out = tmp_path / "out"
    result = sparklio("generate", str(path), "--out", str(out), home=out)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: brief.duration:")
    assert "60" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("content, reason", [
    (None, "is a folder, not a JSON file"),
    ("[" * 100_000 + "]" * 100_000, "is nested too deeply"),
    ('{"product": "x", "duration": ' + "9" * 5000 + "}", "is not valid JSON (Exceeds the limit"),
])
def test_unreadable_briefs_get_one_line_and_no_traceback(tmp_path, content, reason):
    path = tmp_path / "brief.json"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    result = sparklio("generate", str(path), "--out", str(tmp_path / "out"), home=tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: brief: {path} {reason}") and len(result.stderr.splitlines()) == 1
    assert len(result.stderr) < 400, "echoed values are truncated"
    assert not (tmp_path / "out").exists()


def test_ui_refuses_a_taken_media_port_before_starting_dagster(tmp_path):
    """Previews load from the media server: if its port is taken, `sparklio ui` says so and stops,
    rather than running a UI whose every preview is broken."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = sparklio("ui", "--out", str(tmp_path), "--port", "1", "--media-port", str(port), home=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: --media-port: cannot serve media on 127.0.0.1:{port} (Address already")


def test_definitions_validate():
    result = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate",
                             "-m", "sparklio_assets.definitions"], capture_output=True, text=True, timeout=900,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_feed_channels_get_renditions_laid_out_for_their_shape(tmp_path):
    """instagram_feed → 4:5, facebook_feed → 1:1, youtube → 16:9: the same scenes, each laid out and
    rendered at its own size, and checked like the master."""
    brief = {**json.loads((DATA / "demo_brief.json").read_text()), "duration": 5,
             "channels": ["instagram_reels", "instagram_feed", "facebook_feed", "youtube"]}
    (tmp_path / "brief.json").write_text(json.dumps(brief, ensure_ascii=False))
    result = sparklio("generate", str(tmp_path / "brief.json"), "--out", str(tmp_path / "home"), "--job-id", "feeds",
                      home=tmp_path / "home")
    assert result.returncode == 0, result.stdout + result.stderr
    final = tmp_path / "home" / "jobs" / "feeds" / "final"
    for fmt, name in (("4:5", "ad_4x5.mp4"), ("1:1", "ad_1x1.mp4"), ("16:9", "ad_16x9.mp4")):
        assert f"{fmt} rendition: {final / name}" in result.stdout
    master = frames_at(final / "ad.mp4", {60})[60].astype(int)
    for name, size in (("ad_4x5.mp4", (1080, 1350)), ("ad_1x1.mp4", (1080, 1080)), ("ad_16x9.mp4", (1920, 1080))):
        info = probe(final / name)
        assert (info.width, info.height) == size and info.fps == 24 and info.codec == "h264", (name, info)
        assert info.audio_codec == "aac", (name, info)
        assert abs(info.duration - 5.0) <= 1 / 24 + 1e-6 and 4e6 <= info.bit_rate <= 10.5e6, (name, info)
    # 4:5 and 1:1 get their own layout (renditions.py), not a crop of the master: the copy is set
    # again for the shape, so the frame differs from the master's crop around the safe area.
    crop = frames_at(final / "ad_4x5.mp4", {60})[60].astype(int)
    assert np.abs(crop - master[184:1534]).mean() > 4, "4:5 is laid out for its shape"
    # 16:9 too: its copy is set in the 16:9 layout's own boxes (wider than any 9:16 box), readable there.
    from sparklio_assets.checks import block_contrast
    from sparklio_assets.geometry import SAFE_AREAS
    from sparklio_assets.models import JobSpec
    from sparklio_assets.overlay import render_overlay

    job_dir = tmp_path / "home" / "jobs" / "feeds"
    job = JobSpec.model_validate_json((job_dir / "job.json").read_text())
    first = Storyboard.model_validate_json((job_dir / "storyboard.json").read_text()).scenes[0]
    _, placed = render_overlay(first, job.brand_kit, job.brief.product, "ko", fmt="16:9")
    wide = frames_at(final / "ad_16x9.mp4", {int(first.frames * 0.6)})[int(first.frames * 0.6)]
    assert any(b.kind == "copy" and b.box.width > SAFE_AREAS["9:16"].width for b in placed.blocks)
    for block in placed.blocks:
        assert SAFE_AREAS["16:9"].contains(block.ink) and block_contrast(wide, block) >= 4.5, block.kind
    # ... and the checks held every rendition to the master's rules.
    report = json.loads((final / "checks.json").read_text())
    for check in report["checks"]:
        if check["name"] not in ("bitrate", "soundtrack"):
            assert set(check["details"]["renditions"]) == {"4:5", "1:1", "16:9"}, check["name"]
            assert all(r["passed"] for r in check["details"]["renditions"].values()), check


def test_scene_runs_of_a_job_overlap(made):
    """The scene runs go at once (pool limit 4 locally, at most the CPU cores): some two overlap."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU core: scene runs go one at a time by design")
    home, _, _ = made
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    with DagsterInstance.get() as instance:
        records = instance.get_run_records(RunsFilter(job_name="scene_job", tags={"sparklio/job_id": JOB}))
        spans = sorted((r.start_time, r.end_time) for r in records)[:5]  # the generate pass, not remakes
    assert len(spans) == 5
    assert any(b_start < a_end for (_, a_end), (b_start, _) in itertools.pairwise(spans)), spans


def test_next_stages_is_storyboard_then_every_scene_then_the_final_video():
    from sparklio_assets.jobs import FINAL_VIDEO_JOB, SCENE_JOB, STORYBOARD_JOB, next_stages

    scenes = ["scene_001", "scene_002"]
    assert [(s.name, s.job_name) for s in next_stages("j", [], set())] == [("storyboard", STORYBOARD_JOB)]
    after_plan = next_stages("j", scenes, {"storyboard"})
    assert [(s.name, s.job_name) for s in after_plan] == [("scene_001", SCENE_JOB), ("scene_002", SCENE_JOB)]
    assert after_plan[1].partition_key.keys_by_dimension == {"job": "j", "scene": "scene_002"}
    assert next_stages("j", scenes, {"storyboard", "scene_001"}, finished="scene_001") == []  # not the last
    last = next_stages("j", scenes, {"storyboard", "scene_001", "scene_002"}, finished="scene_002")
    assert [(s.name, s.job_name, s.partition_key) for s in last] == [("final_video", FINAL_VIDEO_JOB, "j")]
    assert next_stages("j", scenes, {"storyboard", *scenes, "final_video"}) == []


def _register_together(barrier, lengths: list[int], failures) -> None:
    """One process of a campaign whose storyboards finish together, round after round."""
    with DagsterInstance.get() as instance:
        for n in lengths:
            barrier.wait(120)  # a stuck sibling breaks the barrier, and this process fails the test
            try:
                register_scenes(instance, [f"scene_{i:03d}" for i in range(1, n + 1)])
            except Exception as error:  # reported to the test, which fails with it
                failures.put(repr(error))


def test_storyboards_finishing_together_register_scene_cells_once_in_order(tmp_path, monkeypatch):
    """Six processes on one SQLite instance add overlapping scene keys at the same moment, as a
    campaign's storyboards do (Dagster's check-then-insert collides there on the keys' unique
    index more often than not); every key ends up there once, in scene order, and none fails."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("")
    DagsterInstance.get().dispose()  # the instance's tables exist before its writers start, as in use
    rounds = [[3, 5], [5, 7], [7, 3], [12, 5], [2, 9], [6, 12]]
    forked = multiprocessing.get_context("fork")
    barrier, failures = forked.Barrier(len(rounds)), forked.Queue()
    workers = [forked.Process(target=_register_together, args=(barrier, lengths, failures)) for lengths in rounds]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
    assert [w.exitcode for w in workers] == [0] * len(workers)
    assert failures.empty(), failures.get()
    with DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("scenes") == [f"scene_{i:03d}" for i in range(1, 13)]
        register_scenes(instance, ["scene_001", "scene_002"])  # a shorter storyboard adds nothing
        assert len(instance.get_dynamic_partitions("scenes")) == 12


def test_scene_parallelism_follows_the_gpu_pool(tmp_path):
    from dagster import instance_for_test

    from sparklio_assets.pipeline import scene_parallelism

    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.event_log_storage.set_concurrency_slots("gpu", 1)
        assert scene_parallelism(instance, 5) == 1
        instance.event_log_storage.set_concurrency_slots("gpu", 3)
        assert scene_parallelism(instance, 5) == min(3, os.cpu_count() or 1)
        assert scene_parallelism(instance, 2) == min(2, os.cpu_count() or 1)

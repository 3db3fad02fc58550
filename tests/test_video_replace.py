"""A video is replaced only by a better one (issue 14): whatever the encoder does wrong, the
published ad.mp4, thumbnail and video.json stay as they were and are still what is served, the
run fails with the root cause, and nothing broken is kept for reuse."""

import hashlib
import json
import stat
from pathlib import Path

import pytest
from dagster import Definitions, define_asset_job, instance_for_test

from resources.artifacts import ArtifactStore
from resources.ffmpeg import FFmpegRunner
from sparklio_assets import segments
from sparklio_assets import store_paths as layout
from sparklio_assets.assets import final_video
from sparklio_assets.definitions import defs
from sparklio_assets.files import write_model
from sparklio_assets.jobs import FINAL_VIDEO, Stage
from sparklio_assets.models import FPS, JobSpec
from sparklio_assets.pipeline import PipelineError, create_job, run_job, run_stages
from sparklio_assets.video_probe import verify

DATA = Path(__file__).resolve().parents[1] / "sparklio_assets" / "data"
JOB = "replaced-ad"
# An encoder that exits 0 but writes 4 KB of garbage where the MP4 should be (its last argument).
GARBAGE = """#!/bin/sh
for last; do :; done
cat > /dev/null
head -c 4096 /dev/urandom > "$last"
exit 0
"""
# An encoder on a full disk: ffmpeg's own lines, the specific one before the generic epilogue.
FULL_DISK = """#!/bin/sh
cat > /dev/null
echo "[out#0/mp4 @ 0x55d0] Error writing trailer: No space left on device" >&2
echo "Conversion failed!" >&2
exit 228
"""


def published(store: ArtifactStore) -> dict[str, str]:
    final = store.final_dir(JOB)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(final.iterdir()) if p.is_file()}


def fake(tmp_path: Path, name: str, script: str) -> str:
    """The script under the real binary's file name: segments are keyed by the encoder's name, so
    those already made are reused and only what the test means to break runs through it."""
    (tmp_path / name).mkdir()
    path = tmp_path / name / Path(FFmpegRunner().exe()).name
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("replace")
    store = ArtifactStore(home=str(root / "home"))
    (root / "dagster").mkdir()
    brief = {**json.loads((DATA / "demo_brief.json").read_text()), "duration": 5}
    spec = JobSpec(job_id=JOB, brief=brief, brand=json.loads((DATA / "demo_brand.json").read_text()))
    real = Definitions(assets=defs.assets, jobs=defs.jobs, resources={**defs.resources, "store": store})
    with instance_for_test(temp_dir=str(root / "dagster")) as instance:
        create_job(spec, instance, store)
        run_job(JOB, real, instance, store)
        yield instance, store, root


def assemble_with(binary: str, instance, store) -> None:
    """final_video alone (the soundtrack stays as made), with the FFmpeg runner pointed at `binary`."""
    only = define_asset_job("final_video_only", selection=[final_video])
    broken = Definitions(assets=defs.assets, jobs=[only], resources={
        **defs.resources, "store": store, "ffmpeg": FFmpegRunner(binary=binary, max_attempts=1)})
    run_stages([Stage(FINAL_VIDEO, "final_video_only", JOB)], JOB, broken, instance, store)


def assert_old_set_intact(store: ArtifactStore, before: dict[str, str]) -> None:
    assert published(store) == before, "the published files are untouched"
    record = json.loads(layout.video_record_path(store, JOB).read_text())
    video = layout.video_path(store, JOB)
    assert record["size_bytes"] == video.stat().st_size, "video.json still describes the served file"
    verify(video, 1080, 1920, round(record["duration"] * FPS), FPS)
    final = store.final_dir(JOB)
    assert not (final / ".next").exists(), "no staging left behind"
    assert not list(store.job_dir(JOB).rglob("*.part*"))


def test_a_garbage_join_keeps_the_published_video(made, tmp_path):
    instance, store, _ = made
    before = published(store)
    kept = sorted(p.name for p in segments.folder(store.job_dir(JOB)).iterdir())
    # Nothing changed, so every segment is reused and only the join runs: it writes garbage.
    with pytest.raises(PipelineError) as failure:
        assemble_with(fake(tmp_path, "garbage-ffmpeg", GARBAGE), instance, store)
    assert "published one is kept" in str(failure.value)
    assert "ad.mp4 is not a readable MP4 (4096 bytes)" in str(failure.value)
    assert_old_set_intact(store, before)
    assert sorted(p.name for p in segments.folder(store.job_dir(JOB)).iterdir()) == kept


def test_garbage_segments_are_never_kept_for_reuse(made, tmp_path):
    instance, store, _ = made
    before = published(store)
    kept = sorted(p.name for p in segments.folder(store.job_dir(JOB)).iterdir())
    job = layout.read_job(store, JOB)  # a changed brand kit: every segment must be encoded again
    brand = job.brand_kit.model_copy(update={"tone_keywords": [*job.brand_kit.tone_keywords, "garbage"]})
    write_model(layout.job_path(store, JOB), job.model_copy(update={"brand": brand}))
    with pytest.raises(PipelineError) as failure:
        assemble_with(fake(tmp_path, "garbage-ffmpeg", GARBAGE), instance, store)
    assert "is not a readable MP4 (4096 bytes)" in str(failure.value)
    assert_old_set_intact(store, before)
    assert sorted(p.name for p in segments.folder(store.job_dir(JOB)).iterdir()) == kept, \
        "no garbage segment was stored under a key"
    write_model(layout.job_path(store, JOB), job)


def test_the_failure_names_ffmpegs_root_cause(made, tmp_path):
    instance, store, _ = made
    before = published(store)
    with pytest.raises(PipelineError) as failure:
        assemble_with(fake(tmp_path, "full-disk-ffmpeg", FULL_DISK), instance, store)
    assert "No space left on device" in str(failure.value)
    assert "Conversion failed!" not in str(failure.value)
    assert_old_set_intact(store, before)


def test_a_good_encode_then_replaces_the_set(made):
    instance, store, _ = made
    before = published(store)
    assemble_with("", instance, store)  # the real encoder again
    after = published(store)
    assert set(after) == set(before)
    record = json.loads(layout.video_record_path(store, JOB).read_text())
    assert record["size_bytes"] == layout.video_path(store, JOB).stat().st_size
    verify(layout.video_path(store, JOB), 1080, 1920, 120, FPS)

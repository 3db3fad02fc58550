"""Segmented assembly (issue 16): a real 5 s, 3-scene ad through Dagster. The joined MP4 is as valid
as a single-pass one, and re-making one scene re-encodes only the segments that show it, leaving
the others bit-identical."""

import hashlib
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from dagster import AssetKey, Definitions, instance_for_test
from dagster._core.definitions.data_version import StaleStatus  # not exported at the top level

from resources.artifacts import ArtifactStore
from resources.ffmpeg import FFmpegRunner
from sparklio_assets import segments
from sparklio_assets import store_paths as layout
from sparklio_assets.definitions import defs
from sparklio_assets.files import write_model
from sparklio_assets.models import FPS, JobSpec, KeyImageRecord, MotionRecord, Storyboard
from sparklio_assets.pipeline import assemble, create_job, remake_scene, run_job
from sparklio_assets.render import SceneInput, Timeline, frames_i420
from sparklio_assets.renditions import relaid_inputs
from sparklio_assets.video_probe import probe, verify

DATA = Path(__file__).resolve().parents[1] / "sparklio_assets" / "data"
JOB = "segmented-ad"


def decoded(path: Path) -> list[tuple[int, str, np.ndarray]]:
    """(pts, sha256 of the decoded I420 picture, small luma) for every frame, in order."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yuv = frame.to_ndarray(format="yuv420p")
            out.append((frame.pts, hashlib.sha256(yuv.tobytes()).hexdigest(),
                        cv2.resize(yuv[:1920], (135, 240), interpolation=cv2.INTER_AREA).astype(np.float32)))
    return out


def packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def scene_inputs(store: ArtifactStore) -> list[SceneInput]:
    plan = layout.read_storyboard(store, JOB)
    return [SceneInput(s.frames, store.read(layout.motion_path(store, JOB, s.id), MotionRecord),
                       layout.overlay_path(store, JOB, s.id)) for s in plan.scenes]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("segments")
    store = ArtifactStore(home=str(root / "home"))
    (root / "dagster").mkdir()
    brief = {**json.loads((DATA / "demo_brief.json").read_text()), "duration": 5}
    spec = JobSpec(job_id=JOB, brief=brief, brand=json.loads((DATA / "demo_brand.json").read_text()))
    test_defs = Definitions(assets=defs.assets, jobs=defs.jobs, resources={**defs.resources, "store": store})
    with instance_for_test(temp_dir=str(root / "dagster")) as instance:
        create_job(spec, instance, store)
        run_job(JOB, test_defs, instance, store)
        video = layout.video_path(store, JOB)
        first = {"frames": decoded(video), "packets": packets(video),
                 "manifest": segments.read_manifest(store.job_dir(JOB))}
        yield instance, store, test_defs, first


def test_a_first_assembly_encodes_one_segment_per_scene(made):
    _, store, _, first = made
    manifest = first["manifest"]
    plan = layout.read_storyboard(store, JOB)
    assert len(plan.scenes) == 3
    assert (manifest.encoded, manifest.reused, manifest.seconds_saved) == (3, 0, 0)
    spans = [(r.start, r.stop) for r in manifest.segments]
    assert spans[0][0] == 0 and spans[-1][1] == sum(s.frames for s in plan.scenes)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), "segments tile the ad"
    # Every crossfade lies inside one segment: no segment boundary within 6 frames of a scene change.
    timeline = Timeline(scene_inputs(store))
    for boundary in timeline.starts[1:-1]:
        assert all(not (boundary - 6 < start < boundary + 6) for start, _ in spans[1:])
    files = sorted(p.name for p in segments.folder(store.job_dir(JOB)).iterdir())
    assert files == sorted([*(r.file for r in manifest.segments), *(Path(r.file).with_suffix(".json").name
                                                                  for r in manifest.segments), "manifest.json",
                            manifest.audio_file])
    assert manifest.audio_file.startswith("audio-"), "the soundtrack is encoded once, beside the segments"


def test_segments_share_parameter_sets_and_start_on_a_keyframe(made):
    _, store, _, first = made
    extradata = set()
    for record in first["manifest"].segments:
        with av.open(str(segments.folder(store.job_dir(JOB)) / record.file)) as container:
            stream = container.streams.video[0]
            extradata.add(bytes(stream.codec_context.extradata))
            first_packet = next(p for p in container.demux(stream) if p.size)
            assert first_packet.is_keyframe
            assert stream.frames == record.stop - record.start
    assert len(extradata) == 1, "one set of SPS/PPS for every segment, so stream copy can join them"


def test_joined_mp4_is_as_valid_as_a_single_pass_one(made):
    _, store, _, first = made
    video = layout.video_path(store, JOB)
    plan = layout.read_storyboard(store, JOB)
    total = sum(s.frames for s in plan.scenes)
    info = verify(video, 1080, 1920, total, FPS)
    assert info.fps == 24 and info.frames == total
    assert abs(info.duration - plan.duration_seconds) <= 1 / FPS
    assert 5e6 <= info.bit_rate <= 10e6, info.bit_rate
    assert info.audio_codec == "aac"
    pts = [p for p, _, _ in first["frames"]]
    assert len(pts) == total
    steps = {b - a for a, b in zip(pts, pts[1:])}
    assert len(steps) == 1 and steps.pop() > 0, "constant frame rate, strictly increasing timestamps"
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        dts = [p.dts for p in container.demux(stream) if p.size]
        assert all(a < b for a, b in zip(dts, dts[1:])), "monotonic decode timestamps across the joins"
        assert pts[0] == 0 and abs(float(stream.duration * stream.time_base) - total / FPS) <= 1 / FPS


def test_no_frozen_or_duplicated_frames_at_the_joins(made):
    """Each decoded frame near a join is the source frame of its own index (the full render of the
    same inputs), not its neighbour's; and no two decoded frames in a row are the same picture."""
    _, store, _, first = made
    frames = first["frames"]
    hashes = [h for _, h, _ in frames]
    assert all(a != b for a, b in zip(hashes, hashes[1:])), "a frame repeats"
    source = [cv2.resize(f[:1920], (135, 240), interpolation=cv2.INTER_AREA).astype(np.float32)
              for f in frames_i420(scene_inputs(store))]
    assert len(source) == len(frames)
    for record in first["manifest"].segments[1:]:
        for k in range(record.start - 3, record.start + 3):
            errors = {j: float(np.abs(frames[k][2] - source[j]).mean()) for j in (k - 1, k, k + 1)}
            assert min(errors, key=errors.get) == k, f"frame {k} at the join at {record.start}: {errors}"


def test_plays_from_any_seek_point(made):
    """Seeking anywhere, the joins included, lands on a keyframe and decodes forward to exactly the
    frames a decode from the start gives."""
    _, store, _, first = made
    video = layout.video_path(store, JOB)
    by_pts = {p: h for p, h, _ in first["frames"]}
    step = first["frames"][1][0]
    targets = [0, 37, 52, 95, 119] + [r.start for r in first["manifest"].segments]
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        for target in targets:
            container.seek(target * step, stream=stream, backward=True, any_frame=False)
            got = None
            for frame in container.decode(stream):
                assert frame.pts in by_pts
                assert hashlib.sha256(frame.to_ndarray(format="yuv420p").tobytes()).hexdigest() == by_pts[frame.pts]
                if frame.pts >= target * step:
                    got = frame.pts
                    break
            assert got == target * step, f"seek to frame {target}"


def final_video_status(instance, test_defs) -> StaleStatus:
    """Dagster's own staleness of this job's final video (what the UI shows as Unsynced), from its
    test helper: there is no public API for it."""
    from dagster._utils.test.data_versions import get_stale_status_resolver

    return get_stale_status_resolver(instance, list(test_defs.assets)).get_status(AssetKey("final_video"), JOB)


def test_remaking_one_scene_reencodes_only_its_segments(made):
    instance, store, test_defs, first = made
    video = layout.video_path(store, JOB)
    plan_path = layout.storyboard_path(store, JOB)
    plan = Storyboard.model_validate_json(plan_path.read_text())
    plan.scenes[1].onscreen_text = "새 카피로 바꾼 두 번째 장면"
    write_model(plan_path, plan)

    assert final_video_status(instance, test_defs) == StaleStatus.FRESH
    remake_scene(JOB, "scene_002", test_defs, instance, store)
    assert final_video_status(instance, test_defs) == StaleStatus.STALE, "Unsynced in the UI until re-assembled"
    assemble(JOB, test_defs, instance, store)
    assert final_video_status(instance, test_defs) == StaleStatus.FRESH
    manifest = segments.read_manifest(store.job_dir(JOB))
    # scene_002 shows in its own segment and in scene_003's (the crossfade out of scene_002).
    assert [r.reused for r in manifest.segments] == [True, False, False]
    assert (manifest.encoded, manifest.reused) == (2, 1)
    assert manifest.seconds_saved == first["manifest"].segments[0].encode_seconds > 0
    assert manifest.segments[0].file == first["manifest"].segments[0].file

    after = decoded(video)
    cut = manifest.segments[1].start
    assert len(after) == len(first["frames"])
    assert [h for _, h, _ in after[:cut]] == [h for _, h, _ in first["frames"][:cut]], \
        "the untouched segment decodes to bit-identical frames"
    assert packets(video)[:cut] == first["packets"][:cut], "and is the same bitstream, copied"
    changed = [k for k in range(cut, len(after)) if after[k][1] != first["frames"][k][1]]
    assert changed and changed[0] == cut
    verify(video, 1080, 1920, len(after), FPS)
    assert 5e6 <= probe(video).bit_rate <= 10e6
    # The replaced segments' files are gone; only what the published video uses is kept.
    names = {p.name for p in segments.folder(store.job_dir(JOB)).glob("*.mp4")}
    assert names == {r.file for r in manifest.segments}

    # Re-made unchanged, a scene is the same pixels (the same data version: the video stays in
    # sync) and nothing is encoded again.
    remake_scene(JOB, "scene_003", test_defs, instance, store)
    assert final_video_status(instance, test_defs) == StaleStatus.FRESH
    assemble(JOB, test_defs, instance, store)
    assert segments.read_manifest(store.job_dir(JOB)).encoded == 0
    plan.scenes[2].onscreen_text = "마지막 장면도 새 카피"
    write_model(plan_path, plan)
    remake_scene(JOB, "scene_003", test_defs, instance, store)
    assemble(JOB, test_defs, instance, store)
    last = segments.read_manifest(store.job_dir(JOB))
    assert [r.reused for r in last.segments] == [True, True, False], "the last scene shows in its segment only"


def test_a_changed_brand_kit_reencodes_every_segment(made):
    instance, store, test_defs, _ = made
    job = layout.read_job(store, JOB)
    # A brand-kit field no overlay shows (the tone keywords) still re-encodes everything.
    brand = job.brand_kit.model_copy(update={"tone_keywords": [*job.brand_kit.tone_keywords, "new"]})
    write_model(layout.job_path(store, JOB), job.model_copy(update={"brand": brand}))
    assemble(JOB, test_defs, instance, store)
    manifest = segments.read_manifest(store.job_dir(JOB))
    assert (manifest.encoded, manifest.reused) == (3, 0)


def test_the_key_covers_encoder_settings_and_each_scene_shown(tmp_path):
    from sparklio_assets.segments import _Digests, segment_key

    paths = []
    for i in range(3):
        image, overlay = tmp_path / f"k{i}.png", tmp_path / f"o{i}.png"
        cv2.imwrite(str(image), np.full((64, 36, 3), 40 * i, np.uint8))
        cv2.imwrite(str(overlay), np.zeros((64, 36, 4), np.uint8))
        paths.append((image, overlay))

    def scenes() -> list[SceneInput]:
        return [SceneInput(48, MotionRecord(scene_id=f"scene_00{i + 1}", engine="kenburns", motion_style="slow zoom-in",
                                            duration_seconds=2, image_path=str(image)), overlay)
                for i, (image, overlay) in enumerate(paths)]

    def keys(encoder: FFmpegRunner, context: str = "brand") -> list[str]:
        timeline = Timeline(scenes())
        return [segment_key(timeline.scenes, timeline, seg, (1080, 1920), encoder, context, _Digests())
                for seg in timeline.segments()]

    base = keys(FFmpegRunner())
    assert len(set(base)) == 3
    assert all(a != b for a, b in zip(base, keys(FFmpegRunner(bitrate="7M"))))
    assert all(a != b for a, b in zip(base, keys(FFmpegRunner(), context="other brand")))
    cv2.imwrite(str(paths[0][0]), np.full((64, 36, 3), 200, np.uint8))  # scene_001's picture changes
    changed = keys(FFmpegRunner())
    assert [a == b for a, b in zip(base, changed)] == [False, False, True]


def test_renditions_are_segmented_too_and_reuse_the_same_way(made, tmp_path):
    """A 1:1 rendition beside the master: its own segments, keyed the same way; the master's
    (already made by the last assembly) are reused, and the joined 1:1 file is valid."""
    _, store, _, _ = made
    from sparklio_assets.formats import SIZES

    scenes = scene_inputs(store)
    context = layout.read_job(store, JOB).brand_kit.model_dump_json()
    audio = layout.soundtrack_path(store, JOB)
    sizes = {"9:16": SIZES["9:16"], "1:1": SIZES["1:1"]}
    outputs = {fmt: tmp_path / f"{fmt.replace(':', 'x')}.mp4" for fmt in sizes}
    plan = layout.read_storyboard(store, JOB)
    keys = [store.read(layout.key_image_record_path(store, JOB, s.id), KeyImageRecord) for s in plan.scenes]
    square = relaid_inputs(layout.read_job(store, JOB), plan, scenes, keys, "1:1", tmp_path / "1x1")
    record = segments.assemble(scenes, sizes, outputs, segments.folder(store.job_dir(JOB)), FFmpegRunner(), audio,
                               context, layouts={"1:1": square})
    by_format = {fmt: [r.reused for r in record.segments if r.format == fmt] for fmt in sizes}
    assert by_format == {"9:16": [True] * 3, "1:1": [False] * 3}
    total = sum(s.frames for s in scenes)
    info = verify(outputs["1:1"], 1080, 1080, total, FPS)
    assert 4e6 <= info.bit_rate <= 10.5e6 and info.audio_codec == "aac"
    assert packets(outputs["9:16"]) == packets(layout.video_path(store, JOB)), "the master joined again, bit for bit"
    again = segments.assemble(scenes, sizes, outputs, segments.folder(store.job_dir(JOB)), FFmpegRunner(), audio,
                              context, layouts={"1:1": square})
    assert again.encoded == 0 and again.reused == 6


def test_parts_in_flight_are_partial_files_the_cleaners_know(tmp_path):
    """While one pass writes its parts, what is on disk is plain `.<name>.<pid>.part…` files (what
    a cancel's clean-up and the sweep remove after a killed run), never a folder they would miss;
    afterwards only the finished parts are left."""
    from api.worker import clean_partial_files

    seen: list[list[tuple[str, bool]]] = []
    outs = [tmp_path / f"seg{k}.mp4" for k in range(3)]

    def frames():
        for n in range(72):
            if n == 60:  # the first parts are written by now; look at the folder mid-pass
                seen.append(sorted((p.name, p.is_file()) for p in tmp_path.iterdir()))
            yield np.full((96 * 3 // 2, 64), 16 + n, np.uint8)

    FFmpegRunner(preset="ultrafast").encode_i420_parts(frames, 64, 96, FPS, outs, cuts=[24, 48])
    in_flight = seen[0]
    assert in_flight and all(is_file and name.startswith(".") and ".part" in name for name, is_file in in_flight), \
        in_flight
    assert clean_partial_files(tmp_path) == 0 and sorted(tmp_path.iterdir()) == outs
    for out in outs:
        assert probe(out).frames == 24

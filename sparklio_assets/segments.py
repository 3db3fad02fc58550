"""Segmented assembly (issue 16): the ad is encoded as one segment per scene and the segments are
joined without re-encoding, so re-making one scene re-encodes only the segments that show it.

Segment i runs from the start of the crossfade into scene i to the start of the crossfade out of
it (render.Timeline.segments): every crossfade lies inside one segment, and a segment shows at
most two scenes. Each segment is an MP4 made with exactly the product's encoder settings
(FFmpegRunner.encoder_args), so all share one set of H.264 parameter sets; every segment starts
with an IDR frame (the first of an encode, or one forced where a pass of consecutive segments is
cut: FFmpegRunner.encode_i420_parts) and GOPs stay closed (open-gop is off by default), so each
segment decodes on its own and FFmpeg's concat demuxer joins them by stream copy (FFmpegRunner.concat_copy),
with the soundtrack encoded to AAC once, beside the video segments, and copied into every format.

A segment is kept under a name derived from a hash of everything that decides its pixels and its
bits: the content of each scene it shows (key image or clip bytes, overlay bytes, motion style,
length), where in those scenes it starts, the crossfade, the output size, the encoder settings
and binary, the brand kit, and the renderer's own source. After a scene is re-made only the
segments whose hash changed are rendered and encoded again; the others are copied bit for bit.
Segments live in the job's folder (segments/), are written atomically by the FFmpeg runner, are
checked before they are kept, and are deleted once no published video refers to them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import astuple
from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import BaseModel, Field

from . import motion, render
from .files import source_version
from .formats import MASTER, file_tag
from .models import FPS
from .render import CROSSFADE_FRAMES, SceneInput, Timeline, frames_i420
from .video_probe import check_segment, same_parameter_sets

# The renderer's code decides the pixels as much as its inputs do: a change to it re-encodes all.
CODE_DIGEST = source_version(render, motion)


class Encoder(Protocol):
    """What assembly needs of the FFmpeg runner (resources.ffmpeg.FFmpegRunner)."""

    def exe(self) -> str: ...

    def encoder_args(self, fps: int) -> list[str]: ...

    def encode_i420(self, frames: Callable[[], Iterable[np.ndarray]], width: int, height: int, fps: int,
                    out_path: Path, log: Callable[[str], None] = ..., audio: Path | None = None,
                    check: Callable[[Path], None] | None = None) -> None: ...

    def encode_i420_parts(self, frames: Callable[[], Iterable[np.ndarray]], width: int, height: int, fps: int,
                          out_paths: list[Path], cuts: list[int], log: Callable[[str], None] = ...,
                          check: Callable[[Path, int], None] | None = None) -> None: ...

    def encode_audio(self, source: Path, out_path: Path, log: Callable[[str], None] = ...) -> None: ...

    def concat_copy(self, parts: list[Path], out_path: Path, audio: Path | None = None,
                    log: Callable[[str], None] = ..., check: Callable[[Path], None] | None = None) -> None: ...


class SegmentRecord(BaseModel):
    format: str = Field(description="9:16 (the master), 4:5, 1:1 or 16:9")
    index: int
    start: int = Field(description="first frame of the ad it holds")
    stop: int = Field(description="frame after its last")
    scenes: list[str] = Field(description="scenes it shows (its own, and the one crossfading out)")
    key: str = Field(description="hash of everything that decides its content")
    file: str
    reused: bool
    encode_seconds: float = Field(description="what rendering and encoding it took when it was made")


class AssemblyRecord(BaseModel):
    """What one assembly encoded and what it reused (final_video's metadata, the CLI)."""

    segments: list[SegmentRecord]
    reused: int
    encoded: int
    encode_seconds: float = Field(description="spent rendering and encoding segments in this assembly")
    seconds_saved: float = Field(description="what the reused segments cost when they were encoded")
    join_seconds: float = Field(description="joining the segments and the soundtrack, all formats")
    audio_file: str | None = Field(default=None, description="the soundtrack as AAC, in the segment folder")

    def summary(self) -> str:
        return (f"segments: {self.reused} reused, {self.encoded} re-encoded "
                f"({self.seconds_saved:.1f} s of encoding saved)")


def folder(job_dir: Path) -> Path:
    return job_dir / "segments"


def manifest_path(job_dir: Path) -> Path:
    """The segments of the published video (written after it is published)."""
    return folder(job_dir) / "manifest.json"


def read_manifest(job_dir: Path) -> AssemblyRecord | None:
    path = manifest_path(job_dir)
    return AssemblyRecord.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else None


class _Digests:
    """sha256 of files, each read once per assembly (a scene appears in two segments per format)."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}

    def __call__(self, path: str | Path) -> str:
        key = str(path)
        if key not in self._known:
            self._known[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return self._known[key]


def _scene_identity(scene: SceneInput, digest: _Digests) -> dict:
    m = scene.motion
    return {"frames": scene.frames, "fps": m.fps, "motion_style": m.motion_style,
            "picture": digest(m.clip_path) if m.clip_path else digest(m.image_path),
            "clip": bool(m.clip_path), "overlay": digest(scene.overlay_path),
            "picture_box": astuple(scene.picture_box) if scene.picture_box else None}


def segment_key(scenes: list[SceneInput], timeline: Timeline, segment: tuple[int, int, list[int]],
                size: tuple[int, int], encoder: Encoder, context: str, digest: _Digests) -> str:
    start, stop, shown = segment
    content = {
        # The binary by name (the imageio-ffmpeg wheel's carries its version), not by where it is.
        "code": CODE_DIGEST, "encoder": [Path(encoder.exe()).name, *encoder.encoder_args(FPS)], "size": list(size),
        "crossfade": timeline.crossfade, "frames": stop - start, "context": context,
        "scenes": [{**_scene_identity(scenes[i], digest), "from": start - timeline.starts[i]} for i in shown],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


# Encodes at once. A run of consecutive segments to make (every segment, in a first assembly) is
# one x264 pass cut into parts (FFmpegRunner.encode_i420_parts), so a first assembly costs what one
# single-pass encode does; formats, and runs separated by reused segments, go two at a time,
# which keeps both cores busy while one encoder starts or drains.
ENCODE_WORKERS = 2


def assemble(scenes: list[SceneInput], sizes: dict[str, tuple[int, int]], outputs: dict[str, Path],
             segment_dir: Path, encoder: Encoder, audio: Path | None, context: str,
             log: Callable[[str], None] = lambda _: None, crossfade: int = CROSSFADE_FRAMES,
             layouts: dict[str, list[SceneInput]] | None = None) -> AssemblyRecord:
    """Write each format's MP4 (sizes[fmt] → outputs[fmt]) from segments, encoding only those not
    already in segment_dir (ENCODE_WORKERS at a time). `context` is what else decides every
    segment (the brand kit). `scenes` are the master's; `layouts[fmt]` are each other format's own
    (renditions.py: the same scenes, laid out and rendered at that format's size)."""
    timeline = Timeline(scenes, crossfade)
    plan, digest = timeline.segments(), _Digests()
    inputs_of = {MASTER: scenes, **(layouts or {})}
    if set(sizes) - set(inputs_of):
        raise ValueError(f"formats {sorted(set(sizes) - set(inputs_of))} have no scenes laid out for them")

    def encode(paths: list[Path], spans: list[tuple[int, int]], inputs: list[SceneInput],
               size: tuple[int, int]) -> list[float]:
        """Encode consecutive segments (one pass); their seconds, shared out by length."""
        began, start, stop = time.perf_counter(), spans[0][0], spans[-1][1]
        frames = lambda: frames_i420(inputs, timeline.crossfade, start, stop, size=size)
        if len(paths) == 1:
            encoder.encode_i420(frames, size[0], size[1], FPS, paths[0], log=log,
                                check=lambda p: check_segment(p, size[0], size[1], stop - start))
        else:
            encoder.encode_i420_parts(frames, size[0], size[1], FPS, paths, [a - start for a, _ in spans[1:]],
                                      log=log, check=lambda p, k: check_segment(p, size[0], size[1],
                                                                                spans[k][1] - spans[k][0]))
        seconds = time.perf_counter() - began
        shares = [round(seconds * (b - a) / (stop - start), 3) for a, b in spans]
        for path, share in zip(paths, shares):
            _write_json(path.with_suffix(".json"), {"encode_seconds": share})
        return shares

    records: list[SegmentRecord] = []
    parts: dict[str, list[Path]] = {}
    pending: list[tuple[list[int], Future]] = []  # indices in records → their encode
    join_seconds = 0.0
    pool = ThreadPoolExecutor(ENCODE_WORKERS)
    try:
        aac = segment_dir / f"audio-{digest(audio)[:24]}.m4a" if audio is not None else None
        audio_done = pool.submit(encoder.encode_audio, audio, aac, log) if aac and not aac.is_file() else None
        claimed: set[str] = set()  # files made by this assembly: two segments that show the same thing share one
        for fmt, size in sizes.items():
            fmt_scenes = inputs_of[fmt]
            run: list[int] = []  # consecutive segments of this format still to encode: one pass

            def flush(run: list[int], fmt_scenes: list[SceneInput], size: tuple[int, int]) -> None:
                if run:
                    future = pool.submit(encode, [segment_dir / records[i].file for i in run],
                                         [(records[i].start, records[i].stop) for i in run], fmt_scenes, size)
                    pending.append((list(run), future))
                    run.clear()

            for index, segment in enumerate(plan):
                start, stop, shown = segment
                key = segment_key(fmt_scenes, timeline, segment, size, encoder, context, digest)
                path = segment_dir / f"{file_tag(fmt)}-{key[:24]}.mp4"
                reused = path.is_file() or path.name in claimed
                seconds = 0.0
                if path.is_file():
                    cost = path.with_suffix(".json")
                    seconds = json.loads(cost.read_text())["encode_seconds"] if cost.is_file() else 0.0
                if reused:
                    flush(run, fmt_scenes, size)
                else:
                    run.append(len(records))
                    claimed.add(path.name)
                parts.setdefault(fmt, []).append(path)
                records.append(SegmentRecord(format=fmt, index=index, start=start, stop=stop, reused=reused,
                                             scenes=[scenes[i].motion.scene_id for i in shown], key=key,
                                             file=path.name, encode_seconds=seconds))
            flush(run, fmt_scenes, size)
        if audio_done is not None:
            audio_done.result()
        for fmt in sizes:  # join each format once its segments are done, while later ones encode
            for indices, future in pending:
                if records[indices[0]].format == fmt:
                    for i, share in zip(indices, future.result()):
                        records[i].encode_seconds = share
            same_parameter_sets(parts[fmt])
            began = time.perf_counter()
            encoder.concat_copy(parts[fmt], outputs[fmt], audio=aac, log=log)
            join_seconds += time.perf_counter() - began
    finally:
        pool.shutdown(cancel_futures=True)  # after a failure, what has not started never starts
    reused = [r for r in records if r.reused]
    return AssemblyRecord(segments=records, reused=len(reused), encoded=len(records) - len(reused),
                          encode_seconds=round(sum(r.encode_seconds for r in records if not r.reused), 3),
                          join_seconds=round(join_seconds, 3), audio_file=aac.name if aac else None,
                          seconds_saved=round(sum(r.encode_seconds for r in reused), 3))


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def publish_manifest(job_dir: Path, record: AssemblyRecord) -> None:
    """Record the published video's segments, then delete every segment file it does not use
    (and what killed runs left half-written)."""
    _write_json(manifest_path(job_dir), record.model_dump())
    keep = {r.file for r in record.segments} | {Path(r.file).with_suffix(".json").name for r in record.segments}
    keep.add(record.audio_file)
    mine = f".{os.getpid()}."
    for path in folder(job_dir).iterdir():
        if path.name == manifest_path(job_dir).name or path.name in keep:
            continue
        if path.name.startswith(".") and mine in path.name:
            continue  # this process's own file in flight
        path.unlink(missing_ok=True)

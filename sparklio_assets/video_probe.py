"""What an MP4 really is, read with PyAV (the imageio-ffmpeg wheel ships no ffprobe)."""

from __future__ import annotations

from pathlib import Path

import av
from pydantic import BaseModel


class VideoInfo(BaseModel):
    codec: str
    profile: str | None
    width: int
    height: int
    pix_fmt: str
    fps: float
    frames: int
    duration: float
    bit_rate: int
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None


def probe(path: Path) -> VideoInfo:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        frames = stream.frames or sum(1 for _ in container.demux(stream) if _.size)
        duration = float(stream.duration * stream.time_base) if stream.duration else container.duration / 1e6
        return VideoInfo(
            codec=stream.codec_context.name, profile=stream.codec_context.profile,
            width=stream.width, height=stream.height, pix_fmt=stream.codec_context.pix_fmt or "",
            fps=float(stream.average_rate), frames=frames, duration=round(duration, 4),
            bit_rate=int(stream.bit_rate or container.bit_rate or 0),
            audio_codec=audio.codec_context.name if audio else None,
            audio_sample_rate=audio.codec_context.sample_rate if audio else None,
            audio_channels=audio.codec_context.channels if audio else None,
        )


class VideoInvalid(ValueError):
    """A file that is not the video it should be; the message says which file and what is wrong."""


def check_segment(path: Path, width: int, height: int, frames: int) -> None:
    """A freshly encoded segment, before it is kept for reuse: one H.264 stream of the right size
    whose packets are exactly `frames` and whose first is a keyframe (a segment must start with
    an IDR frame to be joined). Demux only, no decoding: cheap enough to run on every segment."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoInvalid(f"{path.name}: no video stream")
            stream = container.streams.video[0]
            packets = [p for p in container.demux(stream) if p.size]
    except av.FFmpegError as error:
        raise VideoInvalid(f"{path.name} is not a readable MP4 ({path.stat().st_size} bytes): {error}") from error
    if (stream.codec_context.name, stream.width, stream.height) != ("h264", width, height):
        raise VideoInvalid(f"{path.name}: {stream.codec_context.name} {stream.width}x{stream.height}, "
                           f"expected h264 {width}x{height}")
    if len(packets) != frames:
        raise VideoInvalid(f"{path.name}: {len(packets)} video packets, expected {frames}")
    if not packets[0].is_keyframe:
        raise VideoInvalid(f"{path.name}: does not start with a keyframe")


def same_parameter_sets(parts: list[Path]) -> None:
    """Segments about to be joined by stream copy carry one and the same SPS/PPS (the MP4's avcC);
    a segment kept from another encoder build would not, and would decode wrongly after the join."""
    first = None
    for path in parts:
        with av.open(str(path)) as container:
            extradata = bytes(container.streams.video[0].codec_context.extradata or b"")
        if first is None:
            first = extradata
        elif extradata != first:
            raise VideoInvalid(f"{path.name}: its H.264 parameter sets differ from {parts[0].name}'s; "
                               "it cannot be joined by stream copy")


def verify(path: Path, width: int, height: int, frames: int, fps: int, audio: bool = True) -> VideoInfo:
    """Everything a finished MP4 must be before it may replace a good one (issue 14): its streams
    (H.264 of the right size, AAC when it has a soundtrack), a duration within one frame, exactly
    `frames` video packets, and a last frame that decodes (seek to the last keyframe and decode to
    the end: garbage, a truncated file or a broken join fails here). Raises VideoInvalid."""
    try:
        info = probe(path)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size]
            last_key = max((pts for pts, key in packets if key), default=None)
            last_pts = max((pts for pts, _ in packets), default=None)
            decoded = None
            if last_key is not None:
                container.seek(last_key, stream=stream, backward=True, any_frame=False)
                for frame in container.decode(stream):
                    decoded = frame
    except (av.FFmpegError, IndexError) as error:
        size = path.stat().st_size if path.exists() else 0
        raise VideoInvalid(f"{path.name} is not a readable MP4 ({size} bytes): {error}") from error
    problems = []
    if (info.codec, info.width, info.height) != ("h264", width, height):
        problems.append(f"video is {info.codec} {info.width}x{info.height}, expected h264 {width}x{height}")
    if audio and info.audio_codec != "aac":
        problems.append(f"soundtrack is {info.audio_codec or 'missing'}, expected aac")
    if len(packets) != frames:
        problems.append(f"{len(packets)} video packets, expected {frames}")
    if abs(info.duration - frames / fps) > 1 / fps + 1e-6:
        problems.append(f"duration {info.duration:g} s, expected {frames / fps:g} s")
    if decoded is None or decoded.pts != last_pts:
        problems.append("its last frame does not decode")
    if problems:
        raise VideoInvalid(f"{path.name}: " + "; ".join(problems))
    return info

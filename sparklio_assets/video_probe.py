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

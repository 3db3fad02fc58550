"""The FFmpeg runner: one place that knows the binary, the encoder settings and how to run it.

The binary comes from the `imageio-ffmpeg` wheel, so nothing is installed outside pip. Encodes
stream raw frames into ffmpeg's stdin and write to a temporary file beside the target, which is
moved into place only after ffmpeg exits cleanly: a failed or killed run never leaves a file that
looks finished, and never replaces a good earlier video. A caller's `check` probes the finished
file before it is moved into place, so an encoder that exits 0 but writes garbage is caught too.
Retries follow spec 8.1 (2 attempts, linear backoff, a timeout per attempt). An error names
ffmpeg's own root cause (its last specific error line, e.g. "No space left on device"), not the
generic "Conversion failed!" it ends with.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import imageio_ffmpeg
from dagster import ConfigurableResource
from pydantic import Field
from typing_extensions import Buffer  # bytes, or a C-contiguous numpy array: written without a copy


class FFmpegError(RuntimeError):
    pass


# ffmpeg's closing lines that only say that something failed earlier; the line before says what.
_GENERIC = ("Conversion failed!", "Error while filtering", "Error closing file", "Exiting normally")


def root_cause(stderr: str) -> str:
    """The most specific error line of ffmpeg's stderr: the last one that is not a generic epilogue."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(_GENERIC)]
    return (specific or lines or ["no output"])[-1]


def default_binary() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


class FFmpegRunner(ConfigurableResource):
    """Encoder settings of every MP4 the product writes (H.264 High, yuv420p, 5-10 Mbps)."""

    binary: str = Field(default="", description="ffmpeg executable; empty = the imageio-ffmpeg wheel's")
    # veryfast: at 8 Mbps it scores SSIM 0.9991 against the source where medium scores 0.9994, in
    # 40% of the time (bench/render.py prints both); platforms re-encode uploads anyway.
    preset: str = Field(default="veryfast", description="x264 preset")
    # Constant bitrate (x264's nal-hrd=cbr, filler where the picture needs fewer bits): the ad is
    # encoded as short per-scene segments (segments.py), too short for average-bitrate control
    # to converge, so on flat, designed frames ABR came in at 2.3 Mbps, under the spec's 5-10.
    bitrate: str = Field(default="8M", description="constant video bitrate")
    audio_bitrate: str = "192k"
    bufsize: str = Field(default="8M", description="VBV buffer (1 s at the default bitrate)")
    gop_seconds: float = 2.0
    timeout_s: float = 300.0
    max_attempts: int = 2
    backoff_s: float = 1.0

    def exe(self) -> str:
        return self.binary or default_binary()

    def encoder_args(self, fps: int) -> list[str]:
        """Exactly the encoder settings used for every output; bench/render.py reuses them."""
        return [
            "-c:v", "libx264", "-preset", self.preset, "-profile:v", "high",
            "-b:v", self.bitrate, "-minrate", self.bitrate, "-maxrate", self.bitrate, "-bufsize", self.bufsize,
            "-g", str(int(fps * self.gop_seconds)), "-pix_fmt", "yuv420p",
            # Frames arrive as BT.601 limited-range YUV (OpenCV's I420); say so, so players
            # show the brand colours as designed. The flags tag the stream; x264's own VUI
            # parameters are what put primaries and transfer into the bitstream (without them
            # ffprobe reads "unknown").
            "-colorspace", "smpte170m", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv",
            "-x264-params", "colorprim=bt709:transfer=bt709:colormatrix=smpte170m:nal-hrd=cbr",
            "-movflags", "+faststart",
        ]

    def aac_args(self) -> list[str]:
        """The soundtrack in every MP4: AAC-LC, 48 kHz stereo (what every platform takes)."""
        return ["-c:a", "aac", "-b:a", self.audio_bitrate, "-ar", "48000", "-ac", "2"]

    def audio_args(self) -> list[str]:
        return ["-map", "0:v:0", "-map", "1:a:0", *self.aac_args()]

    def encode_audio(self, source: Path, out_path: Path, log: Callable[[str], None] = lambda _: None) -> None:
        """The soundtrack (any audio file) as AAC in an M4A, to be copied into MP4s by concat_copy."""
        self.run(["-i", str(source), "-map", "0:a:0", *self.aac_args(), "-f", "mp4"], out_path, log)

    @staticmethod
    def _raw_input(width: int, height: int, fps: int) -> list[str]:
        """FFmpeg's first input: raw I420 frames on stdin."""
        return ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-"]

    def encode_i420(self, frames: Callable[[], Iterable[Buffer]], width: int, height: int, fps: int,
                    out_path: Path, log: Callable[[str], None] = lambda _: None, audio: Path | None = None,
                    check: Callable[[Path], None] | None = None) -> None:
        """Encode raw I420 frames (bytes or contiguous arrays) to out_path (MP4), with `audio` (a
        file as long as the video) as its soundtrack. `frames` is called once per attempt; `check`
        (raising on a bad file) runs on the finished file before it replaces out_path."""
        source = self._raw_input(width, height, fps) + (["-i", str(audio)] if audio is not None else [])
        args = source + self.encoder_args(fps) + (self.audio_args() if audio is not None else [])
        self._run_with_retries(lambda tmp: self._pipe(args + ["-f", "mp4", str(tmp)], frames()), out_path, log,
                               check)

    def encode_i420_parts(self, frames: Callable[[], Iterable[Buffer]], width: int, height: int, fps: int,
                          out_paths: list[Path], cuts: list[int], log: Callable[[str], None] = lambda _: None,
                          check: Callable[[Path, int], None] | None = None) -> None:
        """Encode raw I420 frames as consecutive MP4 parts in one x264 pass: part k (k >= 1) starts
        at frame cuts[k - 1], an IDR frame forced there, and FFmpeg's segment muxer cuts the stream
        at those frames. Each part decodes alone and has the parameter sets of a part encoded by
        itself (the same encoder settings), so parts join by stream copy either way; one pass
        saves each part's encoder start and drain. `check(part, k)` runs on every part before any
        replaces its out_path."""
        first = out_paths[0]
        first.parent.mkdir(parents=True, exist_ok=True)
        # The parts are partial files like every other (".<name>.<pid>.part…", plain files beside
        # the output), so what cleans up after a killed run (api.worker.clean_partial_files,
        # liveness.sweep_job, segments.publish_manifest) removes them too.
        stem = f".{first.stem}.{os.getpid()}.part"
        split = ["-force_key_frames", "expr:" + "+".join(f"eq(n,{c})" for c in cuts), "-forced-idr", "1",
                 "-f", "segment", "-segment_format", "mp4", "-segment_frames", ",".join(map(str, cuts)),
                 "-reset_timestamps", "1", str(first.parent / f"{stem}%04d.mp4")]

        def written() -> list[Path]:
            return sorted(first.parent.glob(f"{stem}*.mp4"))

        def once() -> None:
            for part in written():
                part.unlink(missing_ok=True)
            try:
                self._pipe(self._raw_input(width, height, fps) + self.encoder_args(fps) + split, frames())
                parts = written()
                for k, part in enumerate(parts[:len(out_paths)]):
                    if check is not None:
                        check(part, k)  # raises on a bad part: no retry, the same encoder would do the same
                if len(parts) != len(out_paths):
                    raise FFmpegError(f"the segment muxer wrote {len(parts)} parts, expected {len(out_paths)}")
                for part, out in zip(parts, out_paths):
                    os.replace(part, out)
            finally:
                for part in written():
                    part.unlink(missing_ok=True)

        self._retrying(once, log)

    def run(self, args: list[str], out_path: Path, log: Callable[[str], None] = lambda _: None,
            check: Callable[[Path], None] | None = None) -> None:
        """Run ffmpeg with inputs/filters `args`, writing out_path atomically (the output file
        name is appended by this method); `check` as for encode_i420."""
        self._run_with_retries(lambda tmp: self._pipe(args + [str(tmp)], None), out_path, log, check)

    def concat_copy(self, parts: list[Path], out_path: Path, audio: Path | None = None,
                    log: Callable[[str], None] = lambda _: None, check: Callable[[Path], None] | None = None) -> None:
        """Join MP4s made with encoder_args into one, copying their video bitstreams (no re-encode:
        FFmpeg's concat demuxer) and `audio` (an AAC file from encode_audio) as the soundtrack."""
        out_path.parent.mkdir(parents=True, exist_ok=True)
        listing = out_path.with_name(f".{out_path.stem}.{os.getpid()}.ffconcat")
        # ffconcat quoting: inside single quotes, a quote is written '\''.
        listing.write_text("ffconcat version 1.0\n" + "".join(
            "file '" + str(p.resolve()).replace("'", "'\\''") + "'\n" for p in parts), encoding="utf-8")
        source = ["-f", "concat", "-safe", "0", "-i", str(listing)] + (["-i", str(audio)] if audio else [])
        maps = ["-map", "0:v:0"] + (["-map", "1:a:0"] if audio is not None else [])
        try:
            self.run(source + maps + ["-c", "copy", "-movflags", "+faststart", "-f", "mp4"], out_path, log, check)
        finally:
            listing.unlink(missing_ok=True)

    def _retrying(self, attempt: Callable[[], None], log: Callable[[str], None]) -> None:
        """`attempt` up to max_attempts times while ffmpeg itself fails (FFmpegError), backing off
        in between; any other error (a failed check) ends it at once."""
        for n in range(1, self.max_attempts + 1):
            try:
                attempt()
                return
            except FFmpegError as error:
                if n == self.max_attempts:
                    raise
                log(f"ffmpeg attempt {n}/{self.max_attempts} failed ({error}); retrying in {self.backoff_s * n:g} s")
                time.sleep(self.backoff_s * n)

    def _run_with_retries(self, attempt: Callable[[Path], None], out_path: Path, log: Callable[[str], None],
                          check: Callable[[Path], None] | None = None) -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(f".{out_path.stem}.{os.getpid()}.part{out_path.suffix}")

        def once() -> None:
            try:
                attempt(tmp)
                if check is not None:
                    check(tmp)  # raises on a bad file: no retry, the same encoder would do the same
                os.replace(tmp, out_path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

        self._retrying(once, log)

    def _pipe(self, args: list[str], frames: Iterable[Buffer] | None) -> None:
        cmd = [self.exe(), "-hide_banner", "-loglevel", "error", "-y", *(["-nostdin"] if frames is None else []), *args]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if frames is not None else subprocess.DEVNULL,
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        stderr: list[bytes] = []
        reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True)
        reader.start()
        timer = threading.Timer(self.timeout_s, proc.kill)
        timer.start()
        try:
            if frames is not None:
                try:
                    for chunk in frames:
                        proc.stdin.write(chunk)
                except BrokenPipeError:
                    pass  # ffmpeg died: its exit code and stderr below say why
                finally:
                    proc.stdin.close()
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
            reader.join(5)
        if code != 0:
            reason = "timed out" if code == -9 else f"exit {code}"
            raise FFmpegError(f"ffmpeg {reason}: {root_cause(b''.join(stderr).decode(errors='replace'))}")

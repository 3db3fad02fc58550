"""The ad's soundtrack: a music bed for the storyboard's `bgm_mood`, narration lines placed at
their scenes with the music ducked under them, mixed to the loudness the platforms normalise to.

    -14 LUFS integrated (ITU-R BS.1770, measured by pyloudnorm), true peak ≤ -1 dBTP

TikTok, Reels and YouTube all play back around -14 LUFS; mixing there means the platform neither
turns the ad down (squashing it) nor up (raising the noise). The true-peak ceiling leaves room for
the AAC encoder's overshoot. A look-ahead limiter catches what the gain alone would push past the
ceiling, so a punchy mood still reaches the target instead of being turned down as a whole.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import av
import numpy as np
import pyloudnorm
from pydantic import BaseModel, Field
from scipy import signal
from scipy.io import wavfile
from scipy.ndimage import minimum_filter1d

from .files import atomic_path
from .language import language_of
from .models import JobSpec, Scene, Storyboard
from .music import SAMPLE_RATE, compose, style_for

TARGET_LUFS = -14.0
CEILING_DBTP = -1.0
DUCK_DB = -10.0  # music under a narration line
DUCK_RAMP_S = 0.15
NARRATION_LEAD_S = 0.25  # a line starts this long after its scene does (clear of the crossfade)
NARRATION_TAIL_S = 0.2  # and should end this long before the scene does
MAX_TEMPO = 1.3  # a line too long for its scene is sped up (pitch kept) at most this much...
END_GAP_S = 0.4  # ...then may run on into the next scenes, but ends this long before the ad does
VOICE_LUFS = -16.0  # each line, before the mix
BED_UNDER_VOICE_LUFS = -18.0  # the music, before ducking, when there is narration
MUSIC_ENGINE = "builtin synth"


class SpeechError(RuntimeError):
    """The speech engine refused or failed one line (resources.tts.TTSError is one)."""


class Speaker(Protocol):
    """What narration needs from a speech engine (resources.tts.TTSResource is one): the soundtrack
    is media code, so it takes the engine from the asset instead of importing a resource."""

    @property
    def engine(self) -> str: ...

    @property
    def price_per_minute_usd(self) -> float: ...

    def unavailable(self) -> str | None: ...

    def speak(self, text: str, instructions: str = "") -> bytes:
        """The line as WAV bytes; raises SpeechError."""
        ...


class AudioConverter(Protocol):
    """Runs FFmpeg on one input (resources.ffmpeg.FFmpegRunner is one): `run(args, out)`."""

    def run(self, args: list[str], out_path: Path) -> object: ...


class NarrationLine(BaseModel):
    scene_id: str
    text: str
    start: float = Field(description="seconds from the start of the ad")
    seconds: float
    path: str
    engine: str


class SoundtrackRecord(BaseModel):
    """What the soundtrack asset made; final_video muxes `path` into every MP4."""

    job_id: str
    path: str
    duration: float
    sample_rate: int = SAMPLE_RATE
    channels: int = 2
    music_engine: str
    mood: str
    bpm: float
    narration_engine: str = Field(description="the TTS engine, or 'none (why)'")
    narration: list[NarrationLine] = Field(default_factory=list)
    loudness_lufs: float
    true_peak_dbtp: float
    cost_usd: float = 0.0
    notes: list[str] = Field(default_factory=list, description="what did not go as planned, and why")
    seconds: float = 0.0


@dataclass
class Voice:
    """One narration line, decoded: where it starts and its samples (float32 stereo, (n, 2))."""

    start: float
    samples: np.ndarray


def loudness(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Integrated loudness in LUFS (BS.1770-4 gating); -inf for silence."""
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(audio.astype(np.float64)))


def true_peak_dbtp(audio: np.ndarray) -> float:
    """Peak of the 4x oversampled signal (BS.1770-4 annex 2), in dBTP."""
    peak = float(np.max(np.abs(signal.resample_poly(audio, 4, 1, axis=0)))) if audio.size else 0.0
    return 20 * np.log10(max(peak, 1e-9))


def limit(audio: np.ndarray, ceiling_dbtp: float = CEILING_DBTP, sample_rate: int = SAMPLE_RATE,
          lookahead_s: float = 0.005, release_s: float = 0.08) -> np.ndarray:
    """A look-ahead peak limiter: the gain each sample needs to stay under the ceiling (with some
    margin for inter-sample peaks), held over the look-ahead window so it is down before the peak
    arrives, and released smoothly. Transparent where nothing is near the ceiling."""
    ceiling = 10 ** ((ceiling_dbtp - 0.3) / 20)
    peak = np.max(np.abs(audio), axis=1)
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-9))
    window = max(1, int(lookahead_s * sample_rate))
    held = minimum_filter1d(need, size=2 * window + 1, mode="nearest")
    # Release: a one-pole smoother that lets the gain rise slowly but never above what is needed.
    coeff = np.exp(-1.0 / (release_s * sample_rate))
    smooth = signal.lfilter([1 - coeff], [1, -coeff], held, zi=[held[0] * coeff])[0]
    gain = np.minimum(held, smooth)
    return (audio * gain[:, None]).astype(np.float32)


def normalize(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, target_lufs: float = TARGET_LUFS,
              ceiling_dbtp: float = CEILING_DBTP) -> np.ndarray:
    """Gain to the target loudness, then the limiter; a second, small gain step corrects what
    the limiter took off (it only ever lowers peaks, so loudness can only have dropped)."""
    out = audio.astype(np.float32)
    for _ in range(2):
        measured = loudness(out, sample_rate)
        if not np.isfinite(measured):
            return out  # silence stays silence
        out = limit(out * np.float32(10 ** ((target_lufs - measured) / 20)), ceiling_dbtp, sample_rate)
    return out


def duck_envelope(n: int, voices: Sequence[Voice], sample_rate: int = SAMPLE_RATE,
                  duck_db: float = DUCK_DB, ramp_s: float = DUCK_RAMP_S) -> np.ndarray:
    """Gain for the music: 1 where nobody speaks, duck_db under each line, with smooth ramps
    that begin before the line so its first syllable is never masked."""
    speaking = np.zeros(n, np.float32)
    ramp = int(ramp_s * sample_rate)
    for voice in voices:
        a = max(0, int(voice.start * sample_rate) - ramp)
        b = min(n, int(voice.start * sample_rate) + len(voice.samples) + ramp)
        speaking[a:b] = 1.0
    kernel = np.hanning(2 * ramp + 1).astype(np.float32)
    speaking = np.clip(signal.fftconvolve(speaking, kernel / kernel.sum(), mode="same"), 0, 1)
    return (1 - speaking * (1 - 10 ** (duck_db / 20))).astype(np.float32)


def mix(bed: np.ndarray, voices: Sequence[Voice], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The music bed ducked under the narration, with each line added at its start (a line that
    would run past the end is cut there; narrate() already ends every line before it)."""
    out = bed * duck_envelope(len(bed), voices, sample_rate)[:, None]
    for voice in voices:
        start = int(voice.start * sample_rate)
        end = min(len(out), start + len(voice.samples))
        out[start:end] += voice.samples[:end - start]
    return out


def scene_boundaries(durations: Sequence[float]) -> list[float]:
    """Scene-change times (seconds), where the music marks the transitions."""
    return np.cumsum(durations)[:-1].tolist()


def make_bed(mood: str, durations: Sequence[float], seed: str) -> tuple[np.ndarray, dict, str | None]:
    """The music for the ad's scene lengths, what it is (engine, mood, bpm), and a note when the
    storyboard's mood was not one we know."""
    style, note = style_for(mood)
    bed = compose(style.name, float(sum(durations)), scene_boundaries(durations), seed=seed)
    return bed, {"music_engine": MUSIC_ENGINE, "mood": style.name, "bpm": style.bpm}, note


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """16-bit PCM WAV, written atomically (the encoder takes it as a second input)."""
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)
    with atomic_path(path) as tmp:
        wavfile.write(tmp, sample_rate, pcm)
    return path


def read_audio(path: Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Any audio FFmpeg reads (WAV, MP3, the MP4's AAC) as float32 stereo (n, 2) at sample_rate:
    PyAV's resampler converts the format, layout and rate in one place."""
    resampler = av.AudioResampler(format="flt", layout="stereo", rate=sample_rate)
    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks += [out.to_ndarray().reshape(-1, 2) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1, 2) for out in resampler.resample(None)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 2), np.float32)


def _instructions(job: JobSpec) -> str:
    language = "Korean" if language_of(job.brief) == "ko" else "English"
    return (f"Voice-over for a {job.brief.duration}-second vertical video ad for {job.brief.product}. Speak "
            f"{language} naturally, warm and confident, with clear diction at an ad's brisk pace. "
            f"Tone: {job.brief.tone}.")


def _fit_line(scene: Scene, start: float, raw: Path, spoken: float, out: Path, ad_end: float,
              ffmpeg: AudioConverter) -> str:
    """Convert a spoken line (`spoken` seconds long) to 48 kHz stereo WAV, sped up (pitch kept,
    FFmpeg's atempo) when it is longer than its scene allows; returns a note when it still runs
    past its scene."""
    window = max(0.5, scene.duration_seconds - NARRATION_LEAD_S - NARRATION_TAIL_S)
    tempo = min(MAX_TEMPO, max(1.0, spoken / window))
    limit_s = ad_end - END_GAP_S - start
    fitted = spoken / tempo
    filters = [f"atempo={tempo:.4f}"] if tempo > 1.0005 else []
    note = ""
    if fitted > limit_s:  # even sped up it would run past the ad's end: cut it there, with a fade
        filters += [f"atrim=0:{limit_s:.3f}", f"afade=t=out:st={max(0.0, limit_s - 0.08):.3f}:d=0.08"]
        note = f"{scene.id}: narration cut at the ad's end ({fitted:.1f} s of speech, {limit_s:.1f} s left)"
    elif fitted > window:
        note = f"{scene.id}: narration runs {fitted - window:.1f} s into the next scene"
    ffmpeg.run(["-i", str(raw), *(["-af", ",".join(filters)] if filters else []), "-ar", str(SAMPLE_RATE),
                "-ac", "2", "-c:a", "pcm_s16le"], out)
    return note



def narrate(job: JobSpec, plan: Storyboard, folder: Path, tts: Speaker, ffmpeg: AudioConverter,
            log: Callable[[str], None]) -> tuple[list[NarrationLine], list[Voice], str, float, list[str]]:
    """Speak every scene's narration line: (lines, their decoded voices, engine, cost in USD,
    notes). What the API said
    is cached by what was asked (model, voice, instructions, text), so re-assembling after a scene
    is re-made costs nothing; fitting each line to its scene is cheap and redone every time. A
    failed line is left out with a note, and the ad goes on."""
    why_not = tts.unavailable()
    if why_not:
        return [], [], f"none ({why_not})", 0.0, []
    lines, voices, cost, notes = [], [], 0.0, []
    instructions, ad_end = _instructions(job), plan.duration_seconds
    start = 0.0
    for scene in plan.scenes:
        scene_start, start = start, start + scene.duration_seconds
        text = scene.narration.strip()
        if not text:
            continue
        key = hashlib.sha256(json.dumps([tts.engine, instructions, text], ensure_ascii=False).encode()).hexdigest()
        speech = folder / f"{key[:16]}.speech.wav"  # as the API said it: the only part that costs money
        fetched = not speech.is_file()
        if fetched:
            try:
                data = tts.speak(text, instructions)
            except SpeechError as error:
                notes.append(f"{scene.id}: no narration: {error}")
                log(f"{scene.id}: narration failed, left out: {error}")
                continue
            with atomic_path(speech) as tmp:
                tmp.write_bytes(data)
        # Decoded by FFmpeg (PyAV), not a WAV parser: streamed WAV answers carry no data length.
        spoken = len(read_audio(speech)) / SAMPLE_RATE
        cost += spoken / 60 * tts.price_per_minute_usd if fetched else 0.0
        path, at = folder / f"{scene.id}.wav", scene_start + NARRATION_LEAD_S
        if note := _fit_line(scene, at, speech, spoken, path, ad_end, ffmpeg):
            notes.append(note)
        samples = read_audio(path)
        voices.append(Voice(at, samples))
        lines.append(NarrationLine(scene_id=scene.id, text=text, start=round(at, 3),
                                   seconds=round(len(samples) / SAMPLE_RATE, 3),
                                   path=str(path), engine=tts.engine))
    return lines, voices, tts.engine, round(cost, 5), notes


def build(job: JobSpec, plan: Storyboard, out: Path, tts: Speaker, ffmpeg: AudioConverter,
          log: Callable[[str], None] = lambda _: None) -> SoundtrackRecord:
    """The job's soundtrack WAV at `out` (music, narration, mix, loudness) and its record."""
    started = time.perf_counter()
    durations = [s.duration_seconds for s in plan.scenes]
    bed, music, mood_note = make_bed(plan.metadata.bgm_mood, durations, seed=job.job_id)
    lines, spoken, engine, cost, notes = narrate(job, plan, out.parent / "voice", tts, ffmpeg, log)
    voices = [Voice(v.start, normalize(v.samples, target_lufs=VOICE_LUFS)) for v in spoken]
    if voices:
        bed = normalize(bed, target_lufs=BED_UNDER_VOICE_LUFS)
    audio = normalize(mix(bed, voices))
    write_wav(out, audio)
    notes = [mood_note, *notes] if mood_note else notes
    return SoundtrackRecord(job_id=job.job_id, path=str(out), duration=round(len(audio) / SAMPLE_RATE, 4),
                            narration_engine=engine, narration=lines, loudness_lufs=round(loudness(audio), 2),
                            true_peak_dbtp=round(true_peak_dbtp(audio), 2), cost_usd=cost, notes=notes,
                            seconds=round(time.perf_counter() - started, 3), **music)

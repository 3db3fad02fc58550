"""The soundtrack: loudness, limiting, ducking, and narration through the real `openai` client
against a local speech-API stand-in (tests/tts_standin.py)."""

import json
from pathlib import Path

import numpy as np
import pytest
from dagster import DagsterInstance, materialize

from resources.artifacts import ArtifactStore
from resources.ffmpeg import FFmpegRunner
from resources.tts import TTSResource
from sparklio_assets import store_paths as layout
from sparklio_assets.files import write_model
from sparklio_assets.models import BrandKit, Brief, JobSpec
from sparklio_assets.music import SAMPLE_RATE
from sparklio_assets.planner import plan_storyboard
from sparklio_assets.soundtrack import (
    CEILING_DBTP,
    DUCK_DB,
    MAX_TEMPO,
    NARRATION_LEAD_S,
    TARGET_LUFS,
    SoundtrackRecord,
    Voice,
    build,
    duck_envelope,
    limit,
    loudness,
    mix,
    normalize,
    read_audio,
    true_peak_dbtp,
)
from tts_standin import TTSStandIn, spoken_seconds

DATA = Path(__file__).resolve().parents[1] / "sparklio_assets" / "data"
TRICKY = '피로 "OUT": 100% 보습 \\ 진짜'


def rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12)


def band_db(x: np.ndarray, low: float, high: float) -> float:
    """Energy of a mono signal between two frequencies, in dB."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    return 10 * np.log10(spectrum[(freqs >= low) & (freqs < high)].sum() + 1e-12)


@pytest.fixture
def tts_server(monkeypatch):
    monkeypatch.delenv("SPARKLIO_TTS", raising=False)
    server = TTSStandIn()
    yield server
    server.close()


def tts_for(server: TTSStandIn, **config) -> TTSResource:
    return TTSResource(openai_api_key="sk-test", openai_base_url=server.url, max_retries=0, **config)


def job_and_plan(narrations: dict[str, str] | None = None, duration: int = 15):
    brief = Brief.model_validate({**json.loads((DATA / "demo_brief.json").read_text()), "duration": duration})
    job = JobSpec(job_id="sound-job", brief=brief, brand=BrandKit.model_validate_json((DATA / "demo_brand.json").read_text()))
    plan = plan_storyboard(brief, job.brand_kit)
    if narrations:
        plan = plan.model_copy(update={"scenes": [s.model_copy(update={"narration": narrations.get(s.id, s.narration)})
                                                  for s in plan.scenes]})
    return job, plan


# ---------------------------------------------------------------------------------------------
# Loudness and peaks

def test_normalize_reaches_the_target_loudness_under_the_true_peak_ceiling():
    rng = np.random.default_rng(1)
    t = np.arange(10 * SAMPLE_RATE) / SAMPLE_RATE
    quiet = (0.02 * np.sin(2 * np.pi * 220 * t))[:, None].repeat(2, axis=1)
    quiet[::SAMPLE_RATE // 2] += 0.3  # sharp clicks: the gain alone would push them past the ceiling
    for signal in (quiet, rng.normal(0, 0.3, (10 * SAMPLE_RATE, 2))):
        out = normalize(signal.astype(np.float32))
        assert abs(loudness(out) - TARGET_LUFS) < 0.3, loudness(out)
        assert true_peak_dbtp(out) <= CEILING_DBTP + 0.05, true_peak_dbtp(out)
    silence = np.zeros((SAMPLE_RATE, 2), np.float32)
    assert np.array_equal(normalize(silence), silence)


def test_limiter_leaves_quiet_audio_alone_and_catches_a_peak():
    rng = np.random.default_rng(2)
    quiet = rng.normal(0, 0.05, (SAMPLE_RATE, 2)).astype(np.float32)
    assert np.allclose(limit(quiet), quiet, atol=1e-6)
    spiky = quiet.copy()
    spiky[SAMPLE_RATE // 2] = 1.5
    out = limit(spiky)
    assert np.max(np.abs(out)) <= 10 ** (CEILING_DBTP / 20)
    assert np.allclose(out[: SAMPLE_RATE // 4], quiet[: SAMPLE_RATE // 4], atol=1e-6), "only near the peak"


def test_music_ducks_under_a_line_and_comes_back():
    voice = Voice(start=2.0, samples=np.full((SAMPLE_RATE, 2), 0.1, np.float32))
    gain = duck_envelope(5 * SAMPLE_RATE, [voice])
    at = lambda s: gain[int(s * SAMPLE_RATE)]
    assert at(0.5) == pytest.approx(1.0) and at(4.5) == pytest.approx(1.0)
    assert at(2.5) == pytest.approx(10 ** (DUCK_DB / 20), rel=1e-3)
    assert at(2.0) < 0.7, "the music is already down when the first syllable starts"
    bed = np.full((5 * SAMPLE_RATE, 2), 0.2, np.float32)
    out = mix(bed, [voice])
    assert out[int(2.5 * SAMPLE_RATE), 0] == pytest.approx(0.2 * 10 ** (DUCK_DB / 20) + 0.1, rel=1e-3)


# ---------------------------------------------------------------------------------------------
# Whole soundtracks

def test_music_only_soundtrack_says_why_there_is_no_narration(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("SPARKLIO_TTS", raising=False)
    job, plan = job_and_plan()
    record = build(job, plan, tmp_path / "soundtrack.wav", TTSResource(), FFmpegRunner())
    audio = read_audio(Path(record.path))
    assert len(audio) == round(plan.duration_seconds * SAMPLE_RATE)
    assert record.narration == [] and record.narration_engine == "none (no OPENAI_API_KEY)"
    assert record.music_engine == "builtin synth" and record.mood == plan.metadata.bgm_mood
    assert abs(loudness(audio) - TARGET_LUFS) < 0.3 and abs(record.loudness_lufs - TARGET_LUFS) < 0.3
    assert record.true_peak_dbtp <= CEILING_DBTP + 0.05


def test_narration_is_spoken_placed_at_its_scenes_and_mixed(tmp_path, tts_server):
    job, plan = job_and_plan({"scene_002": TRICKY})
    spoken = [s for s in plan.scenes if s.narration.strip()]
    record = build(job, plan, tmp_path / "audio" / "soundtrack.wav", tts_for(tts_server), FFmpegRunner())

    assert record.narration_engine == "openai:gpt-4o-mini-tts (coral)"
    assert [line.scene_id for line in record.narration] == [s.id for s in spoken]
    sent = {r["input"]: r for r in tts_server.requests}
    assert TRICKY in sent, "Korean copy with quotes, colon, percent and backslash goes to the API verbatim"
    request = sent[TRICKY]
    assert (request["model"], request["voice"], request["response_format"]) == ("gpt-4o-mini-tts", "coral", "wav")
    assert "Korean" in request["instructions"] and job.brief.tone in request["instructions"]

    starts = dict(zip([s.id for s in plan.scenes], np.cumsum([0] + [s.duration_seconds for s in plan.scenes])))
    audio = read_audio(Path(record.path))
    mono = audio.mean(axis=1)
    for line in record.narration:
        assert line.start == pytest.approx(starts[line.scene_id] + NARRATION_LEAD_S, abs=1e-3)
        expected = spoken_seconds(line.text)
        assert expected / MAX_TEMPO - 0.05 <= line.seconds <= expected + 0.05, (line, expected)
        # The stand-in's voice is a 150 Hz buzz: it is in the mix while the line plays.
        a = int((line.start + 0.1) * SAMPLE_RATE)
        during = mono[a:a + SAMPLE_RATE // 4]
        before = mono[a - int(0.35 * SAMPLE_RATE):a - int(0.35 * SAMPLE_RATE) + SAMPLE_RATE // 4]
        assert band_db(during, 140, 160) > band_db(before, 140, 160) + 6, line.scene_id
    assert abs(loudness(audio) - TARGET_LUFS) < 0.3
    assert record.cost_usd == pytest.approx(
        sum(spoken_seconds(s.narration) for s in spoken) / 60 * 0.015, rel=0.02)


def test_narration_is_cached_and_a_failed_line_is_left_out_with_a_note(tmp_path, tts_server):
    job, plan = job_and_plan()
    out = tmp_path / "audio" / "soundtrack.wav"
    first = build(job, plan, out, tts_for(tts_server), FFmpegRunner())
    asked = len(tts_server.requests)
    again = build(job, plan, out, tts_for(tts_server), FFmpegRunner())
    assert len(tts_server.requests) == asked, "re-mixing asks the API for nothing it has already said"
    assert again.cost_usd == 0 and [l.path for l in again.narration] == [l.path for l in first.narration]

    changed = plan.model_copy(update={"scenes": [plan.scenes[0].model_copy(update={"narration": "새 문장"}),
                                                 *plan.scenes[1:]]})
    tts_server.fail_next(500)
    record = build(job, changed, out, tts_for(tts_server), FFmpegRunner())
    assert "scene_001" not in [line.scene_id for line in record.narration]
    assert any(n.startswith("scene_001: no narration:") and "HTTP 500" in n for n in record.notes), record.notes
    assert len(record.narration) == len(first.narration) - 1
    assert len(read_audio(Path(record.path))) == round(plan.duration_seconds * SAMPLE_RATE)


def test_a_line_too_long_for_its_scene_is_sped_up_then_allowed_to_run_on(tmp_path, tts_server):
    long = "이 문장은 장면보다 훨씬 깁니다 그래서 빠르게 읽고 다음 장면까지 이어집니다"  # ~6 s of speech
    job, plan = job_and_plan({"scene_002": long})
    record = build(job, plan, tmp_path / "soundtrack.wav", tts_for(tts_server), FFmpegRunner())
    line = next(l for l in record.narration if l.scene_id == "scene_002")
    assert line.seconds == pytest.approx(spoken_seconds(long) / MAX_TEMPO, abs=0.05)
    assert any(n.startswith("scene_002: narration runs") for n in record.notes), record.notes
    asked = len(tts_server.requests)
    again = build(job, plan, tmp_path / "soundtrack.wav", tts_for(tts_server), FFmpegRunner())
    assert len(tts_server.requests) == asked and again.notes == record.notes, "a cached line is fitted again"

    last = plan.scenes[-1].id
    job, plan = job_and_plan({last: long})
    record = build(job, plan, tmp_path / "end.wav", tts_for(tts_server), FFmpegRunner())
    line = next(l for l in record.narration if l.scene_id == last)
    assert line.start + line.seconds <= plan.duration_seconds - 0.35
    assert any(n.startswith(f"{last}: narration cut at the ad's end") for n in record.notes), record.notes


def test_an_unknown_voice_is_reported_with_the_apis_reason(tmp_path, tts_server):
    job, plan = job_and_plan()
    record = build(job, plan, tmp_path / "soundtrack.wav", tts_for(tts_server, voice="robot"), FFmpegRunner())
    assert record.narration == []
    assert all("HTTP 400" in n and "robot" in n for n in record.notes) and record.notes


def test_soundtrack_asset_reports_its_engines(tmp_path, tts_server):
    from sparklio_assets.assets import soundtrack

    store = ArtifactStore(home=str(tmp_path))
    job, plan = job_and_plan()
    write_model(layout.job_path(store, job.job_id), job)
    write_model(layout.storyboard_path(store, job.job_id), plan)
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("jobs", [job.job_id])
    result = materialize([soundtrack], partition_key=job.job_id, instance=instance, resources={
        "store": store, "tts": tts_for(tts_server), "ffmpeg": FFmpegRunner()})
    assert result.success
    meta = result.asset_materializations_for_node("soundtrack")[0].metadata
    assert meta["narration_engine"].value == "openai:gpt-4o-mini-tts (coral)"
    assert meta["music_engine"].value == "builtin synth" and meta["mood"].value == plan.metadata.bgm_mood
    record = store.read(layout.soundtrack_record_path(store, job.job_id), SoundtrackRecord)
    assert record.narration and Path(record.path) == layout.soundtrack_path(store, job.job_id)

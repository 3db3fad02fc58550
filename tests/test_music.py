"""The synthesized music bed: its format, determinism, and that it is music in the mood's tempo and
key, with a clean start, a decaying ending and audible accents at the scene boundaries.

The checks measure the signal (onset autocorrelation for tempo, a pitch-class histogram for the key,
band energies for the accents), so they hold for any arrangement that meets the brief.
"""

from functools import cache

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

from sparklio_assets.music import DEFAULT_MOOD, MOODS, SAMPLE_RATE, MoodStyle, compose, style_for

SR = SAMPLE_RATE


@cache
def bed(mood: str, duration: float, boundaries: tuple[float, ...] = (), seed: str = "") -> np.ndarray:
    """compose, once per argument set for the whole module (each call takes a fraction of a second)."""
    out = compose(mood, duration, boundaries, seed)
    out.setflags(write=False)
    return out


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def db(ratio: float) -> float:
    return 20 * np.log10(max(ratio, 1e-12))


def estimate_bpm(y: np.ndarray, lo: float = 70.0, hi: float = 160.0) -> float:
    """Tempo from a spectral-flux onset envelope's autocorrelation, over lags for lo..hi BPM
    (the usual tempo prior: a single octave, so the answer is the beat, not the bar or the 8th)."""
    mono = y.mean(axis=1)
    n_fft, hop = 2048, 256
    frames = sliding_window_view(mono, n_fft)[::hop] * np.hanning(n_fft)
    log_mag = np.log1p(1000 * np.abs(np.fft.rfft(frames, axis=1)))
    flux = np.maximum(np.diff(log_mag, axis=0), 0).sum(axis=1)
    fps = SR / hop
    k = int(fps * 0.5)
    flux = np.maximum(flux - np.convolve(flux, np.ones(k) / k, mode="same"), 0)  # onsets above the local mean
    flux -= flux.mean()
    ac = np.fft.irfft(np.abs(np.fft.rfft(flux, 2 * len(flux))) ** 2)[: len(flux)]
    lags = np.arange(int(fps * 60 / hi), int(fps * 60 / lo) + 1)
    i = int(lags[np.argmax(ac[lags])])
    a, b, c = ac[i - 1], ac[i], ac[i + 1]
    lag = i + 0.5 * (a - c) / (a - 2 * b + c)  # parabolic interpolation between lags
    return float(60 * fps / lag)


def chroma(y: np.ndarray, tonic: int) -> np.ndarray:
    """Spectral power per pitch class (0 = the tonic) between 55 Hz and 2 kHz."""
    mono = y.mean(axis=1)
    power = np.abs(np.fft.rfft(mono * np.hanning(len(mono)))) ** 2
    freqs = np.fft.rfftfreq(len(mono), 1 / SR)
    keep = (freqs >= 55) & (freqs <= 2000)
    pcs = (np.round(12 * np.log2(freqs[keep] / 440) + 69).astype(int) - tonic) % 12
    return np.bincount(pcs, weights=power[keep], minlength=12)


def band_power(y: np.ndarray, lo: float, hi: float) -> float:
    power = np.abs(np.fft.rfft(y.mean(axis=1))) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    return float(power[(freqs >= lo) & (freqs < hi)].sum())


# ---------------------------------------------------------------------------------------------
# Moods and names


def test_moods_and_their_styles():
    assert set(MOODS) == {"calm_inspiring", "upbeat_energetic", "upbeat_playful", "elegant_minimal"}
    assert DEFAULT_MOOD in MOODS
    for name, style in MOODS.items():
        assert isinstance(style, MoodStyle) and style.name == name
        assert len(style.progression) == 4
        for chord in style.progression:  # every chord tone is in the key
            assert all((chord.root + tone) % 12 in style.scale for tone in chord.tones), (name, chord)
    bpms = {name: style.bpm for name, style in MOODS.items()}
    assert bpms["upbeat_energetic"] > bpms["upbeat_playful"] > bpms["calm_inspiring"] > bpms["elegant_minimal"]
    assert MOODS["calm_inspiring"].kick and not MOODS["calm_inspiring"].hats
    assert MOODS["upbeat_energetic"].kick == (0.0, 1.0, 2.0, 3.0) and MOODS["upbeat_energetic"].hats
    assert not MOODS["elegant_minimal"].kick and not MOODS["elegant_minimal"].hats


@pytest.mark.parametrize("spelling", ["calm_inspiring", "Calm Inspiring", "calm-inspiring", "  CALM_inspiring "])
def test_style_for_normalises_names(spelling):
    style, note = style_for(spelling)
    assert style is MOODS["calm_inspiring"] and note is None
    assert style_for("Upbeat-Energetic")[0] is MOODS["upbeat_energetic"]


@pytest.mark.parametrize("bad", ["jazzy", "", "calm"])
def test_unknown_mood_falls_back_with_a_note(bad):
    style, note = style_for(bad)
    assert style is MOODS[DEFAULT_MOOD]
    assert note is not None and repr(bad) in note and DEFAULT_MOOD in note


def test_unknown_mood_composes_the_default():
    assert np.array_equal(compose("jazzy", 4.0, seed="s"), compose(DEFAULT_MOOD, 4.0, seed="s"))


# ---------------------------------------------------------------------------------------------
# Format


@pytest.mark.parametrize("duration", [15.0, 29.5, 60.0, 3.0, 7.25])
def test_shape_dtype_length_and_range(duration):
    mood = ("calm_inspiring", "upbeat_energetic", "upbeat_playful", "elegant_minimal")[int(duration) % 4]
    y = bed(mood, duration, (duration / 2,))
    assert y.dtype == np.float32 and y.shape == (round(duration * SR), 2)
    assert np.all(np.isfinite(y))
    peak = float(np.abs(y).max())
    assert 0.3 < peak <= 1.0
    assert np.all(np.abs(y.mean(axis=0)) < 1e-3)  # no DC offset


def test_other_sample_rates_keep_the_exact_length():
    y = compose("upbeat_playful", 5.3, (2.0,), sample_rate=44_100)
    assert y.shape == (round(5.3 * 44_100), 2) and np.abs(y).max() <= 1.0


def test_rejects_a_nonsense_duration():
    with pytest.raises(ValueError):
        compose("calm_inspiring", 0.0)


def test_deterministic_and_seeded():
    a = compose("upbeat_energetic", 12.0, (4.0, 8.5), seed="brief-42")
    b = compose("upbeat_energetic", 12.0, (4.0, 8.5), seed="brief-42")
    c = compose("upbeat_energetic", 12.0, (4.0, 8.5), seed="brief-43")
    assert np.array_equal(a, b)
    assert a.shape == c.shape and not np.array_equal(a, c)


@pytest.mark.parametrize("mood", list(MOODS))
def test_stereo_is_wide_but_coherent(mood):
    y = bed(mood, 15.0)
    assert not np.array_equal(y[:, 0], y[:, 1])
    corr = np.corrcoef(y[:, 0], y[:, 1])[0, 1]
    assert 0.5 < corr < 0.995


# ---------------------------------------------------------------------------------------------
# Musicality: tempo, key, spectrum


@pytest.mark.parametrize("mood", ["upbeat_energetic", "calm_inspiring", "upbeat_playful"])
def test_tempo_matches_the_mood(mood):
    y = bed(mood, 30.0)
    bpm = estimate_bpm(y[4 * SR:25 * SR])  # the groove, past the intro and before the ending
    assert bpm == pytest.approx(MOODS[mood].bpm, rel=0.03)


def test_seed_keeps_tempo_and_moods_differ():
    energetic = estimate_bpm(bed("upbeat_energetic", 30.0, seed="other")[4 * SR:25 * SR])
    calm = estimate_bpm(bed("calm_inspiring", 30.0)[4 * SR:25 * SR])
    assert energetic == pytest.approx(MOODS["upbeat_energetic"].bpm, rel=0.03)
    assert abs(energetic - calm) > 20


@pytest.mark.parametrize("mood", list(MOODS))
def test_pitch_content_follows_the_key(mood):
    style = MOODS[mood]
    hist = chroma(bed(mood, 30.0)[6 * SR:24 * SR], style.tonic)
    top = np.argsort(hist)[::-1]
    assert set(top[:5]) <= set(style.scale), top
    assert 0 in top[:3]  # the tonic is among the strongest pitch classes
    assert hist[list(style.scale)].sum() > 0.8 * hist.sum()


@pytest.mark.parametrize("mood", list(MOODS))
def test_has_bass_and_mids(mood):
    y = bed(mood, 30.0)[6 * SR:24 * SR]
    total = band_power(y, 20, 20000)
    assert band_power(y, 40, 200) > 0.1 * total
    assert band_power(y, 200, 2000) > 0.1 * total
    assert band_power(y, 8000, 20000) < 0.05 * total  # the bright parts are low-passed: not harsh


# ---------------------------------------------------------------------------------------------
# Start, ending, transitions


@pytest.mark.parametrize("mood", list(MOODS))
@pytest.mark.parametrize("duration", [15.0, 29.5])
def test_fades_in_and_rings_out(mood, duration):
    y = bed(mood, duration)
    n = len(y)
    middle = rms(y[int(0.35 * n): int(0.65 * n)])
    assert np.abs(y[: int(0.002 * SR)]).max() < 1e-3  # no click at sample 0
    assert rms(y[: int(0.01 * SR)]) < 0.2 * rms(y[int(0.1 * SR): int(0.25 * SR)])  # a quick rise...
    assert rms(y[int(0.15 * SR): int(0.25 * SR)]) > 0.1 * middle  # ...over within a quarter second
    last_50ms = rms(y[-int(0.05 * SR):])
    assert db(middle / last_50ms) >= 40 and db(last_50ms) < -50  # near silence, absolutely too
    # A decay, not a cut: the last second is quieter than the middle, and each of its quarters
    # quieter than the one before.
    assert rms(y[-SR:]) < 0.5 * middle
    quarters = [rms(q) for q in np.array_split(y[-SR:], 4)]
    assert all(b < a for a, b in zip(quarters, quarters[1:])), quarters


def test_drums_stop_before_the_end():
    """The energetic bed's hats (> 6 kHz) are gone in the last second: the ending breathes."""
    y = bed("upbeat_energetic", 29.5)
    highs = signal.sosfilt(signal.butter(4, 6000, "highpass", fs=SR, output="sos"), y.mean(axis=1))
    assert rms(highs[-SR:]) < 0.1 * rms(highs[10 * SR:20 * SR])


def test_a_short_track_still_lands():
    y = bed("elegant_minimal", 3.0)
    assert np.abs(y[: int(0.002 * SR)]).max() < 1e-3
    assert db(rms(y[SR // 2: 2 * SR]) / rms(y[-int(0.05 * SR):])) >= 40


@pytest.mark.parametrize("mood", ["calm_inspiring", "elegant_minimal"])
def test_boundaries_get_an_audible_accent(mood):
    """In moods without hats, the band above 4 kHz lights up at each scene boundary: the whoosh and
    cymbal are there, and yet they sit well under the music."""
    # The extra layer joins on the downbeat after the first boundary, bar 4 here as without
    # boundaries, so the two renders differ only by the accents.
    duration, boundaries = 24.0, (11.3, 17.2)
    with_accents = bed(mood, duration, boundaries)
    without = bed(mood, duration)
    hp = signal.butter(4, 4000, "highpass", fs=SR, output="sos")
    hi_with = signal.sosfilt(hp, with_accents.mean(axis=1))
    hi_without = signal.sosfilt(hp, without.mean(axis=1))

    def around(x: np.ndarray, t: float, half: float = 0.2) -> float:
        return rms(x[int((t - half) * SR): int((t + half) * SR)])

    beat = 60 / MOODS[mood].bpm
    mid_scene = (round(boundaries[0] / 2 / beat) + 0.25) * beat  # mid first scene, between beats
    body = rms(without[2 * SR: 20 * SR])
    for b in boundaries:
        assert db(around(hi_with, b) / around(hi_with, mid_scene)) > 6  # the accent stands out up top...
        assert db(around(hi_with, b) / around(hi_without, b)) > 6  # ...and it is the accent, not the music
        window = slice(int((b - 0.3) * SR), int((b + 0.3) * SR))
        accent = with_accents[window] - without[window]
        assert 11 < db(body / rms(accent)) < 19  # ...yet it sits about 15 dB under the bed

"""Baselines: lengths, layouts, finiteness, low band kept, high band filled (or not), and quality order."""
from __future__ import annotations

import numpy as np
import pytest
import soxr
from scipy import signal

pytest.importorskip("librosa", reason="the STFT baselines need the eval extra")
from bandlift.train.eval import baselines, metrics  # noqa: E402
from signals import music_like  # noqa: E402

RATE = 48000


@pytest.fixture(scope="module")
def signals():
    ref = music_like()
    low = soxr.resample(ref, RATE, 16000, quality="VHQ")
    return ref, low


def band_db(y, lo, hi, rate=RATE):
    """Mean power density (dB) of `y` between lo and hi Hz (Welch, Hann)."""
    f, psd = signal.welch(y, rate, nperseg=4096)
    return 10 * np.log10(psd[(f >= lo) & (f < hi)].mean() + 1e-30)


def high_band_tilt_db(y, part=slice(None)):
    """dB from 9-11 kHz to 17-21 kHz of y[part]."""
    return band_db(y[part], 17000, 21000) - band_db(y[part], 9000, 11000)


def high_band_total_db(y, part=slice(None)):
    """Total power above 8 kHz of y[part] (band_db is a density: this compares whole bands)."""
    f, psd = signal.welch(y[part], RATE, nperseg=4096)
    return 10 * np.log10(psd[f >= 8000].sum() + 1e-30)


def steepened_high_band(ref, sinc):
    """ref's band above 8 kHz (ref - sinc), tilted down 24 dB per octave more."""
    spec = np.fft.rfft(ref - sinc)
    freqs = np.fft.rfftfreq(len(ref), 1 / RATE)
    return np.fft.irfft(spec * 10 ** (-24 * np.log2(np.maximum(freqs, 8000) / 8000) / 20), len(ref))


@pytest.mark.parametrize("name", list(baselines.BASELINES))
def test_layout_length_and_finite(name, signals):
    fn = baselines.BASELINES[name]
    _, low = signals
    y = fn(low, 16000, RATE)
    assert y.dtype == np.float32 and y.shape == (3 * len(low),) and np.isfinite(y).all()
    stereo = np.stack([low, -low], axis=1)[:7001]  # odd length, 2 channels
    y2 = fn(stereo, 16000, 44100)
    assert y2.shape == (round(7001 * 44100 / 16000), 2) and np.isfinite(y2).all()
    # Silence in -> silence out (no noise invented from nothing), short input works.
    assert not np.any(fn(np.zeros(3000, np.float32), 16000, RATE))
    assert fn(low[:100], 16000, RATE).shape == (300,)


@pytest.mark.parametrize("name", ["sinc", "noise_fill", "sbr"])
def test_low_band_is_preserved(name, signals):
    ref, low = signals
    y = baselines.BASELINES[name](low, 16000, RATE)
    sinc = baselines.sinc(low, 16000, RATE)
    # Below the cutoff the output matches the reference and (for the extensions) the sinc output.
    assert metrics.lsd(ref, y, RATE, lf_to=7000) < 0.05
    assert metrics.lsd(sinc, y, RATE, lf_to=7000) < 0.01


def test_high_band_energy(signals):
    ref, low = signals
    ref_hf = band_db(ref, 9000, 20000)
    assert band_db(baselines.sinc(low, 16000, RATE), 8500, 24000) < ref_hf - 80
    for name in ("noise_fill", "sbr", "griffin_lim"):
        y = baselines.BASELINES[name](low, 16000, RATE)
        # Filled at about the right level: within 10 dB of the reference's high band.
        assert abs(band_db(y, 9000, 20000) - ref_hf) < 10, name


def test_extensions_beat_sinc_and_spline_on_lsd(signals):
    ref, low = signals
    lsd = {name: metrics.lsd(ref, fn(low, 16000, RATE), RATE) for name, fn in baselines.BASELINES.items()}
    assert lsd["noise_fill"] < 0.6 * lsd["sinc"]
    assert lsd["sbr"] < 0.6 * lsd["sinc"]
    assert lsd["griffin_lim"] < 0.7 * lsd["sinc"]
    assert lsd["noise_fill"] < lsd["spline"]


def test_spline_is_accurate_in_band():
    t = np.arange(16000) / 16000
    x = np.sin(2 * np.pi * 300 * t)
    y = baselines.spline(x, 16000, RATE)
    truth = np.sin(2 * np.pi * 300 * np.arange(len(y)) / RATE)
    assert metrics.snr(truth[100:-100], y[100:-100]) > 50


def test_same_rate_band_limited_input(signals):
    ref, _ = signals
    taps = signal.firwin(1001, 7800, fs=RATE)
    low = signal.oaconvolve(ref, taps, mode="same")  # 48 kHz signal with an 8 kHz wall
    assert np.array_equal(baselines.sinc(low, RATE, RATE, cutoff_hz=8000), low.astype(np.float32))
    y = baselines.noise_fill(low, RATE, RATE, cutoff_hz=8000)
    assert y.shape == low.shape
    assert abs(band_db(y, 9000, 20000) - band_db(ref, 9000, 20000)) < 10
    assert metrics.lsd(ref, y, RATE) < 0.6 * metrics.lsd(ref, low, RATE)
    # A full-band input has nothing to extend.
    assert np.allclose(baselines.noise_fill(ref, RATE, RATE), ref)


def test_noise_fill_is_reproducible_and_seeded(signals):
    _, low = signals
    a = baselines.noise_fill(low, 16000, RATE)
    assert np.array_equal(a, baselines.noise_fill(low, 16000, RATE))
    assert not np.array_equal(a, baselines.noise_fill(low, 16000, RATE, seed=1))


def test_rejects_downsampling_and_bad_shapes():
    with pytest.raises(ValueError, match="upsample"):
        baselines.sinc(np.zeros(100), RATE, 16000)
    with pytest.raises(ValueError, match="shape"):
        baselines.noise_fill(np.zeros((2, 2, 2)), 16000, RATE)


def test_oracle_noise_matches_the_reference_band_and_bounds_snr(signals):
    """Noise with the reference's own high-band power: its high band matches the reference's level
    within 1 dB and beats every baseline on LSD, yet loses about 3 dB of SNR to sinc (uncorrelated
    energy where the reference's band is), the bound for methods that cannot know the phase."""
    ref, low = signals
    oracle = baselines.oracle_noise(low, 16000, RATE, reference=ref)
    assert oracle.shape == ref.shape and np.isfinite(oracle).all()
    assert abs(band_db(oracle, 9000, 20000) - band_db(ref, 9000, 20000)) < 1.0
    lsd = {name: metrics.lsd(ref, fn(low, 16000, RATE), RATE) for name, fn in baselines.BASELINES.items()}
    assert metrics.lsd(ref, oracle, RATE) < min(lsd.values())
    hf_share_db = band_db(ref, 8000, 24000) - band_db(ref, 0, 24000)
    snr_loss = metrics.snr(ref, baselines.sinc(low, 16000, RATE)) - metrics.snr(ref, oracle)
    print(f"oracle SNR loss {snr_loss:.2f} dB (high band {hf_share_db:.1f} dB re full band)")
    assert 1.0 < snr_loss < 4.0
    with pytest.raises(ValueError, match="reference"):
        baselines.oracle_noise(low, 16000, RATE)


def test_oracle_envelope_follows_the_reference_band_by_band_and_frame_by_frame(signals):
    """A coarse envelope (16 bands, ~21 ms frames) of the reference's own high band: each part of the
    band at the reference's level, silence where the reference's high band stops, and so an LSD
    between the per-bin oracle's and that of the noise fill, which cannot know where it stops."""
    ref, low = signals
    sinc = baselines.sinc(low, 16000, RATE)
    gate = (np.arange(len(ref)) < len(ref) // 2).astype(np.float32)  # the high band stops half-way
    gated = sinc + (ref - sinc) * gate
    oracle = baselines.oracle_envelope(low, 16000, RATE, reference=gated)
    assert oracle.shape == ref.shape and np.isfinite(oracle).all()
    first, second = slice(0, len(ref) // 2 - 2048), slice(len(ref) // 2 + 2048, None)
    for lo, hi in ((9000, 11000), (12000, 15000), (16000, 21000)):
        assert abs(band_db(oracle[first], lo, hi) - band_db(gated[first], lo, hi)) < 1.5, (lo, hi)
    assert band_db(oracle[second], 9000, 20000) < band_db(oracle[first], 9000, 20000) - 40
    # The noise fill only sees the (ungated) low band: it cannot know where the high band stops.
    per_bin = baselines.oracle_noise(low, 16000, RATE, reference=gated)
    fill = baselines.noise_fill(low, 16000, RATE)
    assert metrics.lsd(gated, per_bin, RATE) < metrics.lsd(gated, oracle, RATE) < metrics.lsd(gated, fill, RATE)
    with pytest.raises(ValueError, match="reference"):
        baselines.oracle_envelope(low, 16000, RATE)


def test_oracle_level_and_shape_each_take_one_part_of_the_reference_envelope(signals):
    """The oracle envelope split in two. The reference here is the music signal with its high band
    tilted down 24 dB per octave more than the input's top octave suggests, and silent in the second
    half: oracle_shape keeps noise_fill's level but the reference's tilt (and its silence),
    oracle_level keeps noise_fill's tilt but the reference's level (and its silence)."""
    ref, low = signals
    sinc = baselines.sinc(low, 16000, RATE)
    gate = (np.arange(len(ref)) < len(ref) // 2).astype(np.float32)
    steep = sinc + steepened_high_band(ref, sinc) * gate
    first, second = slice(0, len(ref) // 2 - 2048), slice(len(ref) // 2 + 2048, None)
    fill = baselines.noise_fill(low, 16000, RATE)
    out = {name: baselines.ORACLES[name](low, 16000, RATE, reference=steep) for name in ("oracle_level", "oracle_shape")}

    def tilt(y):
        return high_band_tilt_db(y, first)

    def level(y):
        return band_db(y[first], 9000, 21000)

    print({n: (round(tilt(y), 1), round(level(y), 1)) for n, y in (out | {"fill": fill, "ref": steep}).items()})
    assert tilt(steep) < tilt(fill) - 8  # the test's premise: the two shapes differ
    assert abs(tilt(out["oracle_shape"]) - tilt(steep)) < 2.0 and abs(tilt(out["oracle_level"]) - tilt(fill)) < 2.0
    total = high_band_total_db  # level: the total power above the cutoff
    assert abs(total(out["oracle_level"], first) - total(steep, first)) < 1.5
    assert abs(total(out["oracle_shape"], first) - total(fill, first)) < 1.5
    for y in out.values():  # the steep band is quieter than the other test's: silence is 30 dB down
        assert y.shape == ref.shape and np.isfinite(y).all()
        assert band_db(y[second], 9000, 20000) < band_db(y[first], 9000, 20000) - 30
    with pytest.raises(ValueError, match="reference"):
        baselines.oracle_shape(low, 16000, RATE)


def test_oracle_file_shape_holds_one_shape_for_the_whole_file(signals):
    """A reference whose high band is steep in its first half and as the music's own in its second:
    oracle_shape follows the change, oracle_file_shape keeps one shape in both halves (between the
    two: the file's long-term, power-weighted shape) and noise_fill's level in each."""
    ref, low = signals
    sinc = baselines.sinc(low, 16000, RATE)
    steep_high = steepened_high_band(ref, sinc)
    first_half = np.arange(len(ref)) < len(ref) // 2
    changing = sinc + np.where(first_half, steep_high, ref - sinc)
    first, second = slice(0, len(ref) // 2 - 2048), slice(len(ref) // 2 + 2048, None)
    fill = baselines.noise_fill(low, 16000, RATE)
    per_frame = baselines.oracle_shape(low, 16000, RATE, reference=changing)
    per_file = baselines.oracle_file_shape(low, 16000, RATE, reference=changing)

    tilt, total = high_band_tilt_db, high_band_total_db
    assert tilt(changing, first) < tilt(changing, second) - 8  # the test's premise: the shape changes
    assert tilt(per_frame, first) < tilt(per_frame, second) - 8
    assert abs(tilt(per_file, first) - tilt(per_file, second)) < 2.0
    assert abs(tilt(per_file, first) - tilt(changing, slice(None))) < 2.0
    for part in (first, second):
        assert abs(total(per_file, part) - total(fill, part)) < 1.5
    assert per_file.shape == ref.shape and np.isfinite(per_file).all()
    with pytest.raises(ValueError, match="reference"):
        baselines.oracle_file_shape(low, 16000, RATE)

"""Baselines: lengths, layouts, finiteness, low band kept, high band filled (or not), and quality order."""
from __future__ import annotations

import numpy as np
import pytest
import soxr
from scipy import signal

from bandlift.train.eval import baselines, metrics

RATE = 48000


def music_like(seconds=1.5, rate=RATE, seed=0, channels=None) -> np.ndarray:
    """Broadband music-like test signal: harmonic notes (partials up to Nyquist, 1/k amplitudes)
    plus decaying noise bursts with a 1/f spectrum, as float32 (n,) or (n, channels)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = np.zeros(n)
    for start, f0 in zip(np.arange(0, seconds, 0.375), rng.choice([110.0, 147.0, 196.0, 262.0], 8)):
        env = np.where(t >= start, np.exp(-(t - start) * 3.0), 0.0)
        for k in range(1, int(rate / 2 / f0)):
            x += env * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / rate), 20.0))  # 1/f power
    pink = np.fft.irfft(spectrum, n)
    bursts = sum(np.where(t >= s, np.exp(-(t - s) * 25.0), 0.0) for s in np.arange(0.1, seconds, 0.25))
    x = x / np.abs(x).max() + 2.0 * pink / np.abs(pink).max() * bursts
    x *= 0.5 / np.abs(x).max()
    if channels:
        x = np.stack([np.roll(x, 37 * c) for c in range(channels)], axis=1)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def signals():
    ref = music_like()
    low = soxr.resample(ref, RATE, 16000, quality="VHQ")
    return ref, low


def band_db(y, lo, hi, rate=RATE):
    """Mean power density (dB) of `y` between lo and hi Hz (Welch, Hann)."""
    f, psd = signal.welch(y, rate, nperseg=4096)
    return 10 * np.log10(psd[(f >= lo) & (f < hi)].mean() + 1e-30)


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

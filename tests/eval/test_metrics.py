"""LSD / LSD-HF / SNR / SI-SDR against cases with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import windows

from bandlift.train.eval import metrics

SR = 48000


def white(n=SR, seed=0, channels=None):
    rng = np.random.default_rng(seed)
    shape = (n,) if channels is None else (n, channels)
    return 0.1 * rng.standard_normal(shape)


def test_identical_signals():
    x = white()
    assert metrics.lsd(x, x, SR) == 0.0
    assert metrics.lsd(x, x, SR, hf_from=8000) == 0.0
    assert metrics.snr(x, x) == math.inf
    assert metrics.si_sdr(x, x) == math.inf


def test_scaled_copy_known_values():
    x = white()
    # Error 0.1 x -> SNR 20 dB; every bin's power scaled by 0.81 -> LSD = |log10 0.81|.
    assert metrics.snr(x, 0.9 * x) == pytest.approx(20.0, abs=1e-9)
    assert metrics.lsd(x, 0.9 * x, SR) == pytest.approx(-2 * math.log10(0.9), rel=1e-6)
    assert metrics.si_sdr(x, 0.9 * x) > 200  # a scaled copy is perfect up to rounding


def test_si_sdr_is_scale_invariant_and_snr_is_not():
    x = white(seed=1)
    noise = white(seed=2)
    noise -= (noise @ x) / (x @ x) * x  # orthogonal to x ...
    noise *= 0.1 * np.linalg.norm(x) / np.linalg.norm(noise)  # ... at -20 dB
    est = x + noise
    assert metrics.si_sdr(x, est) == pytest.approx(20.0, abs=1e-9)
    for scale in (0.25, 3.0):
        assert metrics.si_sdr(x, scale * est) == pytest.approx(20.0, abs=1e-9)
    assert metrics.snr(x, 3.0 * est) < 10.0


def test_lsd_of_constant_against_zeros_is_the_floor_value():
    # A constant c: every (reflect-padded) frame holds c * periodic Hann, whose DFT is sum(w) = 1024
    # at bin 0, -512 at bin 1, and 0 elsewhere. Zeros sit on the floor (log10 1e-8 = -8), so only
    # bins 0 and 1 differ: LSD = sqrt(((2 log10 1024c + 8)^2 + (2 log10 512c + 8)^2) / 1025).
    c = 0.5
    x = np.full(8 * metrics.N_FFT, c)
    expected = math.sqrt(((2 * math.log10(1024 * c) + 8) ** 2 + (2 * math.log10(512 * c) + 8) ** 2) / 1025)
    assert metrics.lsd(x, np.zeros_like(x), SR) == pytest.approx(expected, rel=1e-9)
    # Content whose power stays under the floor everywhere is indistinguishable from silence.
    tiny = 1e-9 * white()
    assert metrics.lsd(tiny, np.zeros_like(tiny), SR) == 0.0


def test_lsd_hf_ignores_the_low_band():
    x = white(seed=3)
    t = np.arange(len(x)) / SR
    fade = windows.tukey(len(x), 0.2)  # no edge discontinuity to leak into the other band
    est = x + 0.5 * np.sin(2 * np.pi * 500 * t) * fade  # a large change at 500 Hz only
    assert metrics.lsd(x, est, SR) > 0.1
    assert metrics.lsd(x, est, SR, hf_from=8000) < 1e-3
    # ... and LSD-LF sees it, while a change above 8 kHz is the other way round.
    assert metrics.lsd(x, est, SR, lf_to=8000) > 0.2
    est_hf = x + 0.5 * np.sin(2 * np.pi * 15000 * t) * fade
    assert metrics.lsd(x, est_hf, SR, hf_from=8000) > 0.1
    assert metrics.lsd(x, est_hf, SR, lf_to=8000) < 1e-3


def test_hf_bin_follows_nuwave2():
    assert metrics.hf_bin(8000, 48000) == int(1025 * 8000 / 24000) == 341
    assert metrics.hf_bin(12000, 48000) == 512
    assert metrics.hf_bin(24000, 48000) == 1025


def test_channels_are_averaged_and_lengths_cut():
    x = white(channels=2, seed=4)
    est = x.copy()
    est[:, 1] *= 0.5
    per_channel = [metrics.lsd(x[:, c], est[:, c], SR) for c in range(2)]
    assert metrics.lsd(x, est, SR) == pytest.approx(np.mean(per_channel), rel=1e-12)
    assert metrics.lsd(x, np.concatenate([est, est[:100]]), SR) == metrics.lsd(x, est, SR)


def test_bad_inputs_raise():
    x = white(4096)
    with pytest.raises(ValueError, match="NaN"):
        metrics.lsd(x, np.full_like(x, np.nan), SR)
    with pytest.raises(ValueError, match="channel"):
        metrics.snr(x, np.stack([x, x], axis=1))
    with pytest.raises(ValueError, match="silent"):
        metrics.si_sdr(np.zeros(100), x[:100])


def test_visqol_ranks_a_band_limited_copy_below_the_original():
    """ViSQOL v3 audio mode: the reference itself scores near the top of the scale, a 4 kHz low-pass
    of it clearly lower, and a 44.1 kHz pair is resampled to the 48 kHz ViSQOL judges."""
    pytest.importorskip("visqol", reason="ViSQOL is in the eval extra")
    from scipy import signal

    rng = np.random.default_rng(3)
    sr = 44100
    t = np.arange(int(1.5 * sr)) / sr
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    ref = env * (sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((220, 660, 1800, 5200, 9100), 1))
                 + 0.05 * rng.standard_normal(len(t)))
    ref = 0.3 * ref / np.abs(ref).max()
    low = signal.sosfiltfilt(signal.butter(8, 4000, fs=sr, output="sos"), ref)
    same, limited = metrics.visqol(ref, ref, sr), metrics.visqol(ref, low, sr)
    assert 4.3 < same <= 5.0
    assert 1.0 <= limited < same - 0.3
    short = int(0.9 * sr)  # below ViSQOL's shortest: a clear error, not its patch arithmetic
    with pytest.raises(ValueError, match="at least 0.97 s"):
        metrics.visqol(ref[:short], ref[:short], sr)


@pytest.mark.parametrize("n", [500, 1025, 48000 + 17])
def test_stft_equals_librosa(n):
    """The LSD's numpy STFT is librosa.stft(window="hann", center=True, reflect padding when possible)."""
    import warnings

    librosa = pytest.importorskip("librosa")
    x = np.random.default_rng(n).standard_normal((2, n))
    pad_mode = "reflect" if n > metrics.N_FFT // 2 else "constant"
    with warnings.catch_warnings():  # librosa notes signals shorter than n_fft
        warnings.simplefilter("ignore", UserWarning)
        want = librosa.stft(x, n_fft=metrics.N_FFT, hop_length=metrics.HOP, window="hann", center=True,
                            pad_mode=pad_mode)
    got = metrics.stft(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_band_level_reads_a_dull_or_bright_band_and_peak_reads_what_the_band_adds():
    from bandlift.train.eval.metrics import band_level_db, peak_db

    rng = np.random.default_rng(0)
    n, sr = 48000, 48000
    freqs = np.fft.rfftfreq(n, 1 / sr)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    ref = np.fft.irfft(spectrum, n=n)
    low = np.fft.irfft(spectrum * (freqs < 8000), n=n)
    high = ref - low
    for gain_db in (-6.0, 0.0, 4.0):
        est = low + high * 10 ** (gain_db / 20)
        assert band_level_db(ref, est, sr, 8000) == pytest.approx(gain_db, abs=0.3)
    assert band_level_db(ref, low, sr, 8000) < -25  # an empty band (the window leaks a little over the edge)
    assert peak_db(2 * low, low) == pytest.approx(6.02, abs=0.01)

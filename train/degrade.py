"""Band-limiting: makes low-band inputs from full-band targets (training) and reference inputs (eval).

numpy/scipy/soxr only (no torch). Every filter here is zero-phase or delay-compensated, so
the output is time-aligned with the input, same rate, same length.

- `band_limit(x, sr, cutoff_hz, kind)`: one deterministic band limit.
- `degrade(target, sr, rng, cutoff_hz=None)`: a random, seeded degradation for training.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import soxr
from scipy import signal

from bandlift.rt.dsp.resample import fit_length
from bandlift.rt.model.contract import MIN_CUTOFF_HZ

# Nominal bandwidths of common low rates and encoders (Hz): telephone's 3.4 kHz edge, 8 kHz telephony,
# 11.025/16/22.05/24/32 kHz sample rates, and MP3/AAC encoder walls at 16 and 19 kHz.
COMMON_CUTOFFS = (3400.0, 4000.0, 5512.5, 8000.0, 11025.0, 12000.0, 16000.0, 19000.0)
MIN_CUTOFF, MAX_CUTOFF = MIN_CUTOFF_HZ, 20000.0

# kind -> probability in `degrade`. soxr_* / poly / fft: down to 2*cutoff and back up (a real low-rate
# signal); brickwall: same-rate steep FIR (MP3-encoder-like); butter: gentle analog-like roll-off.
# engine: soxr down to a standard rate, then back up through bandlift's own streaming resampler, as
# live/upsample do at inference.
KINDS = {
    "soxr_vhq": 0.1, "soxr_hq": 0.15, "soxr_mq": 0.05, "soxr_lq": 0.05,
    "poly": 0.1, "fft": 0.05, "brickwall": 0.2, "butter": 0.05, "engine": 0.25,
}
STANDARD_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100)
_SOXR_QUALITY = {"soxr_vhq": "VHQ", "soxr_hq": "HQ", "soxr_mq": "MQ", "soxr_lq": "LQ"}


def fir_lowpass(sr: float, cutoff_hz: float, transition_hz: float | None = None,
                atten_db: float = 90.0) -> np.ndarray:
    """Linear-phase (odd-length, symmetric) Kaiser low-pass whose stop band starts at `cutoff_hz`."""
    if transition_hz is None:
        transition_hz = max(0.02 * cutoff_hz, 100.0)
    numtaps, beta = signal.kaiserord(atten_db, 2 * transition_hz / sr)
    numtaps |= 1
    edge = cutoff_hz - transition_hz / 2
    return signal.firwin(numtaps, edge, window=("kaiser", beta), fs=sr)


def _zero_phase_fir(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Apply a symmetric FIR with its group delay removed (same length, aligned)."""
    return signal.oaconvolve(x, taps, mode="same")


def _resample_through(x: np.ndarray, sr: float, cutoff_hz: float, kind: str) -> tuple[np.ndarray, float]:
    """Down to a rate of 2*cutoff and back up; returns (y, nominal cutoff actually used)."""
    n = len(x)
    if kind == "poly":
        ratio = Fraction(2 * cutoff_hz / sr).limit_denominator(200)
        up, down = ratio.numerator, ratio.denominator
        # Longer, ~90 dB Kaiser filter than scipy's default (which leaves -45 dB images and a wide
        # transition); odd and symmetric, so resample_poly keeps it delay-compensated.
        half_len = 40 * max(up, down)
        window = signal.firwin(2 * half_len + 1, 1.0 / max(up, down), window=("kaiser", 8.6))
        low = signal.resample_poly(x, up, down, window=window)
        y = signal.resample_poly(low, down, up, window=window)
        return fit_length(y, n), sr * up / down / 2
    if kind == "engine":
        from bandlift.rt.dsp.resample import StreamingResampler

        fitting = [r for r in STANDARD_RATES if r / 2 <= cutoff_hz and r < sr] or [STANDARD_RATES[0]]
        low_rate = fitting[-1]
        low = soxr.resample(x, sr, low_rate, quality="VHQ")
        up = StreamingResampler(low_rate, int(sr), 1)
        y = up.process(np.concatenate([low, np.zeros(up.delay + 8)])[None].astype(np.float32))[0]
        return fit_length(y[up.delay:].astype(x.dtype), n), low_rate / 2
    low_rate = 2 * cutoff_hz
    if kind == "fft":
        m = max(int(round(n * low_rate / sr)), 1)
        y = signal.resample(signal.resample(x, m), n)
        return y, (m / n) * sr / 2
    quality = _SOXR_QUALITY[kind]
    low = soxr.resample(x, sr, low_rate, quality=quality)
    y = soxr.resample(low, low_rate, sr, quality=quality)
    return fit_length(y, n), cutoff_hz


def band_limit(x: np.ndarray, sr: float, cutoff_hz: float, kind: str = "brickwall") -> np.ndarray:
    """Remove content above `cutoff_hz` from 1-D `x`; same rate, same length, time-aligned.

    kind: "brickwall" (steep linear-phase FIR, like an MP3 encoder's low-pass), "butter" (gentle
    zero-phase 8th-order Butterworth at 0.95*cutoff: some content remains above, as with analog
    roll-offs), "soxr_vhq"/"soxr_hq"/"soxr_mq"/"soxr_lq" (soxr down to
    2*cutoff and back), "poly" (scipy polyphase, rational ratio) or "fft" (FFT resampling).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"band_limit expects a 1-D signal, got shape {x.shape}")
    if not 0 < cutoff_hz:
        raise ValueError(f"cutoff must be positive, got {cutoff_hz}")
    if cutoff_hz >= sr / 2 or len(x) == 0:
        return x.copy()
    if kind == "brickwall":
        y = _zero_phase_fir(x, fir_lowpass(sr, cutoff_hz))
    elif kind == "butter":
        sos = signal.butter(4, cutoff_hz * 0.95, fs=sr, output="sos")  # x2 order with filtfilt
        y = signal.sosfiltfilt(sos, x) if len(x) > 60 else x.copy()
    elif kind in _SOXR_QUALITY or kind in ("poly", "fft", "engine"):
        y, _ = _resample_through(x, sr, cutoff_hz, kind)
    else:
        raise ValueError(f"unknown band-limit kind {kind!r}; one of {sorted(KINDS)}")
    return y


def sample_cutoff(rng: np.random.Generator, max_cutoff_hz: float | None = None,
                  min_cutoff_hz: float = MIN_CUTOFF) -> float:
    """Half the time a common cutoff (telephony, low sample rates, encoder walls), otherwise
    log-uniform in [min_cutoff_hz, min(20 kHz, max_cutoff_hz)]."""
    hi = MAX_CUTOFF if max_cutoff_hz is None else min(MAX_CUTOFF, max_cutoff_hz)
    lo = min(min_cutoff_hz, hi)
    common = [c for c in COMMON_CUTOFFS if lo <= c <= hi]
    if common and rng.random() < 0.5:
        return float(common[rng.integers(len(common))])
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def codec_noise(x: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float] = (35.0, 60.0)):
    """Mild signal-following noise, like a lossy codec's quantisation noise (before band limiting)."""
    rms = np.sqrt(np.mean(x * x) + 1e-20)
    snr = rng.uniform(*snr_db)
    # Noise follows the short-term envelope: 10 ms RMS, as codec noise does.
    win = 480
    env = np.sqrt(signal.oaconvolve(x * x, np.ones(win) / win, mode="same").clip(0) + 1e-12)
    noise = rng.standard_normal(len(x)) * env
    return x + noise * (rms / (np.sqrt(np.mean(noise * noise)) + 1e-20)) * 10 ** (-snr / 20)


def degrade(target: np.ndarray, sr: float, rng: np.random.Generator, cutoff_hz: float | None = None,
            max_cutoff_hz: float | None = None, kind: str | None = None,
            noise_prob: float = 0.2) -> tuple[np.ndarray, float]:
    """Random low-band version of 1-D `target`: returns (lowband float32, cutoff_hz).

    The cutoff is drawn by `sample_cutoff` (capped by `max_cutoff_hz`) unless given; the filter kind
    is drawn from KINDS unless given; with probability `noise_prob` mild codec-like noise is added.
    The output has the target's rate and length and is time-aligned with it. `cutoff_hz` returned is
    the nominal bandwidth (what `upsample` would be told for such an input). The chains users have
    (telephone, VoIP, MP3/AAC walls) are `conditions.draw`.
    """
    x = np.asarray(target, dtype=np.float64)
    if cutoff_hz is None:
        cutoff_hz = sample_cutoff(rng, max_cutoff_hz)
    if kind is None:
        names = list(KINDS)
        p = np.array([KINDS[k] for k in names])
        kind = names[rng.choice(len(names), p=p / p.sum())]
    if rng.random() < noise_prob:
        x = codec_noise(x, rng)
    if cutoff_hz >= sr / 2:
        return x.astype(np.float32), float(sr / 2)
    if kind in _SOXR_QUALITY or kind in ("poly", "fft", "engine"):
        y, cutoff_hz = _resample_through(x, sr, cutoff_hz, kind)
    else:
        y = band_limit(x, sr, cutoff_hz, kind)
    return y.astype(np.float32), float(cutoff_hz)


def recording_chain(x: np.ndarray, sr: float, rng: np.random.Generator, ceiling_hz: float | None = None) -> np.ndarray:
    """A random microphone/room/EQ colour: a spectral tilt (a first-order shelf, +-6 dB) and 0-3
    resonances or notches (peaking biquads, +-9 dB, Q 0.7-4, 150 Hz up to the ceiling). Applied to the
    target, so the input (made from it) carries the same chain; the level is kept."""
    sos = [_shelf(sr, float(np.exp(rng.uniform(np.log(500.0), np.log(8000.0)))), rng.uniform(-6.0, 6.0))]
    top = min(0.45 * sr, ceiling_hz or sr / 2)
    for _ in range(int(rng.integers(0, 4))):
        freq = float(np.exp(rng.uniform(np.log(150.0), np.log(top))))
        sos.append(_peaking(sr, freq, rng.uniform(-9.0, 9.0), rng.uniform(0.7, 4.0)))
    y = signal.sosfilt(np.array(sos), x)
    rms_in, rms_out = np.sqrt(np.mean(x * x)), np.sqrt(np.mean(y * y))
    return y * (rms_in / rms_out) if rms_out > 0 else y


def _peaking(sr: float, freq: float, gain_db: float, q: float) -> list[float]:
    """RBJ cookbook peaking EQ as one second-order section."""
    a, w = 10 ** (gain_db / 40), 2 * np.pi * freq / sr
    alpha = np.sin(w) / (2 * q)
    b0, b1, b2, a0, a1, a2 = 1 + alpha * a, -2 * np.cos(w), 1 - alpha * a, 1 + alpha / a, -2 * np.cos(w), 1 - alpha / a
    return [b0 / a0, b1 / a0, b2 / a0, 1.0, a1 / a0, a2 / a0]


def _shelf(sr: float, freq: float, gain_db: float) -> list[float]:
    """First-order high shelf (bilinear): gain_db above `freq`, 0 dB below."""
    g, k = 10 ** (gain_db / 20), np.tan(np.pi * freq / sr)
    b0, b1, a1 = (g + k) / (1 + k), (k - g) / (1 + k), (k - 1) / (1 + k)
    return [b0, b1, 0.0, 1.0, a1, 0.0]

"""Effective bandwidth: the frequency where a signal's averaged spectrum falls off a cliff.

A file's sample rate says nothing about its content: an MP3 at 48 kHz usually has a brick wall at
16-19 kHz, a Bluetooth headset recording resampled to 48 kHz stops at 8 kHz. `effective_bandwidth`
finds that ceiling from the long-term spectrum (numpy only; used by training and by the
torch-free engine, ``upsample --input-cutoff auto``).

Method: Welch power spectrum averaged over the whole signal (all channels), in dB, median-smoothed so
narrow tones do not count as a band. The ceiling is the LOWEST frequency f such that the level just
below f exceeds everything above f (plus a small transition gap) by ``drop_db``: content then stops
at f and nothing above comes back within ``drop_db``, and what lies above is floor (within
``floor_db`` of the quietest part of the spectrum), not weaker content such as the harmonics of a
low tone. A full-band signal has no such cliff and gets
the Nyquist frequency.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SILENCE_DBFS = -90.0  # mean power below this (dB re full scale) counts as silence
DEFAULT_DROP_DB = 20.0


def as_channels(audio: np.ndarray) -> np.ndarray:
    """(n,) or (n, channels) -> float64 [channels, n]."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 1:
        return x[None, :]
    if x.ndim != 2:
        raise ValueError(f"audio must be (n,) or (n, channels), got shape {x.shape}")
    return x.T


def average_spectrum(audio: np.ndarray, sr: float, resolution_hz: float = 25.0):
    """Welch power spectrum averaged over time and channels: (freqs [K], power [K])."""
    x = as_channels(audio)
    return _welch(np.where(np.isfinite(x), x, 0.0), sr, resolution_hz)


def _welch(x: np.ndarray, sr: float, resolution_hz: float = 25.0):
    nperseg = int(2 ** np.ceil(np.log2(max(sr / resolution_hz, 64))))
    nperseg = min(nperseg, max(x.shape[1], 16))
    # Kaiser(14): side lobes ~-110 dB (leakage would otherwise fill the floor above a wall) with a
    # main lobe of about +-5 bins, well inside the transition gap.
    return welch(x, sr, nperseg, 14.0)


# scipy.signal.welch (Kaiser window, half overlap, mean detrend, density) and medfilt (zero edges), in
# numpy: importing scipy.signal costs ~0.9 s of every command's startup. Tests compare with scipy.
def welch(x: np.ndarray, sr: float, nperseg: int, beta: float):
    """[C, n] -> (freqs [K], one-sided power spectral density averaged over segments and channels [K])."""
    window = np.kaiser(nperseg + 1, beta)[:-1]  # periodic, as scipy's get_window
    segments = sliding_window_view(x, nperseg, axis=-1)[:, ::nperseg // 2]  # [C, S, nperseg]
    segments = segments - segments.mean(axis=-1, keepdims=True)
    power = np.abs(np.fft.rfft(segments * window, axis=-1)) ** 2 / (sr * np.sum(window ** 2))
    power[..., 1:(nperseg + 1) // 2] *= 2  # one-sided: all but DC (and Nyquist, for even lengths)
    return np.fft.rfftfreq(nperseg, 1.0 / sr), power.mean(axis=(0, 1))


def median_filter(level: np.ndarray, width: int) -> np.ndarray:
    """Running median of odd `width`, zero beyond the ends."""
    padded = np.pad(level, width // 2)
    return np.median(sliding_window_view(padded, width), axis=-1)


def effective_bandwidth(audio: np.ndarray, sr: float, drop_db: float = DEFAULT_DROP_DB,
                        min_hz: float = 500.0, floor_db: float = 20.0, quiet_db: float = 90.0,
                        max_seconds: float = 90.0) -> float:
    """Effective bandwidth in Hz of `audio` ((n,) or (n, channels)) sampled at `sr`.

    Returns sr/2 when the spectrum reaches Nyquist without a cliff, and 0.0 for silence (or a
    signal too short to analyse): there is no content, so no band to speak of; callers treat 0.0 as
    "unknown".
    """
    x = as_channels(audio)
    if x.shape[1] < 256:
        return 0.0
    finite = np.isfinite(x)
    if not finite.all():
        x = np.where(finite, x, 0.0)
    if 10 * np.log10(np.mean(x * x) + 1e-30) < SILENCE_DBFS:
        return 0.0
    x = _spread_excerpts(x, int(max_seconds * sr), int(sr))
    freqs, power = _welch(x, sr)
    nyquist = sr / 2.0
    df = freqs[1] - freqs[0]
    level = 10 * np.log10(power + 1e-30)
    # Median over ~300 Hz: tones and whines narrower than that do not make (or break) a band.
    width = max(3, int(round(300.0 / df)) | 1)
    smooth = median_filter(level, width)
    # Highest level at or above each bin (running max from the top).
    above_max = np.maximum.accumulate(smooth[::-1])[::-1]
    csum = np.concatenate([[0.0], np.cumsum(smooth)])
    k_all = np.arange(max(int(np.ceil(min_hz / df)), 1), len(freqs))
    # Above the cliff there must be only floor: within `floor_db` of the quietest band, or anyway
    # more than `quiet_db` under the loudest band.
    lowest = np.percentile(smooth[k_all[0]:], 2)
    floor = max(lowest + floor_db, smooth.max() - quiet_db)
    # Transition band allowed for the wall: steep (encoders, good resamplers). A gentle roll-off
    # (analog, cheap resamplers) can look like natural spectral decay and is not claimed as a cliff.
    gap = np.ceil((150.0 + 0.03 * freqs[k_all]) / df).astype(int)
    keep = k_all + gap < len(freqs) - 1
    k, gap = k_all[keep], gap[keep]
    k_below = np.maximum(k - gap, 0)
    below_mean = (csum[k + 1] - csum[k_below]) / (k + 1 - k_below)
    drop = below_mean - above_max[k + gap]
    # Weak content ending in a flat floor (quiet highs over 16-bit quantisation noise): a smaller
    # drop suffices when everything above is within a few dB of the lowest level.
    cliff = np.nonzero(((drop >= drop_db) & (above_max[k + gap] <= floor))
                       | ((drop >= drop_db / 2) & (above_max[k + gap] <= lowest + 4.0)))[0]
    if len(cliff):
        i = cliff[0]
        return float(_refine_edge(smooth, freqs, k_below[i], k[i] + gap[i], below_mean[i]))
    return float(nyquist)


def _spread_excerpts(x: np.ndarray, max_len: int, chunk: int) -> np.ndarray:
    """Long signals: evenly spread excerpts of `chunk` samples totalling about `max_len`, stacked as
    extra rows (never concatenated: the joins would splatter a false broadband floor)."""
    n = x.shape[1]
    if n <= max_len:
        return x
    starts = np.linspace(0, n - chunk, max(max_len // chunk, 1)).astype(int)
    return np.concatenate([x[:, s:s + chunk] for s in starts], axis=0)


def _refine_edge(smooth, freqs, k_lo, k_hi, below_mean):
    """Within the transition [k_lo, k_hi], the last frequency still within 6 dB of the band level."""
    inside = np.nonzero(smooth[k_lo:k_hi + 1] >= below_mean - 6.0)[0]
    k = k_lo + (inside[-1] if len(inside) else 0)
    return freqs[k]

"""Objective metrics for bandwidth extension: ViSQOL, LSD, LSD-HF, SNR, SI-SDR, the generated band's level
and the output's peak (numpy, no torch).

ViSQOL is v3 in audio mode (MOS-LQO, 1-5; the `visqol-python` port, which ships its similarity-to-
quality model and matches Google's C++ implementation), the perceptual metric AP-BWE, AERO and
FLowHigh report. It judges 48 kHz mono: other rates are resampled (soxr VHQ), channels averaged.

LSD follows the evaluation scripts of NU-Wave 2 (maum-ai/nuwave2, ``for_test.py`` with
``utils/stft.py``), AERO (slp-rl/aero, ``src/metrics.py``) and AP-BWE (yxlu-0102/AP-BWE,
``cal_metrics.py``), which all compute it the same way: ``torch.stft`` with n_fft 2048, hop 512, a
periodic Hann window of 2048, ``center=True`` with reflect padding (torch's defaults), power
``|X|^2`` clamped at 1e-8, ``log10``; then per frame the square root of the mean over the 1025
frequency bins of the squared difference, averaged over frames (and over the batch/channels). The
signals are compared at the output rate. LSD-HF is NU-Wave 2's high-band variant: the same with only
the bins from ``int(1025 * cutoff / nyquist)`` upwards (AERO and AP-BWE report full-band LSD only).
``lsd(..., lf_to=...)`` gives NU-Wave 2's LSD-LF (bins below that index).

SNR matches those scripts too (``20 log10(||ref|| / ||est - ref||)`` per channel, averaged), except
that a perfect estimate gives +inf instead of clamping the error norm at 1e-8. SI-SDR is Le Roux et
al. 2019 ("SDR - half-baked or well done?"), without mean removal.

All functions take ``(n,)`` or ``(n, channels)`` arrays; lengths are cut to the shorter signal.
"""
from __future__ import annotations

import numpy as np

N_FFT = 2048
HOP = 512
POWER_FLOOR = 1e-8


def _pair(ref, est) -> tuple[np.ndarray, np.ndarray]:
    """-> float64 [channels, n] each, same length; raises on mismatched channels or non-finite data."""
    r = np.asarray(ref, dtype=np.float64)
    e = np.asarray(est, dtype=np.float64)
    r = r[:, None] if r.ndim == 1 else r
    e = e[:, None] if e.ndim == 1 else e
    if r.ndim != 2 or e.ndim != 2:
        raise ValueError(f"expected (n,) or (n, channels) arrays, got {r.shape} and {e.shape}")
    if r.shape[1] != e.shape[1]:
        raise ValueError(f"channel count differs: reference {r.shape[1]}, estimate {e.shape[1]}")
    if not (np.isfinite(r).all() and np.isfinite(e).all()):
        raise ValueError("signals contain NaN or inf")
    n = min(len(r), len(e))
    if n == 0:
        raise ValueError("empty signal")
    return r[:n].T, e[:n].T


def stft(x: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """``torch.stft``/``librosa.stft`` with a periodic Hann window and ``center=True``: [..., bins, frames].

    torch pads by reflection (librosa's default is zeros, so librosa is asked for reflect); reflection
    needs more than n_fft/2 samples, so shorter signals get zero padding. numpy only, so `lsd` needs no
    [eval] extra (`bandlift demo` runs on the runtime install).
    """
    x = np.asarray(x)
    pad_mode = "reflect" if x.shape[-1] > n_fft // 2 else "constant"
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)], mode=pad_mode)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[..., ::hop, :]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    return np.swapaxes(np.fft.rfft(frames * window, axis=-1), -1, -2)


def log_power_spectrogram(x: np.ndarray) -> np.ndarray:
    """log10 of the floored power STFT, [channels, bins, frames], the LSD's spectrogram."""
    spec = stft(np.atleast_2d(x))
    return np.log10(np.maximum(np.abs(spec) ** 2, POWER_FLOOR))


def hf_bin(cutoff_hz: float, sr: float) -> int:
    """First STFT bin counted by LSD-HF: NU-Wave 2's ``int(1025 * cutoff / nyquist)``."""
    return int((N_FFT // 2 + 1) * float(cutoff_hz) / (sr / 2.0))


def lsd(ref, est, sr: float, hf_from: float | None = None, lf_to: float | None = None) -> float:
    """Log-spectral distance between `ref` and `est` (both at rate `sr`), in log10-power units.

    hf_from: count only bins from `hf_bin(hf_from)` up (LSD-HF, hf_from = the input's cutoff).
    lf_to: count only bins below `hf_bin(lf_to)` (LSD-LF). 0 means identical spectrograms.
    """
    r, e = _pair(ref, est)
    diff = log_power_spectrogram(r) - log_power_spectrogram(e)  # [C, F, T]
    lo = hf_bin(hf_from, sr) if hf_from is not None else 0
    hi = hf_bin(lf_to, sr) if lf_to is not None else diff.shape[1]
    lo, hi = max(lo, 0), min(hi, diff.shape[1])
    if lo >= hi:
        raise ValueError(f"no STFT bins between {hf_from} Hz and {lf_to} Hz at {sr} Hz")
    per_frame = np.sqrt(np.mean(diff[:, lo:hi, :] ** 2, axis=1))  # [C, T]
    return float(per_frame.mean())


ACTIVE_BAND_DB = 40.0  # band_level_db: frames whose reference band is within this of its loudest frame


def band_level_db(ref, est, sr: float, hf_from: float) -> float:
    """Mean level of `est`'s band above `hf_from` minus the reference's (dB, frames where the reference's
    band is active): negative is a dull band, positive an over-filled one."""
    r, e = _pair(ref, est)
    lo = hf_bin(hf_from, sr)
    band_r = np.sum(np.abs(stft(r)[:, lo:, :]) ** 2, axis=1)  # [C, T]
    band_e = np.sum(np.abs(stft(e)[:, lo:, :]) ** 2, axis=1)
    ref_db, est_db = 10 * np.log10(band_r + 1e-20), 10 * np.log10(band_e + 1e-20)
    active = ref_db > ref_db.max(axis=1, keepdims=True) - ACTIVE_BAND_DB
    return float(np.mean((est_db - ref_db)[active])) if active.any() else float("nan")


def peak_db(est, plain) -> float:
    """The output's sample peak over a plain (sinc) upsampling's, in dB: what the generated band adds."""
    e, p = np.abs(np.asarray(est, dtype=np.float64)).max(), np.abs(np.asarray(plain, dtype=np.float64)).max()
    return float(20 * np.log10(e / p)) if p > 0 and e > 0 else float("nan")


VISQOL_RATE = 48000
VISQOL_MIN_SECONDS = 0.97  # its patches need 0.96 s of audio
_visqol_api = None


def visqol(ref, est, sr: float) -> float:
    """ViSQOL v3 audio-mode MOS-LQO of `est` against `ref` (1-5, higher is better); ValueError for
    clips shorter than VISQOL_MIN_SECONDS."""
    global _visqol_api
    try:
        from visqol import VisqolApi
    except ImportError as exc:
        raise ImportError("ViSQOL needs the eval extra: pip install 'bandlift[eval]'") from exc
    r, e = _pair(ref, est)
    if r.shape[1] < VISQOL_MIN_SECONDS * sr:
        raise ValueError(f"ViSQOL needs at least {VISQOL_MIN_SECONDS:g} s, got {r.shape[1] / sr:.2f} s")
    r, e = r.mean(axis=0), e.mean(axis=0)
    if sr != VISQOL_RATE:
        import soxr

        r = soxr.resample(r, sr, VISQOL_RATE, quality="VHQ")
        e = soxr.resample(e, sr, VISQOL_RATE, quality="VHQ")
    if _visqol_api is None:
        api = VisqolApi()
        api.create(mode="audio")
        _visqol_api = api
    return float(_visqol_api.measure_from_arrays(r, e, VISQOL_RATE).moslqo)


def snr(ref, est) -> float:
    """Signal-to-noise ratio of `est` against `ref` in dB (per channel, averaged); +inf if equal."""
    r, e = _pair(ref, est)
    signal = np.linalg.norm(r, axis=1)
    error = np.linalg.norm(e - r, axis=1)
    with np.errstate(divide="ignore"):
        values = 20.0 * (np.log10(signal) - np.log10(error))
    return float(np.mean(values))


def si_sdr(ref, est) -> float:
    """Scale-invariant SDR in dB (per channel, averaged); +inf when `est` is a scaled `ref`."""
    r, e = _pair(ref, est)
    energy = np.sum(r * r, axis=1)
    if np.any(energy == 0):
        raise ValueError("SI-SDR is undefined for a silent reference")
    alpha = np.sum(e * r, axis=1) / energy
    target = alpha[:, None] * r
    noise = e - target
    with np.errstate(divide="ignore"):
        values = 10.0 * (np.log10(np.sum(target * target, axis=1))
                         - np.log10(np.sum(noise * noise, axis=1)))
    return float(np.mean(values))

"""Non-learned bandwidth-extension baselines the model is measured against (numpy/scipy/soxr/librosa).

Every method has the signature ``fn(x_low, in_rate, out_rate, cutoff_hz=None) -> y`` with
``x_low`` of shape (n,) or (n, channels) at ``in_rate`` and ``y`` float32 of the same layout at
``out_rate``, ``round(n * out_rate / in_rate)`` samples long, time-aligned with the input.
``cutoff_hz`` is the input's bandwidth (default ``in_rate / 2``); with ``in_rate == out_rate`` it
describes a same-rate signal whose band stops at ``cutoff_hz`` (e.g. a low-passed MP3).

- sinc: band-limited resampling (soxr, very high quality): nothing above the cutoff.
- spline: cubic spline interpolation (scipy): the classic naive upsampler (images, no new band).
- noise_fill: sinc + shaped noise above the cutoff whose level follows the input's top octave frame
  by frame, continuing its spectral tilt.
- sbr: sinc + spectral band replication: the top band copied up in the STFT domain, its envelope
  adjusted to the same tilt model.
- griffin_lim: the full-band magnitude (sinc below the cutoff, SBR above) with a phase rebuilt by
  Griffin-Lim (librosa, 32 iterations).
- oracle_noise (`eval --oracle`): a bound, not a method: noise shaped to the reference's own high
  band, bin by bin. It shows the SNR any phase-blind generator can reach (sinc's minus about 3 dB
  wherever the high band carries energy: the error is then the missing band plus an uncorrelated copy
  of it).
- oracle_envelope (`eval --oracle`): the ceiling an envelope-driven generator can reach: noise
  following the reference's own high-band envelope in ENVELOPE_BANDS bands per ~21 ms frame.
- oracle_level / oracle_shape (`eval --oracle`): that envelope split in two, each frame's high-band
  level from the reference with noise_fill's shape, or the reference's shape at noise_fill's level.
- oracle_file_shape (`eval --oracle`): the reference's shape averaged over the whole file, at
  noise_fill's level: the ceiling of a static per-file guess of the shape.
"""
from __future__ import annotations

import warnings

import numpy as np

from bandlift.rt.dsp.bandwidth import as_channels
from bandlift.rt.dsp.resample import fit_length

# Analysis STFT of the spectral baselines, at the output rate (scaled with the rate: 1024 at 48 kHz).
FRAME_SECONDS = 1024 / 48000
FIT_LOW = 0.5          # tilt/level fit over [FIT_LOW, FIT_HIGH] x cutoff: the top octave ...
FIT_HIGH = 0.9         # ... stopping short of the resampler's transition band
FILL_FROM = 0.9        # noise is added from here up, only where the spectrum is below the target
SBR_FROM = 0.95        # bins replaced by SBR patches from here up (the resampler's transition band)
MAX_TILT_DB = -3.0     # dB/octave: the extrapolated spectrum falls at least this fast ...
MIN_TILT_DB = -24.0    # ... nor falls faster than this
CURVE_DB = 3.0         # dB/octave^2: the extrapolated spectrum bends down above the cutoff
RAYLEIGH_DB = 2.51     # mean dB of Gaussian noise's power lies this far below its mean power
ACTIVE_RANGE_DB = 60.0  # the tilt is fitted on frames within this range of the loudest
SILENT_DB = -120.0     # frames whose top octave is quieter than this (dB re full scale) get nothing
ENVELOPE_BANDS = 16    # oracle_envelope: bands (equal in octaves) from FILL_FROM x cutoff to Nyquist


def _channels(x) -> tuple[np.ndarray, bool]:
    """(n,) or (n, C) -> float64 [C, n], and whether the input was 1-D."""
    return as_channels(x), np.ndim(x) == 1


def _restore(y: np.ndarray, was_1d: bool) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    return y[0] if was_1d else np.ascontiguousarray(y.T)


def out_length(n: int, in_rate: float, out_rate: float) -> int:
    """Output length of every method (soxr's): round(n * out_rate / in_rate)."""
    return int(round(n * float(out_rate) / float(in_rate)))


def input_cutoff(in_rate: float, cutoff_hz: float | None = None) -> float:
    """The input's bandwidth in Hz: `cutoff_hz` if given (capped at Nyquist), else in_rate / 2."""
    nyquist = in_rate / 2.0
    if cutoff_hz is None or cutoff_hz <= 0:
        return nyquist
    return min(float(cutoff_hz), nyquist)


def _check_rates(in_rate, out_rate):
    if in_rate <= 0 or out_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
    if out_rate < in_rate:
        raise ValueError(f"baselines only upsample: {in_rate} Hz -> {out_rate} Hz")


# --- plain resamplers ---------------------------------------------------------------------------

def sinc(x_low, in_rate, out_rate, cutoff_hz=None):
    """Band-limited (windowed-sinc) resampling with soxr, very high quality."""
    import soxr

    _check_rates(in_rate, out_rate)
    a, was_1d = _channels(x_low)
    if in_rate == out_rate:
        return _restore(a, was_1d)
    y = soxr.resample(a.T, in_rate, out_rate, quality="VHQ").T
    return _restore(fit_length(y, out_length(a.shape[1], in_rate, out_rate)), was_1d)


def spline(x_low, in_rate, out_rate, cutoff_hz=None):
    """Cubic spline through the input samples, evaluated at the output sample times."""
    from scipy.interpolate import CubicSpline

    _check_rates(in_rate, out_rate)
    a, was_1d = _channels(x_low)
    n = a.shape[1]
    if in_rate == out_rate:
        return _restore(a, was_1d)
    m = out_length(n, in_rate, out_rate)
    if n < 2:
        return _restore(np.repeat(a, m, axis=1)[:, :m], was_1d)
    t_out = np.arange(m) * (float(in_rate) / float(out_rate))  # in input samples
    y = CubicSpline(np.arange(n), a, axis=1)(np.minimum(t_out, n - 1))
    return _restore(y, was_1d)


# --- spectral envelope model shared by noise_fill, sbr and griffin_lim --------------------------

class _Spectra:
    """STFT of the sinc-upsampled signal plus the high-band envelope model fitted on it."""

    def __init__(self, y: np.ndarray, rate: float, cutoff: float):
        self.rate, self.cutoff, self.length = rate, cutoff, y.shape[-1]
        self.n_fft = int(2 ** np.round(np.log2(FRAME_SECONDS * rate)))
        self.hop = self.n_fft // 4
        self.spec = self.stft(y)  # [C, F, T]
        self.freqs = np.arange(self.spec.shape[1]) * rate / self.n_fft
        self.power = np.abs(self.spec) ** 2
        self.tilt_db, self.level_db = self._fit_envelope()

    def _fit_envelope(self):
        """Tilt (dB/octave, per channel, whole signal) and level at the cutoff (dB, per frame).

        Both are fitted on log power (what LSD compares): the tilt by a line through the top
        octave's mean dB spectrum over non-silent frames, the level as that octave's mean dB with
        the tilt removed, plus the 2.5 dB by which Gaussian noise's mean dB lies below its power.
        """
        band = (self.freqs >= FIT_LOW * self.cutoff) & (self.freqs <= FIT_HIGH * self.cutoff)
        if band.sum() < 2:
            raise ValueError(f"cutoff {self.cutoff:.0f} Hz is too low to fit a spectral envelope")
        octaves = np.log2(self.freqs[band] / self.cutoff)  # <= 0
        band_db = 10 * np.log10(self.power[:, band, :] + 1e-30)  # [C, K, T]
        frame_db = band_db.mean(axis=1)  # [C, T]
        tilt = np.zeros(len(band_db))
        for c, (db, frames) in enumerate(zip(band_db, frame_db)):
            active = frames > frames.max() - ACTIVE_RANGE_DB
            tilt[c] = np.polyfit(octaves, db[:, active].mean(axis=1), 1)[0]
        tilt = np.clip(tilt, MIN_TILT_DB, MAX_TILT_DB)
        level = frame_db - tilt[:, None] * octaves.mean() + RAYLEIGH_DB
        return tilt, level

    def model_db(self, freqs: np.ndarray) -> np.ndarray:
        """Envelope shape in dB relative to the cutoff's level, [C, len(freqs), 1]."""
        octaves = np.log2(np.maximum(freqs, 1.0) / self.cutoff)[None, :, None]
        return self.tilt_db[:, None, None] * octaves - CURVE_DB * np.maximum(octaves, 0.0) ** 2

    def target_power(self) -> np.ndarray:
        """Envelope-model power for every bin and frame [C, F, T] (meaningful above the cutoff)."""
        power = 10 ** ((self.level_db[:, None, :] + self.model_db(self.freqs)) / 10)
        return np.where(self.silent()[:, None, :], 0.0, power)

    def silent(self) -> np.ndarray:
        """Frames [C, T] whose top octave is quieter than SILENT_DB re a full-scale sine."""
        full_scale_db = 20 * np.log10(np.hanning(self.n_fft).sum() / 2)
        return self.level_db < SILENT_DB + full_scale_db

    def stft(self, y: np.ndarray) -> np.ndarray:
        import librosa

        with warnings.catch_warnings():  # signals shorter than a frame are fine (zero padded)
            warnings.simplefilter("ignore", UserWarning)
            return librosa.stft(y, n_fft=self.n_fft, hop_length=self.hop, window="hann", center=True)

    def istft(self, spec: np.ndarray) -> np.ndarray:
        import librosa

        return librosa.istft(spec, n_fft=self.n_fft, hop_length=self.hop, window="hann",
                             center=True, length=self.length)


def _prepare(x_low, in_rate, out_rate, cutoff_hz):
    """sinc-upsampled [C, m], layout flag, cutoff; the envelope model unless nothing is missing."""
    a, was_1d = _channels(x_low)
    y = as_channels(sinc(a.T, in_rate, out_rate))
    cutoff = input_cutoff(in_rate, cutoff_hz)
    if cutoff >= 0.99 * out_rate / 2 or y.shape[1] == 0:
        return y, was_1d, cutoff, None  # full band already: nothing to extend
    return y, was_1d, cutoff, _Spectra(y, out_rate, cutoff)


# --- noise fill ---------------------------------------------------------------------------------

def _shaped_noise(y, sp: _Spectra, target_power: np.ndarray, seed: int) -> np.ndarray:
    """y + white Gaussian noise filtered in the STFT domain (random phase, Rayleigh magnitudes) to
    the power y lacks below `target_power` [C, F, T], from FILL_FROM x cutoff up."""
    rng = np.random.default_rng(seed)
    white_spec = sp.stft(rng.standard_normal(y.shape))
    white_power = np.sum(np.hanning(sp.n_fft + 1)[:-1] ** 2)  # E|W|^2 of unit white noise
    missing = np.maximum(target_power - sp.power, 0.0)
    missing[:, sp.freqs < FILL_FROM * sp.cutoff, :] = 0.0
    return y + sp.istft(white_spec * np.sqrt(missing / white_power))


def noise_fill(x_low, in_rate, out_rate, cutoff_hz=None, seed: int = 0):
    """sinc + noise above the cutoff, shaped by the top octave's level (per frame) and tilt, added
    only where the sinc output is below it (the resampler's transition band gets the missing part)."""
    y, was_1d, cutoff, sp = _prepare(x_low, in_rate, out_rate, cutoff_hz)
    if sp is None:
        return _restore(y, was_1d)
    return _restore(_shaped_noise(y, sp, sp.target_power(), seed), was_1d)


def oracle_noise(x_low, in_rate, out_rate, cutoff_hz=None, reference=None, seed: int = 0):
    """Not a method, a bound: sinc + noise shaped to the REFERENCE's own power above the cutoff
    (every frame and bin). No method that does not know the reference's phase can do better on SNR;
    its LSD is what a perfect magnitude with a random phase scores. `reference`: (n[, C]) at out_rate."""
    y, was_1d, cutoff, sp, ref_power = _oracle_inputs("oracle_noise", x_low, in_rate, out_rate, cutoff_hz, reference)
    if sp is None:
        return _restore(y, was_1d)
    return _restore(_shaped_noise(y, sp, ref_power, seed), was_1d)


def _oracle_inputs(name, x_low, in_rate, out_rate, cutoff_hz, reference):
    """The sinc start, cutoff, spectral helper and the reference's own STFT power (None past full band)."""
    if reference is None:
        raise ValueError(f"{name} needs the reference signal")
    y, was_1d, cutoff, sp = _prepare(x_low, in_rate, out_rate, cutoff_hz)
    if sp is None:
        return y, was_1d, cutoff, None, None
    ref = fit_length(as_channels(reference), y.shape[1])
    return y, was_1d, cutoff, sp, np.abs(sp.stft(ref)) ** 2


oracle_noise.needs_reference = True


def _reference_envelope(sp: _Spectra, ref_power: np.ndarray, cutoff: float, out_rate: float) -> np.ndarray:
    """The reference's power [C, F, T] averaged over ENVELOPE_BANDS bands (equal in octaves from
    FILL_FROM x cutoff to Nyquist) in every frame; zero below the first band."""
    edges = np.geomspace(FILL_FROM * cutoff, out_rate / 2, ENVELOPE_BANDS + 1)
    band = np.searchsorted(edges, sp.freqs, side="right") - 1  # -1 below the first edge
    band[sp.freqs >= edges[-1]] = ENVELOPE_BANDS - 1  # Nyquist's bin joins the top band
    target = np.zeros_like(ref_power)
    for b in range(ENVELOPE_BANDS):
        bins = band == b
        if bins.any():
            target[:, bins, :] = ref_power[:, bins, :].mean(axis=1, keepdims=True)
    return target


def oracle_envelope(x_low, in_rate, out_rate, cutoff_hz=None, reference=None, seed: int = 0):
    """Not a method, a bound: sinc + noise whose power follows the REFERENCE's own high band averaged
    over ENVELOPE_BANDS bands (equal widths in octaves) in every analysis frame (1024 samples at
    48 kHz, ~21 ms): a perfect coarse envelope with a random phase."""
    y, was_1d, cutoff, sp, ref_power = _oracle_inputs("oracle_envelope", x_low, in_rate, out_rate, cutoff_hz,
                                                      reference)
    if sp is None:
        return _restore(y, was_1d)
    return _restore(_shaped_noise(y, sp, _reference_envelope(sp, ref_power, cutoff, out_rate), seed), was_1d)


def _split_envelope(name, x_low, in_rate, out_rate, cutoff_hz, reference, seed, part):
    """The oracle envelope split into its two parts, each frame's high-band power (its level) and how
    that power is spread over the bands (its shape): one from the reference, the other noise_fill's.
    `part`: "level" or "shape" (the reference's, frame by frame) or "file_shape" (the reference's
    shape averaged over the whole file: one shape per channel, as a static per-file guess would be)."""
    y, was_1d, cutoff, sp, ref_power = _oracle_inputs(name, x_low, in_rate, out_rate, cutoff_hz, reference)
    if sp is None:
        return _restore(y, was_1d)
    envelope, fill = _reference_envelope(sp, ref_power, cutoff, out_rate), sp.target_power()
    above = sp.freqs >= cutoff  # the level: power above the cutoff (below it, in the transition band, noise_fill's)
    level_ref, level_fill = (p[:, above, :].sum(axis=1, keepdims=True) for p in (envelope, fill))  # [C, 1, T]
    ref_sounds = level_ref > 1e-10 * level_ref.max()  # frames 100 dB below the loudest have no shape
    with np.errstate(divide="ignore", invalid="ignore"):
        if part == "level":  # noise_fill's shape at the reference's level
            scaled = np.where(level_fill > 0, fill * level_ref / level_fill, envelope)
        elif part == "shape":  # the reference's shape at noise_fill's level (silent where either is)
            scaled = np.where(ref_sounds, envelope * level_fill / level_ref, 0.0)
        else:  # the file's long-term shape (its power-weighted mean over frames) at noise_fill's level
            total = level_ref.sum(axis=2, keepdims=True)
            shape = np.where(total > 0, envelope.sum(axis=2, keepdims=True) / total, 0.0)
            scaled = shape * level_fill
    target = np.where(above[None, :, None], scaled, fill)
    return _restore(_shaped_noise(y, sp, target, seed), was_1d)


def oracle_level(x_low, in_rate, out_rate, cutoff_hz=None, reference=None, seed: int = 0):
    """Not a method, a bound: noise_fill's spectral shape above the cutoff at the REFERENCE's own
    high-band level in every frame. With oracle_shape it says which part of the envelope the
    headroom between noise_fill and oracle_envelope is in."""
    return _split_envelope("oracle_level", x_low, in_rate, out_rate, cutoff_hz, reference, seed, "level")


def oracle_shape(x_low, in_rate, out_rate, cutoff_hz=None, reference=None, seed: int = 0):
    """Not a method, a bound: the REFERENCE's own spectral shape above the cutoff (oracle_envelope's
    bands, each frame) at noise_fill's high-band level (what the passband's top octave predicts)."""
    return _split_envelope("oracle_shape", x_low, in_rate, out_rate, cutoff_hz, reference, seed, "shape")


def oracle_file_shape(x_low, in_rate, out_rate, cutoff_hz=None, reference=None, seed: int = 0):
    """Not a method, a bound: the REFERENCE's spectral shape above the cutoff averaged over the whole
    file (one shape, not one per frame) at noise_fill's level in every frame. The ceiling of any
    method that guesses one band shape per file, e.g. from the passband's long-term spectrum."""
    return _split_envelope("oracle_file_shape", x_low, in_rate, out_rate, cutoff_hz, reference, seed, "file_shape")


for _oracle in (oracle_envelope, oracle_level, oracle_shape, oracle_file_shape):
    _oracle.needs_reference = True
ORACLES = {"oracle_noise": oracle_noise, "oracle_envelope": oracle_envelope, "oracle_level": oracle_level,
           "oracle_shape": oracle_shape, "oracle_file_shape": oracle_file_shape}


# --- spectral band replication ------------------------------------------------------------------

def _sbr_spectrum(sp: _Spectra) -> np.ndarray:
    """Complex STFT with the band above the cutoff filled by tilt-adjusted copies of the top band.

    Patches are shifted by a multiple of n_fft/hop bins, so every copied bin keeps a phase
    advance per hop consistent with its new frequency (a frequency shift, not a smear).
    """
    spec = sp.spec.copy()
    n_bins = spec.shape[1]
    step = sp.n_fft // sp.hop
    start = int(np.floor(SBR_FROM * sp.cutoff * sp.n_fft / sp.rate))  # first replaced bin
    source_lo = int(np.ceil(FIT_LOW * sp.cutoff * sp.n_fft / sp.rate))
    width = max(step, (start - source_lo) // step * step)  # source band width = shift per patch
    source_lo = start - width
    if source_lo < 1:
        return spec
    k = start
    while k < n_bins:
        shift = k - source_lo  # copy [source_lo, start) to [k, k + width): a multiple of step
        dst = np.arange(k, min(k + width, n_bins))
        src = dst - shift
        gain_db = sp.model_db(sp.freqs[dst]) - sp.model_db(sp.freqs[src])
        spec[:, dst, :] = sp.spec[:, src, :] * 10 ** (gain_db / 20)
        k += width
    # Silent frames stay silent above the cutoff (as in noise_fill).
    spec[:, start:, :] = np.where(sp.silent()[:, None, :], 0.0, spec[:, start:, :])
    return spec


def sbr(x_low, in_rate, out_rate, cutoff_hz=None):
    """sinc + spectral band replication above the cutoff (STFT domain, envelope-adjusted)."""
    y, was_1d, cutoff, sp = _prepare(x_low, in_rate, out_rate, cutoff_hz)
    if sp is None:
        return _restore(y, was_1d)
    spec = _sbr_spectrum(sp)
    # Replace only what lies above the cutoff: the low band stays the sinc output, untouched.
    high = np.zeros_like(spec)
    start = int(np.floor(SBR_FROM * cutoff * sp.n_fft / sp.rate))
    high[:, start:, :] = spec[:, start:, :] - sp.spec[:, start:, :]
    return _restore(y + sp.istft(high), was_1d)


# --- Griffin-Lim --------------------------------------------------------------------------------

def griffin_lim(x_low, in_rate, out_rate, cutoff_hz=None, n_iter: int = 32, seed: int = 0):
    """Full-band magnitude (sinc low band, SBR high band), phase rebuilt by Griffin-Lim."""
    import librosa

    y, was_1d, cutoff, sp = _prepare(x_low, in_rate, out_rate, cutoff_hz)
    if sp is None:
        return _restore(y, was_1d)
    magnitude = np.abs(_sbr_spectrum(sp))
    with warnings.catch_warnings():  # signals shorter than a frame are fine (zero padded)
        warnings.simplefilter("ignore", UserWarning)
        out = librosa.griffinlim(magnitude, n_iter=n_iter, hop_length=sp.hop, n_fft=sp.n_fft,
                                 window="hann", center=True, length=sp.length, init="random",
                                 random_state=seed)
    return _restore(out, was_1d)


BASELINES = {
    "sinc": sinc,
    "spline": spline,
    "noise_fill": noise_fill,
    "sbr": sbr,
    "griffin_lim": griffin_lim,
}

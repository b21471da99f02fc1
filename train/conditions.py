"""The inputs users have: telephone, VoIP and Bluetooth codecs, MP3/AAC walls, through real encoders.

A condition turns a full-band reference into what such a chain delivers: the signal at the chain's
rate, time-aligned with the reference, and the bandwidth the model is told. Training draws them as
degradations (`degrade.degrade`), `bandlift eval --condition NAME` judges every method on them. The
encoders are FFmpeg's (G.711, G.722, AMR-NB, Opus/SILK, mSBC, LAME, AAC) through PyAV.

    y, cutoff_hz = apply("telephone", reference, 48000)   # 8 kHz, 300-3400 Hz, G.711 mu-law
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bandlift.rt.dsp.resample import fit_length

MAX_CODEC_DELAY = 4096  # samples searched when aligning a decoded signal with its input


@dataclass(frozen=True)
class Condition:
    description: str
    rate: int | None  # the chain's sample rate (None: the reference's own, e.g. an MP3 at 44.1/48 kHz)
    cutoff_hz: float  # the bandwidth the chain leaves, what the model is told
    codec: str | None = None  # FFmpeg encoder
    bit_rate: int = 0
    options: dict = field(default_factory=dict)
    band_pass: tuple[float, float] | None = None  # a line's band (telephone, G.712) or an encoder's low-pass


CONDITIONS = {
    "telephone": Condition("narrowband telephone: 8 kHz, 300-3400 Hz line, G.711 mu-law", 8000, 3400.0,
                           "pcm_mulaw", band_pass=(300.0, 3400.0)),
    "telephone-alaw": Condition("narrowband telephone: 8 kHz, 300-3400 Hz line, G.711 A-law", 8000, 3400.0,
                                "pcm_alaw", band_pass=(300.0, 3400.0)),
    "amr-nb": Condition("mobile narrowband: AMR-NB 12.2 kb/s at 8 kHz", 8000, 3400.0, "libopencore_amrnb",
                        12200, band_pass=(200.0, 3400.0)),
    "g722": Condition("wideband VoIP: G.722 64 kb/s at 16 kHz", 16000, 7000.0, "g722", 64000),
    "silk12": Condition("wideband VoIP: Opus SILK 12 kb/s at 16 kHz", 16000, 8000.0, "libopus", 12000,
                        {"application": "voip"}),
    "silk24": Condition("wideband VoIP: Opus SILK 24 kb/s at 16 kHz", 16000, 8000.0, "libopus", 24000,
                        {"application": "voip"}),
    "msbc": Condition("Bluetooth headset wideband speech: mSBC (SBC, 60 kb/s) at 16 kHz", 16000, 8000.0, "sbc",
                      options={"msbc": "1"}),
    "mp3-16k": Condition("MP3 128 kb/s with a 16 kHz wall, at the reference's rate", None, 16000.0,
                         "libmp3lame", 128000, {"cutoff": "16000"}),
    "aac-64k": Condition("AAC-LC 64 kb/s, low-passed at 16 kHz as encoders at this rate do, at the reference's "
                         "rate", None, 16000.0, "aac", 64000, band_pass=(0.0, 16000.0)),
}
DECODERS = {"libopus": "opus", "libmp3lame": "mp3float", "libopencore_amrnb": "amrnb"}


class ConditionError(ValueError):
    pass


def check_name(name: str) -> Condition:
    if name not in CONDITIONS:
        raise ConditionError(f"unknown condition {name!r}; one of {', '.join(CONDITIONS)}")
    return CONDITIONS[name]


def chain_rate(name: str, reference_rate: int) -> int:
    rate = check_name(name).rate
    return int(reference_rate) if rate is None else rate


def apply(name: str, x: np.ndarray, rate: int) -> tuple[np.ndarray, float]:
    """The reference `x` ((n,) or (n, channels), at `rate`) through the condition's chain: float32 of
    the same layout at `chain_rate(name, rate)`, aligned with `x`, and the cutoff (Hz)."""
    import soxr

    cond = check_name(name)
    out_rate = chain_rate(name, rate)
    a = np.asarray(x, dtype=np.float64)
    one_d = a.ndim == 1
    a = a[:, None] if one_d else a
    if out_rate != rate:
        a = soxr.resample(a, rate, out_rate, quality="VHQ")
    channels = []
    for c in range(a.shape[1]):
        y = a[:, c]
        if cond.band_pass is not None:
            y = band_pass(y, out_rate, *cond.band_pass)
        if cond.codec is not None:
            y = codec_roundtrip(y, out_rate, cond.codec, cond.bit_rate, cond.options)
        channels.append(y)
    y = np.stack(channels, axis=1).astype(np.float32)
    return (y[:, 0] if one_d else y), cond.cutoff_hz


def band_pass(x: np.ndarray, rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """A line's band: zero-phase 4th-order Butterworth high-pass and a steep low-pass (aligned)."""
    from scipy import signal

    from bandlift.train.degrade import band_limit

    y = x
    if low_hz > 0 and len(x) > 30:
        y = signal.sosfiltfilt(signal.butter(2, low_hz, "highpass", fs=rate, output="sos"), x)
    return band_limit(y, rate, high_hz, "brickwall") if high_hz < rate / 2 else y


def codec_roundtrip(x: np.ndarray, rate: int, codec: str, bit_rate: int = 0, options: dict | None = None) -> np.ndarray:
    """Mono float `x` encoded and decoded by FFmpeg's `codec` at `rate`, aligned with `x`, same length."""
    import av

    peak = 0.999  # encoders take s16 or float; either way nothing passes full scale
    x = np.clip(np.asarray(x, dtype=np.float64), -peak, peak)
    enc = av.CodecContext.create(codec, "w")
    enc.sample_rate = rate
    enc.layout = "mono"
    offered = [f.name for f in enc.codec.audio_formats]
    fmt = next((f for f in ("flt", "fltp", "s16", "s16p") if f in offered), offered[0])
    enc.format = fmt
    if bit_rate:
        enc.bit_rate = bit_rate
    if options:
        enc.options = dict(options)
    enc.open()
    size = enc.frame_size or 1024
    tail = np.zeros(MAX_CODEC_DELAY + size)  # flush the codec's delay out
    padded = np.concatenate([x, tail])
    padded = np.pad(padded, (0, (-len(padded)) % size))
    packets = []
    for i, start in enumerate(range(0, len(padded), size)):
        chunk = padded[start:start + size]
        data = (chunk * 32767).round().astype(np.int16) if fmt.startswith("s16") else chunk.astype(np.float32)
        frame = av.AudioFrame.from_ndarray(data[None, :], format=fmt, layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        packets += enc.encode(frame)
    packets += enc.encode(None)
    dec = av.CodecContext.create(DECODERS.get(codec, codec), "r")
    dec.sample_rate = rate
    dec.layout = "mono"
    if enc.extradata:
        dec.extradata = enc.extradata
    frames = [f for packet in packets for f in dec.decode(packet)] + list(dec.decode(None))
    y = np.concatenate([_mono(f) for f in frames]) if frames else np.zeros(0)
    if frames and frames[0].sample_rate != rate:  # Opus decodes at 48 kHz
        import soxr

        y = soxr.resample(y, frames[0].sample_rate, rate, quality="VHQ")
    return fit_length(y[delay_of(x, y):], len(x))


def _mono(frame) -> np.ndarray:
    raw = frame.to_ndarray()
    a = raw.astype(np.float64)
    if raw.dtype.kind == "i":
        a /= float(np.iinfo(raw.dtype).max) + 1.0
    if not frame.format.is_planar and len(frame.layout.channels) > 1:
        a = a.reshape(-1, len(frame.layout.channels)).T
    return a.reshape(-1) if a.shape[0] == 1 else a.mean(axis=0)


def delay_of(x: np.ndarray, y: np.ndarray, max_lag: int = MAX_CODEC_DELAY) -> int:
    """A processor's delay: the lag in 0..max_lag at which its output `y` best matches its input `x`
    (cross-correlation over the first few seconds)."""
    n = min(len(x), len(y) - max_lag, 4 * 48000)
    if n <= 0 or not np.any(x[:n]):
        return 0
    size = 1 << int(np.ceil(np.log2(n + 2 * max_lag)))
    corr = np.fft.irfft(np.fft.rfft(y[:n + max_lag], size) * np.conj(np.fft.rfft(x[:n], size)), size)
    return int(np.argmax(corr[:max_lag + 1]))


def draw(x: np.ndarray, sr: int, rng: np.random.Generator, max_cutoff_hz: float | None = None):
    """1-D `x` through a random chain whose band fits under `max_cutoff_hz`, brought back to `sr` (a
    training input: same rate, length and alignment as the target): (float32, cutoff_hz), or None."""
    import soxr

    names = [n for n, c in CONDITIONS.items() if max_cutoff_hz is None or c.cutoff_hz <= max_cutoff_hz]
    if not names:
        return None
    name = names[int(rng.integers(len(names)))]
    y, cutoff = apply(name, x, int(sr))
    rate = chain_rate(name, int(sr))
    if rate != sr:
        y = soxr.resample(y, rate, sr, quality="VHQ")
    return fit_length(np.asarray(y, dtype=np.float32), len(x)), float(cutoff)

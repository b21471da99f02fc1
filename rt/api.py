"""Pedalboard-style Python API.

    from bandlift.rt import Upsampler
    up = Upsampler()                                   # shipped model, 48 kHz out, CPU/GPU auto
    y, rate = up.process(audio, 16000)                 # audio (n,) or (n, channels)
    y, rate = Upsampler(out_rate=44100).process(audio, 16000)   # for a 44.1 kHz project

The model runs at its own rate (48 kHz); any other `out_rate` is reached by resampling the engine's
output (see bandlift.rt.engine), and the input rate may be anything up to max(48000, out_rate).

`process` is a whole-signal call: it runs the same streaming engine as `bandlift live` over the signal
block by block, flushes it, and removes the engine's delay so that output sample k lines up with input
time k / sample_rate (``delay_compensation=False`` keeps the raw stream timing, i.e. ``delay`` samples
of latency at the start). The output has ``round(n * out_rate / sample_rate)`` samples.

Non-finite input (NaN/inf) is refused with a ValueError that names the first bad sample: silently
replacing samples would hide a broken upstream stage, and the engine's output must stay finite.

For long signals, `stream()` returns an `UpsampleStream` that takes chunks and returns aligned output
chunks with constant memory (used by ``bandlift upsample`` for files of any length).

Each `stream()` and each `process()` call gets its own engine and model state (the loaded model is
shared), so streams are independent and threads may call `process()` on one Upsampler at once; one
stream used from two threads at once raises RuntimeError. Without an explicit `block`, whole signals
run in large blocks (`engine.file_block`, all channels in one model call), which equals block 128 to
float rounding for a block-invariant model such as the shipped one; give `block` to get exactly the
live engine's blocks.
"""
from __future__ import annotations

import numpy as np

from bandlift.rt.dsp.resample import StreamingResampler
from bandlift.rt.engine import DEFAULT_BLOCK, StreamEngine, check_rates, default_block, file_block
from bandlift.rt.model.session import ModelSession

CHUNK = 1 << 16
MAX_AMPLITUDE = 1e36  # larger finite float32 samples (up to 3.4e38) overflow the filters to inf
MAX_CHANNELS = 1024  # libsndfile's own limit (SF_MAX_CHANNELS): no file has more
SURROUND_CHANNELS = 8  # 7.1: a wider whole signal with fewer frames than channels is read as transposed


def positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):  # True == 1, but is no rate or size
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if number != value or number <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def as_float_frames(audio, channels: int | None = None) -> np.ndarray:
    """(n,) or (n, channels) of any numeric dtype -> float32 (n, channels); integers are scaled.
    `channels`: the count a stream was opened with (a chunk of it may be shorter than it is wide); a
    whole signal wider than 7.1 with fewer frames than channels is refused as transposed."""
    a = np.asarray(audio)
    if a.ndim not in (1, 2):
        raise ValueError(f"audio must be (n,) or (n, channels), got shape {a.shape}")
    if a.ndim == 1:
        a = a[:, None]
    if not 1 <= a.shape[1] <= MAX_CHANNELS:
        raise ValueError(f"audio must be (n, channels) with 1..{MAX_CHANNELS} channels, got shape {a.shape}")
    if channels is not None and a.shape[1] != channels:
        raise ValueError(f"audio must be (n, {channels}) for this stream, got shape {a.shape}")
    if channels is None and a.shape[1] > SURROUND_CHANNELS and a.shape[0] < a.shape[1]:
        raise ValueError(f"audio must be (n, channels), got shape {a.shape}: fewer frames than channels "
                         "looks transposed (pass audio.T)")
    if np.issubdtype(a.dtype, np.unsignedinteger):  # unsigned PCM: silence is the midpoint
        mid = float(np.iinfo(a.dtype).max // 2 + 1)
        a = (a.astype(np.float32) - np.float32(mid)) / np.float32(mid)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / np.float32(np.iinfo(a.dtype).max + 1)
    elif not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"audio must be numeric, got dtype {a.dtype}")
    return np.ascontiguousarray(a, np.float32)


def check_finite(frames: np.ndarray, offset: int = 0) -> None:
    finite = np.isfinite(frames)
    if not finite.all():
        sample, channel = np.argwhere(~finite)[0]
        raise ValueError(f"audio contains NaN/inf: first at sample {int(sample) + offset} (channel {int(channel)}); "
                         "clean the input (e.g. np.nan_to_num) before upsampling")
    huge = np.abs(frames) > MAX_AMPLITUDE
    if huge.any():
        sample, channel = np.argwhere(huge)[0]
        raise ValueError(f"audio sample {int(sample) + offset} (channel {int(channel)}) is "
                         f"{float(frames[sample, channel]):.3g}, beyond +-{MAX_AMPLITUDE:.0e}; scale the input "
                         "to about +-1 before upsampling")


def measured_cutoff(audio: np.ndarray, sample_rate: int) -> tuple[float | None, str | None]:
    """input_cutoff "auto": the measured bandwidth in Hz of (n, channels) `audio`, or None (the input's
    Nyquist: no band is generated below it) for silence and for an edge below the lowest the model
    serves (contract.MIN_CUTOFF_HZ: a low tone or hum, not a band edge), with a note saying so."""
    from bandlift.rt.dsp.bandwidth import effective_bandwidth
    from bandlift.rt.model.contract import MIN_CUTOFF_HZ

    hz = float(effective_bandwidth(audio, sample_rate)) if len(audio) else 0.0
    if hz <= 0:
        return None, None
    if hz < min(MIN_CUTOFF_HZ, sample_rate / 2):
        return None, (f"the measured input band ({hz:.0f} Hz) is below the {MIN_CUTOFF_HZ:.0f} Hz the model "
                      f"serves (a low tone?): upsampled as full band up to {sample_rate / 2:.0f} Hz; set the "
                      "input cutoff to override")
    return hz, None


class UpsampleStream:
    """Chunked, delay-compensated upsampling of one signal with constant memory."""

    def __init__(self, engine: StreamEngine, delay_compensation: bool = True):
        self.engine = engine
        self.skip = engine.delay if delay_compensation else 0
        self.n_in = 0
        self.n_out = 0
        self._held = np.zeros((engine.channels, 0), np.float32)  # last sample, released at the end

    def _emit(self, y: np.ndarray) -> np.ndarray:
        if self.skip:
            drop = min(self.skip, y.shape[1])
            y, self.skip = y[:, drop:], self.skip - drop
        y = np.concatenate([self._held, y], axis=1)
        keep = min(1, y.shape[1])
        out, self._held = y[:, : y.shape[1] - keep], y[:, y.shape[1] - keep:]
        self.n_out += out.shape[1]
        return out.T

    def process(self, frames: np.ndarray) -> np.ndarray:
        """frames (n, C) at the input rate -> output frames (m, C) ready so far (integers scaled as in
        `Upsampler.process`)."""
        frames = as_float_frames(frames, self.engine.channels)
        check_finite(frames, self.n_in)
        y = self.engine.process(frames.T)
        self.n_in += frames.shape[0]
        return self._emit(y)

    def total_length(self) -> int:
        e = self.engine
        return int(round(self.n_in * e.out_rate / e.in_rate))

    def flush(self) -> np.ndarray:
        """The remaining output frames (m, C), so that the total is round(n * out_rate / in_rate)."""
        e = self.engine
        target = self.total_length()
        parts = []
        have = self.n_out + self._held.shape[1]
        while have < target:
            need = target - have + self.skip + e.block_out
            zeros = np.zeros((e.channels, int(np.ceil(need * e.in_rate / e.out_rate)) + 1), np.float32)
            y = self.engine.process(zeros)
            if self.skip:
                drop = min(self.skip, y.shape[1])
                y, self.skip = y[:, drop:], self.skip - drop
            parts.append(y)
            have += y.shape[1]
        tail = np.concatenate([self._held, *parts], axis=1)[:, : target - self.n_out]
        self._held = np.zeros((e.channels, 0), np.float32)
        self.n_out += tail.shape[1]
        return tail.T


class Upsampler:
    """Upsample audio with a streaming bandlift model (ONNX Runtime; no torch).

    model: path to a .onnx streaming model, or None for the shipped default.
    out_rate: output rate in Hz (default 48000, the model's rate; others, e.g. 44100, 32000 or 96000,
    resample the model's output). block: model block in samples at the model rate (a multiple of the
    model frame, up to engine.MAX_BLOCK); None (default) runs whole signals in large blocks
    (engine.file_block) and reports the latency of the live default, 128. provider: "auto" | "cpu" |
    "cuda". threads: ONNX Runtime intra-op threads.
    `latency_at(rate)`: algorithmic latency in samples at out_rate for input at `rate`: resampler
    delays + model delay + one block (`block`, or 128 when None); `delay_at(rate)`: the part `process`
    compensates (a whole number of samples at out_rate). Both depend only on the configuration;
    `latency` and `delay` are their values for input at out_rate, and a stream's own are
    `stream.engine.latency` / `.delay`.
    `input_cutoff` defaults to "auto" (the measured bandwidth), as in `bandlift upsample`.
    """

    def __init__(self, model=None, out_rate: int = 48000, block: int | None = None, provider: str = "auto",
                 threads: int = 1):
        self.out_rate = positive_int(out_rate, "out_rate")
        self.session = ModelSession(model, provider=provider, threads=threads)
        self.block = None if block is None else default_block(self.session.frame, block)
        self.engine(self.out_rate, 1)

    def engine(self, sample_rate: int, channels: int, input_cutoff_hz: float | None = None) -> StreamEngine:
        """A new engine (its own model state) for one signal at `sample_rate` with `channels` channels."""
        block = self.block or file_block(self.session.frame, int(channels))
        return StreamEngine(self.session, int(sample_rate), self.out_rate, int(channels), block, input_cutoff_hz)

    def _delays(self, sample_rate) -> tuple[int, int]:
        """(delay, latency) at out_rate for input at `sample_rate`, from the same parts as the engine's."""
        rate = self.check_rate(sample_rate)
        model_rate = self.session.sample_rate
        first = StreamingResampler(rate, model_rate, 1)
        last = StreamingResampler(model_rate, self.out_rate, 1, prior_delay=first.delay + self.session.delay)
        block = self.block or DEFAULT_BLOCK  # the live block: the delay does not depend on it
        return last.delay, last.delay + -(-block * self.out_rate // model_rate)

    def delay_at(self, sample_rate) -> int:
        return self._delays(sample_rate)[0]

    def latency_at(self, sample_rate) -> int:
        return self._delays(sample_rate)[1]

    @property
    def latency(self) -> int:
        return self.latency_at(self.out_rate)

    @property
    def delay(self) -> int:
        return self.delay_at(self.out_rate)

    def check_rate(self, sample_rate) -> int:
        """`sample_rate` as an int if this upsampler takes it (at most max(out_rate, model rate)), else
        ValueError."""
        rate = positive_int(sample_rate, "sample_rate")
        check_rates(rate, self.out_rate, self.session.sample_rate)
        return rate

    def resolve_cutoff(self, input_cutoff, audio: np.ndarray | None, sample_rate: int) -> float:
        """None or "nyquist" -> sample_rate/2; "auto" -> measured effective bandwidth; a number -> Hz."""
        if input_cutoff is None or input_cutoff == "nyquist":
            return sample_rate / 2
        if isinstance(input_cutoff, str):
            if input_cutoff != "auto":
                try:
                    input_cutoff = float(input_cutoff)
                except ValueError:
                    raise ValueError(f"input_cutoff must be 'auto', 'nyquist', None or Hz, got {input_cutoff!r}") from None
            else:
                hz, note = measured_cutoff(audio, sample_rate) if audio is not None else (None, None)
                if note:
                    import warnings

                    warnings.warn(note, stacklevel=3)
                return hz or sample_rate / 2
        hz = float(input_cutoff)
        if not 0 < hz <= sample_rate / 2:
            raise ValueError(f"input_cutoff {hz} Hz must be in (0, {sample_rate / 2}] for {sample_rate} Hz input")
        return hz

    def stream(self, sample_rate, channels: int, input_cutoff=None, delay_compensation: bool = True) -> UpsampleStream:
        rate = self.check_rate(sample_rate)
        if input_cutoff == "auto":
            raise ValueError("input_cutoff='auto' needs the signal: measure it first "
                             "(bandlift.rt.dsp.bandwidth.effective_bandwidth) and pass Hz")
        hz = self.resolve_cutoff(input_cutoff, None, rate)
        channels = positive_int(channels, "channels")
        if channels > MAX_CHANNELS:
            raise ValueError(f"channels must be at most {MAX_CHANNELS}, got {channels}")
        return UpsampleStream(self.engine(rate, channels, hz), delay_compensation)

    def process(self, audio, sample_rate, input_cutoff="auto", delay_compensation: bool = True):
        """Whole-signal upsampling -> (audio_out, out_rate); same layout as `audio`."""
        rate = self.check_rate(sample_rate)
        frames = as_float_frames(audio)
        check_finite(frames)
        hz = self.resolve_cutoff(input_cutoff, frames, rate)
        stream = UpsampleStream(self.engine(rate, frames.shape[1], hz), delay_compensation)
        parts = [stream.process(frames[i:i + CHUNK]) for i in range(0, frames.shape[0], CHUNK)]
        parts.append(stream.flush())
        out = np.concatenate(parts, axis=0)
        return (out[:, 0] if np.asarray(audio).ndim == 1 else out), self.out_rate

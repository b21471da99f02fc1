"""The streaming engine: input chunks of any size -> resampler -> ring -> fixed model blocks ->
output resampler -> output.

One code path serves files (`bandlift upsample`, `Upsampler`) and live devices (`bandlift live`), so a
file processed offline equals the live output sample for sample when the block size is the same.

Rates: the input (`in_rate`) is resampled to the model's rate (`model_rate`, 48 kHz), everything below
runs there, and when `out_rate` differs (e.g. 44.1 kHz) the mixed output is resampled once more at the
very end (an anti-aliased downsampler for 44.1/32 kHz, an upsampler for 96 kHz). The input rate may be
anything up to max(model rate, output rate).

Signal flow per model block (``block`` samples at the model rate, a multiple of the model frame)::

    dry  = resampled input delayed by the model's `delay`   (the bypass path, aligned with the model)
    wet  = model(resampled input)
    out  = gain * (dry + active * mix * (wet - dry))        -> output resampler (if out_rate != model rate)

``active`` is 1 in the PLAY state and 0 in the others (BYPASS, HOLD, WARM: `bandlift.rt.states`,
the one transition function and the hold's timing); a block that changes it crossfades (raised cosine
over the block) or switches hard with a short de-click ramp. Bypass toggles crossfade; so does a
block that is slow in real-time mode (compute time > block duration: the model output of that late
block is still used to fade out). A block whose output is NaN/inf, or, in real-time mode only,
explodes (peak > 4 x the model's own recent output peak, or this block's passband, + 0.5; or above
+24 dBFS) switches hard: its output is discarded and the model state reset (a NaN may sit in it).
Offline, a non-finite output or one above +24 dBFS (above 16 x the block's passband for hot inputs)
is a fault: a loud but plausible output is the model's answer, but one exploding block would
otherwise set the one gain of a whole file and silence it. A fault or overload starts a hold (0.5 s,
doubling for repeated events up to 8 s); over its last blocks (the model's reach: `bandlift.reach` in
its metadata, else 0.1 s) the model runs on the input with its output discarded, so it returns warm
(its output what it would have been had it never stopped), and an overload never resets it. A
model that cannot keep up costs one crossfade per hold period, never a run of clicks.
``mix`` and ``gain`` changes are ramped linearly over one block. All of this acts at the model rate,
before the output resampler: the resampler is linear and smooth, so crossfades and de-click ramps
stay crossfades, and a discarded (NaN) model block never reaches its filter state.

Delay and latency are in samples at the OUTPUT rate, computed from the parts:
    delay   = input resampler delay + model delay (both at the model rate, converted) + output resampler
              delay; the output resampler adds the fraction of an output sample that makes the sum a
              whole number (the offset of the output stream; what offline processing removes exactly)
    latency = delay + block_out                    (plus one model block, `block_out` output samples
                                                    rounded up, of buffering in real time)
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from bandlift.rt.dsp.blocks import declick, delay_line, finite, mix_block, shift_left
from bandlift.rt.dsp.resample import HighBand, StreamingResampler
from bandlift.rt.states import HOLD_S, WARM_S, Event, HoldTimer, State, transition  # noqa: F401 (HOLD_S: read by tests)

DEFAULT_BLOCK = 128
MAX_BLOCK = 1 << 16  # 1.4 s at 48 kHz: more only costs memory (files: file_block)
FILE_SAMPLES = 8192  # whole signals (files, `Upsampler.process`): samples per model call, all channels
PENDING = 1 << 15  # samples of resampled input held for the next block
IN_USE = "this stream is in use by another thread: give each thread its own stream (Upsampler.stream())"
EXPLODE_RATIO = 4.0
EXPLODE_OFFSET = 0.5
EXPLODE_CEILING = 16.0  # +24 dBFS: no model output is legitimately louder
EXPLODE_RELEASE_S = 1.0  # the model's recent output peak halves over this
REASONS = {"nan": "non-finite model output", "explode": "model output exploded",
           "overload": "overload (late block)", "user": "bypass switched on"}
DECLICK = 64  # samples of the ramp that removes the step of a hard switch
MONO_PAIR_SIDE = 1e-4  # a stereo block whose side (L - R) has this fraction of its mid's (L + R) energy
# (-40 dB) or less carries one signal twice: both channels get the left one's band
MAX_RATE = 768_000  # Hz; higher rates are refused (filters and buffers scale with the rate)


@dataclass
class EngineStats:
    blocks: int = 0
    model_blocks: int = 0
    played_blocks: int = 0  # blocks that end with the model's output playing
    deadline_misses: int = 0
    bypass_events: int = 0
    faults_nan: int = 0
    faults_explode: int = 0
    overloads: int = 0
    bypass_run: int = 0  # blocks since the model last played (fault/overload holds, not the user's bypass)
    longest_bypass_blocks: int = 0
    events: list = field(default_factory=list)  # (model-rate sample index, reason)
    times: np.ndarray = field(default_factory=lambda: np.zeros(1 << 16))  # last compute times (s)

    def add_time(self, seconds: float) -> None:
        self.times[self.model_blocks % len(self.times)] = seconds
        self.model_blocks += 1

    def compute_times(self) -> np.ndarray:
        return self.times[: min(self.model_blocks, len(self.times))].copy()

    def summary(self) -> dict:
        t = self.compute_times() * 1e3
        pct = (lambda q: float(np.percentile(t, q))) if len(t) else (lambda q: float("nan"))
        return {"blocks": self.blocks, "model_blocks": self.model_blocks, "played_blocks": self.played_blocks,
                "block_ms_p50": pct(50), "block_ms_p99": pct(99),
                "block_ms_max": float(t.max()) if len(t) else float("nan"),
                "deadline_misses": self.deadline_misses, "bypass_events": self.bypass_events,
                "faults_nan": self.faults_nan, "faults_explode": self.faults_explode,
                "overloads": self.overloads, "longest_bypass_blocks": self.longest_bypass_blocks}


def check_rates(in_rate: int, out_rate: int, model_rate: int) -> None:
    """The engine resamples in -> model rate -> out; the input may be at most max(model, output rate)."""
    for name, rate in (("input", in_rate), ("output", out_rate), ("model", model_rate)):
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"{name} rate must be 1..{MAX_RATE} Hz, got {rate}")
    if in_rate > max(out_rate, model_rate):
        raise ValueError(f"input rate {in_rate} Hz is above the output rate {out_rate} Hz and the model rate "
                         f"{model_rate} Hz; bandlift only upsamples (downsample first, e.g. with soxr)")


def file_block(frame: int, channels: int) -> int:
    """The block for whole signals: per-call overhead amortised, the call's data still cache-resident
    (measured on the shipped model: RTF 0.010 mono at 8192, 0.010 per channel stereo at 4096; 0.017 at
    1024, and twice that for stereo at 16384)."""
    return max(frame, FILE_SAMPLES // channels // frame * frame)


def default_block(frame: int, block: int | None = None) -> int:
    """`block` (default DEFAULT_BLOCK) checked: a multiple of the model frame, at most MAX_BLOCK."""
    if block is None:
        block = DEFAULT_BLOCK
    if not isinstance(block, (int, np.integer)) or isinstance(block, bool) or not frame <= block <= MAX_BLOCK:
        raise ValueError(f"block must be a multiple of the model frame {frame} from {frame} to {MAX_BLOCK} "
                         f"samples, got {block}")
    if block % frame:
        raise ValueError(f"block {block} is not a multiple of the model frame {frame}")
    return int(block)


class StreamEngine:
    """Streaming upsampler: `process(x[C, n]) -> y[C, m]` at `out_rate`, state kept between calls.

    `block` is in samples at the model rate; `delay` and `latency` in samples at `out_rate`. Without a
    session (bypass only) the signal path runs at `model_rate` (default: `out_rate`). The engine owns
    its model state (one `ModelState` of the shared session), so engines never disturb each other; one
    engine is one stream: using it from two threads at once raises RuntimeError."""

    def __init__(self, session=None, in_rate: int = 48000, out_rate: int = 48000, channels: int = 1,
                 block: int | None = None, input_cutoff_hz: float | None = None, realtime: bool = False,
                 model_rate: int | None = None, explode_guard: bool | None = None, stereo_pair: bool | None = None):
        self.session = session
        self.in_rate, self.out_rate, self.channels = int(in_rate), int(out_rate), int(channels)
        # two rows are one stereo stream's channels (one band for a pair that carries one signal twice),
        # unless the caller batches two independent streams (stereo_pair=False)
        self.stereo_pair = self.channels == 2 if stereo_pair is None else bool(stereo_pair) and self.channels == 2
        self.model_rate = int(session.sample_rate if session is not None else (model_rate or out_rate))
        check_rates(self.in_rate, self.out_rate, self.model_rate)
        frame = session.frame if session is not None else 1
        self.block = default_block(frame, block)
        self.model = session.new_state(self.channels) if session is not None else None
        self.resampler = StreamingResampler(self.in_rate, self.model_rate, self.channels)
        self.model_delay = session.delay if session is not None else 0
        self.out_resampler = StreamingResampler(self.model_rate, self.out_rate, self.channels,
                                                prior_delay=self.resampler.delay + self.model_delay)
        self.delay = self.out_resampler.delay
        # input and output above the model's rate: the band above its Nyquist passes through unchanged
        self.high_band = (HighBand(self.in_rate, self.model_rate, self.out_rate, self.channels, self.model_delay,
                                   self.delay) if min(self.in_rate, self.out_rate) > self.model_rate else None)
        self.block_out = -(-self.block * self.out_rate // self.model_rate)
        self.latency = self.delay + self.block_out
        self.realtime = realtime
        self.explode_guard = explode_guard  # None: on in real-time mode only
        self.block_seconds = self.block / self.model_rate
        reach = session.reach if session is not None else None  # the model's, in samples
        self.warm_blocks = max(1, math.ceil(WARM_S * self.model_rate / self.block) if reach is None
                               else -(-reach // self.block))  # the end of a hold: the model returns warm
        self._peak_decay = 0.5 ** (self.block_seconds / EXPLODE_RELEASE_S)
        self.set_input_cutoff(input_cutoff_hz)
        t = (np.arange(self.block) + 1.0) / self.block
        self._fade = (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)  # 0 -> 1 raised cosine
        self._ramp = t.astype(np.float32)  # 0 -> 1 linear
        n = min(DECLICK, self.block)
        self._declick = np.zeros(self.block, np.float32)
        self._declick[:n] = 0.5 + 0.5 * np.cos(np.pi * (np.arange(n) + 1.0) / n)  # 1 -> 0
        # resampled input waiting for a full block (model rate), linear: blocks are views into it
        # (room for a block plus what one input sample can make: 48,000 samples from a 1 Hz input)
        self._pending = np.zeros((self.channels, max(2 * self.block, PENDING) - -self.model_rate // self.in_rate),
                                 np.float32)
        self._dry_block = np.zeros((self.channels, self.block), np.float32)
        self._pair_out = np.zeros((2, self.block), np.float32)
        self._pair_scratch = np.zeros(self.block, np.float32)
        self._out = np.zeros((self.channels, self._pending.shape[1]), np.float32)
        self._busy = threading.Lock()
        self.bypass = False
        self.mix = 1.0
        self.gain = 1.0
        self.reset()

    # -- controls ---------------------------------------------------------------------------------
    def set_input_cutoff(self, hz: float | None) -> None:
        hz = self.in_rate / 2 if hz is None or hz <= 0 else min(float(hz), self.in_rate / 2)
        self.input_cutoff_hz = hz
        # the model generates from its own lowest trained cutoff up, never below (it would over-fill)
        lowest = self.session.info.lowest_cutoff_hz if self.session is not None else 0.0
        self.model_cutoff_hz = min(max(hz, lowest), self.in_rate / 2)
        value = float(np.clip(self.model_cutoff_hz / (self.model_rate / 2), 1e-3, 1.0))
        self._cutoff = np.full(self.channels, value, np.float32)

    def reset(self) -> None:
        """Forget all signal history (a new stream starts)."""
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(IN_USE)
        try:
            self.resampler.reset()
            self.out_resampler.reset()
            if self.high_band is not None:
                self.high_band.reset()
            if self.model is not None:
                self.model.reset()
            self._filled = 0
            self._dry_history = np.zeros((self.channels, self.model_delay), np.float32)
            self._last_out = np.zeros(self.channels, np.float32)
            self.state = State.BYPASS if self.bypass else State.PLAY
            self._active = 0.0 if (self.bypass or self.session is None) else 1.0
            self._mix_now, self._gain_now = self.mix, self.gain
            self.hold = HoldTimer(self.model_rate, self.block, self.warm_blocks)
            self._wet_peak = 0.0  # the model's recent output peak (decaying)
            self._mono_pair = 0.0  # 1: this stereo stream carries one signal twice (`_one_band_for_a_mono_pair`)
            self.samples_out = 0  # model-rate samples made (the time base of stats.events)
            self.stats = EngineStats()
        finally:
            self._busy.release()

    @property
    def active(self) -> float:
        """Current model weight (0 = bypass, 1 = model)."""
        return self._active

    @property
    def holding(self) -> bool:
        """In a hold after a fault or overload (HOLD or WARM)."""
        return self.state in (State.HOLD, State.WARM)

    # -- processing -------------------------------------------------------------------------------
    def process(self, x: np.ndarray) -> np.ndarray:
        """Feed x [C, n] (input rate); returns the output produced so far [C, m] (output rate)."""
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"expected [{self.channels}, n] input, got {x.shape}")
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(IN_USE)
        try:
            made = 0
            if self.high_band is not None:
                self.high_band.process(x)
            pos, n = 0, x.shape[1]
            pending, cap, block = self._pending, self._pending.shape[1], self.block
            while pos < n:
                # input whose resampled output fits the free space (ceil(step * L / M) <= free)
                step = max(1, (cap - self._filled - 1) * self.in_rate // self.model_rate)
                chunk = x[:, pos:pos + step]
                pos += chunk.shape[1]
                y = chunk if self.resampler.passthrough else self.resampler.process(chunk)
                if self._filled + y.shape[1] > cap:
                    raise RuntimeError(f"internal: {y.shape[1]} resampled samples for {cap - self._filled} free")
                pending[:, self._filled:self._filled + y.shape[1]] = y
                self._filled += y.shape[1]
                start = 0
                while self._filled - start >= block:
                    if made + block > self._out.shape[1]:
                        self._out = np.concatenate([self._out, np.zeros_like(self._out)], axis=1)
                    self._process_block(pending[:, start:start + block], self._out[:, made:made + block])
                    start += block
                    made += block
                if start:
                    shift_left(pending, start, self._filled)
                    self._filled -= start
            y = self._out[:, :made]
            y = y.copy() if self.out_resampler.passthrough else self.out_resampler.process(y)
            if self.high_band is not None:
                y += self.gain * self.high_band.take(y.shape[1])
            return y
        finally:
            self._busy.release()

    def pending(self) -> int:
        """Resampled samples (model rate) waiting for a full block."""
        return self._filled

    def output_count(self, n_in: int) -> int:
        """Output samples that `n_in` input samples yield from a reset (all `process` calls together)."""
        rs, out = self.resampler, self.out_resampler
        model = -(-n_in * rs.up // rs.down) // self.block * self.block
        return -(-model * out.up // out.down)

    def _event(self, reason: str) -> None:
        self.stats.bypass_events += 1
        self.stats.events.append((self.samples_out, reason))

    def event_lines(self, start: int = 0) -> list[str]:
        """Console lines for the bypass events from index `start` on: time and cause."""
        return [f"bypass at {sample / self.model_rate:.2f} s: {REASONS.get(reason, reason)}"
                for sample, reason in self.stats.events[start:]]

    def _start_hold(self, reason: str, event: Event) -> None:
        """Bypass for the hold time; the model state is kept on an overload (it is only late), reset
        on a fault (it may hold the NaN), and warmed up again before the model returns."""
        if not self.holding:  # a warm-up block that fails restarts the hold (no new bypass)
            self._event(reason)
        self.state = transition(self.state, event)
        self.hold.start()
        self._wet_peak = 0.0
        if self.model is not None and reason != "overload":
            self.model.reset()

    def _exploded(self, wet: np.ndarray, dry: np.ndarray) -> bool:
        """Real-time guard: far above the model's own recent level (or this block's passband, which the
        model passes through: an onset is not an explosion)."""
        if self.explode_guard is False:
            return False
        peak, dry_peak = float(np.abs(wet).max()), float(np.abs(dry).max())
        if peak > EXPLODE_CEILING * max(1.0, dry_peak):  # offline too: one such block would set a file's one gain
            return True
        if not (self.realtime if self.explode_guard is None else self.explode_guard):
            return False
        if peak > EXPLODE_RATIO * max(self._wet_peak, dry_peak) + EXPLODE_OFFSET:
            return True
        self._wet_peak = max(peak, self._wet_peak * self._peak_decay)
        return False

    def force_bypass(self, reason: str) -> None:
        """Drop to bypass at the next block without a crossfade (e.g. the output already ran late),
        for the usual hold time; the step is de-clicked."""
        if not self.holding:
            if reason == "overload":
                self.stats.overloads += 1
            self._start_hold(reason, Event.FORCED)

    def _run_model(self, x: np.ndarray, dry: np.ndarray, warming: bool) -> tuple[np.ndarray, str | None]:
        """The model's output for this block and what went wrong, if anything ("nan", "explode",
        "overload"); counted in the stats."""
        stats = self.stats
        t0 = time.perf_counter()
        wet = self.model.run(x, self._cutoff)
        if self.stereo_pair:
            wet = self._one_band_for_a_mono_pair(wet, dry)
        elapsed = time.perf_counter() - t0
        stats.add_time(elapsed)
        if not finite(wet):
            stats.faults_nan += 1
            return wet, "nan"
        # the wet block is aligned with the delayed input (dry): an impulse that entered one block
        # earlier is legitimately in this block's output
        if self._exploded(wet, dry):
            stats.faults_explode += 1
            return wet, "explode"
        if (self.realtime and elapsed > self.block_seconds
                and not (warming and self.hold.tolerates_late_warm_up())):
            stats.deadline_misses += 1
            stats.overloads += 1
            return wet, "overload"  # this late block is still used to fade out
        if not warming:
            self.hold.played_clean()
        return wet, None

    def _one_band_for_a_mono_pair(self, wet: np.ndarray, dry: np.ndarray) -> np.ndarray:
        """A stereo pair that carries one signal twice (a mono recording in a stereo file or stream) gets
        one band in both channels: the right channel takes the left one's output, whose passband is its
        own (crossfaded over the block where that starts or stops). Other pairs keep a band each, from
        a noise each, as the noise-fill draws them; silence keeps the pair's last state."""
        scratch = self._pair_scratch  # no allocation per block
        side = float(np.dot(np.subtract(dry[0], dry[1], out=scratch), scratch))
        mid = float(np.dot(np.add(dry[0], dry[1], out=scratch), scratch))
        start = self._mono_pair
        target = start if mid == 0.0 else float(side <= MONO_PAIR_SIDE * mid)
        self._mono_pair = target
        if start == target == 0.0:
            return wet
        out = self._pair_out
        out[0] = wet[0]
        if start == target:
            out[1] = wet[0]
        else:  # raised-cosine crossfade from one band to the other
            weight = self._fade if target else 1.0 - self._fade
            out[1] = wet[1] + weight * (wet[0] - wet[1])
        return out

    def _render(self, dry, wet, out, start: float, target: float, hard: bool) -> float:
        """out = the block: the model's weight from `start` to `target` (the input alone without a model
        output), mix and gain ramped, a hard switch de-clicked; -> the model's weight at its end."""
        if wet is None:
            end = 0.0
            mix_block(dry, dry, out, 0.0, 0.0, self._fade, 1.0, 1.0, self._gain_now, self.gain, self._ramp)
        else:
            end = target
            mix_block(dry, wet, out, start, target, self._fade, self._mix_now, self.mix, self._gain_now, self.gain,
                      self._ramp)
        self._active = end
        self._mix_now = self.mix
        self._gain_now = self.gain
        if hard:
            declick(out, self._last_out, self._declick)
        if self.bypass and start > 0 and end == 0.0 and not hard:
            self._event("user")
        self._last_out[:] = out[:, -1]
        self.samples_out += self.block
        return end

    def _process_block(self, x: np.ndarray, out: np.ndarray) -> None:
        """x [C, block] (model rate) -> out [C, block] (model rate)."""
        stats = self.stats
        stats.blocks += 1
        dry = self._dry_block
        delay_line(x, self._dry_history, dry)
        start = self._active
        for event in (self.hold.tick(), Event.BYPASS_ON if self.bypass else Event.BYPASS_OFF):
            if event is not None:
                self.state = transition(self.state, event)
        warming = self.state is State.WARM  # its output is discarded
        wet, hard = None, False
        if self.session is not None and self.state is not State.HOLD:
            wet, fault = self._run_model(x, dry, warming)
            if fault is not None:
                self._start_hold(fault, Event.LATE if fault == "overload" else Event.FAULT)
                if fault != "overload":
                    wet, hard = None, start > 0
            if warming:
                wet = None
        elif start > 0 and self.session is not None:
            hard = True  # asked to fade without a model output (forced bypass)
        if self.session is not None and self.state is State.HOLD:
            self.model.skip_frames(self.block // self.session.frame)  # its noise's clock runs on
        target = 1.0 if (self.state is State.PLAY and self.session is not None) else 0.0
        end = self._render(dry, wet, out, start, target, hard)
        stats.played_blocks += end == 1.0
        stats.bypass_run = stats.bypass_run + 1 if (end < 1.0 and self.holding and self.session) else 0
        stats.longest_bypass_blocks = max(stats.longest_bypass_blocks, stats.bypass_run)

"""Live engine: sounddevice streams <-> numba SPSC rings <-> a worker thread running `StreamEngine`.

The audio callbacks (`callbacks`: C functions, no GIL) only move samples between the devices and the
rings and wake the worker, which (ONNX Runtime releases the GIL) drains the input ring through the
engine into the output ring.

Timing is fixed: the output ring starts `buffering` samples ahead of the callback and the callback
always advances by a full period, so a late worker costs silence for that period, never drift. The
buffering is the smallest amount that gives the worker one device period to produce each model block
(computed by simulating the callback cadence), plus an optional safety margin. Round-trip latency =
buffering + engine delay (resamplers + model) + the device's input and output latency, all in samples
at the output rate (the engine's out_rate: 48 kHz, or e.g. 44.1 kHz, resampled from the model's rate).

With an input device at another rate (e.g. a 16 kHz headset) there are two streams, input at its
rate and output at the output rate; the output waits for the first input, and one more period of
buffering covers either order of their callbacks within a cycle. (Two independent clocks may drift on real
hardware: a late worker then costs silence, never growing latency.)

Overload: the engine (realtime=True) crossfades to bypass when a block's compute time exceeds its
duration, and the worker forces bypass if the output actually ran late; the model comes back after a
growing hold time. A stream that stops delivering callbacks (device gone, JACK server stopped) or
reports an error ends the run with a clear message within `watchdog_s` (`startup_s` for the first
callback: PulseAudio's ALSA plugin takes 1.5-2 s to deliver it).
"""
from __future__ import annotations

import gc
import os
import select
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from bandlift.rt.dsp.ringbuffer import RingBuffer, ring_available, ring_read, ring_write
from bandlift.rt.io.callbacks import (CALLBACKS, IN_OVERFLOW, IN_RING_FULL, LATE, NSTATS, OUT_CALLBACKS,
                                      OUT_UNDERFLOW, REC_POS, WAKE_NS_MAX, WAKE_NS_SUM, XRUNS, duplex_callback,
                                      input_callback, input_side, make_context, output_callback, output_side)
from bandlift.rt.io.devices import LiveError, abandon, ended_within, jack_period, open_stream
from bandlift.rt.io.recording import ring_contents

SWITCH_INTERVAL_S = 2e-4
STATUS_BLOCKS = 2000  # the status line's block p99 is over the last this many model blocks


# -- buffering --------------------------------------------------------------------------------------
def required_buffering(engine, frames: int, periods: int = 4000) -> int:
    """Smallest prefill (samples at the output rate) that lets the worker produce each model block
    within one device period: simulated over the callback cadence (exact for any block/period/ratio)."""
    need = engine.block_out
    for c in range(periods):
        n_in = ((c + 1) * frames * engine.in_rate) // engine.out_rate  # input delivered by callback c
        ready = engine.output_count(n_in)  # output samples the worker can make by callback c+1
        # callback c+1 reads output positions up to (c + 2) * frames - prefill - 1
        need = max(need, (c + 2) * frames - ready)
    return int(need)


def recent_compute_times(stats, n: int) -> np.ndarray:
    """The engine's last `n` block compute times (s), oldest first (`stats.times` is a ring indexed by
    the model block count)."""
    size = len(stats.times)
    n = min(n, stats.model_blocks, size)
    return stats.times[(stats.model_blocks - n + np.arange(n)) % size]


@dataclass
class LiveSummary:
    seconds: float
    callbacks: int
    xruns: int
    input_overflows: int
    output_underflows: int
    late_blocks: int
    in_ring_full: int
    resyncs: int
    wake_us_mean: float  # the callback's wake-up write() to the worker: its cost on the audio thread
    wake_us_max: float
    buffering: int
    device_latency: int
    engine: dict

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class LiveRunner:
    """Run `engine` between audio devices in real time (see module docstring)."""

    def __init__(self, engine, input_device=None, output_device=None, frames: int | None = None,
                 margin: int = 0, source: np.ndarray | None = None, record_seconds: float = 0.0,
                 watchdog_s: float = 1.0, latency="low", two_streams: bool | None = None,
                 startup_s: float = 5.0):
        import sounddevice as sd

        self.sd = sd
        self.engine = engine
        engine.realtime = True
        # PortAudio splits a JACK period into callbacks of `frames` and runs them back to back: the
        # worker then gets its input in bursts and the buffering below would be too small
        self.host_period = jack_period(output_device)
        self.frames = int(frames or self.host_period or engine.block)
        if self.host_period and self.frames % self.host_period:
            raise LiveError(f"--frames {self.frames} does not fit the JACK server's period of {self.host_period} "
                            f"frames: use {self.host_period} or a multiple of it")
        self.channels = engine.channels
        self.source = (np.zeros((0, self.channels), np.float32) if source is None
                       else np.ascontiguousarray(source, np.float32).reshape(len(source), -1))
        if self.source.shape[0] and self.source.shape[1] != self.channels:
            raise ValueError(f"source has {self.source.shape[1]} channels, the engine {self.channels}")
        # one full-duplex stream when both sides run at the output rate; else an input stream at the
        # input rate and an output stream (their clocks are independent: latency is then approximate)
        if two_streams is None:
            two_streams = self.source.shape[0] == 0 and engine.in_rate != engine.out_rate
        self.duplex = not two_streams
        rec_frames = int(record_seconds * engine.out_rate)
        self.record = np.zeros((rec_frames, self.channels), np.float32)  # a ring (rt/io/recording.py)
        self.stats = np.zeros(NSTATS, np.int64)
        cap = max(4 * engine.out_rate, 1 << 15)  # 4 s of slack before the input ring overflows
        self.in_ring = RingBuffer(cap, self.channels)
        self.out_ring = RingBuffer(cap, self.channels)
        self.margin = int(margin)
        self.buffering = required_buffering(engine, self.frames) + self.margin
        if not self.duplex:  # no phase relation between the two callbacks: one more period of slack
            self.buffering += self.frames
        self.watchdog_s = watchdog_s  # at least; scaled to the measured callback interval
        self.startup_s = startup_s
        self.callback_interval = self.frames / engine.out_rate  # measured once callbacks come
        self.resyncs = 0
        self.latency_arg = latency
        self.input_device, self.output_device = input_device, output_device
        self.error: str | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self.streams = []
        self.device_latency = 0
        self._started = 0.0
        self._worker = None
        self._chunk = np.zeros((cap, self.channels), np.float32)
        # every page the callback touches is written now: a first touch from the audio thread is a page
        # fault, which can wait on the process's memory-map lock behind a lower-priority thread
        self.source = self.source.copy()
        for array in (self.in_ring.data, self.out_ring.data, self.record):
            array.fill(0.0)
        # the callbacks' view of this runner (the arrays it points to live as long as self)
        self._ctx = make_context(self.in_ring, self.out_ring, self.stats, self.source, self.record,
                                 engine.in_rate, engine.out_rate, self._wake_w)
        self.worker_priority = "?"
        self._switch_interval: float | None = None

    def _stream(self, kind: str, callback, **kwargs):
        """A stream running one of the C callbacks with this runner's context as its user data."""
        return open_stream(kind, callback, self._ctx.ctypes.data, self.channels, self.latency_arg, self._finished,
                           **kwargs)

    def _finished(self):
        if not self._stop.is_set() and self.error is None:
            self.error = "the audio stream stopped unexpectedly (device removed or server stopped)"
        self._stop.set()

    # -- worker -------------------------------------------------------------------------------------
    def _raise_priority(self):
        """Real-time priority for the worker where allowed (below the audio thread's), else none."""
        try:
            prio = min(max(os.sched_get_priority_min(os.SCHED_FIFO), 4), os.sched_get_priority_max(os.SCHED_FIFO))
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
            self.worker_priority = f"SCHED_FIFO {prio}"
        except (OSError, AttributeError):
            self.worker_priority = "normal (no real-time permission)"

    def _watchdog(self) -> float:
        """Seconds without a callback that mean the device is gone: a few callback intervals."""
        return max(self.watchdog_s, 4 * self.callback_interval)

    def _work(self):
        self._raise_priority()
        ring_in, ring_out = self.in_ring, self.out_ring
        last_cb, last_change = -1, time.monotonic()
        first_cb, first_time = 0, 0.0
        seen_full = 0
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._wake_r], [], [], 0.05)
                if ready:
                    os.read(self._wake_r, 4096)
                if self.stats[IN_RING_FULL] != seen_full:  # stalled for seconds: drop the stale input first
                    seen_full = self.stats[IN_RING_FULL]
                    self._resync()
                self._pump(ring_in, ring_out)
                cb = int(self.stats[CALLBACKS] + self.stats[OUT_CALLBACKS])
                now = time.monotonic()
                if cb != last_cb:
                    if cb > 0 and not first_cb:
                        first_cb, first_time = cb, now
                    elif cb > first_cb > 0:
                        self.callback_interval = max(self.callback_interval, (now - first_time) / (cb - first_cb))
                    last_cb, last_change = cb, now
                elif (now - last_change > (self._watchdog() if cb > 0 else self.startup_s)
                      and not self._stop.is_set()):
                    self.error = (f"no audio callbacks for {now - last_change:.1f} s: the audio device or "
                                  "server stopped (JACK server gone? device unplugged?)" if cb > 0 else
                                  f"the audio device never started (no callback within {self.startup_s:g} s)")
                    self._stop.set()
        except Exception as exc:  # a worker failure must end the run, not hang it
            self.error = f"engine failure: {exc!r}"
            self._stop.set()

    def _pump(self, ring_in, ring_out):
        """The worker's step: whatever input has come, through the engine, into the output ring."""
        eng = self.engine
        n = ring_available(ring_in.counters)
        if n:
            n = ring_read(ring_in.data, ring_in.counters, self._chunk[:n])
            y = eng.process(self._chunk[:n].T)
            if y.shape[1]:
                ring_write(ring_out.data, ring_out.counters, np.ascontiguousarray(y.T))
                if ring_out.counters[0] < ring_out.counters[1] and not eng.holding:
                    eng.force_bypass("overload")  # output ran late: catch up on the cheap path

    def _resync(self):
        """The input ring overflowed (worker stalled for seconds): drop what is stale and restart the
        output timeline from now, at the declared latency (counted in `resyncs`). The signal history
        goes; the run's statistics and event times stay."""
        eng = self.engine
        stats, made = eng.stats, eng.samples_out
        eng.reset()
        eng.stats, eng.samples_out = stats, made
        self.resyncs += 1
        self.in_ring.counters[1] = self.in_ring.counters[0]
        self.out_ring.counters[0] = self.out_ring.counters[1]
        ring_write(self.out_ring.data, self.out_ring.counters, np.zeros((self.buffering, self.channels), np.float32))

    # -- control ------------------------------------------------------------------------------------
    def warm_up(self):
        """Compile/load the jit functions and run the model once so the first callbacks are on time."""
        eng = self.engine
        dummy_in = np.zeros((self.frames, self.channels), np.float32)
        ring, ctr = np.zeros_like(self.in_ring.data[:4 * self.frames]), np.zeros(2, np.int64)
        input_side(dummy_in, ring, ctr, self.source[:0], self.record[:0], np.zeros(NSTATS, np.int64),
                    eng.in_rate, eng.out_rate)
        output_side(dummy_in, ring, ctr, np.zeros(NSTATS, np.int64))
        # silence through the worker's own step (rings, engine, model: the calls and array layouts of a
        # live run), period by period, so that the run starts in the model: a first step that loads
        # the JIT's cache or runs the model cold is late, and a late output means a bypass at 0.00 s
        ring_in, ring_out = RingBuffer(8 * self.frames, self.channels), RingBuffer(self.in_ring.capacity, self.channels)
        period = np.zeros((max(1, self.frames * eng.in_rate // eng.out_rate), self.channels), np.float32)
        for _ in range(max(8, -(-8 * eng.block // self.frames))):
            ring_write(ring_in.data, ring_in.counters, period)
            self._pump(ring_in, ring_out)
            ring_out.counters[1] = ring_out.counters[0]  # consumed, as the device would
        eng.reset()

    def start(self):
        sd = self.sd
        eng = self.engine
        self.warm_up()
        # prefill: the output timeline starts `buffering` samples ahead
        ring_write(self.out_ring.data, self.out_ring.counters, np.zeros((self.buffering, self.channels), np.float32))
        gc.collect()
        gc.freeze()
        # the worker needs the GIL between ONNX Runtime calls: another thread may keep it up to the
        # switch interval (5 ms by default, more than a period), so ask holders to hand it over sooner
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        try:
            if self.duplex:
                stream = self._stream("duplex", duplex_callback, samplerate=eng.out_rate, blocksize=self.frames,
                                      device=(self.input_device, self.output_device))
                self.streams = [stream]
                lat_in, lat_out = stream.latency
            else:
                in_frames = max(1, round(self.frames * eng.in_rate / eng.out_rate))
                s_in = self._stream("input", input_callback, samplerate=eng.in_rate, blocksize=in_frames,
                                    device=self.input_device)
                s_out = self._stream("output", output_callback, samplerate=eng.out_rate, blocksize=self.frames,
                                     device=self.output_device)
                self.streams = [s_out, s_in]
                lat_in, lat_out = s_in.latency, s_out.latency
        except sd.PortAudioError as exc:
            self.close()
            raise LiveError(f"cannot open the audio stream: {exc} (check --input/--output, --rate: a JACK "
                            "server only runs at its own rate)") from None
        except ValueError as exc:
            self.close()
            raise LiveError(f"cannot open the audio stream: {exc}") from None
        self.device_latency = int(round(lat_in * eng.out_rate)) + int(round(lat_out * eng.out_rate))
        self._worker = threading.Thread(target=self._work, name="bandlift-engine", daemon=True)
        self._worker.start()
        self._started = time.monotonic()
        for s in self.streams:
            s.start()

    @property
    def total_latency(self) -> int:
        """Declared round trip in output samples: buffering + engine delay + device latency."""
        return self.buffering + self.engine.delay + self.device_latency

    def running(self) -> bool:
        return not self._stop.is_set()

    def _close_timeout(self) -> float:
        # PortAudio's JACK stop takes up to ~2.5 periods; PulseAudio's ALSA plugin up to its watchdog time
        return max(1.0, self.watchdog_s, 4 * self.callback_interval + 1.0)

    def stop(self):
        self._stop.set()
        for s in self.streams:
            if not ended_within(s.abort if self.error else s.stop, self._close_timeout()):
                self._abandon()
                break
        if self._worker is not None:
            self._worker.join(2.0)
        self.close()

    def _abandon(self):
        """A stream would not stop (its server died): left alone, with what its callback uses."""
        abandon(self.streams, self)
        self.streams = []
        if self.error:
            self.error += " (the audio stream could not be closed cleanly)"

    def close(self):
        for s in self.streams:
            if not ended_within(lambda: s.close(ignore_errors=True), self._close_timeout()):
                self._abandon()
                break
        self.streams = []
        gc.unfreeze()
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def run(self, seconds: float | None = None, on_tick=None, tick_s: float = 0.25,
            start: bool = True) -> LiveSummary:
        """Start (unless started), run until `seconds` pass, an error, or KeyboardInterrupt; stop;
        summarise. Raises LiveError if the stream failed."""
        if start:
            self.start()
        try:
            # this thread wakes rarely: each wake-up takes the GIL the worker may be waiting for
            end = None if seconds is None else self._started + seconds
            while self.running():
                now = time.monotonic()
                if end is not None and now >= end:
                    break
                if on_tick is not None:
                    on_tick(self)
                wait = tick_s if on_tick is not None else 0.5
                self._stop.wait(wait if end is None else max(0.0, min(wait, end - now)))
        finally:
            self.stop()
        if self.error:
            raise LiveError(self.error)
        return self.summary()

    def summary(self) -> LiveSummary:
        st = self.stats
        return LiveSummary(seconds=time.monotonic() - self._started if self._started else 0.0,
                           callbacks=int(st[CALLBACKS] + st[OUT_CALLBACKS]), xruns=int(st[XRUNS]),
                           input_overflows=int(st[IN_OVERFLOW]), output_underflows=int(st[OUT_UNDERFLOW]),
                           late_blocks=int(st[LATE]), in_ring_full=int(st[IN_RING_FULL]), resyncs=self.resyncs,
                           wake_us_mean=float(st[WAKE_NS_SUM]) / max(1, int(st[CALLBACKS])) / 1e3,
                           wake_us_max=float(st[WAKE_NS_MAX]) / 1e3,
                           buffering=self.buffering, device_latency=self.device_latency,
                           engine=self.engine.stats.summary())

    def recorded(self) -> np.ndarray:
        return ring_contents(self.record, int(self.stats[REC_POS]))

    def status_line(self) -> str:
        eng, st = self.engine, self.stats
        times = recent_compute_times(eng.stats, STATUS_BLOCKS) * 1e3
        p99 = float(np.percentile(times, 99)) if len(times) else float("nan")
        state = "BYPASS" if eng.bypass else ("hold (overload/fault)" if eng.holding else "model")
        gain_db = 20 * np.log10(max(eng.gain, 1e-6))
        return (f"latency {1000 * self.total_latency / eng.out_rate:.1f} ms | block p99 {p99:.2f} ms "
                f"(budget {1000 * eng.block_seconds:.2f}) | xruns {st[XRUNS]} late {st[LATE]} | "
                f"{state} | gain {gain_db:+.0f} dB | mix {eng.mix * 100:.0f}%")

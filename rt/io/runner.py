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
callback: PulseAudio's ALSA plugin takes 1.5-2 s to deliver it), unless it is reopened.

A stream that the host API ends on its own (PortAudio's finished callback: e.g. ALSA's pulse plugin
after an underrun it could not recover), or that the watchdog finds silent, is reopened by `run()`'s
thread, as a DAW does after an xrun storm, when `can_reopen()` says the device is still there: old
streams closed, the output timeline restarted at the declared latency (by the worker, while no callback
runs), the same streams opened and started, all within `REOPEN_S`; at most `MAX_REOPENS` within
`REOPEN_WINDOW_S`, else the run ends. An old stream that will not close within `CLOSE_S` (PortAudio's
ALSA host API can hang in a pulse stream the server ended) is left behind, its next callback ending
it without touching the rings, and new streams replace it.
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
from bandlift.rt.io.devices import LiveError, abandon, call_within, ended_within, jack_period, open_stream
from bandlift.rt.io.recording import ring_contents

SWITCH_INTERVAL_S = 2e-4
LOST = "the audio stream stopped unexpectedly (device removed or server stopped)"
REOPEN_S = 2.0  # a reopen finishes or gives up within this (a dead server can hang PortAudio)
CLOSE_S = 1.0  # an ended stream still not closed after this is abandoned and replaced
# a device that keeps failing ends the run; a busy machine's pulse plugin can end a stream again
# right after its reopen (an underrun at its start), so a few more than the ends that happened at once
MAX_REOPENS, REOPEN_WINDOW_S = 5, 10.0
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
    reopens: int  # streams the host API ended and the run reopened
    wake_us_mean: float  # the callback's wake-up write() to the worker: its cost on the audio thread
    wake_us_max: float
    buffering: int
    device_latency: int
    engine: dict

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _WakingEvent(threading.Event):
    """An event whose set() also sets `wakes` (the event the controlling thread waits on)."""

    def __init__(self, wakes: threading.Event):
        super().__init__()
        self.wakes = wakes

    def set(self):
        super().set()
        self.wakes.set()


class LiveRunner:
    """Run `engine` between audio devices in real time (see module docstring). `can_reopen()` (None:
    always try) tells whether a stream the host API ended may be reopened: False when its device or
    server is gone."""

    def __init__(self, engine, input_device=None, output_device=None, frames: int | None = None,
                 margin: int = 0, source: np.ndarray | None = None, record_seconds: float = 0.0,
                 watchdog_s: float = 1.0, latency="low", two_streams: bool | None = None,
                 startup_s: float = 5.0, can_reopen=None):
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
        self._attention = threading.Event()  # wakes run()'s thread: a stop, or a stream that ended
        self._stop = _WakingEvent(self._attention)
        self.can_reopen = can_reopen
        self.reopens = 0
        self.reopen_lines: list[str] = []  # one per reopen, for the CLI to print
        self._reopened_at: list[float] = []
        self._generation = 0  # the streams' generation: a finish from an older one is ignored
        self._lost = threading.Event()  # a stream of this generation ended on its own
        self._lost_lock = threading.Lock()  # a finish is told apart from a newer generation's
        self._lost_how = ("", LOST)  # what happened, and the error if it is not reopened
        self._controlled = False  # run() is there to reopen it
        self._reopening = threading.Event()  # no stream runs: the watchdog waits
        self._restart_asked, self._restarted = threading.Event(), threading.Event()
        self._callbacks_before = 0  # input callbacks of the streams before a reopen
        self._lost_error = LOST
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
        self._retired = []  # contexts and streams left behind (a callback of theirs may still come)
        self.worker_priority = "?"
        self._switch_interval: float | None = None

    def _stream(self, kind: str, callback, **kwargs):
        """A stream running one of the C callbacks with this runner's context as its user data."""
        generation = self._generation
        return open_stream(kind, callback, self._ctx.ctypes.data, self.channels, self.latency_arg,
                           lambda: self._finished(generation), **kwargs)

    def _open_streams(self) -> list:
        """This run's stream(s), opened, not started: one duplex stream, or [output, input]."""
        eng = self.engine
        if self.duplex:
            return [self._stream("duplex", duplex_callback, samplerate=eng.out_rate, blocksize=self.frames,
                                 device=(self.input_device, self.output_device))]
        in_frames = max(1, round(self.frames * eng.in_rate / eng.out_rate))
        s_in = self._stream("input", input_callback, samplerate=eng.in_rate, blocksize=in_frames,
                            device=self.input_device)
        try:
            s_out = self._stream("output", output_callback, samplerate=eng.out_rate, blocksize=self.frames,
                                 device=self.output_device)
        except BaseException:
            s_in.close(ignore_errors=True)
            raise
        return [s_out, s_in]

    def _finished(self, generation: int):
        """PortAudio ended a stream (its thread calls this): run() reopens it, else the run ends."""
        if not self._stream_lost("the host API had ended it", LOST, generation):
            if self.error is None:
                self.error = LOST
            self._stop.set()

    def _stream_lost(self, what: str, error: str, generation: int | None = None) -> bool:
        """Hand a stream that ended or stalled to run() to reopen (False: no run() to do it). `error`
        ends the run if it is not reopened."""
        with self._lost_lock:
            if self._stop.is_set() or generation not in (None, self._generation):
                return True  # stopping, or a stream already replaced: nothing to do
            if not self._controlled:
                return False
            self._lost_how = (what, error)
            self._reopening.set()  # the watchdog waits from now
            self._lost.set()
            self._attention.set()
            return True

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

    def _callbacks(self) -> int:
        """Callbacks so far, over every stream of the run."""
        return int(self.stats[CALLBACKS] + self.stats[OUT_CALLBACKS]) + self._callbacks_before

    def _work(self):
        self._raise_priority()
        ring_in, ring_out = self.in_ring, self.out_ring
        last_cb, last_change = self._callbacks(), time.monotonic()
        first_cb, first_time = 0, 0.0
        waiting = True  # for the first callback of the run (or of reopened streams): startup_s applies
        seen_full = 0
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._wake_r], [], [], 0.05)
                if ready:
                    os.read(self._wake_r, 4096)
                if self._restart_asked.is_set():  # a reopen, between closing and opening the streams
                    self._restart_asked.clear()
                    self._restart_streams_timeline()
                    self._restarted.set()
                if self.stats[IN_RING_FULL] != seen_full:  # stalled for seconds: drop the stale input first
                    seen_full = self.stats[IN_RING_FULL]
                    self._resync()
                self._pump(ring_in, ring_out)
                cb = self._callbacks()
                now = time.monotonic()
                if self._reopening.is_set():  # no stream runs: wait, then count afresh
                    last_cb, last_change, waiting = cb, now, True
                elif cb != last_cb:
                    if waiting:
                        first_cb, first_time, waiting = cb, now, False
                    else:
                        self.callback_interval = max(self.callback_interval, (now - first_time) / (cb - first_cb))
                    last_cb, last_change = cb, now
                elif (now - last_change > (self.startup_s if waiting else self._watchdog())
                      and not self._stop.is_set()):
                    silent = f"no audio callbacks for {now - last_change:.1f} s"
                    error = f"{silent}: the audio device or server stopped (JACK server gone? device unplugged?)"
                    # a stream that stalled with its device still there (ALSA's pulse plugin can recover
                    # from an xrun into silence) is reopened like one the host API ended
                    if waiting or not self._stream_lost(silent, error):
                        self.error = error if not waiting else (
                            f"the audio device never started (no callback within {self.startup_s:g} s"
                            + (" of reopening it)" if self.reopens else ")"))
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
        output timeline from now, at the declared latency (counted in `resyncs`)."""
        self.resyncs += 1
        self._restart_timeline()

    def _restart_streams_timeline(self):
        """The worker's part of a reopen (no callback runs): the timeline restarts as after a stall, and
        input callbacks count from 0 again, so that a separate output stream waits for the first input
        as at the start."""
        self._restart_timeline()
        self._callbacks_before += int(self.stats[CALLBACKS])
        self.stats[CALLBACKS] = 0

    def _restart_timeline(self):
        """Drop the pending input and restart the output `buffering` samples ahead of the callback: the
        declared latency. The signal history goes; the run's statistics and event times stay."""
        eng = self.engine
        stats, made = eng.stats, eng.samples_out
        eng.reset()
        eng.stats, eng.samples_out = stats, made
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
            self.streams = self._open_streams()
            if self.duplex:
                lat_in, lat_out = self.streams[0].latency
            else:
                lat_out, lat_in = (s.latency for s in self.streams)
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
        """Start (unless started), run until `seconds` pass, an error, KeyboardInterrupt, or `on_tick`
        (called every `tick_s` with the runner) returns True; stop; summarise. Raises LiveError if the
        stream failed."""
        self._controlled = True  # from here on a stream that ends is reopened here
        if start:
            self.start()
        try:
            # this thread wakes rarely: each wake-up takes the GIL the worker may be waiting for
            end = None if seconds is None else self._started + seconds
            while self.running():
                now = time.monotonic()
                if end is not None and now >= end:
                    break
                if self._lost.is_set():
                    self._reopen()
                    continue
                if on_tick is not None and on_tick(self):
                    break
                wait = tick_s if on_tick is not None else 0.5
                self._attention.wait(wait if end is None else max(0.0, min(wait, end - now)))
                self._attention.clear()  # what woke it is looked at from the top of the loop
        finally:
            self._controlled = False
            self.stop()
        if self.error:
            raise LiveError(self.error)
        return self.summary()

    # -- reopening a stream the host API ended ------------------------------------------------------
    def _reopen(self):
        """Close the ended stream(s), restart the output timeline, open and start the same streams again;
        on any failure the run ends with the stream's error and the reason. Bounded by REOPEN_S in all."""
        lost_at = time.monotonic()
        deadline = lost_at + REOPEN_S
        with self._lost_lock:
            self._generation += 1  # what the old streams report from here on is ignored
            self._lost.clear()
            what, self._lost_error = self._lost_how
            self._reopening.set()  # (already, unless a new stream ended while the last reopen finished)
        self._reopened_at = [t for t in self._reopened_at if lost_at - t < REOPEN_WINDOW_S]
        try:
            if len(self._reopened_at) >= MAX_REOPENS:
                return self._fail(f"not reopened: it stopped {MAX_REOPENS + 1} times within {REOPEN_WINDOW_S:g} s")
            try:
                if self.can_reopen is not None and not call_within(self.can_reopen, deadline - time.monotonic()):
                    return self._fail()  # the device or server is gone: stop() closes what is left
            except TimeoutError:
                return self._fail("not reopened: the sound server does not answer")
            old, self.streams = self.streams, []
            if not ended_within(lambda: [(s.abort(ignore_errors=True), s.close(ignore_errors=True)) for s in old],
                                CLOSE_S):  # PortAudio ended it, but its handle is still open
                self._leave_behind(old)
                what += f"; the old stream would not close within {CLOSE_S:g} s and was left behind"
                deadline = time.monotonic() + REOPEN_S
            self._restarted.clear()
            self._restart_asked.set()
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                pass  # the pipe is full: the worker is awake anyway
            if not self._restarted.wait(max(0.0, deadline - time.monotonic())):
                return self._fail("reopening failed: the engine's worker did not answer")
            try:
                self.streams = call_within(self._open_streams, deadline - time.monotonic())
                for s in self.streams:
                    call_within(s.start, deadline - time.monotonic())
            except TimeoutError:
                self._fail(f"reopening failed: PortAudio did not answer within {REOPEN_S:g} s")
                self._abandon()  # PortAudio hangs: leave it (and its exit-time shutdown) alone
                return
            except (self.sd.PortAudioError, ValueError) as exc:
                return self._fail(f"reopening failed: {exc}")
        finally:
            self._reopening.clear()
        self.reopens += 1
        self._reopened_at.append(lost_at)
        self.reopen_lines.append(f"audio stream reopened at {lost_at - self._started:.2f} s: {what} "
                                 f"(took {time.monotonic() - lost_at:.2f} s)")

    def _leave_behind(self, streams: list):
        """Streams that will not close: abandoned (`abandon`); their context is marked retired, so a
        callback that still comes ends its stream (paAbort) without touching this run's rings, and the
        new streams get a context of their own."""
        old = self._ctx
        self._ctx = make_context(self.in_ring, self.out_ring, self.stats, self.source, self.record,
                                 self.engine.in_rate, self.engine.out_rate, self._wake_w)
        old[0]["retired"] = 1
        self._retired.append((old, streams))
        abandon(streams, self)

    def _fail(self, reason: str = ""):
        """End the run with the lost stream's error (and why it was not reopened)."""
        if self.error is None:
            self.error = self._lost_error + (f"; {reason}" if reason else "")
        self._stop.set()

    def summary(self) -> LiveSummary:
        st = self.stats
        inputs = int(st[CALLBACKS]) + self._callbacks_before
        return LiveSummary(seconds=time.monotonic() - self._started if self._started else 0.0,
                           callbacks=self._callbacks(), xruns=int(st[XRUNS]),
                           input_overflows=int(st[IN_OVERFLOW]), output_underflows=int(st[OUT_UNDERFLOW]),
                           late_blocks=int(st[LATE]), in_ring_full=int(st[IN_RING_FULL]), resyncs=self.resyncs,
                           reopens=self.reopens,
                           wake_us_mean=float(st[WAKE_NS_SUM]) / max(1, inputs) / 1e3,
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
                f"{state} | gain {gain_db:+.0f} dB | mix {eng.mix * 100:.0f}%"
                + (f" | reopened {self.reopens}x" if self.reopens else ""))

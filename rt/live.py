"""Live engine: sounddevice streams <-> numba SPSC rings <-> a worker thread running `StreamEngine`.

The audio callback only moves samples: device input (or a preloaded source signal) into the input ring,
the output ring onto the device (silence for whatever is missing, counted as a late block), plus
counters. It allocates nothing of its own, never blocks, never waits on a lock and never runs the
model; it wakes the worker with a one-byte write to a non-blocking pipe. The worker (ONNX Runtime
releases the GIL) drains the input ring through the engine into the output ring.

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
reports an error ends the run with a clear message within `watchdog_s`.
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
from numba import njit

from bandlift.rt.ringbuffer import RingBuffer, ring_available, ring_read, ring_read_fixed, ring_write

# counters shared with the callback (int64 array)
CALLBACKS, IN_OVERFLOW, OUT_UNDERFLOW, XRUNS, LATE, IN_RING_FULL, SRC_POS, REC_POS, OUT_CALLBACKS = range(9)


class LiveError(RuntimeError):
    """The audio device or stream failed; the message says what to check."""


_ABANDONED: list = []  # streams PortAudio could not stop (kept referenced, never touched again)


def _within(fn, seconds: float) -> bool:
    """Run fn in a helper thread; False if it did not return within `seconds`."""
    def call():
        try:
            fn()
        except Exception:
            pass

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive()


# -- devices ----------------------------------------------------------------------------------------
def list_devices() -> str:
    import sounddevice as sd

    return str(sd.query_devices())


def find_device(spec, kind: str) -> int | None:
    """Device index from None (default), an index, or a case-insensitive name substring."""
    import sounddevice as sd

    if spec is None or spec == "":
        return None
    devices = sd.query_devices()
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    if isinstance(spec, int) or str(spec).isdigit():
        index = int(spec)
        if not 0 <= index < len(devices) or devices[index][key] < 1:
            raise LiveError(f"no {kind} device with index {index}; see --list-devices")
        return index
    matches = [i for i, d in enumerate(devices) if str(spec).lower() in d["name"].lower() and d[key] > 0]
    exact = [i for i in matches if devices[i]["name"].lower() == str(spec).lower()]
    if len(exact) == 1:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LiveError(f"no {kind} device matches {spec!r}; see --list-devices")
    names = ", ".join(f"{i}: {devices[i]['name']}" for i in matches)
    raise LiveError(f"{spec!r} matches several {kind} devices ({names}); give an index")


# -- the callback's work (numba) ----------------------------------------------------------------------
@njit(cache=True)
def _input_side(indata, in_data, in_ctr, source, record, stats, in_rate, out_rate):
    """Device input (or the next source samples) into the input ring; record the device input."""
    frames = indata.shape[0]
    if record.shape[0] > 0:
        pos = stats[REC_POS]
        n = min(frames, record.shape[0] - pos)
        for i in range(n):
            for c in range(record.shape[1]):
                record[pos + i, c] = indata[i, c]
        stats[REC_POS] = pos + n
    if source.shape[0] > 0:
        cb = stats[CALLBACKS]
        want = ((cb + 1) * frames * in_rate) // out_rate - (cb * frames * in_rate) // out_rate
        cap = in_data.shape[0]
        if want > cap - ring_available(in_ctr):
            stats[IN_RING_FULL] += 1
            return
        pos = stats[SRC_POS]
        w = in_ctr[0]
        for i in range(want):
            row = (w + i) % cap
            k = pos + i
            for c in range(in_data.shape[1]):
                in_data[row, c] = source[k, c] if k < source.shape[0] else 0.0
        in_ctr[0] = w + want
        stats[SRC_POS] = pos + want
    else:
        if ring_write(in_data, in_ctr, indata) < frames:
            stats[IN_RING_FULL] += 1


@njit(cache=True)
def _output_side(outdata, out_data, out_ctr, stats):
    got = ring_read_fixed(out_data, out_ctr, outdata)
    if got < outdata.shape[0]:
        stats[LATE] += 1


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


@dataclass
class LiveSummary:
    seconds: float
    callbacks: int
    xruns: int
    input_overflows: int
    output_underflows: int
    late_blocks: int
    in_ring_full: int
    buffering: int
    device_latency: int
    engine: dict

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class LiveRunner:
    """Run `engine` between audio devices in real time (see module docstring)."""

    def __init__(self, engine, input_device=None, output_device=None, frames: int | None = None,
                 margin: int = 0, source: np.ndarray | None = None, record_seconds: float = 0.0,
                 watchdog_s: float = 1.0, latency="low", two_streams: bool | None = None):
        import sounddevice as sd

        self.sd = sd
        self.engine = engine
        engine.realtime = True
        self.frames = int(frames or engine.block)
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
        self.record = np.zeros((rec_frames, self.channels), np.float32)
        self.stats = np.zeros(9, np.int64)
        cap = max(4 * engine.out_rate, 1 << 15)  # 4 s of slack before the input ring overflows
        self.in_ring = RingBuffer(cap, self.channels)
        self.out_ring = RingBuffer(cap, self.channels)
        self.margin = int(margin)
        self.buffering = required_buffering(engine, self.frames) + self.margin
        if not self.duplex:  # no phase relation between the two callbacks: one more period of slack
            self.buffering += self.frames
        self.watchdog_s = watchdog_s
        self.latency_arg = latency
        self.input_device, self.output_device = input_device, output_device
        self.error: str | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._byte = b"\0"
        self.streams = []
        self.device_latency = 0
        self._started = 0.0
        self._worker = None
        self._chunk = np.zeros((cap, self.channels), np.float32)
        self.worker_priority = "?"

    # -- callbacks: only ring moves and counters ---------------------------------------------------
    def _flags(self, status):
        if status:
            st = self.stats
            if status.input_overflow:
                st[IN_OVERFLOW] += 1
            if status.output_underflow:
                st[OUT_UNDERFLOW] += 1
            if status.input_overflow or status.output_underflow:
                st[XRUNS] += 1

    def _wake(self):
        try:
            os.write(self._wake_w, self._byte)
        except BlockingIOError:
            pass

    def _duplex_cb(self, indata, outdata, frames, time_info, status):
        self._flags(status)
        _input_side(indata, self.in_ring.data, self.in_ring.counters, self.source, self.record, self.stats,
                    self.engine.in_rate, self.engine.out_rate)
        _output_side(outdata, self.out_ring.data, self.out_ring.counters, self.stats)
        self.stats[CALLBACKS] += 1
        self._wake()

    def _input_cb(self, indata, frames, time_info, status):
        self._flags(status)
        # this stream already runs at the input rate: one source sample per frame
        _input_side(indata, self.in_ring.data, self.in_ring.counters, self.source, self.record, self.stats, 1, 1)
        self.stats[CALLBACKS] += 1
        self._wake()

    def _output_cb(self, outdata, frames, time_info, status):
        self._flags(status)
        if self.stats[CALLBACKS] == 0:  # the timeline starts with the first input
            outdata.fill(0.0)
        else:
            _output_side(outdata, self.out_ring.data, self.out_ring.counters, self.stats)
        self.stats[OUT_CALLBACKS] += 1

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

    def _work(self):
        self._raise_priority()
        eng, ring_in, ring_out = self.engine, self.in_ring, self.out_ring
        last_cb, last_change = -1, time.monotonic()
        seen_full = 0
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._wake_r], [], [], 0.05)
                if ready:
                    os.read(self._wake_r, 4096)
                n = ring_available(ring_in.counters)
                if n:
                    n = ring_read(ring_in.data, ring_in.counters, self._chunk[:n])
                    y = eng.process(self._chunk[:n].T)
                    if y.shape[1]:
                        ring_write(ring_out.data, ring_out.counters, np.ascontiguousarray(y.T))
                        if ring_out.counters[0] < ring_out.counters[1] and not eng.holding:
                            eng.force_bypass("overload")  # output ran late: catch up on the cheap path
                if self.stats[IN_RING_FULL] != seen_full:
                    seen_full = self.stats[IN_RING_FULL]
                    self._resync()
                cb = int(self.stats[CALLBACKS] + self.stats[OUT_CALLBACKS])
                now = time.monotonic()
                if cb != last_cb:
                    last_cb, last_change = cb, now
                elif now - last_change > self.watchdog_s and not self._stop.is_set():
                    self.error = (f"no audio callbacks for {now - last_change:.1f} s: the audio device or "
                                  "server stopped (JACK server gone? device unplugged?)")
                    self._stop.set()
        except Exception as exc:  # a worker failure must end the run, not hang it
            self.error = f"engine failure: {exc!r}"
            self._stop.set()

    def _resync(self):
        """The input ring overflowed (worker stalled for seconds): restart from now, same latency."""
        eng = self.engine
        eng.reset()
        self.in_ring.counters[1] = self.in_ring.counters[0]
        self.out_ring.counters[0] = self.out_ring.counters[1]
        ring_write(self.out_ring.data, self.out_ring.counters, np.zeros((self.buffering, self.channels), np.float32))

    # -- control ------------------------------------------------------------------------------------
    def warm_up(self):
        """Compile/load the jit functions and run the model once so the first callbacks are on time."""
        eng = self.engine
        dummy_in = np.zeros((self.frames, self.channels), np.float32)
        ring, ctr = np.zeros_like(self.in_ring.data[:4 * self.frames]), np.zeros(2, np.int64)
        _input_side(dummy_in, ring, ctr, self.source[:0], self.record[:0], np.zeros(9, np.int64),
                    eng.in_rate, eng.out_rate)
        _output_side(dummy_in, ring, ctr, np.zeros(9, np.int64))
        eng.process(np.zeros((self.channels, 4 * eng.block), np.float32))
        eng.reset()

    def start(self):
        sd = self.sd
        eng = self.engine
        self.warm_up()
        # prefill: the output timeline starts `buffering` samples ahead
        ring_write(self.out_ring.data, self.out_ring.counters, np.zeros((self.buffering, self.channels), np.float32))
        gc.collect()
        gc.freeze()
        try:
            if self.duplex:
                stream = sd.Stream(samplerate=eng.out_rate, blocksize=self.frames,
                                   device=(self.input_device, self.output_device), channels=self.channels,
                                   dtype="float32", latency=self.latency_arg, callback=self._duplex_cb,
                                   finished_callback=self._finished)
                self.streams = [stream]
                lat_in, lat_out = stream.latency
            else:
                in_frames = max(1, round(self.frames * eng.in_rate / eng.out_rate))
                s_in = sd.InputStream(samplerate=eng.in_rate, blocksize=in_frames, device=self.input_device,
                                      channels=self.channels, dtype="float32", latency=self.latency_arg,
                                      callback=self._input_cb, finished_callback=self._finished)
                s_out = sd.OutputStream(samplerate=eng.out_rate, blocksize=self.frames, device=self.output_device,
                                        channels=self.channels, dtype="float32", latency=self.latency_arg,
                                        callback=self._output_cb, finished_callback=self._finished)
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

    def stop(self):
        self._stop.set()
        for s in self.streams:
            if not _within(s.abort if self.error else s.stop, 1.0):
                self._abandon()
                break
        if self._worker is not None:
            self._worker.join(2.0)
        self.close()

    def _abandon(self):
        """PortAudio hangs on a stream whose server died: leave it (and PortAudio's exit-time
        shutdown, which would hang the same way) alone so the process can still end."""
        _ABANDONED.extend(self.streams)
        self.streams = []
        self.sd._initialized = 0
        if self.error:
            self.error += " (the audio stream could not be closed cleanly)"

    def close(self):
        for s in self.streams:
            if not _within(lambda: s.close(ignore_errors=True), 1.0):
                self._abandon()
                break
        self.streams = []
        gc.unfreeze()
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
            next_tick = time.monotonic()
            while self.running():
                now = time.monotonic()
                if seconds is not None and now - self._started >= seconds:
                    break
                if on_tick is not None and now >= next_tick:
                    on_tick(self)
                    next_tick = now + tick_s
                time.sleep(0.02)
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
                           late_blocks=int(st[LATE]), in_ring_full=int(st[IN_RING_FULL]),
                           buffering=self.buffering, device_latency=self.device_latency,
                           engine=self.engine.stats.summary())

    def recorded(self) -> np.ndarray:
        return self.record[: int(self.stats[REC_POS])]

    def status_line(self) -> str:
        eng, st = self.engine, self.stats
        times = eng.stats.compute_times()[-2000:] * 1e3
        p99 = float(np.percentile(times, 99)) if len(times) else float("nan")
        state = "BYPASS" if eng.bypass else ("hold (overload/fault)" if eng.holding else "model")
        gain_db = 20 * np.log10(max(eng.gain, 1e-6))
        return (f"latency {1000 * self.total_latency / eng.out_rate:.1f} ms | block p99 {p99:.2f} ms "
                f"(budget {1000 * eng.block_seconds:.2f}) | xruns {st[XRUNS]} late {st[LATE]} | "
                f"{state} | gain {gain_db:+.0f} dB | mix {eng.mix * 100:.0f}%")


def detect_clicks(recorded: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Sample indices where |signal| first rises above threshold (one index per click)."""
    x = np.abs(np.asarray(recorded)).max(axis=1) if np.ndim(recorded) == 2 else np.abs(recorded)
    above = x > threshold
    return np.nonzero(above & ~np.concatenate([[False], above[:-1]]))[0]


def click_train(n: int, rate: int, channels: int, every_s: float = 0.25, first: int | None = None,
                amplitude: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """A source with single-sample clicks: (signal (n, channels), click positions)."""
    x = np.zeros((n, channels), np.float32)
    start = int(0.1 * rate) if first is None else first
    pos = np.arange(start, n, int(every_s * rate))
    x[pos] = amplitude
    return x, pos


def ensure_stdout_line(text: str, stream=sys.stderr) -> None:
    stream.write("\r" + text[:160].ljust(120))
    stream.flush()

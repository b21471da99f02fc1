"""Live engine: sounddevice streams <-> numba SPSC rings <-> a worker thread running `StreamEngine`.

The audio callback only moves samples: device input (or a preloaded source signal) into the input ring,
the output ring onto the device (silence for whatever is missing, counted as a late block), plus
counters. It is a C function compiled by numba (no Python, so no GIL to wait for), allocates nothing,
never blocks, never waits on a lock and never runs the model; it wakes the worker with a one-byte
write to a non-blocking pipe. The worker (ONNX Runtime releases the GIL) drains the input ring
through the engine into the output ring.

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

import ctypes
import gc
import os
import select
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from bandlift.rt.dsp.ringbuffer import (RingBuffer, fence_full, fence_release, ring_available, ring_read,
                                        ring_read_fixed, ring_write)

# counters shared with the callback (int64 array)
(CALLBACKS, IN_OVERFLOW, OUT_UNDERFLOW, XRUNS, LATE, IN_RING_FULL, SRC_POS, REC_POS, OUT_CALLBACKS,
 WAKE_NS_SUM, WAKE_NS_MAX, CLOCK_SEC, CLOCK_NSEC, NSTATS) = range(14)  # CLOCK_*: a struct timespec
# what the C callbacks get through PortAudio's userData: an int64 array of addresses and sizes
(CTX_IN_DATA, CTX_IN_CAP, CTX_CHANNELS, CTX_IN_CTR, CTX_OUT_DATA, CTX_OUT_CAP, CTX_OUT_CTR, CTX_STATS,
 CTX_SRC, CTX_SRC_LEN, CTX_REC, CTX_REC_LEN, CTX_IN_RATE, CTX_OUT_RATE, CTX_WAKE_FD, CTX_LEN) = range(16)
PA_INPUT_OVERFLOW, PA_OUTPUT_UNDERFLOW = 0x2, 0x4  # PaStreamCallbackFlags


SWITCH_INTERVAL_S = 2e-4


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
def jack_period(device) -> int | None:
    """The JACK server's period in frames when `device` (index or None: the default output) is a JACK
    device, else None. PortAudio does not tell: ask libjack (a short-lived client of the same server)."""
    import ctypes.util

    import sounddevice as sd

    try:
        info = sd.query_devices(device, "output" if device is None else None)
        if "JACK" not in sd.query_hostapis(info["hostapi"])["name"]:
            return None
        lib = ctypes.CDLL(ctypes.util.find_library("jack") or "libjack.so.0")
    except (OSError, ValueError, sd.PortAudioError):
        return None
    lib.jack_client_open.restype = ctypes.c_void_p
    lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.jack_get_buffer_size.restype = ctypes.c_uint32
    lib.jack_get_buffer_size.argtypes = lib.jack_client_close.argtypes = [ctypes.c_void_p]
    status = ctypes.c_int(0)
    client = lib.jack_client_open(b"bandlift-probe", 1, ctypes.byref(status))  # 1: JackNoStartServer
    if not client:
        return None
    try:
        return int(lib.jack_get_buffer_size(client))
    finally:
        lib.jack_client_close(client)


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
        pos = stats[SRC_POS]
        if want > cap - ring_available(in_ctr):  # dropped, as a device's input would be: time goes on
            stats[IN_RING_FULL] += 1
            stats[SRC_POS] = pos + want
            return
        w = in_ctr[0]
        fence_full()  # as ring_write: the read count is loaded before the slots it freed are written
        for i in range(want):
            row = (w + i) % cap
            k = pos + i
            for c in range(in_data.shape[1]):
                in_data[row, c] = source[k, c] if k < source.shape[0] else 0.0
        fence_release()
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


# -- the audio callbacks: C functions (numba cfunc) that never take the GIL ------------------------------
# A Python callback has to take the GIL, and any other thread holding it (the worker between ONNX
# Runtime calls, the main thread, the garbage collector) can delay it past the device period: an xrun.
# These run on PortAudio's audio thread with no Python involved (python-rtmixer's design).
_PA_CALLBACK = types.int32(types.voidptr, types.voidptr, types.uintp, types.voidptr, types.uintp, types.voidptr)
_libc_write = types.ExternalFunction("write", types.intp(types.int32, types.voidptr, types.uintp))
_clock_gettime = types.ExternalFunction("clock_gettime", types.int32(types.int32, types.voidptr))  # vDSO


@intrinsic
def _pointer(typingctx, address):
    """int64 address -> void* (for carray)."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(types.int64), codegen


@njit(cache=True)
def _ring(ctx, data, cap, ctr):
    return (carray(_pointer(ctx[data]), (ctx[cap], ctx[CTX_CHANNELS]), np.float32),
            carray(_pointer(ctx[ctr]), (2,), np.int64))


@njit(cache=True)
def _signal(ctx, sample, n):
    return carray(_pointer(ctx[sample]), (ctx[n], ctx[CTX_CHANNELS]), np.float32)


@njit(cache=True)
def _begin(userdata, status):
    """A callback's context and counters from PortAudio's userData; the stream's xrun flags counted."""
    ctx = carray(userdata, (CTX_LEN,), np.int64)
    stats = carray(_pointer(ctx[CTX_STATS]), (NSTATS,), np.int64)
    _count_flags(stats, status)
    return ctx, stats


@njit(cache=True)
def _count_flags(stats, status):
    if status & PA_INPUT_OVERFLOW:
        stats[IN_OVERFLOW] += 1
    if status & PA_OUTPUT_UNDERFLOW:
        stats[OUT_UNDERFLOW] += 1
    if status & (PA_INPUT_OVERFLOW | PA_OUTPUT_UNDERFLOW):
        stats[XRUNS] += 1


@njit(cache=True)
def _take_input(iptr, frames, ctx, stats, in_rate, out_rate):
    in_data, in_ctr = _ring(ctx, CTX_IN_DATA, CTX_IN_CAP, CTX_IN_CTR)
    indata = carray(iptr, (frames, ctx[CTX_CHANNELS]), np.float32)
    _input_side(indata, in_data, in_ctr, _signal(ctx, CTX_SRC, CTX_SRC_LEN), _signal(ctx, CTX_REC, CTX_REC_LEN),
                stats, in_rate, out_rate)
    stats[CALLBACKS] += 1
    before = _now_ns(ctx, stats)
    _libc_write(np.int32(ctx[CTX_WAKE_FD]), iptr, 1)  # wake the worker (non-blocking pipe)
    took = _now_ns(ctx, stats) - before  # what this system call costs the audio thread (in the summary)
    stats[WAKE_NS_SUM] += took
    if took > stats[WAKE_NS_MAX]:
        stats[WAKE_NS_MAX] = took


@njit(cache=True)
def _now_ns(ctx, stats):
    _clock_gettime(np.int32(1), _pointer(ctx[CTX_STATS] + 8 * CLOCK_SEC))  # CLOCK_MONOTONIC
    return stats[CLOCK_SEC] * 1_000_000_000 + stats[CLOCK_NSEC]


@njit(cache=True)
def _give_output(optr, frames, ctx, stats):
    out_data, out_ctr = _ring(ctx, CTX_OUT_DATA, CTX_OUT_CAP, CTX_OUT_CTR)
    _output_side(carray(optr, (frames, ctx[CTX_CHANNELS]), np.float32), out_data, out_ctr, stats)


@cfunc(_PA_CALLBACK, cache=True)
def _duplex_callback(iptr, optr, frames, time_info, status, userdata):
    ctx, stats = _begin(userdata, status)
    _take_input(iptr, int(frames), ctx, stats, ctx[CTX_IN_RATE], ctx[CTX_OUT_RATE])
    _give_output(optr, int(frames), ctx, stats)
    return 0


@cfunc(_PA_CALLBACK, cache=True)
def _input_callback(iptr, optr, frames, time_info, status, userdata):
    ctx, stats = _begin(userdata, status)
    _take_input(iptr, int(frames), ctx, stats, 1, 1)  # this stream runs at the input rate
    return 0


@cfunc(_PA_CALLBACK, cache=True)
def _output_callback(iptr, optr, frames, time_info, status, userdata):
    ctx, stats = _begin(userdata, status)
    if stats[CALLBACKS] == 0:  # the timeline starts with the first input
        out = carray(optr, (int(frames), ctx[CTX_CHANNELS]), np.float32)
        out[:, :] = 0.0
    else:
        _give_output(optr, int(frames), ctx, stats)
    stats[OUT_CALLBACKS] += 1
    return 0


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
        self.record = np.zeros((rec_frames, self.channels), np.float32)
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
        self._ctx = self._context()
        self.worker_priority = "?"
        self._switch_interval: float | None = None

    def _context(self) -> np.ndarray:
        """The C callbacks' view of this runner (addresses stay valid: the arrays live as long as self)."""
        ctx = np.zeros(CTX_LEN, np.int64)
        eng = self.engine
        for key, value in {
            CTX_IN_DATA: self.in_ring.data.ctypes.data, CTX_IN_CAP: self.in_ring.capacity,
            CTX_IN_CTR: self.in_ring.counters.ctypes.data, CTX_OUT_DATA: self.out_ring.data.ctypes.data,
            CTX_OUT_CAP: self.out_ring.capacity, CTX_OUT_CTR: self.out_ring.counters.ctypes.data,
            CTX_CHANNELS: self.channels, CTX_STATS: self.stats.ctypes.data,
            CTX_SRC: self.source.ctypes.data, CTX_SRC_LEN: self.source.shape[0],
            CTX_REC: self.record.ctypes.data, CTX_REC_LEN: self.record.shape[0],
            CTX_IN_RATE: eng.in_rate, CTX_OUT_RATE: eng.out_rate, CTX_WAKE_FD: self._wake_w,
        }.items():
            ctx[key] = value
        return ctx

    def _stream(self, kind: str, callback, **kwargs):
        """A PortAudio stream whose callback is one of the C functions above (sounddevice's base class
        for custom streams), with this runner's context as the callback's user data."""
        sd = self.sd
        return sd._StreamBase(kind=kind, dtype="float32", channels=self.channels, latency=self.latency_arg,
                              callback=callback.address, userdata=sd._ffi.cast("void *", self._ctx.ctypes.data),
                              finished_callback=self._finished, wrap_callback=None, **kwargs)

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
        output timeline from now, at the declared latency (counted in `resyncs`)."""
        eng = self.engine
        eng.reset()
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
        _input_side(dummy_in, ring, ctr, self.source[:0], self.record[:0], np.zeros(NSTATS, np.int64),
                    eng.in_rate, eng.out_rate)
        _output_side(dummy_in, ring, ctr, np.zeros(NSTATS, np.int64))
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
                stream = self._stream("duplex", _duplex_callback, samplerate=eng.out_rate, blocksize=self.frames,
                                      device=(self.input_device, self.output_device))
                self.streams = [stream]
                lat_in, lat_out = stream.latency
            else:
                in_frames = max(1, round(self.frames * eng.in_rate / eng.out_rate))
                s_in = self._stream("input", _input_callback, samplerate=eng.in_rate, blocksize=in_frames,
                                    device=self.input_device)
                s_out = self._stream("output", _output_callback, samplerate=eng.out_rate, blocksize=self.frames,
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
            if not _within(s.abort if self.error else s.stop, self._close_timeout()):
                self._abandon()
                break
        if self._worker is not None:
            self._worker.join(2.0)
        self.close()

    def _abandon(self):
        """PortAudio hangs on a stream whose server died: leave it (and PortAudio's exit-time
        shutdown, which would hang the same way) alone so the process can still end."""
        _ABANDONED.extend(self.streams)
        # the stream's C callback may still run until the process ends: its rings, counters and context
        # must outlive the interpreter's teardown (else it writes into freed memory: a crash at exit)
        for keep in (self, *self.streams):
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(keep))
        self.streams = []
        self.sd._initialized = 0
        if self.error:
            self.error += " (the audio stream could not be closed cleanly)"

    def close(self):
        for s in self.streams:
            if not _within(lambda: s.close(ignore_errors=True), self._close_timeout()):
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

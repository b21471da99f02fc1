"""The live audio callbacks: C functions (numba `cfunc`) that move samples between the device and the rings.

A Python callback has to take the GIL, and any other thread holding it (the worker between ONNX
Runtime calls, the main thread, the garbage collector) can delay it past the device period: an xrun.
These run on PortAudio's audio thread with no Python involved (python-rtmixer's design). They only
move samples: device input (or a preloaded source signal) into the input ring, the output ring onto
the device (silence for whatever is missing, counted as a late block), plus counters. They allocate
nothing, never run the model and take no Python or user-space lock.

One system call remains: the input side wakes the worker with write() of one byte to a non-blocking
pipe. It never waits for room (a full pipe returns EAGAIN: the worker is awake anyway), but in the
kernel it takes the pipe's mutex, which the worker's read() holds for a moment (so it can wait on that
lock), and wakes the worker's thread. Measured from numba as the callback makes it (one write per 2.67
ms while a thread drains the pipe with select + read; 10,000 writes on the shared 2-core VM at load
3.6-4): p50 4 us, p99 21 us of the 2,667 us period (the 5 ms max: the measuring thread, not real-time,
preempted). The callback times each of its own writes (`wake_us_mean` / `wake_us_max` in the run's
summary: 20 / 378 us in a 10 s `bandlift live` on JACK at the same load).

The callbacks get their `Context` (a numpy structured record: addresses and sizes of the rings, the
counters, the source and recording) through PortAudio's userData.
"""
from __future__ import annotations

import numpy as np
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from bandlift.rt.dsp.ringbuffer import fence_full, fence_release, ring_available, ring_read_fixed, ring_write

# counters shared with the callback (an int64 array indexed by these)
(CALLBACKS, IN_OVERFLOW, OUT_UNDERFLOW, XRUNS, LATE, IN_RING_FULL, SRC_POS, REC_POS, OUT_CALLBACKS,
 WAKE_NS_SUM, WAKE_NS_MAX, CLOCK_SEC, CLOCK_NSEC, NSTATS) = range(14)  # CLOCK_*: a struct timespec
PA_INPUT_OVERFLOW, PA_OUTPUT_UNDERFLOW = 0x2, 0x4  # PaStreamCallbackFlags

# what the callbacks get through PortAudio's userData: arrays as (address, frames); channels shared
CONTEXT = np.dtype([
    ("in_ring", np.int64), ("in_capacity", np.int64), ("in_counters", np.int64),
    ("out_ring", np.int64), ("out_capacity", np.int64), ("out_counters", np.int64),
    ("channels", np.int64), ("stats", np.int64),
    ("source", np.int64), ("source_frames", np.int64), ("record", np.int64), ("record_frames", np.int64),
    ("in_rate", np.int64), ("out_rate", np.int64), ("wake_fd", np.int64),
    ("retired", np.int64),  # set for a stream left behind: its next callback ends it (paAbort)
], align=True)
PA_CONTINUE, PA_ABORT = 0, 2  # a callback's answer to PortAudio


def make_context(in_ring, out_ring, stats: np.ndarray, source: np.ndarray, record: np.ndarray,
                 in_rate: int, out_rate: int, wake_fd: int) -> np.ndarray:
    """The callbacks' context (a one-element CONTEXT array): the arrays must outlive every stream using it."""
    ctx = np.zeros(1, CONTEXT)
    ctx[0] = (in_ring.data.ctypes.data, in_ring.capacity, in_ring.counters.ctypes.data,
              out_ring.data.ctypes.data, out_ring.capacity, out_ring.counters.ctypes.data,
              in_ring.data.shape[1], stats.ctypes.data, source.ctypes.data, source.shape[0],
              record.ctypes.data, record.shape[0], in_rate, out_rate, wake_fd, 0)
    return ctx


# -- the callback's work (also run by the warm-up, on plain arrays) ----------------------------------------
@njit(cache=True)
def input_side(indata, in_data, in_ctr, source, record, stats, in_rate, out_rate):
    """Device input (or the next source samples) into the input ring; record the device input."""
    frames = indata.shape[0]
    if record.shape[0] > 0:  # a ring: REC_POS counts every frame, rt/io/recording.py reads it
        pos = stats[REC_POS]
        size = record.shape[0]
        for i in range(frames):
            k = (pos + i) % size
            for c in range(record.shape[1]):
                record[k, c] = indata[i, c]
        stats[REC_POS] = pos + frames
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
def output_side(outdata, out_data, out_ctr, stats):
    got = ring_read_fixed(out_data, out_ctr, outdata)
    if got < outdata.shape[0]:
        stats[LATE] += 1


# -- the C callbacks ------------------------------------------------------------------------------------
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
def _frames(address, frames, channels):
    """The float32 (frames, channels) array at `address`."""
    return carray(_pointer(address), (frames, channels), np.float32)


@njit(cache=True)
def _counters(address):
    return carray(_pointer(address), (2,), np.int64)


@njit(cache=True)
def _stats(ctx, status):
    """A callback's counters (the stream's xrun flags counted)."""
    stats = carray(_pointer(ctx.stats), (NSTATS,), np.int64)
    _count_flags(stats, status)
    return stats


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
    indata = carray(iptr, (frames, ctx.channels), np.float32)
    input_side(indata, _frames(ctx.in_ring, ctx.in_capacity, ctx.channels), _counters(ctx.in_counters),
               _frames(ctx.source, ctx.source_frames, ctx.channels),
               _frames(ctx.record, ctx.record_frames, ctx.channels), stats, in_rate, out_rate)
    stats[CALLBACKS] += 1
    before = _now_ns(ctx, stats)
    _libc_write(np.int32(ctx.wake_fd), iptr, 1)  # wake the worker (non-blocking pipe)
    took = _now_ns(ctx, stats) - before  # what this system call costs the audio thread (in the summary)
    stats[WAKE_NS_SUM] += took
    if took > stats[WAKE_NS_MAX]:
        stats[WAKE_NS_MAX] = took


@njit(cache=True)
def _now_ns(ctx, stats):
    _clock_gettime(np.int32(1), _pointer(ctx.stats + 8 * CLOCK_SEC))  # CLOCK_MONOTONIC
    return stats[CLOCK_SEC] * 1_000_000_000 + stats[CLOCK_NSEC]


@njit(cache=True)
def _give_output(optr, frames, ctx, stats):
    output_side(carray(optr, (frames, ctx.channels), np.float32),
                _frames(ctx.out_ring, ctx.out_capacity, ctx.channels), _counters(ctx.out_counters), stats)


@cfunc(_PA_CALLBACK, cache=True)
def duplex_callback(iptr, optr, frames, time_info, status, userdata):
    ctx = carray(userdata, (1,), CONTEXT)[0]  # PortAudio's userData
    if ctx.retired:  # silence, and PortAudio calls no more
        carray(optr, (int(frames), ctx.channels), np.float32)[:, :] = 0.0
        return PA_ABORT
    stats = _stats(ctx, status)
    _take_input(iptr, int(frames), ctx, stats, ctx.in_rate, ctx.out_rate)
    _give_output(optr, int(frames), ctx, stats)
    return PA_CONTINUE


@cfunc(_PA_CALLBACK, cache=True)
def input_callback(iptr, optr, frames, time_info, status, userdata):
    ctx = carray(userdata, (1,), CONTEXT)[0]  # PortAudio's userData
    if ctx.retired:
        return PA_ABORT
    stats = _stats(ctx, status)
    _take_input(iptr, int(frames), ctx, stats, 1, 1)  # this stream runs at the input rate
    return PA_CONTINUE


@cfunc(_PA_CALLBACK, cache=True)
def output_callback(iptr, optr, frames, time_info, status, userdata):
    ctx = carray(userdata, (1,), CONTEXT)[0]  # PortAudio's userData
    if ctx.retired:  # silence, and PortAudio calls no more
        carray(optr, (int(frames), ctx.channels), np.float32)[:, :] = 0.0
        return PA_ABORT
    stats = _stats(ctx, status)
    if stats[CALLBACKS] == 0:  # the timeline starts with the first input
        out = carray(optr, (int(frames), ctx.channels), np.float32)
        out[:, :] = 0.0
    else:
        _give_output(optr, int(frames), ctx, stats)
    stats[OUT_CALLBACKS] += 1
    return PA_CONTINUE

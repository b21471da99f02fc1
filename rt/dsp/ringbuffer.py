"""Single-producer/single-consumer ring buffers for the audio callback (numba, no allocation).

A ring is a preallocated float32 array ``data[capacity, channels]`` (frames x channels, the layout
sounddevice uses) plus an int64 array ``counters = [written, read]`` of absolute frame counts. The
producer only moves ``written``, the consumer only moves ``read``; positions are ``count % capacity``.

Timeline mode (`ring_read_fixed`): the consumer advances by the frames it was asked for even when
fewer were there (an underrun) and outputs silence for the missing ones, so a late producer never
shifts the timing: what it writes for positions the consumer already passed is simply never read.
This keeps the latency constant (no drift) whatever happens.

The live engine's audio callback is a C function (numba `cfunc`) that runs without the GIL, so the
two sides really run concurrently, and on a weakly ordered CPU (arm64) loads and stores may be seen
out of order. The fences are PortAudio's pa_ringbuffer's: after loading the other side's counter,
the reader takes an acquire fence (no frame is read before the count that covers it) and the writer
a full fence (no slot is overwritten before the reader's count that freed it); the writer publishes
its count after a release fence (the frames are visible first), the reader after a full fence (its
reads are done before the slots are handed back).
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

WRITTEN, READ = 0, 1


class RingBuffer:
    """Owner of a ring's arrays; pass ``.data`` and ``.counters`` to the jit functions in hot paths."""

    def __init__(self, capacity: int, channels: int):
        if capacity < 1 or channels < 1:
            raise ValueError("capacity and channels must be >= 1")
        self.data = np.zeros((int(capacity), int(channels)), np.float32)
        self.counters = np.zeros(2, np.int64)

    @property
    def capacity(self) -> int:
        return self.data.shape[0]

    def available(self) -> int:
        return ring_available(self.counters)

    def write(self, frames: np.ndarray) -> int:
        return ring_write(self.data, self.counters, np.ascontiguousarray(frames, np.float32))

    def read(self, out: np.ndarray) -> int:
        return ring_read(self.data, self.counters, out)

    def read_fixed(self, out: np.ndarray) -> int:
        return ring_read_fixed(self.data, self.counters, out)

    def reset(self) -> None:
        self.counters[:] = 0
        self.data.fill(0.0)


def _make_fence(ordering: str):
    @intrinsic
    def fence(typingctx):
        def codegen(context, builder, signature, args):
            builder.fence(ordering)
            return context.get_dummy_value()

        return types.void(), codegen

    return fence


fence_acquire = _make_fence("acquire")  # after loading the other side's counter, before using the slots
fence_release = _make_fence("release")  # after writing frames, before publishing the write counter
fence_full = _make_fence("seq_cst")  # loads before it complete before stores after it


@njit(cache=True)
def ring_available(counters):
    """Frames written and not yet read (0 when the reader ran ahead after an underrun)."""
    n = counters[0] - counters[1]
    return n if n > 0 else 0


@njit(cache=True)
def ring_space(data, counters):
    return data.shape[0] - ring_available(counters)


@njit(cache=True)
def _copy_in(data, counters, frames, n):
    """Copy frames[:n] in at the write position and publish it (the caller loaded the read counter)."""
    cap = data.shape[0]
    pos = counters[0]
    fence_full()  # the reader's count was loaded before any slot it freed is overwritten
    for i in range(n):
        row = (pos + i) % cap
        for c in range(data.shape[1]):
            data[row, c] = frames[i, c]
    fence_release()
    counters[0] = pos + n


@njit(cache=True)
def ring_write(data, counters, frames):
    """Append frames[n, C]; writes only what fits, returns the number written."""
    n = min(frames.shape[0], ring_space(data, counters))
    _copy_in(data, counters, frames, n)
    return n


@njit(cache=True)
def ring_read(data, counters, out):
    """Read up to out.shape[0] frames into out[n, C]; returns how many were read."""
    cap = data.shape[0]
    n = min(out.shape[0], ring_available(counters))
    fence_acquire()  # the frames the write count covers are visible from here on
    pos = counters[1]
    for i in range(n):
        row = (pos + i) % cap
        for c in range(out.shape[1]):
            out[i, c] = data[row, c]
    fence_full()  # reads done before the slots are handed back
    counters[1] = pos + n
    return n


@njit(cache=True)
def ring_read_fixed(data, counters, out):
    """Timeline read: fill out[n, C] with the next n frames, silence where they are missing, and
    advance by n regardless. Returns how many frames were really there (n means no underrun)."""
    cap = data.shape[0]
    want = out.shape[0]
    n = min(want, ring_available(counters))
    fence_acquire()
    pos = counters[1]
    # frames the producer already wrote but the reader skipped earlier are behind `pos`; an
    # underrun leaves pos ahead of counters[0]
    for i in range(n):
        row = (pos + i) % cap
        for c in range(out.shape[1]):
            out[i, c] = data[row, c]
    for i in range(n, want):
        for c in range(out.shape[1]):
            out[i, c] = 0.0
    fence_full()
    counters[1] = pos + want
    return n

"""Single-producer/single-consumer ring buffers for the audio callback (numba, no allocation).

A ring is a preallocated float32 array ``data[capacity, channels]`` (frames x channels, the layout
sounddevice uses) plus an int64 array ``counters = [written, read]`` of absolute frame counts. The
producer only moves ``written``, the consumer only moves ``read``; positions are ``count % capacity``.

Timeline mode (`ring_read_fixed`): the consumer advances by the frames it was asked for even when
fewer were there (an underrun) and outputs silence for the missing ones, so a late producer never
shifts the timing: what it writes for positions the consumer already passed is simply never read.
This keeps the latency constant (no drift) whatever happens.

The live engine's audio callback is a C function (numba `cfunc`) that runs without the GIL, so the
two sides really run concurrently: each side publishes its counter only after a memory fence that
follows its data copy, so the other side never sees a count before the frames it covers.
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

    def space(self) -> int:
        return ring_space(self.data, self.counters)

    def write(self, frames: np.ndarray) -> int:
        return ring_write(self.data, self.counters, np.ascontiguousarray(frames, np.float32))

    def read(self, out: np.ndarray) -> int:
        return ring_read(self.data, self.counters, out)

    def read_fixed(self, out: np.ndarray) -> int:
        return ring_read_fixed(self.data, self.counters, out)

    def reset(self) -> None:
        self.counters[:] = 0
        self.data.fill(0.0)


@intrinsic
def _fence(typingctx):
    """A full memory fence: the frames copied before it are visible before the counter after it."""
    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


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
    """Copy frames[:n] in at the write position and advance it."""
    cap = data.shape[0]
    pos = counters[0]
    for i in range(n):
        row = (pos + i) % cap
        for c in range(data.shape[1]):
            data[row, c] = frames[i, c]
    _fence()
    counters[0] = pos + n


@njit(cache=True)
def ring_write(data, counters, frames):
    """Append frames[n, C]; writes only what fits, returns the number written."""
    n = min(frames.shape[0], data.shape[0] - ring_available(counters))
    _copy_in(data, counters, frames, n)
    return n


@njit(cache=True)
def ring_write_overwrite(data, counters, frames):
    """Append frames[n, C] unconditionally (the oldest unread frames are lost when full)."""
    _copy_in(data, counters, frames, frames.shape[0])
    return frames.shape[0]


@njit(cache=True)
def ring_read(data, counters, out):
    """Read up to out.shape[0] frames into out[n, C]; returns how many were read."""
    cap = data.shape[0]
    n = min(out.shape[0], ring_available(counters))
    pos = counters[1]
    for i in range(n):
        row = (pos + i) % cap
        for c in range(out.shape[1]):
            out[i, c] = data[row, c]
    _fence()
    counters[1] = pos + n
    return n


@njit(cache=True)
def ring_read_fixed(data, counters, out):
    """Timeline read: fill out[n, C] with the next n frames, silence where they are missing, and
    advance by n regardless. Returns how many frames were really there (n means no underrun)."""
    cap = data.shape[0]
    want = out.shape[0]
    n = min(want, ring_available(counters))
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
    _fence()
    counters[1] = pos + want
    return n

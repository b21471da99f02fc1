"""The SPSC ring's memory ordering (pa_ringbuffer's fences) and a two-thread hand-off without the GIL."""
from __future__ import annotations

import threading

import numpy as np
from numba import njit

from bandlift.rt.dsp.ringbuffer import RingBuffer, ring_read, ring_read_fixed, ring_write


def fences(fn, *args) -> list[str]:
    fresh = njit(fn.py_func)  # the cached build cannot be inspected
    fresh(*args)
    ir = "\n".join(fresh.inspect_llvm().values())
    return [line.split("fence")[1].split()[0] for line in ir.splitlines() if line.strip().startswith("fence")]


def test_fences_follow_pa_ringbuffer():
    """The reader takes an acquire fence after loading the write count and a full fence before it
    publishes; the writer a full fence before it overwrites slots and a release fence before it
    publishes (on x86 these only stop the compiler from reordering; on arm64 they are instructions)."""
    ring, out = RingBuffer(64, 1), np.zeros((8, 1), np.float32)
    order = fences(ring_write, ring.data, ring.counters, np.ones((8, 1), np.float32))
    assert "seq_cst" in order and "release" in order[order.index("seq_cst"):], order
    for reader in (ring_read, ring_read_fixed):
        order = fences(reader, ring.data, ring.counters, out)
        assert "acquire" in order and "seq_cst" in order[order.index("acquire"):], order
    assert "seq_cst" in order and "release" in order[order.index("seq_cst"):], order


@njit(nogil=True)
def _produce(data, counters, total, chunk):
    frames = np.empty((chunk, 1), np.float32)
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        for i in range(n):
            frames[i, 0] = sent + i
        sent += ring_write(data, counters, frames[:n])


@njit(nogil=True)
def _consume(data, counters, total, chunk, errors):
    out = np.empty((chunk, 1), np.float32)
    got = 0
    while got < total:
        n = ring_read(data, counters, out)
        for i in range(n):
            if out[i, 0] != got + i:
                errors[0] += 1
        got += n


def test_two_threads_hand_over_every_frame_in_order():
    """Producer and consumer run at once (numba without the GIL), wrapping a small ring many times:
    every frame arrives once, in order."""
    ring, total = RingBuffer(257, 1), 3_000_000  # exact in float32 (< 2**24)
    errors = np.zeros(1, np.int64)
    _produce(ring.data, ring.counters, 10, 7)  # compile both before timing matters
    _consume(ring.data, ring.counters, 10, 5, errors)
    threads = [threading.Thread(target=_produce, args=(ring.data, ring.counters, total, 61)),
               threading.Thread(target=_consume, args=(ring.data, ring.counters, total, 53, errors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors[0] == 0 and ring.counters.tolist() == [total + 10, total + 10]

"""Streams own their model state; whole signals in large blocks equal block 128; block bounds."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from bandlift.rt import Upsampler
from bandlift.rt.cli import main
from bandlift.rt.engine import MAX_BLOCK, StreamEngine
from bandlift.rt.model.session import ModelSession
from jack_server import build_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"conv": build_model(d / "conv.onnx", "conv", delay=3),
            "slow": build_model(d / "slow.onnx", "delay", slow_matmuls=40)}


def noise(rate, seconds, channels, seed):
    return (np.random.default_rng(seed).standard_normal((int(rate * seconds), channels)) * 0.2).astype(np.float32)


def chunked(stream, x, size):
    return np.concatenate([*[stream.process(x[i:i + size]) for i in range(0, len(x), size)], stream.flush()])


# -- streams own their state (issue 10, item 3) ----------------------------------------------------------
def test_interleaved_streams_equal_each_run_alone(models):
    """A mono 16 kHz stream, a stereo 44.1 kHz stream and whole-signal process() calls interleaved on one
    Upsampler: each result equals that signal processed alone."""
    up = Upsampler(models["conv"], block=128)
    a, b = noise(16000, 1.0, 1, 1), noise(44100, 1.0, 2, 2)
    alone_a, alone_b = up.process(a, 16000)[0], up.process(b, 44100)[0]
    sa, sb = up.stream(16000, 1), up.stream(44100, 2)
    parts_a, parts_b = [], []
    for i, j in zip(range(0, len(a), 1000), range(0, len(b), 2756)):
        parts_a.append(sa.process(a[i:i + 1000]))
        parts_b.append(sb.process(b[j:j + 2756]))
        up.process(noise(22050, 0.05, 1, i), 22050)  # a whole-signal call never resets open streams
    parts_a.append(sa.process(a[i + 1000:]))
    parts_b.append(sb.process(b[j + 2756:]))
    got_a, got_b = np.concatenate([*parts_a, sa.flush()]), np.concatenate([*parts_b, sb.flush()])
    assert np.array_equal(got_a, alone_a) and np.array_equal(got_b, alone_b)


def test_threads_share_an_upsampler_but_not_a_stream(models):
    """process() from several threads at once: every result right. One stream from two threads at
    once: a RuntimeError, not a wrong result."""
    up = Upsampler(models["conv"])
    signals = [noise(16000, 0.5, 1 + k % 2, k) for k in range(8)]
    expected = [up.process(s, 16000)[0] for s in signals]
    results = [None] * len(signals)

    def work(k):
        for _ in range(3):
            results[k] = up.process(signals[k], 16000)[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(signals))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, e) for r, e in zip(results, expected))

    slow = Upsampler(models["slow"], block=64)
    stream = slow.stream(48000, 1)
    busy = threading.Thread(target=stream.process, args=(noise(48000, 1.0, 1, 0),))
    busy.start()
    deadline = time.monotonic() + 30
    while not stream.engine._busy.locked() and busy.is_alive() and time.monotonic() < deadline:
        time.sleep(0.0005)
    locked = stream.engine._busy.locked()
    if locked:
        with pytest.raises(RuntimeError, match="in use by another thread"):
            stream.process(np.zeros((64, 1), np.float32))
    busy.join()
    assert locked, "the first call ended before the second could start"


def test_engines_of_one_session_are_independent(models):
    session = ModelSession(models["conv"])
    x = noise(48000, 0.5, 2, 3).T.copy()
    alone = StreamEngine(session, 48000, 48000, 2, 128).process(x)
    e1, e2 = StreamEngine(session, 48000, 48000, 2, 128), StreamEngine(session, 48000, 48000, 1, 128)
    out = []
    for i in range(0, x.shape[1], 128):
        out.append(e1.process(x[:, i:i + 128]))
        e2.process(x[:1, i:i + 128] * 3)  # a mono engine on the same session in between
        e2.reset()
    assert np.array_equal(np.concatenate(out, axis=1), alone)


def test_batched_streams_equal_each_stream_alone(models):
    """Many-stream mode (bench --streams N): N signals as the channels of one engine, one model call
    per block, each with its own cutoff state row, equal each signal run alone."""
    session = ModelSession(models["conv"])
    x = noise(48000, 0.3, 16, 7).T.copy()
    batched = StreamEngine(session, 48000, 48000, 16, 128).process(x)
    for k in (0, 5, 15):
        assert np.array_equal(batched[k], StreamEngine(session, 48000, 48000, 1, 128).process(x[k:k + 1])[0])


# -- whole signals in large blocks (issue 13, item 1) ---------------------------------------------------
def test_default_file_block_equals_block_128_shipped_model():
    """The shipped model is block-invariant: large file blocks equal block 128 within float rounding
    (measured max 6e-8 on 5 s of speech); stereo is one batched call per block."""
    x = noise(16000, 1.5, 2, 4)
    x[:, 1] *= 0.3
    big, small = Upsampler(), Upsampler(block=128)
    y_big, y_small = big.process(x, 16000)[0], small.process(x, 16000)[0]
    assert big.stream(16000, 2).engine.block > 128 and big.latency == small.latency
    assert y_big.shape == y_small.shape == (48000 * 3 // 2, 2)
    assert np.abs(y_big - y_small).max() < 1e-6
    assert np.abs(y_small).max() > 0.1


@pytest.mark.parametrize("block", [4096, 32000, MAX_BLOCK])
def test_large_blocks_equal_block_128(models, block):
    """Issue 14: --block 32000 gave garbage (the ring was fed half its size, short writes ignored)."""
    x = noise(16000, 5.0, 2, 5)
    ref = Upsampler(models["conv"], block=128).process(x, 16000)[0]
    y = Upsampler(models["conv"], block=block).process(x, 16000)[0]
    assert np.array_equal(y, ref)


def test_block_bounds_are_clear(models, tmp_path, capsys):
    """Issue 14: --block 100000 hung, bench printed RTF 0.000 for a model that never ran."""
    for bad in (100000, MAX_BLOCK + 64, 0, -64, 100):
        with pytest.raises(ValueError, match="block"):
            Upsampler(models["conv"], block=bad)
    src = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(str(src), noise(16000, 0.2, 1, 6), 16000)
    assert main(["upsample", str(src), str(tmp_path / "b.wav"), "--model", str(models["conv"]),
                 "--block", "100000"]) == 2
    err = capsys.readouterr().err
    assert f"to {MAX_BLOCK} samples, got 100000" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b.wav").exists()
    assert main(["bench", "--model", str(models["conv"]), "--block", "100000", "--seconds", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "got 100000" in err and "RTF" not in err

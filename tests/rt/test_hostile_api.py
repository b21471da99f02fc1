"""Property tests over the Python API (`Upsampler.process`, `Upsampler.stream`): any dtype, shape,
memory layout, block, rate and chunking either gives the one-shot result (aligned, finite, of the
promised length) or raises one clear ValueError. Also the bounds of `bandlift bench`'s arguments."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bandlift.rt import Upsampler
from bandlift.rt.cli import main
from jack_server import build_model

# bounded, reproducible runs: a failure is a bug, never a flake
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
RATES = [1000, 7999, 8000, 11025, 16000, 22050, 44100, 48000]
BLOCKS = [64, 128, 192, 512, 2048]
SIGNED = ["int8", "int16", "int32"]
FLOATS = ["float32", "float64"]


@pytest.fixture(scope="module")
def ups(tmp_path_factory):
    """One Upsampler per block on a pure-delay model (its output is block-invariant)."""
    path = build_model(tmp_path_factory.mktemp("m") / "delay.onnx", "delay", delay=5)
    return {b: Upsampler(path, block=b, provider="cpu") for b in BLOCKS}


@st.composite
def signals(draw, dtypes=(*FLOATS, *SIGNED)):
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    channels = draw(st.integers(1, 3))
    n = draw(st.integers(0, 2500))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if dtype.kind == "f":
        scale = draw(st.sampled_from([1e-30, 1e-3, 1.0, 1e6, 1e30]))
        x = (rng.standard_normal((n, channels)) * scale).astype(dtype)
    else:
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max, (n, channels), endpoint=True, dtype=dtype)
    if channels == 1 and draw(st.booleans()):
        x = x[:, 0]
    layout = draw(st.sampled_from(["C", "F", "strided"]))
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "strided":  # every other frame of a twice-as-long buffer
        wide = np.repeat(x, 2, axis=0)
        x = wide[::2]
    return x


def as_float32(x: np.ndarray) -> np.ndarray:
    """What the API promises to do with a dtype: integers scaled to [-1, 1), floats as float32."""
    if x.dtype.kind == "i":
        return (x.astype(np.float64) / (np.iinfo(x.dtype).max + 1.0)).astype(np.float32)
    return np.ascontiguousarray(x, np.float32)


@SETTINGS
@given(x=signals(), rate=st.sampled_from(RATES), block=st.sampled_from(BLOCKS), data=st.data())
def test_process_equals_the_float32_one_shot_at_block_128_and_chunked_streaming(ups, x, rate, block, data):
    y, out_rate = ups[block].process(x, rate, input_cutoff=None)  # a stream has no "auto"
    assert out_rate == 48000 and y.dtype == np.float32
    assert y.shape == ((round(len(x) * 48000 / rate),) + x.shape[1:])
    assert np.isfinite(y).all()
    reference, _ = ups[128].process(as_float32(x), rate, input_cutoff=None)
    assert np.array_equal(y, reference)  # dtype, layout and block change nothing
    # the same signal streamed in chunks of any size
    frames = as_float32(x).reshape(len(x), x.shape[1] if x.ndim == 2 else 1)
    stream = ups[block].stream(rate, frames.shape[1])
    cuts = sorted(data.draw(st.lists(st.integers(0, len(x)), max_size=6)))
    parts = [stream.process(frames[a:b]) for a, b in zip([0, *cuts], [*cuts, len(x)])]
    parts.append(stream.flush())
    assert np.array_equal(np.concatenate(parts).reshape(y.shape), y)


@SETTINGS
@given(x=signals(dtypes=FLOATS), rate=st.sampled_from(RATES), where=st.floats(0, 1),
       bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_a_non_finite_sample_is_named_by_index_and_channel(ups, x, rate, where, bad):
    if not len(x):
        x = np.zeros(1, x.dtype)
    x = np.array(x)  # writable copy
    index = min(int(where * len(x)), len(x) - 1)
    channel = x.shape[1] - 1 if x.ndim == 2 else 0
    x[(index, channel) if x.ndim == 2 else index] = bad
    with pytest.raises(ValueError, match=f"first at sample {index} \\(channel {channel}\\)"):
        ups[128].process(x, rate)


BAD_RATES = [0, -1, 16000.5, float("nan"), "16000", None, 96000, 2**31, 10**30, float("inf"), True, np.True_]
BAD_AUDIO = [np.zeros((10, 0), np.float32), np.zeros((4, 65), np.float32), np.zeros((2, 64), np.float32),
             np.zeros((2000, 1025), np.float32), np.zeros((2, 2, 2), np.float32),
             np.zeros(5, complex), np.zeros(5, bool), np.array(["a", "b"]), np.array([None, 1.0], object),
             np.float32(0.5)]


@pytest.mark.parametrize("rate", BAD_RATES, ids=repr)
def test_a_bad_rate_is_one_value_error(ups, rate):
    with pytest.raises(ValueError, match="sample_rate|input rate"):
        ups[128].process(np.zeros(100, np.float32), rate)
    with pytest.raises(ValueError, match="sample_rate|input rate"):
        ups[128].stream(rate, 1)


@pytest.mark.parametrize("audio", BAD_AUDIO, ids=lambda a: f"{a.dtype}{a.shape}")
def test_bad_audio_is_one_value_error(ups, audio):
    with pytest.raises(ValueError, match="audio must be"):
        ups[128].process(audio, 16000)


def test_65_channels_and_more_are_upsampled(ups):
    x = np.tile(np.sin(np.arange(1600) * 0.05, dtype=np.float32)[:, None] * 0.3, (1, 65))
    y, _ = ups[128].process(x, 16000, input_cutoff=None)
    assert y.shape == (4800, 65) and np.isfinite(y).all()
    stream = ups[128].stream(16000, 65)
    streamed = np.concatenate([stream.process(x[:3]), stream.process(x[3:]), stream.flush()])
    assert np.array_equal(streamed, y)  # a chunk narrower than it is wide is fine in a stream
    with pytest.raises(ValueError, match=r"audio must be \(n, 65\) for this stream"):
        ups[128].stream(16000, 65).process(x[:, :64])


@pytest.mark.parametrize("block", [0, -64, 100, 64.5, "128", 100000, True], ids=repr)
def test_a_bad_block_is_one_value_error(ups, block):
    with pytest.raises(ValueError, match="block"):
        Upsampler(ups[128].session.path, block=block, provider="cpu")


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_unsigned_silence_stays_silent(ups, dtype):
    midpoint = np.iinfo(dtype).max // 2 + 1
    y, _ = ups[128].process(np.full(2000, midpoint, dtype), 16000)
    assert np.abs(y).max() < 1e-6


def test_float32_max_is_refused_never_inf(ups):
    x = np.zeros(2000, np.float32)
    x[100] = np.finfo(np.float32).max
    with pytest.raises(ValueError, match="sample 100 .channel 0. is 3.4e.38, beyond"):
        ups[128].process(x, 16000)
    x[100] = 1e5  # large but representable: finite output
    assert np.isfinite(ups[128].process(x, 16000)[0]).all()


def test_stream_scales_integer_chunks_as_process_does(ups):
    x = (np.sin(np.arange(3000) * 0.05) * 20000).astype(np.int16)[:, None]
    y, _ = ups[128].process(x, 16000)
    stream = ups[128].stream(16000, 1)
    streamed = np.concatenate([stream.process(x[:1000]), stream.process(x[1000:]), stream.flush()])
    assert np.array_equal(streamed, y)


@pytest.mark.parametrize("flag, value", [
    ("--seconds", "nan"), ("--seconds", "inf"), ("--seconds", "-1"), ("--seconds", "0"),
    ("--rate", "0"), ("--rate", "2147483648"), ("--input-rate", "-16000"), ("--threads", "0"),
    ("--threads", "100000"), ("--margin", "-1"), ("--margin", "1000000000"),
])
def test_bench_arguments_out_of_bounds_are_one_line(ups, capsys, flag, value):
    rc = main(["bench", "--model", str(ups[128].session.path), "--block", "128", "--seconds", "0.1", flag, value])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bandlift bench: error: {flag} must be in ")


@pytest.mark.parametrize("argv, expected", [
    (["--seconds", "inf"], "--seconds must be in"), (["--seconds", "nan"], "--seconds must be in"),
    (["--seconds", "-5"], "--seconds must be in"), (["--seconds", "0"], "--seconds must be in"),
    (["--seconds", "1e9", "--record", "REC/r.wav"], "--seconds must be in"),
    (["--record", "REC/missing/r.wav"], "cannot write there"),
    (["--record", "REC"], "unsupported extension"),
    (["--record", "REC/r.flac"], "a float recording needs"),
])
def test_live_seconds_and_record_are_checked_before_any_device_starts(ups, tmp_path, capsys, argv, expected):
    """Before: inf/nan were tracebacks, -5 ran 0 s with rc 0, 100000 preallocated 17.9 GiB (now streamed
    to disk: any length up to a week), and a recording into a missing folder was lost with a traceback at
    the end."""
    argv = [a.replace("REC", str(tmp_path)) for a in argv]
    rc = main(["live", "--model", str(ups[128].session.path), *argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("bandlift live: error:") and expected in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []

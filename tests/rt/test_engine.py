"""Streaming engine: resampler exactness/response/delay, engine streaming == whole, faults, bypass."""
from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import signal

from bandlift.rt.engine import StreamEngine
from bandlift.rt.dsp.resample import PASS_EDGE, STOP_EDGE, StreamingResampler
from bandlift.rt.dsp.ringbuffer import RingBuffer
from bandlift.rt.model.session import ModelError, ModelSession
from jack_server import build_model, reference_conv

RATES = [8000, 16000, 22050, 24000, 44100, 48000]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {
        "conv": build_model(d / "conv.onnx", "conv", delay=3),
        "delay": build_model(d / "delay.onnx", "delay", delay=5),
        "nan": build_model(d / "nan.onnx", "nan", fault_after=4800, fault_until=9600),
        "explode": build_model(d / "explode.onnx", "explode", fault_after=4800, fault_until=9600),
        "slow": build_model(d / "slow.onnx", "delay", slow_matmuls=40),
    }


def feed_in_chunks(process, x, seed, max_chunk=700):
    rng = np.random.default_rng(seed)
    parts, i = [], 0
    while i < x.shape[1]:
        n = int(rng.integers(1, max_chunk))
        parts.append(process(x[:, i:i + n]))
        i += n
    return np.concatenate(parts, axis=1)


# -- ring buffer ----------------------------------------------------------------------------------
def test_ring_wraps_and_timeline_read_keeps_position():
    ring = RingBuffer(8, 2)
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    assert ring.write(x) == 8  # full: only what fits
    out = np.zeros((5, 2), np.float32)
    assert ring.read(out) == 5 and out[:, 0].tolist() == [0, 2, 4, 6, 8]
    assert ring.write(x[5:]) == 5  # wraps around
    out = np.zeros((10, 2), np.float32)
    assert ring.read_fixed(out) == 8  # underrun by 2: silence, and the reader still moves 10
    assert out[:, 0].tolist() == [10, 12, 14, 10, 12, 14, 16, 18, 0, 0]
    assert ring.available() == 0 and ring.counters[1] - ring.counters[0] == 2


# -- resampler ------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", RATES)
def test_resampler_streaming_equals_whole(rate):
    x = np.random.default_rng(0).standard_normal((2, rate // 4)).astype(np.float32)
    r = StreamingResampler(rate, 48000, 2)
    whole = r.process(x)
    assert whole.shape[1] == -(-x.shape[1] * 48000 // rate)
    r.reset()
    streamed = feed_in_chunks(r.process, x, seed=rate)
    assert np.array_equal(whole, streamed)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100])
def test_resampler_response_and_delay(rate):
    r = StreamingResampler(rate, 48000, 1)
    # filter: flat passband, >= 70 dB stopband (images of the input spectrum)
    w, h = signal.freqz(r.taps / r.up, worN=1 << 16, fs=r.up * rate)
    db = 20 * np.log10(np.abs(h) + 1e-12)
    assert np.abs(db[w <= PASS_EDGE * rate / 2]).max() < 0.01
    assert db[w >= STOP_EDGE * rate / 2].max() < -70
    # group delay: an impulse comes out exactly `delay` output samples later, a sine is aligned
    assert r.delay / 48000 < 0.003  # short filter: <= 3 ms even from 8 kHz (1.4 ms from 16 kHz)
    x = np.zeros((1, 400), np.float32)
    x[0, 100] = 1.0
    y = r.process(x)[0]
    if 48000 % rate == 0:  # the impulse sits on an output sample
        assert np.argmax(y) == 100 * 48000 // rate + r.delay
    r.reset()
    f0, n = 0.3 * rate, rate // 4
    y = r.process(np.sin(2 * np.pi * f0 * np.arange(n) / rate).astype(np.float32)[None])[0]
    ref = np.sin(2 * np.pi * f0 * (np.arange(len(y)) - r.delay) / 48000)
    assert np.abs(y - ref)[r.delay + 300:-300].max() < 1e-3
    # measured image suppression on the output: the tone at f0 and nothing at rate - f0
    spec = np.abs(np.fft.rfft(y[1000:] * np.hanning(len(y) - 1000)))
    freqs = np.fft.rfftfreq(len(y) - 1000, 1 / 48000)
    tone = spec[np.argmin(np.abs(freqs - f0))]
    image = spec[np.argmin(np.abs(freqs - (rate - f0)))]
    assert 20 * np.log10(image / tone) < -65


@pytest.mark.parametrize("out_rate", [44100, 32000])
def test_resampler_downsampling_is_anti_aliased_and_aligned(out_rate):
    """48 kHz model output -> 44.1/32 kHz: flat to 0.9 of the output Nyquist, >= 70 dB down from the
    output Nyquist on (nothing aliases), an exact integer delay, streaming == whole."""
    r = StreamingResampler(48000, out_rate, 1)
    w, h = signal.freqz(r.taps / r.up, worN=1 << 18, fs=r.up * 48000)
    db = 20 * np.log10(np.abs(h) + 1e-12)
    assert np.abs(db[w <= PASS_EDGE * out_rate / 2]).max() < 0.01
    assert db[w >= out_rate / 2].max() < -70
    assert r.delay / out_rate < 0.0015
    n = 48000 // 2
    t = np.arange(n) / 48000
    f_pass, f_alias = 0.3 * out_rate, 0.5 * (out_rate / 2 + 24000)  # the latter would fold to out - f
    x = (0.5 * np.sin(2 * np.pi * f_pass * t) + 0.5 * np.sin(2 * np.pi * f_alias * t)).astype(np.float32)[None]
    y = r.process(x)[0]
    assert len(y) == -(-n * out_rate // 48000)
    ref = 0.5 * np.sin(2 * np.pi * f_pass * (np.arange(len(y)) - r.delay) / out_rate)
    assert np.abs(y - ref)[r.delay + 300:-300].max() < 1e-3  # aliased tone gone, passband tone aligned
    seg = y[1000:]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    freqs = np.fft.rfftfreq(len(seg), 1 / out_rate)
    tone = spec[np.argmin(np.abs(freqs - f_pass))]
    alias = spec[np.argmin(np.abs(freqs - (out_rate - f_alias)))]
    assert 20 * np.log10(alias / tone) < -65
    r.reset()
    assert np.array_equal(feed_in_chunks(r.process, x, seed=out_rate), y[None])


@pytest.mark.parametrize("in_rate,out_rate", [(48000, 44100), (48000, 32000), (48000, 96000), (16000, 48000)])
@pytest.mark.parametrize("prior", [0, 1, 70, 163])
def test_resampler_prior_delay_makes_a_whole_sample_delay(in_rate, out_rate, prior):
    """A signal already `prior` input samples late comes out exactly `delay` output samples late."""
    r = StreamingResampler(in_rate, out_rate, 1, prior_delay=prior)
    assert r.delay == StreamingResampler(in_rate, out_rate).delay + -(-prior * out_rate // in_rate)
    f0 = 0.2 * min(in_rate, out_rate)
    x = np.sin(2 * np.pi * f0 * (np.arange(in_rate // 4) - prior) / in_rate).astype(np.float32)[None]
    y = r.process(x)[0]
    ref = np.sin(2 * np.pi * f0 * (np.arange(len(y)) - r.delay) / out_rate)
    assert np.abs(y - ref)[r.delay + 300:-300].max() < 1e-3


# -- session --------------------------------------------------------------------------------------
def test_session_reads_contract_and_rejects_bad_files(models, tmp_path):
    s = ModelSession(models["delay"], provider="cpu")
    assert (s.sample_rate, s.frame, s.delay) == (48000, 64, 5)
    with pytest.raises(ModelError, match="not found"):
        ModelSession(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        ModelSession(bad)
    with pytest.raises(ValueError, match="multiple of the model frame"):
        s.new_state(1).run(np.zeros((1, 100), np.float32), np.ones(1, np.float32))


def test_session_cuda_unavailable_is_clear(models):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="cuda"):
        ModelSession(models["delay"], provider="cuda")
    assert ModelSession(models["delay"], provider="auto").device == "cpu"


# -- engine ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_engine_streaming_equals_whole_and_reference(models, rate, channels):
    session = ModelSession(models["conv"])
    x = (np.random.default_rng(rate).standard_normal((channels, rate // 2)) * 0.3).astype(np.float32)
    resampled = StreamingResampler(rate, 48000, channels).process(x)
    for block in (64, 128, 512):
        eng = StreamEngine(session, rate, 48000, channels, block, input_cutoff_hz=rate / 2)
        whole = eng.process(x)
        assert whole.shape[1] == resampled.shape[1] // block * block
        eng.reset()
        assert np.array_equal(feed_in_chunks(eng.process, x, seed=block), whole)
        ref = np.concatenate([reference_conv(resampled[c:c + 1], rate / 48000, delay=3)
                              for c in range(channels)])[:, : whole.shape[1]]
        assert np.abs(whole - ref).max() < 1e-5
        assert eng.delay == eng.resampler.delay + 3 and eng.latency == eng.delay + block


@pytest.mark.parametrize("rate,out_rate", [(16000, 44100), (48000, 44100), (44100, 32000), (16000, 96000)])
def test_engine_other_output_rates_streaming_equals_whole_and_reference(models, rate, out_rate):
    """in -> 48 kHz -> model -> out_rate: the output resampler comes last, its delay counts in output
    samples and makes the total a whole number; streaming == whole."""
    session = ModelSession(models["conv"])
    x = (np.random.default_rng(rate).standard_normal((2, rate // 2)) * 0.3).astype(np.float32)
    eng = StreamEngine(session, rate, out_rate, 2, 128, input_cutoff_hz=rate / 2)
    whole = eng.process(x)
    resampled = StreamingResampler(rate, 48000, 2).process(x)
    n_model = resampled.shape[1] // 128 * 128
    assert whole.shape[1] == eng.output_count(x.shape[1]) == -(-n_model * out_rate // 48000)
    eng.reset()
    assert np.array_equal(feed_in_chunks(eng.process, x, seed=out_rate), whole)
    model_out = reference_conv(resampled[:, :n_model], min(rate / 48000, 1.0), delay=3).astype(np.float32)
    out_rs = StreamingResampler(48000, out_rate, 2, prior_delay=eng.resampler.delay + 3)
    assert np.abs(whole - out_rs.process(model_out)).max() < 1e-5
    assert eng.delay == out_rs.delay and eng.latency == eng.delay + -(-128 * out_rate // 48000)


def test_engine_rate_validation(models):
    session = ModelSession(models["conv"])
    with pytest.raises(ValueError, match="above the output rate 44100 Hz and the model rate 48000 Hz"):
        StreamEngine(session, 96000, 44100)
    with pytest.raises(ValueError, match="output rate must be 1..768000 Hz"):
        StreamEngine(session, 16000, 0)
    with pytest.raises(ValueError, match="output rate must be 1..768000 Hz, got 2147483648"):
        StreamEngine(session, 16000, 2 ** 31)  # was a 23 GB filter design
    assert StreamEngine(session, 96000, 96000).out_rate == 96000  # in <= out
    assert StreamEngine(session, 48000, 32000).out_rate == 32000  # in <= model rate


def run_with_toggles(eng, x, block=128, toggles=(100, 200, 201, 300)):
    """x [1, n] whole through the model, whole in bypass, and block by block with bypass toggled
    before the given blocks -> (model_out, dry, toggled), each from a reset engine."""
    model_out = eng.process(x)
    eng.bypass = True
    eng.reset()
    dry = eng.process(x)
    eng.reset()
    eng.bypass = False
    outs = []
    for i, start in enumerate(range(0, x.shape[1], block)):
        if i in toggles:
            eng.bypass = not eng.bypass
        outs.append(eng.process(x[:, start:start + block]))
    return model_out, dry, np.concatenate(outs, axis=1)


def test_engine_at_44k_toggle_is_crossfaded_and_bypass_aligned(models):
    """Bypass and crossfades act at the model rate, before the output resampler."""
    session = ModelSession(models["conv"])
    rate, out, n = 48000, 44100, 48000
    x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)[None]
    eng = StreamEngine(session, rate, out, 1, 128)
    model_out, dry, y = run_with_toggles(eng, x)
    k = np.arange(dry.shape[1])
    ref = 0.5 * np.sin(2 * np.pi * 440 * (k - eng.delay) / out)  # bypass = input delayed by `delay`
    assert np.abs(dry[0] - ref)[200:-200].max() < 1e-3
    assert np.abs(np.diff(y[0])).max() <= np.abs(np.diff(model_out[0])).max() * 1.01
    o = lambda b: b * 128 * out // rate  # noqa: E731  (model block -> output sample)
    settle = 100  # output samples the resampler's filter reaches back
    assert np.array_equal(y[0, o(101) + settle:o(200)], dry[0, o(101) + settle:o(200)])
    assert np.array_equal(y[0, o(301) + settle:], model_out[0, o(301) + settle:])
    assert eng.stats.bypass_events == 2


@pytest.mark.parametrize("kind", ["nan", "explode"])
def test_engine_at_44k_faulty_block_never_reaches_the_output_resampler(models, kind):
    session = ModelSession(models[kind])
    x = (0.5 * np.sin(2 * np.pi * 300 * np.arange(48000 * 3) / 48000)).astype(np.float32)[None]
    eng = StreamEngine(session, 48000, 44100, 1, 128, explode_guard=True)
    y = eng.process(x)
    # the bypass-only engine: the same resampling chain without a model (the fault models are a pure
    # delay of 0 outside their window, so this is also what the model path gives)
    dry = StreamEngine(None, 48000, 44100, 1, 128, model_rate=48000).process(x)
    assert getattr(eng.stats, f"faults_{kind}") >= 1 and eng.stats.events[0][0] == 4864  # model-rate index
    assert np.isfinite(y).all()
    diff = np.abs(y - dry)[0]
    assert diff.max() <= np.abs(np.diff(x[0])).max()  # at most the de-click ramp of a one-sample step
    declick = np.zeros(len(diff), bool)  # the ramps (64 model samples from each event) and filter reach
    for event, _ in eng.stats.events:
        declick[event * 44100 // 48000 - 100:(event + 64) * 44100 // 48000 + 100] = True
    assert diff[~declick].max() < 1e-6


def test_engine_bypass_is_aligned_and_toggle_is_crossfaded(models):
    session = ModelSession(models["conv"])
    rate, n = 48000, 48000
    x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)[None]
    eng = StreamEngine(session, rate, rate, 1, 128)
    model_out, dry, y = run_with_toggles(eng, x)
    assert np.array_equal(dry[0, 3:], x[0, : dry.shape[1] - 3])  # bypass = input delayed by the model delay
    # no step at the switches: sample-to-sample change never exceeds the signal's own
    assert np.abs(np.diff(y[0])).max() <= np.abs(np.diff(model_out[0])).max() * 1.01
    assert np.array_equal(y[0, 128 * 101:128 * 200], dry[0, 128 * 101:128 * 200])
    assert np.array_equal(y[0, 128 * 301:], model_out[0, 128 * 301:])
    assert eng.stats.bypass_events == 2  # two fades to bypass


@pytest.mark.parametrize("kind", ["nan", "explode"])
def test_engine_catches_faulty_model(models, kind):
    session = ModelSession(models[kind])
    x = (0.5 * np.sin(2 * np.pi * 300 * np.arange(48000 * 3) / 48000)).astype(np.float32)[None]
    eng = StreamEngine(session, 48000, 48000, 1, 128, explode_guard=True)  # on in real time only
    y = eng.process(x)
    assert np.isfinite(y).all() and np.abs(y).max() <= 0.5 + 1e-6
    assert eng.stats.bypass_events >= 1
    assert getattr(eng.stats, f"faults_{kind}") >= 1
    # the fault block and the hold after it are the dry signal; the step is de-clicked
    first = eng.stats.events[0][0]
    assert first == 4864  # first block that starts in the fault window (4800..9600)
    assert np.allclose(y[0, first + 64:first + 128 * 10], x[0, first + 64:first + 128 * 10])
    assert np.abs(np.diff(y[0])).max() < 2 * np.abs(np.diff(x[0])).max()
    # after the hold the model is back (and faults again after the same count: the back-off grows)
    assert eng.stats.events[1][0] - first > 0.5 * 48000


def test_engine_overload_fades_to_bypass_without_cascade(models):
    session = ModelSession(models["slow"])
    x = (0.5 * np.sin(2 * np.pi * 300 * np.arange(48000 * 2) / 48000)).astype(np.float32)[None]
    eng = StreamEngine(session, 48000, 48000, 1, 64, realtime=True)
    y = eng.process(x)
    st = eng.stats
    if st.compute_times().min() < eng.block_seconds:
        pytest.skip("the slow model is not slow on this machine")
    assert st.overloads >= 1 and st.deadline_misses == st.overloads
    # back-off: retries at 0.5 s, then 1 s ...; late warm-up blocks beyond the tolerated few restart the
    # hold silently -> over 2 s: the first late block, two short warm-ups, a single switch to bypass
    attempt = 1 + eng.hold.late_allowed + 1
    assert st.model_blocks <= 1 + 2 * attempt < eng.warm_blocks and st.bypass_events == 1
    assert np.abs(np.diff(y[0])).max() <= np.abs(np.diff(x[0])).max() * 1.01
    eng.realtime = False  # offline: never a deadline
    eng.reset()
    y = eng.process(x[:, :4800])
    assert eng.stats.overloads == 0 and eng.stats.model_blocks == 4800 // 64


class LateCalls:
    """A model stream whose chosen calls (1-based) really run past the block's deadline."""

    def __init__(self, stream, late_calls, late_s):
        self.stream, self.late_calls, self.late_s, self.calls = stream, set(late_calls), late_s, 0

    def run(self, x, cutoff):
        self.calls += 1
        if self.calls in self.late_calls:
            time.sleep(self.late_s)
        return self.stream.run(x, cutoff)

    def reset(self):
        self.stream.reset()

    def skip_frames(self, frames):
        self.stream.skip_frames(frames)


def late_engine(tmp_path, late_calls):
    model = build_model(tmp_path / "delay96.onnx", "delay", delay=96, frame=32)
    eng = StreamEngine(ModelSession(model), 48000, 48000, 1, 512, realtime=True)  # 10.7 ms blocks
    eng.model = LateCalls(eng.model, late_calls, 3 * eng.block_seconds)
    return eng


def model_runs(eng, n_blocks):
    """Feed n_blocks of noise one block at a time; per block, whether the model's output played."""
    rng = np.random.default_rng(0)
    playing = []
    for _ in range(n_blocks):
        eng.process((0.1 * rng.standard_normal((1, eng.block))).astype(np.float32))
        playing.append(eng.active == 1.0)
    return np.array(playing)


def test_one_stray_late_warm_up_block_does_not_restart_the_hold(tmp_path):
    """Overload at call 5 -> 0.5 s hold (47 blocks of 512), whose last 10 blocks warm the model up: the
    first warm-up call (cold) and one more stray late call are tolerated, the model returns on time."""
    eng = late_engine(tmp_path, late_calls={5, 6, 6 + 3})  # overload, then warm-up calls 1 and 4
    playing = model_runs(eng, 120)
    hold = int(np.ceil(0.5 * 48000 / 512))
    assert eng.stats.bypass_events == 1 and eng.stats.overloads == 1
    assert not playing[4:4 + hold].any() and playing[4 + hold:].all()
    assert eng.stats.played_blocks == playing.sum() == 120 - hold  # the count live tests read


def test_a_second_late_warm_up_block_restarts_the_hold(tmp_path):
    eng = late_engine(tmp_path, late_calls={5, 6 + 1, 6 + 3})  # overload, then warm-up calls 2 and 4
    playing = model_runs(eng, 120)
    assert eng.stats.bypass_events == 1 and eng.stats.overloads == 2  # the restart is silent
    assert not playing[5:].any()  # the second hold (1 s = 94 blocks) has not ended


def test_back_off_steps_down_after_clean_play(tmp_path):
    """Overloads 0.5 s apart double the hold (0.5, 1, 2 s); once the model has played cleanly for as
    long as the next hold, that hold halves again."""
    block_s = 512 / 48000
    hold_blocks = [int(np.ceil(h / block_s)) for h in (0.5, 1.0, 2.0)]
    warm = int(np.ceil(0.1 / block_s))
    # model calls: 1 block before the first overload, then per hold its warm-up, then played blocks
    late, call = [], 2
    for played in (10, 202):  # 2nd overload after 10 played blocks; 3rd after 2.15 s of clean play
        late.append(call)
        call += warm + played
    late.append(call)
    eng = late_engine(tmp_path, late_calls=late)
    model_runs(eng, 1 + hold_blocks[0] + 10 + hold_blocks[1] + 202 + 200)
    events = [sample // 512 for sample, _ in eng.stats.events]
    assert len(events) == 3 and eng.stats.overloads == 3
    # the hold after the 3rd overload: 2 s, stepped down to 1 s by 2 s of clean play
    assert eng.stats.longest_bypass_blocks == hold_blocks[1]


def test_delayed_impulse_is_not_taken_for_an_explosion(tmp_path):
    """A click near the end of one block comes out of a delaying model in the next (silent) block."""
    from bandlift.rt.model.session import ModelSession

    model = build_model(tmp_path / "delay96.onnx", "delay", delay=96, frame=32)
    eng = StreamEngine(ModelSession(model), 48000, 48000, 1, block=128, explode_guard=True)
    x = np.zeros((1, 128 * 40), np.float32)
    x[0, 128 * 10 + 120::128 * 6] = 0.9  # clicks 8 samples before a block ends, silence after
    y = feed_in_chunks(eng.process, x, seed=3)
    assert eng.stats.faults_explode == 0 and eng.stats.bypass_events == 0
    n = y.shape[1]
    assert np.array_equal(y[0, eng.delay:], x[0, : n - eng.delay])


def test_stereo_fault_is_declicked_per_channel(models):
    """A hard switch to bypass in stereo ramps each channel from its own last sample."""
    eng = StreamEngine(ModelSession(models["nan"]), 48000, 48000, 2, block=128)
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2, 48000)) * 0.1).astype(np.float32)
    x[1] *= 3.0
    y = feed_in_chunks(eng.process, x, seed=4)
    assert eng.stats.faults_nan >= 1 and np.isfinite(y).all() and y.shape[0] == 2


# -- bypass paths: the model comes back warm (the shipped model's delay: 96 samples) -----------------
def run_blocks(eng, x, at=None):
    """Feed x [1, n] block by block; `at(i)` is called before block i. Returns y and the model
    weight after each block."""
    ys, active = [], []
    for i in range(x.shape[1] // eng.block):
        if at is not None:
            at(i)
        ys.append(eng.process(x[:, i * eng.block:(i + 1) * eng.block]))
        active.append(eng.active)
    return np.concatenate(ys, axis=1), np.array(active)


@pytest.mark.parametrize("cause", ["toggle", "overload", "nan", "explode"])
def test_model_returns_warm_without_dropout(tmp_path, cause):
    """Each bypass path and its return with a delay-96 model whose output equals the bypass path: a
    cold model (reset, or not run during the hold) would return with 96 samples of silence or of the
    signal from before the hold; a warm one returns seamlessly."""
    kind = cause if cause in ("nan", "explode") else "delay"
    model = build_model(tmp_path / f"{kind}.onnx", kind, delay=96, frame=32, fault_after=24000, fault_until=24100)
    eng = StreamEngine(ModelSession(model), 48000, 48000, 1, 128, explode_guard=True)
    n = 48000 * 2
    x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / 48000)).astype(np.float32)[None]

    def at(i):
        if cause == "toggle" and i in (188, 376):
            eng.bypass = i == 188
        if cause == "overload" and i == 188:
            eng.force_bypass("overload")  # what the live worker does when the output ran late

    y, active = run_blocks(eng, x, at)
    ref = np.concatenate([np.zeros(96), x[0, :-96]])[: y.shape[1]]  # model output == bypass == x delayed
    assert [reason for _, reason in eng.stats.events][:1] == [{"toggle": "user"}.get(cause, cause)]
    back = int(np.nonzero((active[1:] == 1.0) & (active[:-1] == 0.0))[0][0]) + 1  # the block that fades in
    assert back >= 188 + (1 if cause == "toggle" else 187)
    around = slice((back - 8) * 128, (back + 8) * 128)
    err = np.abs(y[0, around] - ref[around]).max()
    print(f"{cause}: model back at block {back}, max error around the return {err:.2e}")
    assert err < 1e-6  # no dropout, no step
    assert np.abs(np.diff(y[0, around])).max() <= np.abs(np.diff(x[0])).max() * 1.01


def test_shipped_model_returns_warm_after_overload():
    """The shipped model after an overload hold: from the block after the fade-in on, its output is what
    it would have been had it never stopped."""
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(48000) / 16000)
         * np.exp(-np.arange(48000) / 20000)).astype(np.float32)[None]
    x += (np.random.default_rng(1).standard_normal(x.shape) * 0.02).astype(np.float32)
    session = ModelSession(None)
    steady = StreamEngine(session, 48000, 48000, 1, 128, input_cutoff_hz=8000).process(x)
    eng = StreamEngine(ModelSession(None), 48000, 48000, 1, 128, input_cutoff_hz=8000)
    y, active = run_blocks(eng, x, lambda i: i == 40 and eng.force_bypass("overload"))
    back = int(np.nonzero((active[1:] == 1.0) & (active[:-1] == 0.0))[0][0]) + 1
    err = np.abs(y[0, (back + 1) * 128:] - steady[0, (back + 1) * 128:y.shape[1]]).max()
    print(f"shipped model back at block {back}: max difference from an uninterrupted run {err:.2e}")
    assert err < 1e-4


def test_offline_keeps_a_loud_output_but_not_an_explosion(models, tmp_path):
    """Offline a loud but plausible model output (x8, +12 dB) is kept; one above +24 dBFS (x1000) is a
    fault, bypassed for its hold: before, it was kept and the file's one gain silenced everything."""
    x = (0.5 * np.sin(2 * np.pi * 300 * np.arange(48000) / 48000)).astype(np.float32)[None]
    loud = build_model(tmp_path / "x8.onnx", "explode", fault_after=4800, fault_until=9600, explode_gain=8.0)
    eng = StreamEngine(ModelSession(loud), 48000, 48000, 1, 128)
    y = eng.process(x)
    assert eng.stats.bypass_events == 0 and eng.stats.faults_explode == 0
    assert np.abs(y).max() > 3.5  # the model's loud output, unswitched
    eng = StreamEngine(ModelSession(models["explode"]), 48000, 48000, 1, 128)
    y = eng.process(x)
    assert eng.stats.faults_explode >= 1 and np.abs(y).max() < 1.0


def test_live_explode_guard_follows_the_models_own_level(tmp_path):
    """A model 8x louder than its input, fading in with it, is consistent with its own recent level: not
    an explosion (against the input's level it would be, from 0.125 of input peak on); a sudden jump of
    1000x over its own level is."""
    loud = build_model(tmp_path / "x8.onnx", "explode", fault_after=0, explode_gain=8.0)
    n = 48000
    x = (0.2 * np.minimum(np.arange(n) / 24000, 1) * np.sin(2 * np.pi * 300 * np.arange(n) / 48000)).astype(np.float32)
    eng = StreamEngine(ModelSession(loud), 48000, 48000, 1, 128, explode_guard=True)  # live's guard, no deadlines
    y = eng.process(x[None])
    assert eng.stats.faults_explode == 0 and np.abs(y).max() > 1.5
    jump = build_model(tmp_path / "jump.onnx", "explode", fault_after=24000, fault_until=24100)
    eng = StreamEngine(ModelSession(jump), 48000, 48000, 1, 128, explode_guard=True)
    eng.process(x[None])
    assert eng.stats.faults_explode == 1 and eng.event_lines() == ["bypass at 0.50 s: model output exploded"]


def test_upsample_prints_each_bypass(models, tmp_path, capsys):
    import json

    import soundfile as sf

    from bandlift.rt.cli import main

    src = tmp_path / "in.wav"
    sf.write(str(src), (0.5 * np.sin(2 * np.pi * 300 * np.arange(48000) / 48000)).astype(np.float32), 48000,
             subtype="FLOAT")
    # each faults again after its hold (its fault window counts from a reset)
    for kind, events, reason in (("explode", 2, "model output exploded"), ("nan", 2, "non-finite model output")):
        js = tmp_path / f"{kind}.json"
        assert main(["upsample", str(src), str(tmp_path / f"{kind}.wav"), "--model", str(models[kind]),
                     "--json", str(js)]) == 0
        out = capsys.readouterr().out
        info = json.loads(js.read_text())
        info = info[0] if isinstance(info, list) else info.get("files", [info])[0]
        assert info["bypass_events"] == events
        assert out.count("bypass at ") == events and reason in out

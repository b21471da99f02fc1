"""`bandlift live` on a real JACK server (dummy backend, loopback port): what the engine plays comes
back at the input, so the live output is checked sample by sample against offline processing, the
round trip against the declared latency, and overload / NaN / dead-server handling end to end; at
48 kHz (the model's rate) and on a 44.1 kHz server (the engine resamples the model's output).

The shared 2-core machine drops a few JACK cycles now and then: tests report xruns and late blocks
and allow the samples of those periods to differ, never more.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bandlift.rt.cli import main
from jack_server import JackServer, PipeWireServer, PulseServer, build_model, running_jack, sounddevice_rescan

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(not JackServer.available(), reason="jackd/jack_lsp not installed (apt jackd2)")]
PERIOD = 128
LIVE_ATTEMPTS = 5  # runs of a test that needs one without an overload bypass on this shared machine


@pytest.fixture(scope="module")
def jack():
    with running_jack(48000, PERIOD) as server:
        yield server


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"conv": build_model(d / "conv.onnx", "conv", delay=0),
            "conv2": build_model(d / "conv2.onnx", "conv", delay=2),
            "slow": build_model(d / "slow.onnx", "delay", slow_matmuls=16),
            "nan": build_model(d / "nan.onnx", "nan", fault_after=24000, fault_until=30000)}


@pytest.fixture(scope="module")
def jack44():
    with running_jack(44100, PERIOD) as server:
        yield server


def live(tmp_path, model, source, seconds, *extra, out_rate=48000):
    rec, js = tmp_path / "rec.wav", tmp_path / "live.json"
    rc = main(["live", "--input", "loopback", "--output", "loopback", "--model", str(model), "--source",
               str(source), "--record", str(rec), "--seconds", str(seconds), "--json", str(js), "--quiet",
               "--rate", str(out_rate), *extra])
    assert rc == 0
    result = json.loads(js.read_text())
    print(f"\nlive run: xruns {result['xruns']}, late blocks {result['late_blocks']}, "
          f"block p99 {result['block_ms_p99']:.3f} ms, latency {result['latency_ms']:.2f} ms")
    recorded, rate = sf.read(str(rec), dtype="float32", always_2d=True)
    assert rate == out_rate
    return recorded, result


def noise(path, rate, seconds, channels=1):
    x = (np.random.default_rng(rate).standard_normal((int(rate * seconds), channels)) * 0.1).astype(np.float32)
    sf.write(str(path), x, rate, subtype="FLOAT")
    return x


def period_offsets(recorded, offline, lag, period=PERIOD, reach=3):
    """For each device period of the recording after `lag`: the shift (in periods) at which it equals
    the offline output exactly, or None. A dropped JACK cycle shifts what the loopback returns by one
    period from then on, so shifts may change at xruns, never elsewhere."""
    shifts = []
    for start in range(lag, len(recorded) - period, period):
        got = recorded[start:start + period]
        found = None
        for j in sorted(range(-reach, reach + 1), key=abs):
            k = start - lag + j * period
            if 0 <= k and k + period <= len(offline) and np.array_equal(got, offline[k:k + period]):
                found = j
                break
        shifts.append(found)
    return shifts


@pytest.mark.parametrize("rate,channels,model", [(48000, 1, "conv"), (16000, 1, "conv2"), (44100, 2, "conv")])
def test_live_output_equals_offline_upsample(jack, models, tmp_path, rate, channels, model):
    check_live_equals_offline(tmp_path, models[model], rate, channels, 48000)


def first_bypass_s(result) -> float | None:
    """When the run's first bypass began (seconds of output), from its JSON's `bypasses` lines."""
    times = [float(re.search(r"bypass at ([0-9.]+) s", line).group(1)) for line in result["bypasses"]]
    return min(times, default=None)


def live_until_no_early_bypass(tmp_path, model, src, earliest_s, out_rate, *extra):
    """A 3 s live run whose first overload bypass (the shared machine's) came at `earliest_s` or later,
    if any, in LIVE_ATTEMPTS tries: (recording, JSON result, first bypass in s or None)."""
    for _ in range(LIVE_ATTEMPTS):
        recorded, result = live(tmp_path, model, src, 3.0, *extra, out_rate=out_rate)
        bypass_s = first_bypass_s(result)
        if bypass_s is None or bypass_s >= earliest_s:
            return recorded, result, bypass_s
        print(f"retrying: an overload bypass at {bypass_s} s under machine load")
    raise AssertionError("every attempt fell back to bypass early: the machine is overloaded")


def check_live_equals_offline(tmp_path, model, rate, channels, out_rate):
    """Live output equals the offline one sample for sample, up to the first overload bypass if the
    shared machine caused one (a bypass changes the data by design): at least 1.5 s of the 3 s."""
    src = tmp_path / "src.wav"
    noise(src, rate, 3.0, channels)
    recorded, result, bypass_s = live_until_no_early_bypass(tmp_path, model, src, 1.5, out_rate,
                                                             "--channels", str(channels))
    offline = tmp_path / "offline.wav"
    assert main(["upsample", str(src), str(offline), "--model", str(model), "--block", "128", "--rate",
                 str(out_rate), "--no-delay-compensation", "--input-cutoff", "nyquist"]) == 0
    off, _ = sf.read(str(offline), dtype="float32", always_2d=True)
    # the loopback returns what the engine played after buffering + device latency; the engine
    # delay (resamplers + model) is inside both streams
    lag = result["buffering_samples"] + result["device_latency_samples"]
    assert result["latency_samples"] == lag + result["engine_delay_samples"]
    assert len(recorded) - lag >= 2.5 * out_rate
    shifts = period_offsets(recorded, off, lag)[: len(off) // PERIOD - 4]
    if bypass_s is not None:  # the periods before the bypass's crossfade
        shifts = shifts[: int(bypass_s * out_rate) // PERIOD - 2]
    glitches = result["xruns"] + result["late_blocks"]
    bad = sum(s is None for s in shifts)
    known = [s for s in shifts if s is not None]
    changes = sum(a != b for a, b in zip(known, known[1:]))
    print(f"{bad} of {len(shifts)} periods differ, shift changes {changes} ({glitches} xruns + late blocks)")
    assert known[0] == 0  # starts aligned exactly at the declared lag
    if glitches == 0:
        assert shifts == [0] * len(shifts)  # and stays so, sample for sample
    assert bad <= 3 * glitches + 2 and changes <= glitches


@pytest.mark.parametrize("rate", [48000, 16000])
def test_roundtrip_equals_declared_latency(jack, models, tmp_path, rate):
    check_roundtrip(tmp_path, models["conv"], rate, 48000)


def check_roundtrip(tmp_path, model, rate, out_rate):
    from bandlift.rt.cli.bench import click_train

    n = int(rate * 3.0)
    x, clicks = click_train(n, rate, 1, every_s=0.2)
    assert not (clicks * out_rate % rate).any()  # each click sits on an output sample
    src = tmp_path / "clicks.wav"
    sf.write(str(src), x, rate, subtype="FLOAT")
    # clicks are measured up to an overload bypass the shared machine caused (it changes the data by
    # design): at least 8 of the 15, else the run is tried again
    recorded, result, bypass_s = live_until_no_early_bypass(tmp_path, model, src, 1.7, out_rate)
    declared = result["latency_samples"]
    before = clicks if bypass_s is None else clicks[clicks < (bypass_s - 0.05) * rate]
    windows = [(c, recorded[c + declared - 200: c + declared + 200, 0]) for c in before * out_rate // rate]
    windows = [(c, w) for c, w in windows if len(w) == 400]
    loudest = max(float(np.abs(w).max()) for _, w in windows)
    # a window without its click (a dropped JACK cycle took it) has no peak to measure
    measured = np.array([c + declared - 200 + int(np.argmax(np.abs(w))) - c for c, w in windows
                         if np.abs(w).max() > 0.5 * loudest])
    print(f"declared {declared} samples, measured {np.unique(measured, return_counts=True)}")
    assert len(measured) >= 8
    values, counts = np.unique(measured, return_counts=True)
    assert values[np.argmax(counts)] == declared
    # anything else is a whole JACK period off (a dropped cycle shifts the loopback), one per xrun
    assert all((m - declared) % PERIOD == 0 for m in measured)
    assert len(values) <= 1 + result["xruns"]


def test_slow_model_crossfades_to_bypass_without_glitches(jack, models, tmp_path):
    rate = 48000
    t = np.arange(rate * 3) / rate
    sine = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    src = tmp_path / "sine.wav"
    sf.write(str(src), sine, rate, subtype="FLOAT")
    # enough margin to absorb one slow block: the overload then costs a crossfade, not a dropout
    recorded, result = live(tmp_path, models["slow"], src, 3.0, "--margin", "1024")
    assert result["overloads"] >= 1 and result["deadline_misses"] >= 1
    # hold time doubles (0.5 s, 1 s, ...): a few retries in 3 s, not one per block
    assert result["bypass_events"] <= 4
    lag = result["latency_samples"]
    body = recorded[lag + 64: lag + len(sine) - 64, 0]
    step = np.abs(np.diff(body))
    max_step = np.abs(np.diff(sine)).max()
    jumps = int((step > 1.5 * max_step).sum())
    glitches = result["xruns"] + result["late_blocks"]
    print(f"overloads {result['overloads']}, bypass events {result['bypass_events']}, jumps {jumps}, "
          f"xruns+late {glitches}")
    assert jumps <= 2 * glitches
    assert np.abs(body).max() <= 0.5 + 1e-6


def test_nan_model_is_caught_live(jack, models, tmp_path, capsys):
    src = tmp_path / "n.wav"
    x = noise(src, 48000, 2.0)
    recorded, result = live(tmp_path, models["nan"], src, 2.0)
    assert np.isfinite(recorded).all()
    assert result["faults_nan"] >= 1 and result["bypass_events"] >= 1
    err = capsys.readouterr().err
    assert err.count("bypass at ") == result["bypass_events"] and ": non-finite model output" in err
    assert np.abs(recorded).max() <= np.abs(x).max() * 1.2


def test_devices_listed_and_bad_device_is_clear(jack, models, capsys):
    assert main(["live", "--list-devices"]) == 0
    assert "loopback" in capsys.readouterr().out
    assert main(["live", "--input", "no-such-device", "--model", str(models["conv"]), "--seconds", "1"]) == 2
    assert "no input device matches 'no-such-device'" in capsys.readouterr().err


def test_stopped_server_ends_run_with_clear_error(models, tmp_path):
    server = JackServer(48000, PERIOD).start()
    try:
        proc, lines = start_live(server.env, "--input", "loopback", "--output", "loopback",
                                 "--model", str(models["conv"]), "--seconds", "60", "--quiet")
        time.sleep(0.5)
        server.stop()
        stopped = time.monotonic()
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("live kept running after the JACK server stopped")
        took = time.monotonic() - stopped
    finally:
        server.stop()
    print(f"ended {took:.1f} s after the server stopped: {err.strip()}")
    assert proc.returncode == 2 and "server stopped" in err and took < 5


def test_keys_toggle_bypass_and_ctrl_c_stops_cleanly(jack, models, tmp_path):
    import pty
    import select

    src, js = tmp_path / "sine.wav", tmp_path / "keys.json"
    sf.write(str(src), (0.3 * np.sin(2 * np.pi * 220 * np.arange(48000 * 20) / 48000)).astype(np.float32), 48000)
    cli = "import sys; from bandlift.rt.cli import main; sys.exit(main())"
    pid, fd = pty.fork()
    if pid == 0:  # child: a live run on a terminal, Ctrl-C as a terminal gives it (whatever we inherited)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execv(sys.executable, [sys.executable, "-c", cli, "live", "--input", "loopback", "--output", "loopback",
                                  "--model", str(models["conv"]), "--source", str(src), "--seconds", "20",
                                  "--json", str(js)])
    out = b""

    def read_until(token: bytes, timeout: float) -> bool:
        nonlocal out
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    return False
                if token in out:
                    return True
        return False

    try:
        assert read_until(b"keys: b bypass", 60), out.decode(errors="replace")
        assert read_until(b"| model |", 5)  # the status line runs
        os.write(fd, b"b")
        assert read_until(b"| BYPASS |", 5)
        os.write(fd, b"b+")
        assert read_until(b"gain +1 dB", 5)
        os.write(fd, b"\x03")  # Ctrl-C
        assert read_until(b"ran ", 10), out.decode(errors="replace")
        read_until(b"never", 1)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.WEXITSTATUS(status) == 0
    result = json.loads(js.read_text())
    assert result["bypass_events"] >= 1 and result["seconds"] < 15


def test_two_streams_path_is_exact_too(jack, models, tmp_path):
    """Separate input and output streams (the path for an input device at another rate, e.g. a 16 kHz
    headset): JACK runs one rate, so both run at 48 kHz here, forced apart. Their start order sets the
    alignment, so the lag is searched near the declared latency; the data must then be exact."""
    from bandlift.rt.engine import StreamEngine
    from bandlift.rt.io.devices import find_device
    from bandlift.rt.io.runner import LiveRunner
    from bandlift.rt.model.session import ModelSession

    x = (np.random.default_rng(7).standard_normal((48000 * 3, 1)) * 0.1).astype(np.float32)
    session = ModelSession(models["conv"])
    engine = StreamEngine(session, 48000, 48000, 1, 128)
    runner = LiveRunner(engine, find_device("loopback", "input"), find_device("loopback", "output"), frames=PERIOD,
                        source=x, record_seconds=3.5, two_streams=True)
    assert not runner.duplex
    summary = runner.run(3.0)
    rec = runner.recorded()
    offline = StreamEngine(ModelSession(models["conv"]), 48000, 48000, 1, 128).process(x.T).T
    declared = runner.buffering + runner.device_latency
    for start in range(24000, 48000 * 2, 12000):  # a probe where no xrun of the shared machine fell
        probe = offline[start:start + PERIOD]
        lags = [lag for lag in range(max(declared - 4 * PERIOD, 0), declared + 4 * PERIOD + 1)
                if np.array_equal(rec[start + lag:start + lag + PERIOD], probe)]
        if lags:
            break
    print(f"\ntwo streams: declared {declared}, found lag {lags} at {start / 48000} s, xruns {summary.xruns}, "
          f"late {summary.late_blocks}, bypasses {engine.event_lines()}")
    assert len(lags) == 1 and abs(lags[0] - declared) <= PERIOD  # the callbacks may run in either order
    shifts = period_offsets(rec, offline, lags[0])[: len(offline) // PERIOD - 8]
    glitches = summary.xruns + summary.late_blocks
    assert sum(s is None for s in shifts) <= 3 * glitches + 2


# -- a 44.1 kHz server: the model runs at 48 kHz, the engine resamples its output to 44.1 kHz ----------
@pytest.mark.parametrize("rate,channels,model", [(16000, 1, "conv2"), (44100, 2, "conv")])
def test_live_44k_output_equals_offline_upsample(jack44, models, tmp_path, rate, channels, model):
    check_live_equals_offline(tmp_path, models[model], rate, channels, 44100)


def test_live_44k_roundtrip_equals_declared_latency(jack44, models, tmp_path):
    check_roundtrip(tmp_path, models["conv2"], 16000, 44100)


def test_audio_callback_never_waits_for_the_gil(jack, models):
    """The callback is a C function: it keeps the device fed while a Python thread holds the GIL (a
    Python callback would stall until the holder lets go: an xrun on every long Python step)."""
    from bandlift.rt.engine import StreamEngine
    from bandlift.rt.io.callbacks import CALLBACKS
    from bandlift.rt.io.devices import find_device
    from bandlift.rt.io.runner import LiveRunner
    from bandlift.rt.model.session import ModelSession

    jack.activate()  # the 44.1 kHz server's tests may have pointed PortAudio elsewhere
    sounddevice_rescan()
    eng = StreamEngine(ModelSession(models["conv"]), 48000, 48000, 1, PERIOD, realtime=True)
    runner = LiveRunner(eng, find_device("loopback", "input"), find_device("loopback", "output"), frames=PERIOD)
    runner.start()
    try:
        time.sleep(0.3)
        switch = sys.getswitchinterval()
        sys.setswitchinterval(10.0)  # no other thread gets the GIL from this one for 10 s
        try:
            before, start = int(runner.stats[CALLBACKS]), time.perf_counter()
            while time.perf_counter() - start < 0.5:  # pure Python: the GIL stays here
                pass
            during, elapsed = int(runner.stats[CALLBACKS]) - before, time.perf_counter() - start
        finally:
            sys.setswitchinterval(switch)
    finally:
        runner.stop()
    assert runner.error is None
    assert during >= 0.8 * elapsed * 48000 / PERIOD, f"{during} callbacks in {elapsed:.2f} s"


WARM_UP_COVERS_THE_WORKER = """
import sys, time
import numba
import numpy as np
from bandlift.rt import engine as e
from bandlift.rt.dsp import resample, ringbuffer
from bandlift.rt.io import callbacks
from bandlift.rt.io.devices import find_device
from bandlift.rt.io.runner import LiveRunner
from bandlift.rt.model.session import ModelSession

def compiled():
    return {(m.__name__, k): len(f.signatures) for m in (e, resample, ringbuffer, callbacks)
            for k, f in vars(m).items() if isinstance(f, numba.core.registry.CPUDispatcher)}

eng = e.StreamEngine(ModelSession(None), int(sys.argv[1]), 48000, int(sys.argv[2]), None, realtime=True)
runner = LiveRunner(eng, find_device("loopback", "input"), find_device("loopback", "output"),
                    source=np.zeros((int(sys.argv[1]), int(sys.argv[2])), np.float32))
runner.warm_up()
warm = compiled()
runner.start()
time.sleep(0.5)
runner.stop()
new = {k: n for k, n in compiled().items() if n != warm[k]}
print("first compiled in the live run:", new, "bypass events:", eng.event_lines())
sys.exit(1 if new or runner.error else 0)
"""


@pytest.mark.parametrize("rate,channels", [(48000, 1), (16000, 2)])
def test_warm_up_runs_everything_the_worker_runs(jack, rate, channels):
    """Issue 22: the worker's first step loaded JIT code (the ring reads, another array layout) and
    ran late, so `live` started in bypass. After the warm-up, a live run compiles or loads nothing
    more (a fresh process: nothing from other tests is warm)."""
    result = subprocess.run([sys.executable, "-c", WARM_UP_COVERS_THE_WORKER, str(rate), str(channels)],
                            env=jack.env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


def test_live_starts_in_the_model(jack, tmp_path):
    """`bandlift live` with the shipped model, 5 starts: they start in the model (issue 22: a cold
    model made the first blocks late, `bypass at 0.00 s: overload (late block)` in 3 of 3 runs). The
    shared machine may make a block late at any time, once in a while in the first 50 ms: most starts,
    not every one, must be clean there."""
    bandlift = str(Path(sys.executable).with_name("bandlift"))
    starts = []
    for _ in range(5):
        result = subprocess.run([bandlift, "live", "--input", "loopback", "--output", "loopback", "--seconds", "1",
                                 "--json", str(tmp_path / "live.json")], env=jack.env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        lines = result.stderr.splitlines()
        starts.append([line.strip() for line in lines if re.search(r"bypass at 0\.0[0-4] s", line)])
    print(starts)
    assert sum(bool(lines) for lines in starts) <= 2, starts


def test_live_start_line_counts_one_block_in_the_singular(jack, models, capsys):
    """At the JACK period of one block the buffering is one block: "1 block of 128", not "1 blocks"."""
    assert main(["live", "--input", "loopback", "--output", "loopback", "--model", str(models["conv"]),
                 "--seconds", "0.3", "--block", str(PERIOD)]) == 0
    err = capsys.readouterr().err
    assert f"(1 block of {PERIOD}:" in err and "1 blocks" not in err, err


@pytest.mark.parametrize("server_kind", [PulseServer, PipeWireServer])
def test_loopback_captures_what_the_machine_plays(tmp_path, server_kind):
    """--loopback records the default sink's monitor (null sinks: the tone paplay plays there comes
    back at the input); the output goes to a second sink so nothing feeds back. On PulseAudio and on
    PipeWire (pipewire-pulse)."""
    if not server_kind.available():
        pytest.skip(f"{server_kind.__name__}: its tools (or ALSA's pulse plugin) are not installed")
    server = server_kind(tmp_path / "pulse").start()
    rate = 48000
    tone = tmp_path / "tone.wav"
    # long enough to outlast a slow start under load (the player is stopped after the run)
    sf.write(str(tone), 0.3 * np.sin(2 * np.pi * 1000 * np.arange(30 * rate) / rate), rate, subtype="PCM_16")
    rec, js = tmp_path / "rec.wav", tmp_path / "live.json"
    try:
        player = subprocess.Popen(["paplay", str(tone)], env=server.env)
        time.sleep(0.5)
        cli = "import sys; from bandlift.rt.cli import main; sys.exit(main(sys.argv[1:]))"
        result = subprocess.run([sys.executable, "-c", cli, "live", "--loopback", "--output", "pulse",
                                 "--seconds", "5", "--record", str(rec), "--json", str(js), "--quiet"],
                                env={**server.env, "PULSE_SINK": "bl_out"}, capture_output=True, text=True,
                                timeout=60)
        player.terminate()
        player.wait(15)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-2000:]
    recorded, got_rate = sf.read(str(rec), always_2d=True)
    # --seconds is wall-clock time: a starved PulseAudio daemon (CI with a training run beside it) was
    # seen to deliver 0.77 s of audio in 3 s, so ask for 5 s and need half a second of tone
    assert got_rate == rate and len(recorded) > rate // 2, f"{len(recorded) / rate:.2f} s recorded"
    body = recorded[len(recorded) // 4:, 0]
    spectrum = np.abs(np.fft.rfft(body * np.hanning(len(body))))
    assert abs(np.fft.rfftfreq(len(body), 1 / rate)[spectrum.argmax()] - 1000) < 5
    assert np.sqrt(np.mean(body ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)
    assert json.loads(js.read_text())["frames"] == 1024  # the pulse-safe default period


# -- timing edges (issue 14): device period, slow servers, stalls, and what a dying run keeps ----------
CLI = "import sys; from bandlift.rt.cli import main; sys.exit(main())"


@pytest.mark.parametrize("frames", ["7", "100"])
def test_frames_that_do_not_fit_the_jack_period_are_refused(jack, models, tmp_path, capsys, frames):
    """PortAudio would split each 128-frame JACK cycle into back-to-back callbacks (bursts): the output
    broke up (a third of the samples right) with exit 0. Refused with one line instead."""
    jack.activate()
    sounddevice_rescan()
    src = tmp_path / "s.wav"
    noise(src, 48000, 1.0)
    rc = main(["live", "--input", "loopback", "--output", "loopback", "--model", str(models["conv"]), "--source",
               str(src), "--seconds", "1", "--quiet", "--frames", frames, "--record", str(tmp_path / "r.wav")])
    err = capsys.readouterr().err
    assert rc == 2 and f"--frames {frames} does not fit the JACK server's period of 128 frames" in err
    assert "Traceback" not in err


def start_live(env, *args):
    """A `bandlift live` subprocess; returns it once it printed its latency line (and those lines)."""
    proc = subprocess.Popen([sys.executable, "-c", CLI, "live", *args], env=dict(env, PYTHONUNBUFFERED="1"),
                            stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if line.startswith("latency") or not line:
            break
    assert any(ln.startswith("latency") for ln in lines), "".join(lines)
    return proc, lines


def test_slow_server_is_not_taken_for_a_dead_one(models, tmp_path):
    """A healthy JACK server whose period takes 1.5 s (6144 frames at 4096 Hz; the watchdog's floor is
    1 s): the watchdog follows the measured callback interval (no "server gone"), and the stream is
    stopped cleanly (PortAudio takes ~2.5 periods: no abandoned client, no crash at exit)."""
    server = JackServer(4096, 6144).start()
    try:
        proc, _ = start_live(server.env, "--input", "loopback", "--output", "loopback", "--model",
                             str(models["conv"]), "--seconds", "5", "--quiet", "--rate", "4096")
        _, err = proc.communicate(timeout=60)
    finally:
        server.stop()
    print(err)
    assert proc.returncode == 0, err
    assert "server gone" not in err and "could not be closed" not in err


def test_stall_resynchronises_at_the_declared_latency(jack, models, tmp_path):
    """The worker stalls for 4.5 s (this thread keeps the GIL): the input ring overflows, and the run goes
    on at the declared latency (a click train comes back where it should), reporting the resync. The
    run's statistics survive the resync (issue 23: a bypass before it was gone from the summary)."""
    from bandlift.rt.cli.bench import click_train
    from bandlift.rt.engine import StreamEngine
    from bandlift.rt.io.devices import find_device
    from bandlift.rt.io.runner import LiveRunner
    from bandlift.rt.model.session import ModelSession

    jack.activate()
    sounddevice_rescan()
    rate, seconds = 48000, 9.0
    x, clicks = click_train(int(rate * seconds), rate, 1, every_s=0.25)
    eng = StreamEngine(ModelSession(models["conv"]), rate, rate, 1, PERIOD)
    runner = LiveRunner(eng, find_device("loopback", "input"), find_device("loopback", "output"), frames=PERIOD,
                        source=x, record_seconds=seconds + 1)
    runner.start()
    try:
        time.sleep(0.5)
        eng.bypass = True  # a bypass event before the stall
        time.sleep(0.3)
        eng.bypass = False
        time.sleep(0.2)
        switch = sys.getswitchinterval()
        sys.setswitchinterval(30.0)
        try:
            start = time.perf_counter()
            while time.perf_counter() - start < 4.5:  # pure Python: the worker cannot run
                pass
        finally:
            sys.setswitchinterval(switch)
        time.sleep(seconds - 5.5)
    finally:
        runner.stop()
    summary = runner.summary()
    rec = runner.recorded()[:, 0]
    declared = runner.total_latency
    late = [c for c in clicks if c > 7 * rate and c + declared + 200 < len(rec)]  # well after the stall
    found = [declared - 200 + int(np.argmax(np.abs(rec[c + declared - 200:c + declared + 200]))) for c in late]
    print(f"\nresyncs {summary.resyncs}, declared {declared}, clicks after the stall at {found}")
    assert summary.resyncs >= 1 and summary.in_ring_full >= 1
    # the user's bypass at 0.5 s (or an overload of the shared machine's before it) is still counted
    assert any(sample / eng.model_rate < 1.0 for sample, _ in eng.stats.events), eng.event_lines()
    assert summary.engine["bypass_events"] == len(eng.stats.events)
    assert len(found) >= 4
    assert np.median(found) == declared


JACK_ANSWERS = """
import os, sys, time
from bandlift.rt.io.devices import find_device, jack_answers
device = find_device("loopback", "output")
print(jack_answers(device, "output"), flush=True)
sys.stdin.readline()  # the server is stopped now
start = time.monotonic()
print(jack_answers(device, "output"), f"{time.monotonic() - start:.2f}", flush=True)
os._exit(0)  # PortAudio's exit-time shutdown would wait on the dead server
"""


def test_a_stream_on_a_stopped_jack_server_is_not_reopened(models):
    """`bandlift live` reopens a stream the host API ended only while its JACK server answers: the
    predicate it gives the runner (`jack_answers`) is True while the server runs, False at once (well
    within the reopen's 2 s) after it stopped."""
    server = JackServer(48000, PERIOD).start()
    try:
        child = subprocess.Popen([sys.executable, "-c", JACK_ANSWERS], env=server.env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        running = child.stdout.readline().split()
        server.stop()
        child.stdin.write("\n")
        child.stdin.flush()
        stopped = child.stdout.readline().split()
        child.wait(30)
    finally:
        server.stop()
    print(f"\nwhile running: {running}, after the stop: {stopped}")
    assert running == ["True"] and stopped[0] == "False" and float(stopped[1]) < 1.0


def test_a_stalled_stream_is_reopened_at_the_declared_latency(models):
    """The JACK server is frozen (SIGSTOP) for 1.5 s: callbacks stop with the device still there, the
    watchdog hands the stream to run() after 1 s, the reopen waits (bounded) for the server to answer,
    and the run goes on: one reopen, no error, and a click train comes back at the declared latency
    after it (the output timeline restarted as after a stall)."""
    from bandlift.rt.cli.bench import click_train
    from bandlift.rt.engine import StreamEngine
    from bandlift.rt.io.devices import find_device, jack_answers
    from bandlift.rt.io.runner import LiveRunner
    from bandlift.rt.model.session import ModelSession

    rate, seconds = 48000, 8.0
    x, clicks = click_train(int(rate * seconds), rate, 1, every_s=0.25)
    with running_jack(rate, PERIOD) as server:
        devices = find_device("loopback", "input"), find_device("loopback", "output")
        runner = LiveRunner(StreamEngine(ModelSession(models["conv"]), rate, rate, 1, PERIOD), *devices,
                            frames=PERIOD, source=x, record_seconds=seconds + 1,
                            can_reopen=lambda: jack_answers(devices[0], "input") and jack_answers(devices[1]))

        def freeze():
            time.sleep(2.0)
            os.kill(server.proc.pid, signal.SIGSTOP)
            time.sleep(1.5)
            os.kill(server.proc.pid, signal.SIGCONT)

        import threading

        freezer = threading.Thread(target=freeze)
        freezer.start()
        try:
            summary = runner.run(seconds)
        finally:
            freezer.join()
    rec = runner.recorded()[:, 0]
    declared = runner.total_latency
    after = [c for c in clicks if c > 3 * rate and c + declared + 200 < len(rec)]  # well after the reopen
    found = [declared - 200 + int(np.argmax(np.abs(rec[c + declared - 200:c + declared + 200]))) for c in after]
    print(f"\n{runner.reopen_lines}, recorded {len(rec) / rate:.2f} s, declared {declared}, clicks after at {found}")
    assert summary.reopens == 1 and runner.error is None
    assert "no audio callbacks for" in runner.reopen_lines[0]
    assert len(found) >= 4 and np.median(found) == declared


LEFT_BEHIND = """
import json, sys, threading
from bandlift.rt.cli.bench import click_train
from bandlift.rt.engine import StreamEngine
from bandlift.rt.io.devices import find_device
from bandlift.rt.io.runner import LOST, LiveRunner
from bandlift.rt.model.session import ModelSession

class WontClose:
    # a real stream whose abort, stop and close never return, as PortAudio's ALSA pulse stream in CI
    def __init__(self, stream):
        self.stream = stream
    def abort(self, **_):
        threading.Event().wait()
    stop = close = abort
    def __getattr__(self, name):
        return getattr(self.stream, name)

class Runner(LiveRunner):
    opened = 0
    def _open_streams(self):
        Runner.opened += 1
        streams = super()._open_streams()
        return [WontClose(s) for s in streams] if Runner.opened == 1 else streams

rate, seconds, period = 48000, 7.0, int(sys.argv[2])
x, clicks = click_train(int(rate * seconds), rate, 1, every_s=0.25)
runner = Runner(StreamEngine(ModelSession(sys.argv[1]), rate, rate, 1, period), find_device("loopback", "input"),
                find_device("loopback", "output"), frames=period, source=x, record_seconds=seconds + 1)
threading.Timer(2.0, lambda: runner._stream_lost("stalled (test)", LOST)).start()
summary = runner.run(seconds)
rec = runner.recorded()[:, 0]
declared = runner.total_latency
after = [c for c in clicks if c > 4 * rate and c + declared + 200 < len(rec)]
found = [declared - 200 + int(abs(rec[c + declared - 200:c + declared + 200]).argmax()) for c in after]
old_active = [s.stream.active for s in runner._retired[0][1]] if runner._retired else None
print(json.dumps(dict(reopens=summary.reopens, error=runner.error, lines=runner.reopen_lines, declared=declared,
                      found=found, old_active=old_active)))
"""


def test_a_stream_that_will_not_close_is_left_behind_and_replaced(jack, models):
    """CI: after the server ended a pulse stream, PortAudio's abort and close of it never returned, and
    the reopen gave up ("the audio stream could not be closed cleanly"). Here the first streams' abort,
    stop and close never return while the real JACK streams keep calling back; a stall is reported at
    2 s. The reopen leaves them behind after CLOSE_S and opens new ones: one reopen, no error, clicks
    at the declared latency after it; the old streams' next callback ended them (no longer active),
    so nothing of theirs runs at the process's exit (it exits 0: no crash in the teardown)."""
    result = subprocess.run([sys.executable, "-c", LEFT_BEHIND, str(models["conv"]), str(PERIOD)], env=jack.env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    print(got)
    assert got["reopens"] == 1 and got["error"] is None and "left behind" in got["lines"][0]
    assert got["old_active"] == [False]
    assert len(got["found"]) >= 4 and np.median(got["found"]) == got["declared"]


def test_sigterm_and_a_dying_server_keep_the_recording_and_summary(models, tmp_path):
    for ending in ("sigterm", "server"):
        server = JackServer(48000, PERIOD).start()
        rec, js = tmp_path / f"{ending}.wav", tmp_path / f"{ending}.json"
        try:
            proc, _ = start_live(server.env, "--input", "loopback", "--output", "loopback", "--model",
                                 str(models["conv"]), "--seconds", "60", "--quiet", "--record", str(rec),
                                 "--json", str(js))
            time.sleep(1.5)
            if ending == "sigterm":
                proc.send_signal(15)
            else:
                server.stop()
            _, err = proc.communicate(timeout=20)
        finally:
            server.stop()
        print(f"{ending}: rc {proc.returncode}: {err.strip()}")
        assert proc.returncode == (0 if ending == "sigterm" else 2), err
        assert "Traceback" not in err
        recorded, rate = sf.read(str(rec))
        result = json.loads(js.read_text())
        assert rate == 48000 and len(recorded) >= 1.0 * rate
        assert result["callbacks"] > 0 and (result["error"] is None) == (ending == "sigterm")


# -- under load (issue 10, item 5) -----------------------------------------------------------------
def test_under_cpu_stress_output_stays_continuous_and_the_model_comes_back(jack, models, tmp_path):
    """Both cores busy (one busy process per core) from 2 s to 5 s, with a slowed model (about a quarter
    of the block's time on an idle machine) whose output equals the bypass path (delay 96, like the
    shipped model): whatever overloads happen cost crossfades, not runs of clicks, and the model plays
    again once the load is gone. The shared machine's own load may cause later overloads, each doubling
    the hold up to MAX_HOLD_S: the run goes on until the model has played for half a second after the
    load, for two of the longest holds at most (the test asserts a return, not the absence of overloads)."""
    from bandlift.rt.cli.bench import CpuStress
    from bandlift.rt.engine import HOLD_S, StreamEngine
    from bandlift.rt.io.callbacks import REC_POS
    from bandlift.rt.io.devices import find_device
    from bandlift.rt.io.runner import LiveRunner
    from bandlift.rt.model.session import ModelSession
    from bandlift.rt.states import MAX_HOLD_S

    jack.activate()
    sounddevice_rescan()
    rate, load_end = 48000, 5.0
    longest = load_end + 2 * MAX_HOLD_S + 1.0
    model = build_model(tmp_path / "slow96.onnx", "delay", delay=96, frame=32, slow_matmuls=1)
    sine = (0.5 * np.sin(2 * np.pi * 220 * np.arange(int(rate * longest)) / rate)).astype(np.float32)[:, None]
    eng = StreamEngine(ModelSession(model), rate, rate, 1, PERIOD)
    runner = LiveRunner(eng, find_device("loopback", "input"), find_device("loopback", "output"), frames=PERIOD,
                        source=sine, record_seconds=longest + 1, margin=256)
    stress = CpuStress()
    stress.during(2.0, load_end)
    played_at_load_end = []  # the engine's count of blocks the model played, once the load is over
    enough = int(0.5 * rate / PERIOD)

    def tick(r):
        if time.monotonic() - r._started <= load_end:
            return False
        if not played_at_load_end:
            played_at_load_end.append(eng.stats.played_blocks)
        # and the recording holds the load and half a second after it (its first callback may come late)
        recorded = int(r.stats[REC_POS]) - r.total_latency - 64
        return eng.stats.played_blocks - played_at_load_end[0] >= enough and recorded > (load_end + 0.6) * rate

    try:
        summary = runner.run(longest, tick, tick_s=0.1)
    finally:
        stress.stop()
    lag = runner.total_latency
    body = runner.recorded()[lag + 64: lag + len(sine) - 64, 0]
    jumps = int((np.abs(np.diff(body)) > 1.5 * np.abs(np.diff(sine[:, 0])).max()).sum())
    glitches = summary.xruns + summary.late_blocks
    played_after = eng.stats.played_blocks - played_at_load_end[0]
    print(f"\nstress: ran {summary.seconds:.1f} s, xruns {summary.xruns}, late blocks {summary.late_blocks}, "
          f"bypass events {summary.engine['bypass_events']} {eng.event_lines()}, longest bypass "
          f"{summary.engine['longest_bypass_blocks'] * eng.block_seconds:.2f} s, jumps {jumps}, p99 "
          f"{summary.engine['block_ms_p99']:.3f} ms, model played {played_after} blocks after the load")
    assert len(body) > (load_end + 0.5) * rate  # the load and after (xruns drop recorded periods)
    assert jumps <= 2 * glitches  # a jump only where the device itself dropped data
    assert played_after > 0, "the model never came back after the load"
    # never a cascade: each bypass holds at least HOLD_S, so events (crossfades) are that far apart
    times = [sample / eng.model_rate for sample, _ in eng.stats.events]
    assert all(b - a >= HOLD_S for a, b in zip(times, times[1:])), times


def test_bench_live_stress_reports_the_load_figures(jack, models, tmp_path):
    js = tmp_path / "b.json"
    assert main(["bench", "--live", "--stress", "--input", "loopback", "--output", "loopback", "--block", "128",
                 "--seconds", "3", "--model", str(models["conv"]), "--json", str(js)]) == 0
    result = json.loads(js.read_text())
    assert result["stress"].endswith("busy processes from 20 % to 60 % of the run")
    for key in ("xruns", "late_blocks", "bypass_events", "longest_bypass_s", "model_at_end", "bypasses"):
        assert key in result

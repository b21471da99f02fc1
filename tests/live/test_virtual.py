"""`bandlift live --virtual-mic/--virtual-sink` on a private PulseAudio server: what a real recording
client (parec) captures from the virtual microphone equals offline `bandlift upsample`, and the
server's modules are gone after every kind of exit."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from bandlift.rt.cli import main
from bandlift.rt.io.runner import MAX_REOPENS, REOPEN_WINDOW_S
from jack_server import PipeWireServer, PulseServer, build_model

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(not PulseServer.available(), reason="pulseaudio/pactl/ALSA pulse plugin missing")]
CLI = "import sys; from bandlift.rt.cli import main; sys.exit(main())"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("models") / "conv2.onnx", "conv", delay=2)


def owned(server) -> list[str]:
    out = subprocess.run(["pactl", "list", "short", "modules"], env=server.env, capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "bandlift.owner=" in line]


def start_live(server, *args):
    # Ctrl-C as a terminal gives it, whatever this process inherited (a background job ignores SIGINT)
    proc = subprocess.Popen([sys.executable, "-c", CLI, "live", *args], env=dict(server.env, PYTHONUNBUFFERED="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines.append(proc.stderr.readline())
        if lines[-1].startswith("latency") or not lines[-1]:
            break
    assert lines[-1].startswith("latency"), "".join(lines)
    return proc


def inserted_silence(seg: np.ndarray, run: int = 16) -> bool:
    """A run of `run` exact zeros: silence the server inserted at an underrun (the signals here, noise
    and a tone, never hold that many)."""
    edges = np.diff(np.concatenate([[0], (seg == 0).astype(np.int8), [0]]))
    return bool(((np.nonzero(edges == -1)[0] - np.nonzero(edges == 1)[0]) >= run).any())


def chunk_matches(captured, offline, chunk=512):
    """For each non-silent chunk of `captured` without inserted silence: its normalised correlation with
    `offline` at the best alignment, and whether it is bit-exact there. Chunks are short so that the
    server's rate adaptation (~1 sample per 1024) shifts one by well under a sample; chunks holding an
    underrun's silence are left out (a loaded machine has one every few periods: issue 22 saw a median
    of 0.879 over all 1024-sample chunks), their count is returned."""
    corr, exact, gaps = [], [], 0
    for start in range(0, len(captured) - chunk, chunk):
        seg = captured[start:start + chunk].astype(np.float64)
        if not np.abs(seg).max() > 0:
            continue
        if inserted_silence(seg):
            gaps += 1
            continue
        c = np.correlate(offline, seg, "valid")
        k = int(np.argmax(c))
        corr.append(c[k] / (np.linalg.norm(seg) * np.linalg.norm(offline[k:k + chunk]) + 1e-12))
        exact.append(np.array_equal(offline[k:k + chunk], captured[start:start + chunk]))
    return np.array(corr), np.array(exact), gaps


def playing_level(body: np.ndarray, rate: int) -> float:
    """RMS while it plays: the median over 10 ms blocks without inserted silence (underruns are timing,
    not level: issue 22 saw 0.162 for 0.212 over a stretch with gaps)."""
    n = rate // 100
    blocks = [b for b in body[: len(body) // n * n].reshape(-1, n) if not inserted_silence(b)]
    return float(np.median([np.sqrt(np.mean(b.astype(np.float64) ** 2)) for b in blocks]))


def server_timing(y: np.ndarray, every: int = 1500, gap: int = 240, ratio: float = 1 + 1 / 1024) -> np.ndarray:
    """`y` as a loaded sound server delivers it: rate-adapted, with an underrun's silence every 31 ms."""
    import soxr

    y = soxr.resample(y, 48000, 48000 / ratio).astype(np.float32)
    return np.concatenate([part for s in range(0, len(y), every) for part in (y[s:s + every], np.zeros(gap, np.float32))])


def test_the_measures_see_through_the_servers_timing():
    """The two measures below, on what a loaded server makes of a signal (rate adapted, gaps), find
    the signal: the correlation of the chunks and the level of a tone."""
    import soxr

    noise = soxr.resample(np.random.default_rng(1).standard_normal(16000 * 3) * 0.1, 16000, 48000).astype(np.float32)
    corr, _, gaps = chunk_matches(server_timing(noise), noise)
    assert np.median(corr) >= 0.95 and gaps > 0 and len(corr) > 48000 // 512
    tone = (0.3 * np.sin(2 * np.pi * 1000 * np.arange(96000) / 48000)).astype(np.float32)
    assert playing_level(server_timing(tone), 48000) == pytest.approx(0.3 / np.sqrt(2), rel=0.02)


def test_virtual_mic_capture_equals_offline_upsample(model, tmp_path):
    """16 kHz in, 48 kHz float32 through the virtual mic: the server converts no format (null sink and
    remap source at 48 kHz float32, streams at 100 % volume), so captured chunks are bit-exact copies of
    the offline output while the server's streams run steadily (most runs: about half the chunks). But
    the timing is the server's: it adapts a stream's rate (resampling, ~1 sample per 1024, for seconds or
    the whole capture on this loaded machine) and inserts silence when the pulse ALSA client underruns.
    So the tolerance is per 512-sample chunk at its best alignment, underruns' chunks left out (see
    `chunk_matches`): median normalised correlation >= 0.9 (a chunk of unrelated noise band-limited
    to 8 kHz reaches ~0.4 at its best of the ~400k alignments)."""
    server = PulseServer(tmp_path / "pulse").start()
    src, cap, js = tmp_path / "src.wav", tmp_path / "cap.raw", tmp_path / "live.json"
    x = (np.random.default_rng(0).standard_normal((16000 * 9, 1)) * 0.1).astype(np.float32)
    sf.write(str(src), x, 16000, subtype="FLOAT")
    try:
        proc = start_live(server, "--virtual-mic", "bl_mic", "--input", "pulse", "--source", str(src),
                          "--model", str(model), "--seconds", "9", "--quiet", "--json", str(js))
        assert len(owned(server)) == 2  # null sink + remap source, marked as bandlift's
        listing = subprocess.run([sys.executable, "-c", CLI, "live", "--list-devices"], env=server.env,
                                 capture_output=True, text=True, timeout=60).stdout
        assert "source bl_mic   [bandlift's own" in listing and "bl_play" in listing
        rec = record_mic(server, cap)
        time.sleep(6.0)
        rec.terminate()
        rec.wait(10)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert owned(server) == []  # removed on a normal end
    finally:
        server.stop()
    captured, corr, exact, gaps = capture_against_offline(src, model, tmp_path, cap)
    print(f"\ncaptured {len(captured) / 48000:.2f} s: {len(corr)} chunks, correlation median "
          f"{np.median(corr):.5f} min {corr.min():.3f}, bit-exact {exact.sum()}, {gaps} with an underrun's "
          f"silence; {json.loads(js.read_text())['late_blocks']} late blocks")
    assert len(corr) + gaps > 3 * 48000 // 512 and len(corr) > 48000 // 512
    assert np.median(corr) >= 0.9


def server_command(server, line: str) -> None:
    """Run `line` in the server's own command interface (module-cli-protocol-unix, what pacmd talks to:
    pactl 16.1 has no kill-* commands, and pacmd refuses a daemon started without a pid file)."""
    import socket

    path = server.runtime_dir / "pulse" / "cli"
    if not path.exists():
        subprocess.run(["pactl", "load-module", "module-cli-protocol-unix"], env=server.env, check=True,
                       capture_output=True, timeout=10)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(line.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)  # end of commands (the CLI's "exit" would stop the daemon)
        answer = b"".join(iter(lambda: sock.recv(4096), b""))
    assert not answer.strip(), f"{line}: {answer.decode(errors='replace')}"


def stream_of(server, pid: int, kind: str, timeout: float = 10.0) -> int:
    """The index of process `pid`'s stream among the server's `kind` (source-outputs or sink-inputs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["pactl", "-f", "json", "list", kind], env=server.env, capture_output=True, text=True,
                             timeout=10).stdout
        mine = [s["index"] for s in json.loads(out or "[]")
                if s["properties"].get("application.process.id") == str(pid)]
        if mine:
            return mine[0]
        time.sleep(0.1)
    raise AssertionError(f"no {kind} stream of pid {pid}")


class StderrLines:
    """A process's stderr, read line by line in a thread (so that a test can wait for a line)."""

    def __init__(self, proc):
        import threading

        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        self.thread.start()

    def wait_for(self, text: str, count: int = 1, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(text in line for line in self.lines) < count:
            assert time.monotonic() < deadline, f"no {count}x {text!r} in:\n{''.join(self.lines)}"
            time.sleep(0.05)

    def text(self) -> str:
        self.thread.join(30)
        return "".join(self.lines)


def capture_against_offline(src, model, tmp_path, cap):
    """The raw capture at `cap` and `chunk_matches` of it against `bandlift upsample` of `src` offline
    (block 128, no delay compensation: as the live run plays it)."""
    offline = tmp_path / "offline.wav"
    assert main(["upsample", str(src), str(offline), "--model", str(model), "--block", "128",
                 "--no-delay-compensation", "--input-cutoff", "nyquist"]) == 0
    off, _ = sf.read(str(offline), dtype="float32")
    captured = np.fromfile(cap, np.float32)
    return captured, *chunk_matches(captured, off)


def record_mic(server, path):
    return subprocess.Popen(["parec", "-d", "bl_mic", "--format=float32le", "--rate=48000", "--channels=1",
                             "--raw", str(path)], env=server.env)


def wait_for_sound(path, timeout: float = 15.0) -> None:
    """Until the raw float32 recording at `path` carries signal (bandlift's audio is flowing)."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and (np.abs(np.fromfile(path, np.float32)) > 0.01).any()):
        assert time.monotonic() < deadline, "no sound from the virtual mic"
        time.sleep(0.1)


def test_a_stream_the_server_ends_is_reopened_and_the_run_goes_on(model, tmp_path):
    """CI once saw PortAudio's ALSA host API end a capture stream through the pulse plugin 1.3 s in (an
    underrun it could not recover) while the device was still there: the run ended. Here the server
    itself ends bandlift's streams while the virtual mic stays, once its sound has flowed for about a
    second: `kill-source-output`, then, once that is reopened, `kill-sink-input` (sent to the server's
    command interface, see `server_command`). Each kill makes the plugin's poll fail
    (PaAlsaStream_WaitForFrames) and PortAudio end the stream and call its finished callback, the path
    of the CI failure (checked by hand on a bare sounddevice stream: the finished callback comes within
    a second of the kill). In 2 of 16 runs here a kill left the stream silent instead (snd_pcm_recover,
    no more callbacks, no finish): the watchdog hands that one to the same reopen. The run reopens both, goes on to its --seconds and exits 0 with `reopens` 2 in its
    summary, and what a recording client captures from the virtual mic after the reopens is the
    engine's output of the source, as offline `upsample` makes it."""
    server = PulseServer(tmp_path / "pulse").start()
    src, before, cap, js = (tmp_path / name for name in ("src.wav", "before.raw", "cap.raw", "live.json"))
    x = (np.random.default_rng(2).standard_normal((16000 * 16, 1)) * 0.1).astype(np.float32)
    sf.write(str(src), x, 16000, subtype="FLOAT")
    try:
        proc = start_live(server, "--virtual-mic", "bl_mic", "--input", "pulse", "--source", str(src),
                          "--model", str(model), "--seconds", "12", "--quiet", "--json", str(js))
        err = StderrLines(proc)
        rec = record_mic(server, before)
        wait_for_sound(before)
        time.sleep(1.0)
        rec.terminate()
        rec.wait(10)
        server_command(server, f"kill-source-output {stream_of(server, proc.pid, 'source-outputs')}")
        err.wait_for("audio stream reopened")
        time.sleep(1.0)
        server_command(server, f"kill-sink-input {stream_of(server, proc.pid, 'sink-inputs')}")
        err.wait_for("audio stream reopened", 2)
        assert len(owned(server)) == 2, err.text()  # the virtual mic stayed
        rec = record_mic(server, cap)
        time.sleep(3.0)
        rec.terminate()
        rec.wait(10)
        proc.wait(60)
        stderr = err.text()
        print(stderr)
        assert proc.returncode == 0 and "Traceback" not in stderr, stderr
        assert owned(server) == []
    finally:
        server.stop()
    summary = json.loads(js.read_text())
    # the two kills; on a busy machine the plugin may end a just-reopened stream again (an underrun)
    assert 2 <= summary["reopens"] <= MAX_REOPENS and summary["error"] is None and summary["seconds"] >= 12
    assert f"audio stream reopened {summary['reopens']}x" in stderr
    captured, corr, exact, gaps = capture_against_offline(src, model, tmp_path, cap)
    print(f"captured after the reopens {len(captured) / 48000:.2f} s: {len(corr)} chunks, correlation median "
          f"{np.median(corr) if len(corr) else 0:.5f}, bit-exact {exact.sum()}, {gaps} with an underrun's silence")
    # the server rate-adapts streams it just started (see `chunk_matches`): medians 0.93-1.0 were seen
    # right after the reopens; a chunk of unrelated noise reaches ~0.4
    assert len(corr) > 48000 // 512 and np.median(corr) >= 0.8


def test_a_stream_that_keeps_ending_ends_the_run(model, tmp_path):
    """A device that keeps failing does not loop: the end after MAX_REOPENS reopens within 10 s is not
    reopened (the kills come one after another; an end the busy machine's plugin adds counts as one),
    the run ends with the clear error (exit 2), its summary kept, and the virtual mic is removed."""
    server = PulseServer(tmp_path / "pulse").start()
    js = tmp_path / "live.json"
    try:
        proc = start_live(server, "--virtual-mic", "bl_mic", "--input", "pulse", "--model", str(model),
                          "--seconds", "60", "--quiet", "--json", str(js))
        err = StderrLines(proc)
        for _ in range(MAX_REOPENS + 1):
            if proc.poll() is not None:
                break
            reopened = sum("audio stream reopened" in line for line in err.lines)
            try:
                stream = stream_of(server, proc.pid, "source-outputs", timeout=3.0)
            except AssertionError:  # none: the run has just ended
                break
            server_command(server, f"kill-source-output {stream}")
            deadline = time.monotonic() + 15
            while (sum("audio stream reopened" in line for line in err.lines) == reopened and proc.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.05)
        proc.wait(30)
        stderr = err.text()
        print(stderr)
        assert owned(server) == []
    finally:
        server.stop()
    assert proc.returncode == 2 and "Traceback" not in stderr
    ends = f"stopped {MAX_REOPENS + 1} times within {REOPEN_WINDOW_S:g} s"
    assert "the audio stream stopped unexpectedly" in stderr and ends in stderr
    summary = json.loads(js.read_text())
    assert summary["reopens"] == MAX_REOPENS and ends in summary["error"]


@pytest.mark.parametrize("ending", ["sigint", "sigterm", "server restart", "duplicate name", "worker crash"])
def test_virtual_mic_is_removed_on_every_exit(model, tmp_path, ending):
    server = PulseServer(tmp_path / "pulse").start()
    if ending == "worker crash":  # ONNX Runtime raises in the worker after 1 s of audio
        model = build_model(tmp_path / "fail.onnx", "fail", fault_after=48000)
    args = ("--virtual-mic", "bl_mic", "--input", "pulse", "--model", str(model), "--seconds", "60", "--quiet")
    try:
        proc = start_live(server, *args)
        assert len(owned(server)) == 2
        if ending == "duplicate name":
            second = subprocess.run([sys.executable, "-c", CLI, "live", *args], env=server.env, capture_output=True,
                                    text=True, timeout=60)
            assert second.returncode == 2 and "a sound device named 'bl_mic' already exists" in second.stderr, second.stderr
            assert len(second.stderr.strip().splitlines()) == 1
            assert len(owned(server)) == 2  # the first one's devices are untouched
            proc.send_signal(signal.SIGINT)
        elif ending == "server restart":
            server.stop()
            server = PulseServer(tmp_path / "pulse").start()
        elif ending != "worker crash":
            proc.send_signal(signal.SIGINT if ending == "sigint" else signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        print(f"{ending}: rc {proc.returncode}: {err.strip()[-300:]}")
        assert "Traceback" not in err
        if ending == "server restart":
            assert proc.returncode == 2 and "sound server stopped or restarted" in err
        elif ending == "worker crash":
            assert proc.returncode == 2 and "engine failure" in err
        else:
            assert proc.returncode == 0
        assert owned(server) == []
    finally:
        server.stop()


def test_bandlifts_streams_share_no_memory_with_pulseaudio(model, tmp_path):
    """PulseAudio 16.1 (Debian 12) aborted in 4 of 15 stops of `live --virtual-mic` (assertion in
    memblock_replace_import as the client that played and recorded through shared memory disconnected):
    bandlift's ALSA 'pulse' streams negotiate no shared memory, their audio goes over the socket."""
    log = tmp_path / "pulse.log"
    server = PulseServer(tmp_path / "pulse", debug_log=log).start()
    try:
        run = subprocess.run([sys.executable, "-c", CLI, "live", "--virtual-mic", "bl_mic", "--input", "pulse",
                              "--model", str(model), "--seconds", "1", "--quiet"], env=server.env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert server.proc.poll() is None  # the server lives
    finally:
        server.stop()
    negotiated, streams = {}, {}
    client = None
    for line in log.read_text().splitlines():
        if m := re.search(r"client\.c: Created (\d+) ", line):
            client = m.group(1)
        elif m := re.search(r"Negotiated SHM: (\w+)", line):
            negotiated[client] = m.group(1)
        elif m := re.search(r'client\.c: Freed (\d+) "(.*)"', line):
            streams[m.group(1)] = m.group(2)
    alsa = [c for c, name in streams.items() if name.startswith("ALSA plug-in")]
    assert alsa, streams
    assert {negotiated[c] for c in alsa} == {"no"}, {c: negotiated.get(c) for c in alsa}


def test_a_taken_name_is_refused_before_the_model_loads_and_a_bad_model_leaves_no_device(tmp_path):
    server = PulseServer(tmp_path / "pulse").start()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    try:
        run = subprocess.run([sys.executable, "-c", CLI, "live", "--virtual-mic", "bl_mic", "--input", "pulse",
                              "--model", str(bad), "--seconds", "1"], env=server.env, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 2 and "bad.onnx" in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert owned(server) == []  # the device made before the model loaded is gone again
    finally:
        server.stop()


def test_a_killed_runs_devices_are_reclaimed_a_running_ones_are_not(model, tmp_path):
    """SIGKILL leaves the modules behind: the next run with the name reclaims them (their owner is gone)
    instead of refusing the name for good; a name a running bandlift holds is still refused."""
    server = PulseServer(tmp_path / "pulse").start()
    args = ("--virtual-mic", "bl_mic", "--input", "pulse", "--model", str(model), "--seconds", "60", "--quiet")
    try:
        killed = start_live(server, *args)
        killed.kill()
        killed.wait(timeout=30)
        assert len(owned(server)) == 2  # what SIGKILL leaves
        proc = start_live(server, *args)
        assert len(owned(server)) == 2 and all(f"bandlift.owner={proc.pid}" in line for line in owned(server))
        second = subprocess.run([sys.executable, "-c", CLI, "live", *args], env=server.env, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 2 and "already exists" in second.stderr, second.stderr
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "Traceback" not in err
        assert owned(server) == []
    finally:
        server.stop()


@pytest.mark.parametrize("server_kind", [PulseServer, PipeWireServer])
def test_virtual_sink_upsamples_what_apps_play(model, tmp_path, server_kind):
    """An app (paplay) plays a 16 kHz-band tone into the virtual speaker; bandlift plays it on the real
    output (the server's default sink here), where a recording client finds the tone at its level. On
    PulseAudio and on PipeWire (pipewire-pulse)."""
    if not server_kind.available():
        pytest.skip(f"{server_kind.__name__}: its tools are not installed")
    server = server_kind(tmp_path / "pulse").start()
    rate = 48000
    tone, cap = tmp_path / "tone.wav", tmp_path / "out.raw"
    sf.write(str(tone), 0.3 * np.sin(2 * np.pi * 1000 * np.arange(20 * rate) / rate), rate, subtype="FLOAT")
    try:
        proc = start_live(server, "--virtual-sink", "bl_spk", "--output", "pulse", "--model", str(model),
                          "--seconds", "10", "--quiet")
        assert len(owned(server)) == 1
        env = dict(server.env)
        player = subprocess.Popen(["paplay", "-d", "bl_spk", str(tone)], env=env)
        rec = subprocess.Popen(["parec", "-d", "bl_play.monitor", "--format=float32le", "--rate=48000",
                                "--channels=1", "--raw", str(cap)],  # mono, as PulseAudio mixes down:
                               env=dict(env, PULSE_PROP="channelmix.normalize=true"))  # PipeWire would sum
        time.sleep(7.0)  # the pulse plugin's first callback may take seconds under load
        rec.terminate()
        rec.wait(10)
        player.terminate()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert owned(server) == []
    finally:
        server.stop()
    captured = np.fromfile(cap, np.float32)
    # where the tone starts: the first 10 ms at a quarter of its level (a lone click does not count)
    tens = rate // 100
    rms = np.sqrt(np.mean(captured[: len(captured) // tens * tens].reshape(-1, tens) ** 2, axis=1))
    envelope = " ".join(f"{v:.2f}" for v in rms[:: 50])  # every 0.5 s, for the message
    sounding = np.nonzero(rms > 0.05)[0]
    assert len(sounding), f"the tone never reached the output: 10 ms RMS every 0.5 s: {envelope}"
    body = captured[sounding[0] * tens:][rate // 2: 2 * rate]  # the played stretch
    assert len(body) == 3 * rate // 2, f"the tone came late: 10 ms RMS every 0.5 s: {envelope}"
    spectrum = np.abs(np.fft.rfft(body * np.hanning(len(body))))
    assert abs(np.fft.rfftfreq(len(body), 1 / rate)[spectrum.argmax()] - 1000) < 5, envelope
    assert playing_level(body, rate) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)


@pytest.mark.parametrize("kind", ["mic", "sink"])
def test_virtual_devices_add_at_most_40_ms_by_default(model, tmp_path, kind):
    """Issue 22: the virtual devices ran 1024-frame periods (134 ms). By default the virtual mic runs
    256-frame periods with one block of margin (measured, see VIRTUAL_FRAMES); the virtual speaker
    keeps 1024 (the pulse plugin's capture of a monitor broke off at 256). The start line says the delay."""
    server = PulseServer(tmp_path / "pulse").start()
    src, js = tmp_path / "src.wav", tmp_path / "live.json"
    sf.write(str(src), np.zeros((48000 * 3, 1), np.float32), 48000)  # a 48 kHz microphone's rate
    device = ["--virtual-mic", "bl_mic", "--input", "pulse"] if kind == "mic" else ["--virtual-sink", "bl_spk",
                                                                                    "--output", "pulse"]
    try:
        for _ in range(3):  # under load the pulse ALSA plugin may end a stream at its start: tried again
            result = subprocess.run([sys.executable, "-c", CLI, "live", *device, "--source", str(src), "--model",
                                     str(model), "--seconds", "2", "--quiet", "--json", str(js)], env=server.env,
                                    capture_output=True, text=True, timeout=120)
            if "stream stopped unexpectedly" not in result.stderr:
                break
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    summary = json.loads(js.read_text())
    latency = [line for line in result.stderr.splitlines() if line.startswith("latency ")]
    print(f"\n{kind}: {latency}, xruns {summary['xruns']}, late blocks {summary['late_blocks']}")
    if kind == "mic":
        assert summary["frames"] == 256 and summary["latency_ms"] <= 40.0
    else:
        assert summary["frames"] == 1024
    assert latency and latency[0].startswith(f"latency {summary['latency_ms']:.2f} ms")


@pytest.mark.parametrize("server_kind", [PulseServer, PipeWireServer])
def test_a_mono_capture_of_the_virtual_mic_has_the_level_bandlift_plays(tmp_path, server_kind):
    """Issue 22: on PipeWire the virtual mic was a 2-channel source fed mono, and a mono `parec` of it
    had 1.4-2x the level it has on PulseAudio. Bypassed, bandlift plays its source unchanged: a 1 kHz
    tone at RMS 0.212 must be recorded at that level on both servers."""
    if not server_kind.available():
        pytest.skip(f"{server_kind.__name__}: its tools are not installed")
    server = server_kind(tmp_path / "server").start()
    src, cap = tmp_path / "tone.wav", tmp_path / "cap.raw"
    tone = 0.3 * np.sin(2 * np.pi * 1000 * np.arange(8 * 48000) / 48000)
    sf.write(str(src), tone.astype(np.float32).reshape(-1, 1), 48000, subtype="FLOAT")
    try:
        proc = start_live(server, "--virtual-mic", "bl_mic", "--input", "pulse", "--source", str(src), "--bypass",
                          "--seconds", "8", "--quiet")
        rec = record_mic(server, cap)
        time.sleep(4.0)
        rec.terminate()
        rec.wait(10)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        server.stop()
    body = np.fromfile(cap, np.float32)
    sounding = body[np.nonzero(np.abs(body) > 0.01)[0][0]:] if np.abs(body).max() > 0.01 else body[:0]
    assert len(sounding) > 48000, f"{len(sounding)} samples of the tone captured"
    assert playing_level(sounding[4800:], 48000) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)

"""`bandlift live`: upsample a live input device into an output device, in real time.

Keys while running (on a terminal): b = bypass on/off (crossfaded), + / - = output gain +-1 dB,
[ / ] = wet/dry mix -+10 %, q = quit. Ctrl-C stops cleanly and prints a summary.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from bandlift.rt.cli.errors import CLIError, write_json
from bandlift.rt.cli.options import add_model_options, add_output_rate_option


# PulseAudio/PipeWire through ALSA's pulse plugin underruns and ends the stream at 128-frame periods,
# and its recovery from an underrun under load can pause callbacks for over a second
PULSE_FRAMES = 1024
# A virtual mic/speaker adds its latency to every call: 256-frame periods with one block of margin
# (the pulse plugin's callbacks come in pairs now and then) held with no xrun or late block in 15 s
# runs on the shared 2-core machine (load 1.7), 39 ms at 48 kHz; 256 without margin had 1-2 xruns and
# 3-25 late blocks, 128 89 late blocks; 1024 (the --loopback default) adds 134 ms. A virtual speaker
# reads a sink's monitor through the pulse plugin, whose capture broke off at 256 (3 of 5 runs): 1024
VIRTUAL_FRAMES, VIRTUAL_MARGIN = 256, 128
PULSE_WATCHDOG_S = 3.0
MIN_GAIN_DB, MAX_GAIN_DB = -60.0, 24.0  # --gain and the +/- keys


def configure(p) -> None:
    p.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    p.add_argument("--input", help="input device: index or name substring (default: system default)")
    p.add_argument("--output", help="output device: index or name substring (default: system default)")
    p.add_argument("--loopback", action="store_true",
                   help="capture what the computer plays (PulseAudio/PipeWire monitor of the default sink)")
    p.add_argument("--virtual-mic", nargs="?", const="bandlift_mic", metavar="NAME",
                   help="create a virtual microphone NAME (default bandlift_mic) on the PulseAudio/PipeWire server "
                        "and play the upsampled input into it; apps pick it as their microphone; removed on exit")
    p.add_argument("--virtual-sink", nargs="?", const="bandlift_speaker", metavar="NAME",
                   help="create a virtual speaker NAME (default bandlift_speaker) that apps play into; its sound is "
                        "upsampled to --output; removed on exit")
    add_output_rate_option(p, "output device rate in Hz")
    p.add_argument("--input-rate", type=int,
                   help="input device rate if different (e.g. 16000 for a headset): two streams")
    p.add_argument("--channels", type=int, choices=[1, 2], default=1,
                   help="channels processed (default 1; 2 for stereo devices)")
    p.add_argument("--block", type=int, default=128, help="model block (samples at the model rate, 48 kHz)")
    p.add_argument("--frames", type=int, help=f"device period in frames (default: a JACK server's period, else the block; {PULSE_FRAMES} "
                   f"with --loopback, which goes through PulseAudio/PipeWire; {VIRTUAL_FRAMES} with --virtual-mic)")
    p.add_argument("--margin", type=int,
                   help=f"extra buffering in samples beyond the minimum (robustness against a busy CPU; default 0, "
                        f"{VIRTUAL_MARGIN} with --virtual-mic)")
    p.add_argument("--input-cutoff", type=float, help="input bandwidth in Hz (default: input Nyquist)")
    add_model_options(p, provider_default="auto",
                      provider_help="ONNX Runtime execution provider (auto: the CPU, which fits a live block's "
                                    "deadline many times over, where a GPU's per-block transfers and launches "
                                    "would cost more than they save; cuda: the GPU)")
    p.add_argument("--bypass", action="store_true", help="start in bypass (toggle with b)")
    p.add_argument("--gain", type=float, default=0.0, help="output gain in dB, -60..24 (default 0)")
    p.add_argument("--mix", type=float, default=1.0, help="wet/dry mix, 0..1")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.add_argument("--source", help="play this file through the engine instead of the input device "
                                    "(its rate is the input rate); the device input can be --record-ed")
    p.add_argument("--record", help="write what arrives at the input device to this WAV file")
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--quiet", action="store_true", help="no status line")


def _monitor_source() -> str:
    """Name of the default sink's monitor source (PulseAudio/PipeWire), via pactl."""
    if not shutil.which("pactl"):
        raise CLIError("--loopback needs PulseAudio or PipeWire (pactl not found)")
    sink = subprocess.run(["pactl", "get-default-sink"], capture_output=True, text=True, timeout=5)
    if sink.returncode or not sink.stdout.strip():
        raise CLIError(f"--loopback: no default sink ({sink.stderr.strip() or 'pactl failed'})")
    return sink.stdout.strip() + ".monitor"


class _Keys:
    """Single-key controls from a terminal (cbreak mode, restored on exit)."""

    def __init__(self, engine, runner):
        self.engine, self.runner = engine, runner
        self.old = None
        self.thread = None

    def __enter__(self):
        if not sys.stdin.isatty():
            return self
        import termios
        import tty

        fd = sys.stdin.fileno()
        self.old = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def _loop(self):
        import select

        while self.runner.running():
            ready, _, _ = select.select([sys.stdin], [], [], 0.1)
            if not ready:
                continue
            for key in os.read(sys.stdin.fileno(), 64).decode(errors="ignore"):
                self._key(key)

    def _key(self, key: str) -> None:
        eng = self.engine
        if key == "b":
            eng.bypass = not eng.bypass
        elif key in "+=":
            eng.gain = min(eng.gain * 10 ** (1 / 20), 10 ** (MAX_GAIN_DB / 20))
        elif key in "-_":
            eng.gain = max(eng.gain / 10 ** (1 / 20), 10 ** (MIN_GAIN_DB / 20))
        elif key == "[":
            eng.mix = max(0.0, round(eng.mix - 0.1, 2))
        elif key == "]":
            eng.mix = min(1.0, round(eng.mix + 0.1, 2))
        elif key == "q":
            self.runner._stop.set()

    def __exit__(self, *exc):
        if self.old is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self.old)


MAX_SECONDS = 7 * 24 * 3600.0
RECORD_RING_SECONDS = 10.0  # --record: the callback's ring, drained to the file every tick (0.25 s)


def _check_seconds_and_record(args) -> None:
    """--seconds finite and bounded, --record's destination writable: one line before any device starts."""
    if args.seconds is not None and not 0 < args.seconds <= MAX_SECONDS:
        raise CLIError(f"--seconds must be in (0, {MAX_SECONDS:g}], got {args.seconds}")
    if not args.record:
        return
    from bandlift.rt.io.files import AudioFileError, container_of

    import soundfile as sf

    record = Path(args.record)
    try:
        if not sf.check_format(container_of(record), "FLOAT"):
            raise AudioFileError(f"{record}: a float recording needs .wav, .w64, .aif(f), .au or .caf")
    except AudioFileError as exc:
        raise CLIError(f"--record {exc}") from None
    folder = record.parent
    if record.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        where = "it is a folder" if record.is_dir() else f"no writable folder {folder}"
        raise CLIError(f"--record {record}: cannot write there ({where})")


def run(args) -> int:
    from bandlift.rt.engine import StreamEngine
    from bandlift.rt.io.devices import list_devices
    from bandlift.rt.model.session import ModelError, ModelSession, live_provider

    if args.list_devices:
        devices = list_devices()
        from bandlift.rt.io.virtual import server_devices

        lines = server_devices()
        if not devices and not lines:
            raise CLIError("no audio devices found: PortAudio sees no ALSA, JACK or PulseAudio device "
                           "(start a sound server, or check that this user may open /dev/snd)")
        print(devices)
        if lines:
            print("\nsound server (PulseAudio/PipeWire) devices, reached through 'pulse':\n  " + "\n  ".join(lines))
        return 0
    if not 0.0 <= args.mix <= 1.0:
        raise CLIError(f"--mix must be in [0, 1], got {args.mix}")
    if not MIN_GAIN_DB <= args.gain <= MAX_GAIN_DB:
        raise CLIError(f"--gain must be {MIN_GAIN_DB:g}..{MAX_GAIN_DB:g} dB, got {args.gain}")
    _check_seconds_and_record(args)
    source = None
    in_rate = args.input_rate or args.rate
    if args.source:
        import soundfile as sf

        try:
            source, in_rate = sf.read(args.source, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise CLIError(f"cannot read {args.source}: {exc}") from None
        if source.shape[1] != args.channels:
            source = (source.mean(axis=1, keepdims=True) if args.channels == 1
                      else np.repeat(source[:, :1], 2, axis=1))
        if not np.isfinite(source).all():
            raise CLIError(f"{args.source} contains NaN/inf samples")
    virtual = _virtual_device(args)  # first: a taken name is refused before the model loads (seconds)
    try:
        try:
            session = ModelSession(args.model, provider=live_provider(args.provider), threads=args.threads)
            engine = StreamEngine(session, in_rate, args.rate, args.channels, args.block,
                                  input_cutoff_hz=args.input_cutoff, realtime=True)
        except (ModelError, ValueError, RuntimeError) as exc:
            raise CLIError(str(exc)) from None
        engine.bypass = args.bypass
        engine.gain = 10 ** (args.gain / 20)
        engine.mix = args.mix
        engine.reset()
        return _run_devices(args, engine, session, source, in_rate, virtual)
    except CLIError as exc:
        if virtual is not None and not virtual.alive():
            raise CLIError(f"the sound server stopped or restarted and took the virtual {virtual.kind} "
                           f"'{virtual.name}' with it ({exc}); start bandlift again") from None
        raise
    finally:
        if virtual is not None:
            virtual.remove()


def _virtual_device(args):
    """Create the --virtual-mic / --virtual-sink device (None without one); from here on SIGTERM and
    SIGHUP stop the run like Ctrl-C, so that the device is removed."""
    if args.virtual_mic is None and args.virtual_sink is None:
        return None
    from bandlift.rt.io.virtual import VirtualDevice

    if args.loopback or (args.virtual_mic and args.virtual_sink):
        raise CLIError("choose one of --loopback, --virtual-mic, --virtual-sink")
    kind, name = ("mic", args.virtual_mic) if args.virtual_mic is not None else ("sink", args.virtual_sink)

    def interrupt(*_):
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    dev = VirtualDevice(kind, name, args.channels, args.rate).__enter__()
    if dev.reclaimed:
        print(f"reclaimed what a stopped bandlift left on the server: {', '.join(dev.reclaimed)}", file=sys.stderr)
    print(f"virtual {'microphone' if kind == 'mic' else 'speaker'} '{name}' ready ({dev.description}): pick it in "
          "your apps; it is removed when bandlift stops", file=sys.stderr)
    return dev


def _run_devices(args, engine, session, source, in_rate, virtual) -> int:
    from bandlift.rt.io.virtual import client_config_without_shm

    pulse = args.loopback or virtual is not None
    via_server = pulse or "pulse" in f"{args.input} {args.output}".lower()
    if via_server:  # before PortAudio starts: its device scan opens streams too
        os.environ["PULSE_CLIENTCONFIG"] = client_config_without_shm()  # a PulseAudio crash, see there
    import sounddevice as sd

    from bandlift.rt.io.devices import LiveError, find_device, jack_answers
    from bandlift.rt.io.recording import StreamedRecording
    from bandlift.rt.io.runner import LiveRunner

    try:
        if args.loopback or (virtual is not None and virtual.kind == "sink"):
            os.environ["PULSE_SOURCE"] = virtual.monitor if virtual is not None else _monitor_source()
        if virtual is not None and virtual.kind == "mic":
            os.environ["PULSE_SINK"] = virtual.sink
        if pulse:
            # PipeWire (pipewire-pulse) sums the channels when it mixes a stereo sink's monitor down to
            # our mono stream (a tone recorded 1.4x too loud) unless asked to normalise, as PulseAudio does
            os.environ["PULSE_PROP"] = " ".join(filter(None, [os.environ.get("PULSE_PROP"), "channelmix.normalize=true"]))
        if via_server:
            sd._terminate()  # PortAudio's ALSA 'pulse' device reads the variables when it starts
            sd._initialize()
        reads_server = args.loopback or (virtual is not None and virtual.kind == "sink")
        input_device = find_device(args.input or ("pulse" if reads_server else None), "input")
        writes_server = virtual is not None and virtual.kind == "mic"
        output_device = find_device(args.output or ("pulse" if writes_server else None), "output")
        mic = virtual is not None and virtual.kind == "mic"
        frames = args.frames or (max(args.block, VIRTUAL_FRAMES if mic else PULSE_FRAMES)
                                 if pulse else None)  # None: the period
        if args.margin is None:
            args.margin = VIRTUAL_MARGIN if mic else 0

        def can_reopen() -> bool:
            """A stream the host API ended is reopened unless its device or server is gone: the virtual
            device (a restarted server lost it) or a JACK server that no longer answers."""
            if virtual is not None and not virtual.alive():
                return False
            return jack_answers(input_device, "input") and jack_answers(output_device, "output")

        runner = LiveRunner(engine, input_device, output_device, frames=frames,
                            watchdog_s=PULSE_WATCHDOG_S if pulse else 1.0,
                            margin=args.margin, source=source,
                            record_seconds=RECORD_RING_SECONDS if args.record else 0.0, can_reopen=can_reopen)
        recording = StreamedRecording(args.record, args.rate, runner.channels) if args.record else None
    except (LiveError, ValueError, sd.PortAudioError) as exc:
        raise CLIError(str(exc)) from None
    except (OSError, RuntimeError) as exc:  # the recording's file (checked before, then the disk filled)
        raise CLIError(f"cannot write the recording {args.record}: {exc}") from None
    try:
        return _run(args, engine, session, runner, recording, in_rate)
    finally:
        if recording is not None and not recording.closed:
            recording.abandon()  # a failed run leaves no hidden file


def _run(args, engine, session, runner, recording, in_rate) -> int:
    from bandlift.rt.io.callbacks import REC_POS
    from bandlift.rt.io.devices import LiveError

    rate = args.rate
    ms = lambda n: 1000.0 * n / rate  # noqa: E731
    failure = None
    try:
        with _Keys(engine, runner):
            shown, reopens_shown = 0, 0

            def show_events():  # every bypass and stream reopen, with its time and cause, on its own line
                nonlocal shown, reopens_shown
                lines = engine.event_lines(shown)
                shown += len(lines)
                reopened = runner.reopen_lines[reopens_shown:]
                reopens_shown += len(reopened)
                for line in lines + reopened:
                    sys.stderr.write(("\r" if not args.quiet else "") + line.ljust(100) + "\n")

            def tick(r):
                if recording is not None:
                    recording.drain(r.record, int(r.stats[REC_POS]))
                show_events()
                if not args.quiet:
                    sys.stderr.write("\r" + r.status_line() + "   ")
                    sys.stderr.flush()

            runner.start()
            model_rate = engine.model_rate
            via = f" (model at {model_rate} Hz)" if model_rate not in (in_rate, rate) else ""
            print(f"model: {session.describe()}; {in_rate} -> {rate} Hz{via}, {args.channels} ch, block "
                  f"{engine.block}, device period {runner.frames}, worker {runner.worker_priority}", file=sys.stderr)
            blocks = runner.buffering / engine.block_out
            print(f"latency {ms(runner.total_latency):.2f} ms = buffering {runner.buffering} samples "
                  f"({blocks:.2g} block{'' if blocks == 1 else 's'} of {engine.block_out}: block fill + worker "
                  f"hand-off{f' + margin {args.margin}' if args.margin else ''}) + engine delay {engine.delay} "
                  f"(resampling + model {engine.model_delay} at {model_rate} Hz) + device {runner.device_latency} "
                  f"(in+out) samples at {rate} Hz", file=sys.stderr)
            if sys.stdin.isatty():
                print("keys: b bypass, +/- gain, [ ] wet/dry, q quit", file=sys.stderr)
            # SIGTERM stops like Ctrl-C: what was captured is still written
            old_term = signal.signal(signal.SIGTERM, lambda *_: runner._stop.set())
            try:
                summary = runner.run(args.seconds, tick, start=False)
            except KeyboardInterrupt:
                runner.stop()
                summary = runner.summary()
            except LiveError as exc:  # the device died: keep the recording and the summary, then fail
                failure = str(exc)
                summary = runner.summary()
            finally:
                signal.signal(signal.SIGTERM, old_term)
            show_events()
    except LiveError as exc:
        raise CLIError(str(exc)) from None
    if not args.quiet:
        sys.stderr.write("\n")
    result = {"latency_ms": ms(runner.total_latency), "latency_samples": runner.total_latency,
              "buffering_samples": runner.buffering, "engine_delay_samples": engine.delay,
              "device_latency_samples": runner.device_latency, "block": engine.block, "frames": runner.frames,
              "input_rate": in_rate, "rate": rate, "channels": args.channels,
              **{k: v for k, v in summary.as_dict().items() if k != "engine"}, **summary.engine,
              "bypasses": engine.event_lines()}
    print(f"ran {summary.seconds:.1f} s: xruns {summary.xruns}, late blocks {summary.late_blocks}, "
          f"block p50 {summary.engine['block_ms_p50']:.3f} ms p99 {summary.engine['block_ms_p99']:.3f} ms "
          f"max {summary.engine['block_ms_max']:.3f} ms, bypass events {summary.engine['bypass_events']}, "
          f"latency {result['latency_ms']:.2f} ms"
          + (f", resynchronised {summary.resyncs}x after a stall (input dropped, latency kept)" if summary.resyncs else "")
          + (f", audio stream reopened {summary.reopens}x (ended or stalled, device still there)"
             if summary.reopens else ""),
          file=sys.stderr)
    if recording is not None:
        recording.drain(runner.record, int(runner.stats[REC_POS]))
        recording.close()
        print(f"recorded input -> {args.record} ({recording.frames / rate:.1f} s"
              + (f"; {recording.lost} frames lost: the disk fell {RECORD_RING_SECONDS:g} s behind" if recording.lost
                 else "") + ")", file=sys.stderr)
    if args.json:
        write_json(args.json, {**result, "error": failure})
    if failure:
        raise CLIError(failure)
    return 0


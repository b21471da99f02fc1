"""Fixture helpers for the rt tests: a real JACK server (dummy backend with a loopback port) and tiny
ONNX models that follow the bandlift streaming contract (built with onnx.helper: no torch).

Import from a test module as ``from jack_server import ...`` (pytest puts tests/ on sys.path).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------------
# Tiny contract-following models
# ---------------------------------------------------------------------------------------------------
BIG = 2**62


def build_model(path, kind: str = "conv", delay: int = 0, frame: int = 64, rate: int = 48000,
                slow_matmuls: int = 0, fault_after: int = 24000, fault_until: int = 10**9) -> Path:
    """Write a tiny streaming model and return its path.

    kind "conv":    y = x[n - delay] + 0.1 * cutoff * tanh(0.5 x[n-d] + 0.3 x[n-d-1] + 0.2 x[n-d-2])
    kind "delay":   y = x[n - delay] exactly (so model output == bypass path)
    kind "nan":     like "delay", but NaN in blocks that start in [fault_after, fault_until) samples
                    after a reset (a sample counter is one of the states)
    kind "explode": like "nan" but the output is multiplied by 1000 there
    slow_matmuls:   adds that many chained 256x256 matmuls that depend on the input (CPU burn) and
                    contribute exactly 0 to the output: a deliberately slow model.
    """
    import onnx
    from onnx import TensorProto, helper

    k = delay + 2
    nodes, inits = [], []

    def const(name, values, dtype=np.int64):
        inits.append(onnx.numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def slice_(name, src, start, end):
        nodes.append(helper.make_node("Slice", [src, const(name + "_s", [start]), const(name + "_e", [end]),
                                                const(name + "_a", [1])], [name]))
        return name

    nodes.append(helper.make_node("Concat", ["x_cache", "audio"], ["xc"], axis=1))
    end0 = -delay if delay else BIG
    x_d = slice_("x_d", "xc", 2, end0)
    states = [{"name": "x_cache", "shape": [k]}]
    outputs = ["audio_out", "x_cache_out"]
    slice_("x_cache_out", "xc", -k, BIG)
    y = x_d
    if kind == "conv":
        x1 = slice_("x_d1", "xc", 1, -(delay + 1))
        x2 = slice_("x_d2", "xc", 0, -(delay + 2))
        nodes += [
            helper.make_node("Mul", [x_d, const("c05", 0.5, np.float32)], ["t0"]),
            helper.make_node("Mul", [x1, const("c03", 0.3, np.float32)], ["t1"]),
            helper.make_node("Mul", [x2, const("c02", 0.2, np.float32)], ["t2"]),
            helper.make_node("Sum", ["t0", "t1", "t2"], ["conv"]),
            helper.make_node("Tanh", ["conv"], ["th"]),
            helper.make_node("Unsqueeze", ["cutoff", const("ax1", [1])], ["cut2"]),
            helper.make_node("Mul", ["th", "cut2"], ["thc"]),
            helper.make_node("Mul", ["thc", const("c01", 0.1, np.float32)], ["res"]),
            helper.make_node("Add", [x_d, "res"], ["y_conv"]),
        ]
        y = "y_conv"
    elif kind in ("nan", "explode"):
        states.append({"name": "count_cache", "shape": [1]})
        outputs.append("count_cache_out")
        nodes += [
            helper.make_node("Shape", ["audio"], ["shp"]),
            helper.make_node("Gather", ["shp", const("one", 1)], ["nb"]),
            helper.make_node("Cast", ["nb"], ["nbf"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["count_cache", "nbf"], ["count_cache_out"]),
            # inside the window (a < c < b): (c - a) * (c - b) < 0
            helper.make_node("Sub", ["count_cache", const("fa", fault_after - 0.5, np.float32)], ["ca"]),
            helper.make_node("Sub", ["count_cache", const("fb", fault_until - 0.5, np.float32)], ["cb"]),
            helper.make_node("Mul", ["ca", "cb"], ["inside"]),  # [C, 1]
        ]
        if kind == "nan":
            nodes += [helper.make_node("Sqrt", ["inside"], ["sq"]),  # NaN inside the window
                      helper.make_node("Mul", ["sq", const("zero", 0.0, np.float32)], ["nanterm"]),
                      helper.make_node("Add", [x_d, "nanterm"], ["y_f"])]
        else:
            nodes += [helper.make_node("Less", ["inside", const("zf", 0.0, np.float32)], ["isin"]),
                      helper.make_node("Where", ["isin", const("big", 1000.0, np.float32),
                                                 const("unit", 1.0, np.float32)], ["gain"]),
                      helper.make_node("Mul", [x_d, "gain"], ["y_f"])]
        y = "y_f"
    elif kind != "delay":
        raise ValueError(kind)
    if slow_matmuls:
        rng = np.random.default_rng(0)
        const("w", rng.standard_normal((256, 256)).astype(np.float32) / 16, np.float32)
        nodes += [helper.make_node("ReduceSum", ["audio"], ["s_all"], keepdims=0),
                  helper.make_node("Tanh", ["s_all"], ["s_t"]),
                  helper.make_node("Mul", ["w", "s_t"], ["m0"])]
        prev = "m0"
        for i in range(slow_matmuls):
            nodes += [helper.make_node("MatMul", [prev, "w"], [f"mm{i}"]),
                      helper.make_node("Tanh", [f"mm{i}"], [f"mt{i}"])]
            prev = f"mt{i}"
        nodes += [helper.make_node("ReduceSum", [prev], ["burn"], keepdims=0),
                  helper.make_node("Tanh", ["burn"], ["burn_t"]),
                  helper.make_node("Mul", ["burn_t", const("z0", 0.0, np.float32)], ["burn0"]),
                  helper.make_node("Add", [y, "burn0"], ["y_slow"])]
        y = "y_slow"
    nodes.append(helper.make_node("Identity", [y], ["audio_out"]))

    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("audio", f32, ["C", "B"]),
              helper.make_tensor_value_info("cutoff", f32, ["C"])]
    inputs += [helper.make_tensor_value_info(s["name"], f32, ["C", *s["shape"]]) for s in states]
    outs = [helper.make_tensor_value_info("audio_out", f32, ["C", "B"])]
    outs += [helper.make_tensor_value_info(f"{s['name']}_out", f32, ["C", *s["shape"]]) for s in states]
    graph = helper.make_graph(nodes, f"bandlift_test_{kind}", inputs, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {
        "bandlift.sample_rate": str(rate), "bandlift.frame": str(frame), "bandlift.delay": str(delay),
        "bandlift.state": json.dumps(states), "bandlift.version": "test", "bandlift.params": "3",
        "bandlift.mflops_per_second": "0.1", "bandlift.config": json.dumps({"kind": kind}),
    })
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def reference_conv(x: np.ndarray, cutoff: float, delay: int = 0) -> np.ndarray:
    """numpy reference of kind "conv" on a whole signal [C, n] (zero initial state)."""
    x = np.asarray(x, np.float64)
    xp = np.concatenate([np.zeros((x.shape[0], delay + 2)), x], axis=1)
    x_d = xp[:, 2:xp.shape[1] - delay]
    x1 = xp[:, 1:xp.shape[1] - delay - 1]
    x2 = xp[:, 0:xp.shape[1] - delay - 2]
    return x_d + 0.1 * cutoff * np.tanh(0.5 * x_d + 0.3 * x1 + 0.2 * x2)


# ---------------------------------------------------------------------------------------------------
# JACK server (dummy backend, loopback port): see /work/shared/live-audio-in-ci.md
# ---------------------------------------------------------------------------------------------------
def wait_ready(server, name: str, probe: list[str], seconds: float = 10.0) -> None:
    """Poll `probe` until it succeeds; a server that exits or stays unready is stopped and reported."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {server.proc.stderr.read().decode(errors='replace')[-800:]}")
        if subprocess.run(probe, env=server.env, capture_output=True).returncode == 0:
            return
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{name} did not come up within {seconds:g} s")


def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 5 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class JackServer:
    """`jackd -d dummy` with one loopback port, under a unique server name."""

    def __init__(self, rate: int = 48000, period: int = 128, realtime: bool = True, loopback: int = 2):
        self.rate, self.period, self.loopback = rate, period, loopback
        self.name = f"bl{os.getpid()}{uuid.uuid4().hex[:6]}"
        self.env = dict(os.environ, JACK_NO_START_SERVER="1", JACK_NO_AUDIO_RESERVATION="1",
                        JACK_DEFAULT_SERVER=self.name)
        self.realtime = realtime
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("jackd") is not None and shutil.which("jack_lsp") is not None

    def start(self) -> "JackServer":
        cmd = ["jackd", "-n", self.name, *(["-R"] if self.realtime else []), "-L", str(self.loopback),
               "-d", "dummy", "-r", str(self.rate), "-p", str(self.period)]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        wait_ready(self, "jackd", ["jack_lsp"])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            terminate(self.proc)
            # JACK leaves this server's semaphores in /dev/shm
            for leftover in Path("/dev/shm").glob(f"jack*_{self.name}_*"):
                leftover.unlink(missing_ok=True)
        self.proc = None

    def activate(self) -> None:
        """Point this process (and its children) at this server."""
        os.environ.update({k: self.env[k] for k in ("JACK_NO_START_SERVER", "JACK_NO_AUDIO_RESERVATION",
                                                       "JACK_DEFAULT_SERVER")})


def sounddevice_rescan() -> None:
    """Make PortAudio see the JACK server that is (or is no longer) running."""
    import sounddevice as sd

    sd._terminate()
    sd._initialize()


@contextmanager
def running_jack(rate: int = 48000, period: int = 128, loopback: int = 2):
    """A JACK server for the duration of the block, with this process's PortAudio pointed at it;
    PortAudio is terminated before the server stops (else it aborts at exit) and the environment is
    restored afterwards."""
    import sounddevice as sd

    server = JackServer(rate, period, loopback=loopback).start()
    keys = ("JACK_NO_START_SERVER", "JACK_NO_AUDIO_RESERVATION", "JACK_DEFAULT_SERVER")
    old = {k: os.environ.get(k) for k in keys}
    try:
        server.activate()
        sounddevice_rescan()
        yield server
    finally:
        sd._terminate()
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        sd._initialize()


class PulseServer:
    """A private PulseAudio daemon with two null sinks: `bl_play` (the default: its monitor is the
    loopback source) and `bl_out`; reached through ALSA's pulse plugin (device "pulse")."""

    def __init__(self, runtime_dir: Path):
        self.runtime_dir = Path(runtime_dir)
        self.env = dict(os.environ, XDG_RUNTIME_DIR=str(self.runtime_dir),
                        PULSE_SERVER=f"unix:{self.runtime_dir}/pulse/native")
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return all(shutil.which(t) for t in ("pulseaudio", "pactl", "paplay")) and \
            Path("/usr/share/alsa/alsa.conf.d/pulse.conf").exists()

    def start(self) -> "PulseServer":
        self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cmd = ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=false",
               "-L", "module-null-sink sink_name=bl_play rate=48000",
               "-L", "module-null-sink sink_name=bl_out rate=48000", "-L", "module-native-protocol-unix"]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        wait_ready(self, "pulseaudio", ["pactl", "set-default-sink", "bl_play"])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            terminate(self.proc)
        self.proc = None

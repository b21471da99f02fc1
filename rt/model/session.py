"""ONNX Runtime session for a bandlift streaming model: metadata, provider choice; per-stream state.

The model contract (names, metadata keys, `ModelInfo`) is `bandlift.rt.model.contract`.

A `ModelSession` (the loaded model) is shared; each stream owns a `ModelState` (`session.new_state`),
whose `run` binds preallocated buffers (ONNX Runtime I/O binding) and swaps two sets of state buffers,
so a steady stream of equal-size blocks allocates nothing per block; on CUDA the states stay on the GPU
and only the audio crosses the bus.
"""
from __future__ import annotations

import importlib.resources
import itertools
import math
import os
import threading
from pathlib import Path

import numpy as np

from bandlift.rt.model.contract import (AUDIO, AUDIO_OUT, CUTOFF, NOISE_CLOCK, STATE_OUT_SUFFIX,  # noqa: F401
                                        ModelError, ModelInfo, check_outputs, parse_info)

PROVIDERS = ("auto", "cpu", "cuda")
_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"


def default_model_path() -> Path:
    """The model shipped in the wheel (bandlift.rt.model/default.onnx)."""
    resource = importlib.resources.files("bandlift.rt.model").joinpath("default.onnx")
    return Path(str(resource))


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    path = default_model_path() if model is None else Path(model)
    if not path.is_file():
        which = "the shipped default model" if model is None else "model"
        raise ModelError(f"{which} not found: {path}")
    return path


def read_info(model, path: str = "") -> ModelInfo:
    """The checked ModelInfo of a loaded onnxruntime session, or of a model file (loaded on the CPU)."""
    if isinstance(model, (str, os.PathLike)):
        import onnxruntime as ort

        path = path or str(model)
        try:
            model = ort.InferenceSession(str(model), providers=[_CPU])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load model {path}: {exc}") from exc
    ios = [*model.get_inputs(), *model.get_outputs()]
    return parse_info(model.get_modelmeta().custom_metadata_map, [i.name for i in model.get_inputs()],
                      [o.name for o in model.get_outputs()], path, {i.name: (i.type, i.shape) for i in ios})


PROBE_SECONDS = 10.0  # one frame of silence takes milliseconds; longer is a runaway graph (a Loop of 1e15)


def probe(session, info: ModelInfo, path: str = "") -> None:
    """Run one frame of silence on the CPU and check what comes back against the contract: a model that
    breaks it at run time is a ModelError at load, before any audio is touched. The run is stopped
    after PROBE_SECONDS (others' graphs may loop for ever)."""
    import onnxruntime as ort

    feeds = {AUDIO: np.zeros((1, info.frame), np.float32), CUTOFF: np.full(1, 0.5, np.float32),
             **{name: np.zeros((1, *shape), np.float32) for name, shape in info.states}}
    options = ort.RunOptions()
    options.log_severity_level = 4  # the failure is reported below, once
    timer = threading.Timer(PROBE_SECONDS, setattr, (options, "terminate", True))
    timer.daemon = True
    timer.start()
    try:
        outputs = session.run(None, feeds, options)
    except Exception as exc:  # onnxruntime raises its own exception types
        if options.terminate:
            raise ModelError(f"{path}: the model runs for more than {PROBE_SECONDS:g} s on one frame of "
                             "silence (a runaway loop?)") from None
        raise ModelError(f"{path}: the model fails on one frame of silence: {str(exc).splitlines()[0]}") from None
    finally:
        timer.cancel()
    check_outputs(info, outputs, 1, info.frame, path)


def choose_providers(provider: str) -> list[str]:
    """Execution providers for "auto" | "cpu" | "cuda"; "cuda" without a usable GPU is an error."""
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    available = ort.get_available_providers()
    if provider == "cpu":
        return [_CPU]
    if _CUDA in available:
        return [_CUDA, _CPU]
    if provider == "cuda":
        raise RuntimeError("provider 'cuda' requested but this onnxruntime has no CUDAExecutionProvider "
                           f"(available: {', '.join(available)}); install the [gpu] extra "
                           "(onnxruntime-gpu) or use --provider cpu")
    return [_CPU]


def live_provider(provider: str) -> str:
    """The provider for live audio: "auto" there means the CPU ("cpu" and "cuda" are kept).

    In a live run the compute time sets no latency (the buffering is block fill + one device period),
    it only has to fit the period, and the CPU fits it many times over: the shipped model at block 128
    takes p50 0.12 ms, p99 0.30 ms of the 2.67 ms period on one core of the shared 2-core VM (`bandlift
    bench --block 64 128 512 --provider cpu`: 0.095 ms per call + 0.14 us per sample, 154 graph nodes
    per call). On CUDA each block is a host->device copy, about one kernel launch per node (154, each a
    few us, in sequence), a device->host copy and a synchronisation: an estimated 0.5-1 ms (not measured:
    no GPU has been lent), with jitter from the driver, the GPU's clocks between spaced calls and its
    other users (onnxruntime issues 15953, 17711), so a GPU would cost deadline margin and save nothing. Files and batches (`upsample`, `bench --streams`) keep "auto" =
    CUDA when available: large blocks and many streams per call are where a GPU pays."""
    return "cpu" if provider == "auto" else provider


def session_options(threads: int = 1):
    """ONNX Runtime options for one small streaming model, compared by measurement on the shipped model
    (block 128, one thread; all within 2 % of each other except fixed shapes, see `ModelSession.shaped`):
    sequential execution, no thread spinning (a spinning pool burns the core the audio needs), extended
    graph optimisation (the full level was no faster, and its saved graphs are machine-specific). Not
    "denormals as zero": no faster, and with one thread it sets the caller's own FPU flags, changing
    every later float operation in the process."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _with_options(providers: list[str], cuda_graph: bool) -> list:
    if cuda_graph and _CUDA in providers:
        return [(_CUDA, {"enable_cuda_graph": "1"}) if p == _CUDA else p for p in providers]
    return providers


class ModelSession:
    """One loaded streaming model (weights, provider, metadata), shared by any number of streams.

    The streaming state lives in a `ModelState` per stream (`new_state(channels)`), as silero-vad's
    wrapper keeps its own state: streams never reset or re-channel each other, and ONNX Runtime runs
    one session from several threads at once."""

    def __init__(self, model: str | os.PathLike | None = None, provider: str = "auto", threads: int = 1,
                 cuda_graph: bool = False):
        import onnxruntime as ort

        self.path = resolve_model_path(model)
        self._threads = threads
        self._providers = _with_options(choose_providers(provider), cuda_graph)
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(threads), providers=self._providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load model {self.path}: {exc}") from exc
        self._shaped: dict[tuple[int, int], object] = {}
        self._shaped_lock = threading.Lock()
        self.providers = self.session.get_providers()
        if provider == "cuda" and _CUDA not in self.providers:
            raise RuntimeError("provider 'cuda' requested but onnxruntime could not start it "
                               "(CUDA/cuDNN libraries missing?); use --provider cpu")
        self.device = "cuda" if _CUDA in self.providers else "cpu"
        self.cuda_graph = bool(cuda_graph) and self.device == "cuda"
        self.info = read_info(self.session, str(self.path))
        probe(self.session, self.info, str(self.path))
        self._ort = ort
        self.graph_ids = itertools.count(1)  # CUDA graph ids (0: ONNX Runtime's default)

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def frame(self) -> int:
        return self.info.frame

    @property
    def delay(self) -> int:
        return self.info.delay

    @property
    def reach(self) -> int | None:
        return self.info.reach

    def shaped(self, channels: int, samples: int):
        """The session specialised to blocks of [channels, samples] (created once, shared): with the
        audio's free dimensions fixed, ONNX Runtime folds the graph's shape arithmetic (measured 6 %
        faster per block-128 call than the generic session)."""
        key = (int(channels), int(samples))
        with self._shaped_lock:
            if key not in self._shaped:
                self._shaped[key] = self._new_shaped(key)
            return self._shaped[key]

    def _new_shaped(self, key: tuple[int, int], profile_prefix: str | None = None):
        options = session_options(self._threads)
        for dim, value in zip(self.session.get_inputs()[0].shape, key):
            if isinstance(dim, str):
                options.add_free_dimension_override_by_name(dim, value)
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        return self._ort.InferenceSession(str(self.path), options, providers=self._providers)

    def node_profile(self, samples: int, calls: int = 20) -> dict[str, int]:
        """The nodes ONNX Runtime runs per call of [1, samples] after its graph optimisations, counted
        by operator type (from its profiler; the session is the one `shaped` makes, plus profiling)."""
        import json
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            session = self._new_shaped((1, int(samples)), str(Path(tmp) / "profile"))
            feeds = {AUDIO: np.zeros((1, int(samples)), np.float32), CUTOFF: np.full(1, 0.5, np.float32)}
            feeds.update({name: np.zeros((1, *shape), np.float32) for name, shape in self.info.states})
            for _ in range(calls):
                session.run(None, feeds)
            events = json.loads(Path(session.end_profiling()).read_text())
        ops = {e["name"]: e["args"]["op_name"] for e in events
               if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")}
        counts: dict[str, int] = {}
        for op in ops.values():
            counts[op] = counts.get(op, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    def new_state(self, channels: int = 1) -> "ModelState":
        """A zeroed streaming state for `channels` channels (or batched streams) of this model."""
        return ModelState(self, channels)

    def describe(self) -> str:
        i = self.info
        extra = f", {i.params:,} params" if i.params else ""
        return (f"{Path(i.path).name} ({i.sample_rate} Hz, frame {i.frame}, delay {i.delay}{extra}; "
                f"{self.device}{', CUDA graphs' if self.cuda_graph else ''})")


class ModelState:
    """The streaming state of one stream of a `ModelSession`: `run(block, cutoff)` processes its
    consecutive blocks [C, B]; `reset()` zeroes it.

    Two banks of state buffers are bound with ONNX Runtime I/O binding, the outputs of one call being
    the inputs of the next (swapped, never copied); audio in/out are preallocated, so a steady stream
    of equal blocks allocates nothing. On CUDA the states stay on the GPU (only audio crosses the bus)
    and with `cuda_graph` each bank replays its own captured graph."""

    def __init__(self, session: ModelSession, channels: int = 1):
        if int(channels) < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.session = session
        self.channels = int(channels)
        self.frame = session.frame
        self._cuda = session.device == "cuda"
        self._banks = [[self._new(shape) for _, shape in session.info.states] for _ in range(2)]
        offsets = np.cumsum([0] + [math.prod(shape) for _, shape in session.info.parts])
        self._clock_offset = next((int(offsets[i]) for i, (name, shape) in enumerate(session.info.parts)
                                   if name == NOISE_CLOCK and math.prod(shape) == 1), None)
        self._shape = None
        self.reset()

    def _new(self, shape):
        full = (self.channels, *shape)
        if self._cuda:
            return self.session._ort.OrtValue.ortvalue_from_shape_and_type(list(full), np.float32, "cuda", 0)
        return np.zeros(full, np.float32)

    def reset(self) -> None:
        """Zero the streaming state (start of a new signal)."""
        for bank in self._banks:
            for state in bank:
                if self._cuda:
                    state.update_inplace(np.zeros(state.shape(), np.float32))
                else:
                    state.fill(0.0)
        self._current = 0

    def skip_frames(self, frames: int) -> None:
        """Frames the model did not run (a hold): a model with a `NOISE_CLOCK` part counts them too, so what
        it plays afterwards is what it would have played had it run; other states keep their last values."""
        offset = self._clock_offset
        if offset is None:
            return
        state = self._banks[self._current][0]
        if self._cuda:
            values = state.numpy()
            values[:, offset] += frames
            state.update_inplace(values)
        else:
            state[:, offset] += frames

    def _bind(self, samples: int) -> None:
        """(Re)build the two I/O bindings (one per state bank) for blocks of [channels, samples]."""
        ort, info = self.session._ort, self.session.info
        shape = (self.channels, samples)
        self._session = sess = self.session.shaped(*shape)
        self._audio_out = np.zeros(shape, np.float32)
        if self._cuda:  # device buffers at fixed addresses (what CUDA graphs need); audio copied in/out
            self._dev_in = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, "cuda", 0)
            self._dev_cutoff = ort.OrtValue.ortvalue_from_shape_and_type([self.channels], np.float32, "cuda", 0)
            self._dev_out = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, "cuda", 0)
        else:
            self._audio_in = np.zeros(shape, np.float32)
            self._cutoff_in = np.zeros(self.channels, np.float32)
        self._bindings, self._run_options = [], []
        for bank in range(2):
            binding = sess.io_binding()
            src, dst = self._banks[bank], self._banks[1 - bank]
            if self._cuda:
                binding.bind_ortvalue_input(AUDIO, self._dev_in)
                binding.bind_ortvalue_input(CUTOFF, self._dev_cutoff)
                binding.bind_ortvalue_output(AUDIO_OUT, self._dev_out)
            else:
                binding.bind_cpu_input(AUDIO, self._audio_in)
                binding.bind_cpu_input(CUTOFF, self._cutoff_in)
                binding.bind_output(AUDIO_OUT, "cpu", 0, np.float32, list(shape), self._audio_out.ctypes.data)
            for (name, _), s_in, s_out in zip(info.states, src, dst):
                if self._cuda:
                    binding.bind_ortvalue_input(name, s_in)
                    binding.bind_ortvalue_output(name + STATE_OUT_SUFFIX, s_out)
                else:
                    binding.bind_cpu_input(name, s_in)
                    binding.bind_output(name + STATE_OUT_SUFFIX, "cpu", 0, np.float32, list(s_out.shape),
                                        s_out.ctypes.data)
            options = None  # (RunOptions without a graph id cost ~20 us a call: onnxruntime looks it up)
            if self.session.cuda_graph:  # one captured graph per bank (their state addresses differ)
                options = ort.RunOptions()
                options.add_run_config_entry("gpu_graph_id", str(next(self.session.graph_ids)))
            self._bindings.append(binding)
            self._run_options.append(options)
        self._shape = shape

    def run(self, block: np.ndarray, cutoff: np.ndarray) -> np.ndarray:
        """Process one block [C, B] (B a multiple of the model frame) with cutoff [C]; returns [C, B].

        The returned array is an internal buffer overwritten by the next call.
        """
        channels, samples = block.shape
        if channels != self.channels:
            raise ValueError(f"state holds {self.channels} channel(s), block has {channels}")
        if samples % self.frame:
            raise ValueError(f"block of {samples} samples is not a multiple of the model frame {self.frame}")
        if self._shape != (channels, samples):
            self._bind(samples)
        if self._cuda:
            self._dev_in.update_inplace(np.ascontiguousarray(block, np.float32))
            self._dev_cutoff.update_inplace(np.ascontiguousarray(cutoff, np.float32))
        else:
            self._audio_in[...] = block
            self._cutoff_in[...] = cutoff
        bank = self._current
        try:
            self._session.run_with_iobinding(self._bindings[bank], self._run_options[bank])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.session.path}: the model broke the contract on a [{channels}, {samples}] "
                             f"block: {str(exc).splitlines()[0]}") from None
        self._current = 1 - bank  # the state outputs just written are the next inputs
        if self._cuda:
            self._audio_out[...] = self._dev_out.numpy()
        return self._audio_out

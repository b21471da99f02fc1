"""ONNX Runtime session for a bandlift streaming model: metadata, provider choice, per-channel state.

The model contract (names, metadata keys, `ModelInfo`) is `bandlift.rt.model.contract`.

`ModelSession.run` binds preallocated buffers (ONNX Runtime I/O binding) and swaps two sets of state
buffers, so a steady stream of equal-size blocks allocates nothing per block; on CUDA the states stay on
the GPU and only the audio crosses the bus.
"""
from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import numpy as np

from bandlift.rt.model.contract import (AUDIO, AUDIO_OUT, CUTOFF, STATE_OUT_SUFFIX, ModelError,  # noqa: F401
                                        ModelInfo, check_outputs, parse_info)

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


def probe(session, info: ModelInfo, path: str = "") -> None:
    """Run one frame of silence on the CPU and check what comes back against the contract: a model that
    breaks it at run time is a ModelError at load, before any audio is touched."""
    feeds = {AUDIO: np.zeros((1, info.frame), np.float32), CUTOFF: np.full(1, 0.5, np.float32),
             **{name: np.zeros((1, *shape), np.float32) for name, shape in info.states}}
    try:
        outputs = session.run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"{path}: the model fails on one frame of silence: {str(exc).splitlines()[0]}") from None
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


class ModelSession:
    """One streaming model with per-channel state; `run(block, cutoff)` processes consecutive blocks."""

    def __init__(self, model: str | os.PathLike | None = None, provider: str = "auto", threads: int = 1,
                 channels: int = 1):
        import onnxruntime as ort

        self.path = resolve_model_path(model)
        providers = choose_providers(provider)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load model {self.path}: {exc}") from exc
        self.providers = self.session.get_providers()
        if provider == "cuda" and _CUDA not in self.providers:
            raise RuntimeError("provider 'cuda' requested but onnxruntime could not start it "
                               "(CUDA/cuDNN libraries missing?); use --provider cpu")
        self.device = "cuda" if _CUDA in self.providers else "cpu"
        self.info = read_info(self.session, str(self.path))
        probe(self.session, self.info, str(self.path))
        self._ort = ort
        self._channels = 0
        self._binding_shape = None
        self.set_channels(channels)

    # -- properties -------------------------------------------------------------------------------
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
    def channels(self) -> int:
        return self._channels

    # -- state ------------------------------------------------------------------------------------
    def set_channels(self, channels: int) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if channels != self._channels:
            self._channels = int(channels)
            self._binding_shape = None
            self._states = [[self._new_state(shape) for _, shape in self.info.states] for _ in range(2)]
            self._current = 0
        self.reset()

    def _new_state(self, shape):
        full = (self._channels, *shape)
        if self.device == "cuda":
            return self._ort.OrtValue.ortvalue_from_shape_and_type(list(full), np.float32, "cuda", 0)
        return np.zeros(full, np.float32)

    def reset(self) -> None:
        """Zero the streaming state (start of a new signal)."""
        for bank in self._states:
            for i, state in enumerate(bank):
                if self.device == "cuda":
                    state.update_inplace(np.zeros(state.shape(), np.float32))
                else:
                    state.fill(0.0)
        self._current = 0

    # -- inference --------------------------------------------------------------------------------
    def _bind(self, channels: int, samples: int) -> None:
        """(Re)build the I/O bindings for blocks of [channels, samples] (two, one per state bank)."""
        self._audio_in = np.zeros((channels, samples), np.float32)
        self._cutoff_in = np.zeros(channels, np.float32)
        self._audio_out = np.zeros((channels, samples), np.float32)
        self._bindings = []
        for bank in range(2):
            binding = self.session.io_binding()
            src, dst = self._states[bank], self._states[1 - bank]
            binding.bind_cpu_input(AUDIO, self._audio_in)
            binding.bind_cpu_input(CUTOFF, self._cutoff_in)
            binding.bind_output(AUDIO_OUT, "cpu", 0, np.float32, list(self._audio_out.shape),
                                self._audio_out.ctypes.data)
            for (name, _), s_in, s_out in zip(self.info.states, src, dst):
                if self.device == "cuda":
                    binding.bind_ortvalue_input(name, s_in)
                    binding.bind_ortvalue_output(name + STATE_OUT_SUFFIX, s_out)
                else:
                    binding.bind_cpu_input(name, s_in)
                    binding.bind_output(name + STATE_OUT_SUFFIX, "cpu", 0, np.float32, list(s_out.shape),
                                        s_out.ctypes.data)
            self._bindings.append(binding)
        self._binding_shape = (channels, samples)

    def run(self, block: np.ndarray, cutoff: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Process one block [C, B] (B a multiple of `frame`) with cutoff [C]; returns audio [C, B].

        The returned array is an internal buffer overwritten by the next call unless `out` is given.
        """
        channels, samples = block.shape
        if channels != self._channels:
            raise ValueError(f"session holds state for {self._channels} channel(s), block has {channels}")
        if samples % self.frame:
            raise ValueError(f"block of {samples} samples is not a multiple of the model frame {self.frame}")
        if self._binding_shape != (channels, samples):
            self._bind(channels, samples)
        self._audio_in[...] = block
        self._cutoff_in[...] = cutoff
        binding = self._bindings[self._current]
        try:
            self.session.run_with_iobinding(binding)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.path}: the model broke the contract on a [{channels}, {samples}] block: "
                             f"{str(exc).splitlines()[0]}") from None
        self._current = 1 - self._current  # the outputs just written are the next inputs
        if out is not None:
            out[...] = self._audio_out
            return out
        return self._audio_out

    def describe(self) -> str:
        i = self.info
        extra = f", {i.params:,} params" if i.params else ""
        return (f"{Path(i.path).name} ({i.sample_rate} Hz, frame {i.frame}, delay {i.delay}{extra}; "
                f"{self.device})")

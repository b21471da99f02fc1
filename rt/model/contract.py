"""The bandlift streaming-model contract: the one place its names, metadata keys and checks live.

A bandlift model is an ONNX graph with inputs ``audio`` [C, B] at the model rate, ``cutoff`` [C]
(input bandwidth / Nyquist), then one input per streaming state (zero-initialised, shape [C, ...]);
outputs ``audio_out`` [C, B] then ``<state>_out`` in the same order. String metadata ``bandlift.*``
gives the rate, the frame (B must be a multiple of it), the delay and the state shapes, plus the
version, size and generator config.

Written by `bandlift.export.onnx_export` and the tests' fake models (`metadata`, `input_names`,
`output_names`), read by `bandlift.rt.model.session` (`parse_info`). Pure Python: no onnx, no
onnxruntime, no numpy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

AUDIO = "audio"
CUTOFF = "cutoff"
AUDIO_OUT = "audio_out"
STATE_OUT_SUFFIX = "_out"

PREFIX = "bandlift."
SAMPLE_RATE = "bandlift.sample_rate"
FRAME = "bandlift.frame"
DELAY = "bandlift.delay"
STATE = "bandlift.state"  # JSON list of {"name": str, "shape": [int, ...]} (shape without the channel axis)
VERSION = "bandlift.version"
PARAMS = "bandlift.params"
MFLOPS_PER_SECOND = "bandlift.mflops_per_second"
CONFIG = "bandlift.config"  # JSON of the generator config
REQUIRED_KEYS = (SAMPLE_RATE, FRAME, DELAY, STATE)


class ModelError(ValueError):
    """The model file is missing, unreadable or does not follow the bandlift streaming contract."""


@dataclass
class ModelInfo:
    """What the engine needs to know about a model, read from its metadata."""

    sample_rate: int
    frame: int
    delay: int
    states: list[tuple[str, tuple[int, ...]]]
    version: str = ""
    params: int | None = None
    mflops_per_second: float | None = None
    config: dict = field(default_factory=dict)
    path: str = ""


def input_names(state_names) -> list[str]:
    return [AUDIO, CUTOFF, *state_names]


def output_names(state_names) -> list[str]:
    return [AUDIO_OUT, *[f"{n}{STATE_OUT_SUFFIX}" for n in state_names]]


def metadata(sample_rate: int, frame: int, delay: int, states, version: str, params: int | None = None,
             mflops_per_second: float | None = None, config: dict | None = None,
             extra: dict | None = None) -> dict[str, str]:
    """The metadata map (all strings) of a model; `states` is [(name, shape), ...]."""
    meta = {
        SAMPLE_RATE: str(sample_rate), FRAME: str(frame), DELAY: str(delay),
        STATE: json.dumps([{"name": n, "shape": list(s)} for n, s in states]),
        VERSION: version,
    }
    if params is not None:
        meta[PARAMS] = str(params)
    if mflops_per_second is not None:
        meta[MFLOPS_PER_SECOND] = f"{mflops_per_second:.1f}"
    if config is not None:
        meta[CONFIG] = json.dumps(config)
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return meta


def parse_info(meta: dict, inputs: list[str], outputs: list[str], path: str = "") -> ModelInfo:
    """Check a model's metadata map and input/output names against the contract; its ModelInfo."""
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ModelError(f"{path or 'model'}: not a bandlift streaming model (metadata lacks {', '.join(missing)})")
    try:
        states = [(s["name"], tuple(int(d) for d in s["shape"])) for s in json.loads(meta[STATE])]
        info = ModelInfo(
            sample_rate=int(meta[SAMPLE_RATE]), frame=int(meta[FRAME]),
            delay=int(meta[DELAY]), states=states, version=meta.get(VERSION, ""),
            params=int(meta[PARAMS]) if PARAMS in meta else None,
            mflops_per_second=float(meta[MFLOPS_PER_SECOND]) if MFLOPS_PER_SECOND in meta else None,
            config=json.loads(meta.get(CONFIG, "{}")), path=str(path),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path or 'model'}: malformed bandlift metadata: {exc}") from exc
    if info.sample_rate <= 0 or info.frame <= 0 or info.delay < 0:
        raise ModelError(f"{path}: bad metadata rate={info.sample_rate} frame={info.frame} delay={info.delay}")
    names = [n for n, _ in states]
    want_in, want_out = input_names(names), output_names(names)
    if list(inputs) != want_in or list(outputs) != want_out:
        raise ModelError(f"{path}: inputs/outputs {list(inputs)} -> {list(outputs)} do not follow the contract "
                         f"{want_in} -> {want_out}")
    return info

"""The bandlift streaming-model contract: the one place its names, metadata keys and checks live.

A bandlift model (contract 2) is an ONNX graph with inputs ``audio`` [C, B] at the model rate,
``cutoff`` [C] (input bandwidth / Nyquist) and ``state`` [C, S]: all the streaming state of a stream
packed in one zero-initialised tensor; outputs ``audio_out`` [C, B] and ``state_out`` [C, S], the next
call's ``state``. String metadata ``bandlift.*`` gives the contract version, the rate, the frame (B must
be a multiple of it), the delay and the parts packed in the state (name and shape, S values in all;
their layout is the model's own; one part has a meaning the engine uses: `NOISE_CLOCK`, a count of
frames, advanced by the engine over the frames a hold skips), plus the version, size and generator config, and optionally the
reach (output sample t depends on input samples t - reach .. t: what the engine warms the model up
on before it returns from a hold; without it, `bandlift.rt.states.WARM_S`). Contract 1 (one input
per state) is refused with the command that re-exports such a model.

Written by `bandlift.export.onnx_export` and the tests' fake models (`metadata`, `INPUTS`, `OUTPUTS`,
`state_size`), read by `bandlift.rt.model.session` (`parse_info`). Pure Python: no onnx, no
onnxruntime, no numpy.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from bandlift.rt.errors import BandliftError

AUDIO = "audio"
CUTOFF = "cutoff"
AUDIO_OUT = "audio_out"
STATE_IN = "state"
STATE_OUT_SUFFIX = "_out"
STATE_OUT = STATE_IN + STATE_OUT_SUFFIX
INPUTS = (AUDIO, CUTOFF, STATE_IN)
OUTPUTS = (AUDIO_OUT, STATE_OUT)

PREFIX = "bandlift."
CONTRACT = "bandlift.contract"
CONTRACT_VERSION = 2
REEXPORT = "bandlift export --from-onnx {path} -o NEW.onnx"  # rebuilds a contract-1 model's weights
SAMPLE_RATE = "bandlift.sample_rate"
FRAME = "bandlift.frame"
DELAY = "bandlift.delay"
# a part of shape (1,) counting the frames the model has run (its noise's clock): the engine adds the frames a
# hold skips, so the noise after the hold is the one an uninterrupted run plays
NOISE_CLOCK = "noise_clock"
STATE = "bandlift.state"  # JSON list of the packed parts {"name": str, "shape": [int, ...]} (no channel axis)
VERSION = "bandlift.version"
PARAMS = "bandlift.params"
MFLOPS_PER_SECOND = "bandlift.mflops_per_second"
CONFIG = "bandlift.config"  # JSON of the generator config
LOWEST_CUTOFF = "bandlift.lowest_cutoff_hz"  # the lowest input band the model was trained on
REACH = "bandlift.reach"  # optional: input samples before an output sample that can change it
REQUIRED_KEYS = (SAMPLE_RATE, FRAME, DELAY, STATE)
FLOAT = "tensor(float)"  # every input and output is float32

# Bounds on what metadata may ask for (a model file from someone else never drives allocation)
MAX_RATE = 768_000
MAX_FRAME = 1 << 16
MAX_DELAY_SECONDS = 10
MAX_STATES = 256
MAX_STATE_VALUES = 1 << 20  # per channel, all states together (the shipped model: ~8k)

# The lowest input bandwidth (Hz) any model serves: training draws its cutoffs from here up
# (train/degrade.py). A measured edge below it is no band edge (a low tone, a hum): `--input-cutoff auto`
# then treats the input as full band.
MIN_CUTOFF_HZ = 3400.0  # telephone's 300-3400 Hz band
# A model's own lowest cutoff (LOWEST_CUTOFF in its metadata): a lower input band is served from there,
# never below what it learned (below it a model over-fills: the shipped one by +14 dB on telephone
# input). Models exported before the key were trained from 4 kHz.
LEGACY_LOWEST_CUTOFF_HZ = 4000.0


class ModelError(BandliftError, ValueError):
    """The model file is missing, unreadable or does not follow the bandlift streaming contract."""


@dataclass
class ModelInfo:
    """What the engine needs to know about a model, read from its metadata."""

    sample_rate: int
    frame: int
    delay: int
    states: list[tuple[str, tuple[int, ...]]]  # the graph's state input: [("state", (S,))]
    version: str = ""
    params: int | None = None
    mflops_per_second: float | None = None
    config: dict = field(default_factory=dict)
    path: str = ""
    parts: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)  # what `state` packs
    lowest_cutoff_hz: float = LEGACY_LOWEST_CUTOFF_HZ
    reach: int | None = None  # samples; None: not in the metadata


def state_size(parts) -> int:
    """S: the values per channel of a state packing these (name, shape) parts."""
    return sum(math.prod(shape) for _, shape in parts)


def metadata(sample_rate: int, frame: int, delay: int, states, version: str, params: int | None = None,
             mflops_per_second: float | None = None, config: dict | None = None,
             extra: dict | None = None, reach: int | None = None,
             lowest_cutoff_hz: float = MIN_CUTOFF_HZ) -> dict[str, str]:
    """The metadata map (all strings) of a model; `states` is the parts packed in its state,
    [(name, shape), ...]."""
    meta = {
        CONTRACT: str(CONTRACT_VERSION), SAMPLE_RATE: str(sample_rate), FRAME: str(frame), DELAY: str(delay),
        STATE: json.dumps([{"name": n, "shape": list(s)} for n, s in states]),
        VERSION: version, LOWEST_CUTOFF: f"{float(lowest_cutoff_hz):g}",
    }
    if params is not None:
        meta[PARAMS] = str(params)
    if mflops_per_second is not None:
        meta[MFLOPS_PER_SECOND] = f"{mflops_per_second:.1f}"
    if config is not None:
        meta[CONFIG] = json.dumps(config)
    if reach is not None:
        meta[REACH] = str(reach)
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return meta


def _parse_states(text: str) -> list[tuple[str, tuple[int, ...]]]:
    states = json.loads(text)
    if not isinstance(states, list) or len(states) > MAX_STATES:
        raise ValueError(f"state must be a list of at most {MAX_STATES} entries")
    out, total = [], 0
    for s in states:
        name, shape = s["name"], s["shape"]
        if not isinstance(name, str) or not isinstance(shape, list) or len(shape) > 8:
            raise ValueError(f"state entry {s!r} is not {{'name': str, 'shape': [int, ...]}}")
        if not all(type(d) is int and d >= 1 for d in shape):
            raise ValueError(f"state {name!r}: shape {shape} must be positive integers")
        size = 1
        for d in shape:
            size *= d
        total += size
        if total > MAX_STATE_VALUES:
            raise ValueError(f"state asks for more than {MAX_STATE_VALUES} values per channel")
        out.append((name, tuple(shape)))
    return out


def _check_declared(info: ModelInfo, declared: dict, path: str) -> None:
    """Types and ranks of the graph's declared inputs/outputs, and their fixed dims against the metadata."""
    want = {AUDIO: (None, None), CUTOFF: (None,), AUDIO_OUT: (None, None)}
    for name, shape in info.states:
        want[name] = want[name + STATE_OUT_SUFFIX] = (None, *shape)
    for name, (kind, dims) in declared.items():
        expect = want.get(name)
        if kind != FLOAT:
            raise ModelError(f"{path}: {name} is {kind}, the contract wants {FLOAT}")
        if expect is None or dims is None:
            continue
        fixed_mismatch = any(isinstance(d, int) and e is not None and d != e for d, e in zip(dims, expect))
        if len(dims) != len(expect) or fixed_mismatch:
            shown = ["C" if e is None else e for e in expect]
            raise ModelError(f"{path}: {name} is declared {list(dims)}, the metadata says {shown}")


def check_outputs(info: ModelInfo, outputs: list, channels: int, samples: int, path: str = "") -> None:
    """Arrays a model returned for an [channels, samples] block: audio_out then the states, as the
    contract says (float32, [C, B] and [C, *shape])."""
    names = [AUDIO_OUT, *[n + STATE_OUT_SUFFIX for n, _ in info.states]]
    shapes = [(channels, samples), *[(channels, *s) for _, s in info.states]]
    if len(outputs) != len(names):
        raise ModelError(f"{path}: the model returned {len(outputs)} outputs, the contract wants {len(names)}")
    for name, shape, value in zip(names, shapes, outputs):
        dtype, got = str(getattr(value, "dtype", type(value).__name__)), tuple(getattr(value, "shape", ()))
        if dtype != "float32" or got != shape:
            raise ModelError(f"{path}: the model returned {name} as {dtype} {list(got)} for a "
                             f"[{channels}, {samples}] block; the contract wants float32 {list(shape)}")


def parse_info(meta: dict, inputs: list[str], outputs: list[str], path: str = "",
               declared: dict | None = None) -> ModelInfo:
    """Check a model's metadata map and input/output names against the contract; its ModelInfo.

    `declared` (optional): name -> (type string, dims: ints for fixed, anything else for free), as the
    graph declares its inputs and outputs; checked against the contract and the metadata's shapes."""
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ModelError(f"{path or 'model'}: not a bandlift streaming model (metadata lacks {', '.join(missing)})")
    contract = meta.get(CONTRACT, "1")
    if contract != str(CONTRACT_VERSION):
        raise ModelError(f"{path or 'model'}: a bandlift model of contract {contract[:20]}; this bandlift reads "
                         f"contract {CONTRACT_VERSION}: re-export it with `{REEXPORT.format(path=path or 'MODEL.onnx')}`")
    try:
        parts = _parse_states(meta[STATE])
        info = ModelInfo(
            sample_rate=int(meta[SAMPLE_RATE]), frame=int(meta[FRAME]),
            delay=int(meta[DELAY]), states=[(STATE_IN, (state_size(parts),))], parts=parts,
            version=meta.get(VERSION, ""),
            params=int(meta[PARAMS]) if PARAMS in meta else None,
            mflops_per_second=float(meta[MFLOPS_PER_SECOND]) if MFLOPS_PER_SECOND in meta else None,
            config=json.loads(meta.get(CONFIG, "{}")), path=str(path),
            lowest_cutoff_hz=float(meta.get(LOWEST_CUTOFF, LEGACY_LOWEST_CUTOFF_HZ)),
            reach=int(meta[REACH]) if REACH in meta else None,
        )
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ModelError(f"{path or 'model'}: malformed bandlift metadata: {str(exc)[:200]}") from None
    if not (0 < info.sample_rate <= MAX_RATE and 0 < info.frame <= MAX_FRAME
            and 0 <= info.delay <= MAX_DELAY_SECONDS * info.sample_rate
            and 0 <= (info.reach or 0) <= MAX_DELAY_SECONDS * info.sample_rate
            and MIN_CUTOFF_HZ <= info.lowest_cutoff_hz <= info.sample_rate / 2):
        raise ModelError(f"{path}: bad metadata rate={info.sample_rate} frame={info.frame} delay={info.delay} "
                         f"reach={info.reach} lowest cutoff={info.lowest_cutoff_hz:g} (rate 1..{MAX_RATE} Hz, frame "
                         f"1..{MAX_FRAME}, delay and reach at most {MAX_DELAY_SECONDS} s, lowest cutoff "
                         f"{MIN_CUTOFF_HZ:g} Hz..Nyquist)")
    want_in, want_out = list(INPUTS), list(OUTPUTS)
    if list(inputs) != want_in or list(outputs) != want_out:
        raise ModelError(f"{path}: inputs/outputs {list(inputs)} -> {list(outputs)} do not follow the contract "
                         f"{want_in} -> {want_out}")
    if declared:
        _check_declared(info, declared, path)
    return info

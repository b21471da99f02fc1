"""Torch generator -> streaming ONNX model (its state packed in one input/output), checked against torch.

The contract (input/output names, metadata keys) is `bandlift.rt.model.contract`, which the engine's
session reads back. The model's state list, whatever it is, travels packed in one tensor; every
spectral generator (the shipped architecture, the noise-fill prior recipes) is exported as the lean graph
of `bandlift.export.lean` (about half the time per live block), any other through its own `stream`
(`PackedStream`); onnxscript constant-folds the result.
`generator_from_onnx` rebuilds the generator of a model written through `stream` (any contract) from its
own initializers, so `bandlift export --from-onnx` re-exports it.
"""
from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from bandlift.export import lean
from bandlift.rt import __version__
from bandlift.rt.errors import BandliftError
from bandlift.rt.io.files import _commit
from bandlift.rt.model import contract
from bandlift.train.layers import count_params
from bandlift.train.model import Generator, GeneratorConfig

OPSET = 17


class PackedStream(torch.nn.Module):
    """`gen.stream` with all its states packed in one [B, S] tensor: forward(audio, cutoff, state) ->
    (audio_out, state_out). Consecutive states of the same leading shape (a conv cache per block)
    form one group, stored as [*lead, sum of their last dims]: one Reshape and one Split per group
    instead of one Reshape per state."""

    def __init__(self, gen: Generator):
        super().__init__()
        self.gen = gen
        self.groups: list[list[tuple[str, tuple[int, ...]]]] = []
        for name, shape in gen.state_shapes():
            shape = tuple(shape)
            if self.groups and self.groups[-1][0][1][:-1] == shape[:-1]:
                self.groups[-1].append((name, shape))
            else:
                self.groups.append([(name, shape)])

    def parts(self) -> list[tuple[str, tuple[int, ...]]]:
        """The packed groups (the contract metadata's parts)."""
        return [("+".join(n for n, _ in group), (*group[0][1][:-1], sum(s[-1] for _, s in group)))
                for group in self.groups]

    def forward(self, audio, cutoff, state):
        batch = state.shape[0]
        states = []
        regions = state.split([math.prod(shape) for _, shape in self.parts()], dim=1)
        for group, region, (_, shape) in zip(self.groups, regions, self.parts()):
            region = region.reshape(batch, *shape)
            states.extend(region.split([s[-1] for _, s in group], dim=-1) if len(group) > 1 else [region])
        y, new_states = self.gen.stream(audio, cutoff, states)
        packed, start = [], 0
        for group in self.groups:
            new = new_states[start:start + len(group)]
            start += len(group)
            packed.append((torch.cat(new, dim=-1) if len(new) > 1 else new[0]).reshape(batch, -1))
        return y, torch.cat(packed, dim=1)


def streaming_module(gen: Generator, lean_graph: bool = True) -> tuple[torch.nn.Module, list]:
    """The module exported for `gen` and the parts its packed state holds: the lean graph where
    `lean.supports` the generator (and `lean_graph`), else its own `stream` with the states packed."""
    if lean_graph and lean.supports(gen):
        module = lean.LeanSpectralStream(gen).eval()
        return module, module.parts()
    module = PackedStream(gen).eval()
    return module, module.parts()


def export_generator(gen: Generator, path: str | Path, extra_metadata: dict | None = None,
                     lean_graph: bool = True) -> Path:
    """Write ``gen`` as a streaming ONNX model with its metadata; returns the path. Written under a
    temporary name and renamed at the end: a failed export leaves an existing file as it was.
    `lean_graph=False`: the model's own `stream` even where the lean graph exists (for comparisons)."""
    gen = gen.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        _export(gen, tmp, extra_metadata, lean_graph)
        _commit(Path(tmp), path)  # as the audio outputs: 0666 less the umask (mkstemp made it 0600)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _export(gen: Generator, path: str, extra_metadata: dict | None, lean_graph: bool) -> None:
    block = gen.config.frame * 2
    stream, parts = streaming_module(gen, lean_graph)
    example = (torch.zeros(1, block), torch.full((1,), 0.5), torch.zeros(1, contract.state_size(parts)))
    dynamic = {contract.AUDIO: {0: "channels", 1: "samples"}, contract.CUTOFF: {0: "channels"},
               contract.AUDIO_OUT: {0: "channels", 1: "samples"}, contract.STATE_IN: {0: "channels"},
               contract.STATE_OUT: {0: "channels"}}
    with torch.no_grad(), warnings.catch_warnings():
        # the exporter's notes on its own internals (constant folding, GRU batch sizes: the states are
        # inputs here) are not the user's business; the checker below judges the model
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        torch.onnx.export(
            stream, example, str(path), dynamo=False, opset_version=OPSET,
            input_names=list(contract.INPUTS), output_names=list(contract.OUTPUTS), dynamic_axes=dynamic,
        )
    model = simplify(onnx.load(str(path)))
    for value in (model.graph.input[2], model.graph.output[1]):  # declared [channels, S], as the contract says
        value.type.tensor_type.shape.dim[1].dim_value = example[2].shape[1]
    metadata = contract.metadata(
        gen.config.sample_rate, gen.config.frame, gen.delay, parts, __version__,
        params=count_params(gen), mflops_per_second=graph_mflops_per_second(gen, stream, parts),
        config=gen.config.to_dict(),
        extra=extra_metadata, reach=gen.reach,
        lowest_cutoff_hz=getattr(gen, "lowest_cutoff_hz", contract.MIN_CUTOFF_HZ))
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def graph_mflops_per_second(gen: Generator, stream: torch.nn.Module, parts: list) -> float:
    """MFLOP per second of audio of the graph exported (torch's FLOP counter on `stream`, one second
    in one call at a half-band cutoff: matmuls and convolutions; a GRU's kernels are not counted and
    are added by hand): what a lean export leaves out (a fixed correction's network) is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    rate = gen.config.sample_rate
    frames = rate // gen.config.frame
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        stream(torch.zeros(1, frames * gen.config.frame), torch.full((1,), 0.5),
               torch.zeros(1, contract.state_size(parts)))
    flops = counter.get_total_flops()
    gru = getattr(gen, "gru", None)
    if gru is not None and not getattr(stream, "fixed_correction", False):  # 3 gates, 2 matmuls each
        flops += 2 * 3 * gru.hidden_size * (gru.input_size + gru.hidden_size) * frames
    return flops / 1e6


def read_parts(path) -> list:
    """The packed state's parts from an exported model's metadata."""
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return contract.parse_info(meta, contract.INPUTS, contract.OUTPUTS, str(path)).parts


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxscript's constant folding and dead-code removal. Not its pattern rewriter: its `x + 0 -> x`
    rule takes any scalar within 1e-8 of zero for zero (onnxscript 0.7), which drops the 1e-12 floor
    of a logarithm (silence became NaN); ONNX Runtime's own fusions gave the same node count."""
    import onnx_ir as ir
    import onnxscript.optimizer
    from onnx_ir.passes.common import RemoveUnusedNodesPass

    ir_model = ir.from_proto(model)
    onnxscript.optimizer.fold_constants(ir_model)
    RemoveUnusedNodesPass()(ir_model)
    return ir.to_proto(ir_model)


# Config keys an older model's metadata may lack: each names a feature added since, absent = off.
ABSENT_MEANS_OFF = {"context_fft": 0, "gru": 0, "exciter": False, "envelope_bands": 0, "prior": False}


class OnnxWeightsError(BandliftError, ValueError):
    """The ONNX model does not carry a generator this bandlift can rebuild."""


def generator_from_onnx(path: str | Path) -> Generator:
    """The torch generator of a model exported by `export_generator` with the model's own `stream`
    (contract 1, or contract 2 without the lean graph): its config from the metadata, its weights from
    the initializers (named after the generator's parameters). Reads data only, runs nothing."""
    import json

    try:
        model = onnx.load(str(path), load_external_data=False)  # weights inside the file only
    except Exception as exc:  # onnx raises DecodeError and others
        raise OnnxWeightsError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    meta = {p.key: p.value for p in model.metadata_props}
    if contract.CONFIG not in meta:
        raise OnnxWeightsError(f"{path}: no generator config in its metadata ({contract.CONFIG})")
    try:
        config = {**ABSENT_MEANS_OFF, **json.loads(meta[contract.CONFIG])}
        gen = Generator(GeneratorConfig.from_dict(config))
        # what it was trained on stays with it (a model written before the key: 4 kHz)
        gen.lowest_cutoff_hz = float(meta.get(contract.LOWEST_CUTOFF, contract.LEGACY_LOWEST_CUTOFF_HZ))
    except (ValueError, TypeError, RecursionError) as exc:
        raise OnnxWeightsError(f"{path}: its generator config does not build: {str(exc)[:200]}") from None
    try:
        weights = {init.name.removeprefix("gen."): torch.from_numpy(onnx.numpy_helper.to_array(init).copy())
                   for init in model.graph.initializer if not onnx.external_data_helper.uses_external_data(init)}
    except (ValueError, TypeError) as exc:
        raise OnnxWeightsError(f"{path}: unreadable weights ({str(exc)[:200]})") from None
    wanted = gen.state_dict()
    missing = [name for name in wanted if name not in weights]
    if missing:
        raise OnnxWeightsError(f"{path}: lacks the weights {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
                               " (a lean export: re-export from its checkpoint)")
    try:
        gen.load_state_dict({name: weights[name] for name in wanted})
    except RuntimeError as exc:
        raise OnnxWeightsError(f"{path}: its weights do not fit its config: {str(exc).splitlines()[-1][:200]}") from None
    return gen.eval()


def check_parity(gen: Generator, path: str | Path, blocks=(64, 128, 512), seconds=0.5, seed=0) -> dict:
    """Max abs error between ONNX Runtime block-by-block and torch whole-signal, per block size; the
    signal is noise with digital silence at its start and in its middle (log floors, zero division)."""
    import onnxruntime as ort

    gen = gen.eval()
    sr = gen.config.sample_rate
    rng = np.random.default_rng(seed)
    n = int(seconds * sr) // max(blocks) * max(blocks)
    x = (rng.standard_normal((2, n)) * 0.1).astype(np.float32)
    x[:, : n // 8] = 0.0
    x[:, n // 2: n // 2 + n // 8] = 0.0
    cutoff = np.array([8000 / (sr / 2), 4000 / (sr / 2)], dtype=np.float32)
    with torch.no_grad():
        reference = gen(torch.from_numpy(x), torch.from_numpy(cutoff)).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    size = contract.state_size(read_parts(path))
    errors = {}
    for block in blocks:
        state = np.zeros((2, size), np.float32)
        out = []
        for start in range(0, n, block):
            y, state = session.run(None, {contract.AUDIO: x[:, start:start + block], contract.CUTOFF: cutoff,
                                          contract.STATE_IN: state})
            out.append(y)
        streamed = np.concatenate(out, axis=1)[:, gen.delay:]  # the stream runs `delay` samples late
        errors[block] = float(np.max(np.abs(streamed - reference[:, : n - gen.delay])))
    return errors

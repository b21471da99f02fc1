"""Torch generator -> streaming ONNX model (state as explicit inputs/outputs), checked against torch.

The contract (input/output names, metadata keys) is `bandlift.rt.model.contract`, which the engine's
session reads back.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from bandlift.rt import __version__
from bandlift.rt.io.files import _commit
from bandlift.rt.model import contract
from bandlift.train.model import Generator, count_params, mflops_per_second

OPSET = 17


class _StreamingWrapper(torch.nn.Module):
    def __init__(self, gen: Generator):
        super().__init__()
        self.gen = gen

    def forward(self, audio, cutoff, *states):
        y, new_states = self.gen.stream(audio, cutoff, list(states))
        return (y, *new_states)


def export_generator(gen: Generator, path: str | Path, extra_metadata: dict | None = None) -> Path:
    """Write ``gen`` as a streaming ONNX model with its metadata; returns the path. Written under a
    temporary name and renamed at the end: a failed export leaves an existing file as it was."""
    gen = gen.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        _export(gen, tmp, extra_metadata)
        _commit(Path(tmp), path)  # as the audio outputs: 0666 less the umask (mkstemp made it 0600)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _export(gen: Generator, path: str, extra_metadata: dict | None) -> None:
    names = [name for name, _ in gen.state_shapes()]
    block = gen.config.frame * 2
    example = (torch.zeros(1, block), torch.full((1,), 0.5), *gen.initial_states(1))
    input_names, output_names = contract.input_names(names), contract.output_names(names)
    dynamic = {contract.AUDIO: {0: "channels", 1: "samples"}, contract.CUTOFF: {0: "channels"},
               contract.AUDIO_OUT: {0: "channels", 1: "samples"}}
    for name in [*input_names[2:], *output_names[1:]]:
        dynamic[name] = {0: "channels"}
    with torch.no_grad(), warnings.catch_warnings():
        # the exporter's notes on its own internals (constant folding, GRU batch sizes: the states are
        # inputs here) are not the user's business; the checker below judges the model
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        torch.onnx.export(
            _StreamingWrapper(gen), example, str(path), dynamo=False, opset_version=OPSET,
            input_names=input_names, output_names=output_names,
            dynamic_axes=dynamic,
        )
    model = onnx.load(str(path))
    metadata = contract.metadata(
        gen.config.sample_rate, gen.config.frame, gen.delay, gen.state_shapes(), __version__,
        params=count_params(gen), mflops_per_second=mflops_per_second(gen), config=gen.config.to_dict(),
        extra=extra_metadata)
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def check_parity(gen: Generator, path: str | Path, blocks=(64, 128, 512), seconds=0.5, seed=0) -> dict:
    """Max abs error between ONNX Runtime block-by-block and torch whole-signal, per block size."""
    import onnxruntime as ort

    gen = gen.eval()
    sr = gen.config.sample_rate
    rng = np.random.default_rng(seed)
    n = int(seconds * sr) // max(blocks) * max(blocks)
    x = (rng.standard_normal((2, n)) * 0.1).astype(np.float32)
    cutoff = np.array([8000 / (sr / 2), 4000 / (sr / 2)], dtype=np.float32)
    with torch.no_grad():
        reference = gen(torch.from_numpy(x), torch.from_numpy(cutoff)).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    shapes = gen.state_shapes()
    errors = {}
    for block in blocks:
        states = {name: np.zeros((2, *shape), np.float32) for name, shape in shapes}
        out = []
        for start in range(0, n, block):
            result = session.run(None, {contract.AUDIO: x[:, start:start + block], contract.CUTOFF: cutoff,
                                          **states})
            out.append(result[0])
            states = {name: value for (name, _), value in zip(shapes, result[1:])}
        streamed = np.concatenate(out, axis=1)[:, gen.delay:]  # the stream runs `delay` samples late
        errors[block] = float(np.max(np.abs(streamed - reference[:, : n - gen.delay])))
    return errors

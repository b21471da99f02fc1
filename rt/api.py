"""Pedalboard-style Python API: ``Upsampler(...).process(audio, sample_rate)``.

Placeholder until the streaming engine lands: the class exists so ``bandlift.rt`` imports.
"""
from __future__ import annotations


class Upsampler:
    """Upsample audio with a streaming bandlift model (ONNX Runtime, no torch)."""

    def __init__(self, model=None, out_rate: int = 48000, block: int | None = None,
                 provider: str = "auto", threads: int = 1):
        self.model = model
        self.out_rate = int(out_rate)
        self.block = block
        self.provider = provider
        self.threads = int(threads)

    def process(self, audio, sample_rate, input_cutoff=None, delay_compensation=True):
        raise NotImplementedError("Upsampler.process: the streaming engine is not built yet")

    def reset(self) -> None:
        pass

"""The waveform generator: a learned filterbank, dilated causal convolutions and a transposed
convolution, output = x + residual (the spectral generator in train/model.py is the shipped kind)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bandlift.train.config import GeneratorConfig
from bandlift.train.layers import ResBlock, StreamConv1d, StreamConvTranspose1d


class WaveformGenerator(nn.Module):
    """Learned filterbank + dilated causal convs + transposed conv, output = x + residual."""

    def __init__(self, config: GeneratorConfig | None = None):
        super().__init__()
        self.config = config = config or GeneratorConfig()
        s, c = config.frame, config.channels
        self.encoder = StreamConv1d(1, c, 2 * s, stride=s)
        self.blocks = nn.ModuleList(
            ResBlock(c, config.kernel, d, config.negative_slope) for d in config.dilations
        )
        # cutoff -> per-channel multiplicative gates (no additive term keeps G homogeneous)
        self.film = nn.Sequential(nn.Linear(1, 32), nn.SiLU(), nn.Linear(32, c * len(config.dilations)))
        self.decoder = StreamConvTranspose1d(c, 1, s)
        self.slope = config.negative_slope

    @property
    def delay(self) -> int:
        return 0  # output sample n is aligned with input sample n (lookahead is inside one frame)

    @property
    def reach(self) -> int:
        """Input samples before an output sample that can change it: the decoder's overlap with the
        frame before, the convolutions' frames before that and the encoder's two-frame window."""
        s = self.config.frame
        return s - 1 + s * (self.config.kernel - 1) * sum(self.config.dilations) + 2 * s

    def state_shapes(self) -> list[tuple[str, tuple[int, int]]]:
        shapes = [("enc_cache", self.encoder.state_shape())]
        shapes += [(f"block{i}_cache", b.conv.state_shape()) for i, b in enumerate(self.blocks)]
        shapes.append(("dec_cache", self.decoder.state_shape()))
        return shapes

    def initial_states(self, batch: int, device=None) -> list[torch.Tensor]:
        return [torch.zeros(batch, *shape, device=device) for _, shape in self.state_shapes()]

    def stream(self, x, cutoff, states):
        """x [B, T] (T a multiple of frame), cutoff [B] in (0, 1], states -> (y [B, T], states)."""
        gates = 1.0 + self.film(cutoff.reshape(-1, 1) * 2.0 - 1.0)
        gates = gates.reshape(x.shape[0], len(self.blocks), -1, 1)
        h, enc_cache = self.encoder(x.unsqueeze(1), states[0])
        new_states = [enc_cache]
        for i, block in enumerate(self.blocks):
            h, cache = block(h, gates[:, i], states[1 + i])
            new_states.append(cache)
        g, dec_cache = self.decoder(F.leaky_relu(h, self.slope), states[-1])
        new_states.append(dec_cache)
        return x + g.squeeze(1), new_states

    def forward(self, x, cutoff):
        pad = (-x.shape[-1]) % self.config.frame
        xp = F.pad(x, (0, pad))
        y, _ = self.stream(xp, cutoff, self.initial_states(x.shape[0], x.device))
        return y[..., : x.shape[-1]]

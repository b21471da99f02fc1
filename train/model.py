"""The causal generator and its discriminators.

One set of weights, one code path: ``Generator.stream(x, cutoff, states)`` processes a block and
returns the new states; ``Generator.forward(x, cutoff)`` is the same call with zero states, so a signal
processed whole equals it processed block by block (tests/test_model.py). Causality comes from left
padding only (the cached context of each conv); the transposed decoder conv is trimmed on the right and
its overlap carried to the next block (encodec's SConv1d/SConvTranspose1d, GTCRN's stream modules).

The generator has no biases and only leaky-ReLU/multiplicative conditioning, so it is positively
homogeneous: G(a*x) = a*G(x) for a > 0. Loudness never changes what it does.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GeneratorConfig:
    sample_rate: int = 48000
    frame: int = 64  # hop of the learned filterbank; blocks are multiples of it
    channels: int = 64
    kernel: int = 3
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 1, 2, 4, 8, 16])
    negative_slope: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


class StreamConv1d(nn.Module):
    """Causal Conv1d whose left context is an explicit cache: out = conv(cat(cache, x))."""

    def __init__(self, cin, cout, kernel, stride=1, dilation=1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation, bias=False)
        self.context = (kernel - 1) * dilation + 1 - stride
        self.cin = cin

    def state_shape(self) -> tuple[int, int]:
        return (self.cin, self.context)

    def forward(self, x, cache):
        xc = torch.cat([cache, x], dim=-1)
        return self.conv(xc), xc[..., xc.shape[-1] - self.context:]


class StreamConvTranspose1d(nn.Module):
    """Transposed conv with kernel 2*stride: the right overlap is carried into the next block."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride, bias=False)
        self.stride = stride
        self.cout = cout

    def state_shape(self) -> tuple[int, int]:
        return (self.cout, self.stride)

    def forward(self, x, overlap):
        y = self.conv(x)  # [B, cout, T + stride]
        n = y.shape[-1] - self.stride
        head = y[..., : self.stride] + overlap
        return torch.cat([head, y[..., self.stride: n]], dim=-1), y[..., n:]


class ResBlock(nn.Module):
    def __init__(self, channels, kernel, dilation, slope):
        super().__init__()
        self.conv = StreamConv1d(channels, channels, kernel, dilation=dilation)
        self.mix = nn.Conv1d(channels, channels, 1, bias=False)
        self.slope = slope

    def forward(self, h, gate, cache):
        y, cache = self.conv(F.leaky_relu(h, self.slope), cache)
        return h + self.mix(F.leaky_relu(y * gate, self.slope)), cache


class Generator(nn.Module):
    """x (band-limited, at 48 kHz) and cutoff (input bandwidth / Nyquist) -> full-band audio."""

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


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def mflops_per_second(gen: Generator) -> float:
    """Multiply-accumulates x2 per second of 48 kHz audio (convolutions only; the rest is negligible)."""
    cfg = gen.config
    frames = cfg.sample_rate / cfg.frame
    c, s = cfg.channels, cfg.frame
    per_frame = 2 * (2 * s * c)  # encoder
    per_frame += len(cfg.dilations) * 2 * (c * c * cfg.kernel + c * c)  # dilated + 1x1 mix
    per_frame += 2 * (2 * s * c)  # decoder
    return per_frame * frames / 1e6


# ---------------------------------------------------------------- discriminators (HiFi-GAN, UnivNet)

def judge(layers, post, x):
    """Run a discriminator's conv stack: (score [B, -1], feature maps for the feature-matching loss)."""
    feats = []
    for layer in layers:
        x = F.leaky_relu(layer(x), 0.1)
        feats.append(x)
    x = post(x)
    feats.append(x)
    return x.flatten(1), feats


class PeriodDiscriminator(nn.Module):
    def __init__(self, period, channels=(8, 16, 32, 64)):
        super().__init__()
        self.period = period
        layers, cin = [], 1
        for cout in channels:
            layers.append(nn.utils.parametrizations.weight_norm(
                nn.Conv2d(cin, cout, (5, 1), (3, 1), padding=(2, 0))))
            cin = cout
        self.layers = nn.ModuleList(layers)
        self.post = nn.utils.parametrizations.weight_norm(nn.Conv2d(cin, 1, (3, 1), padding=(1, 0)))

    def forward(self, x):
        b, t = x.shape
        pad = (-t) % self.period
        return judge(self.layers, self.post, F.pad(x, (0, pad), mode="reflect").view(b, 1, -1, self.period))


class SpectrogramDiscriminator(nn.Module):
    """Judges a log-magnitude STFT (UnivNet's multi-resolution discriminator, small)."""

    def __init__(self, n_fft, channels=8):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        wn = nn.utils.parametrizations.weight_norm
        self.layers = nn.ModuleList([
            wn(nn.Conv2d(1, channels, (3, 9), stride=(1, 2), padding=(1, 4))),
            wn(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4))),
            wn(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4))),
            wn(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))),
        ])
        self.post = wn(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x):
        spec = torch.stft(x, self.n_fft, self.n_fft // 4, window=self.window, return_complex=True)
        return judge(self.layers, self.post, torch.log(spec.abs().clamp_min(1e-5)).unsqueeze(1).transpose(2, 3))


class Discriminators(nn.Module):
    def __init__(self, periods=(2, 3, 5, 7, 11), ffts=(512, 1024, 2048)):
        super().__init__()
        self.discs = nn.ModuleList(
            [PeriodDiscriminator(p) for p in periods] + [SpectrogramDiscriminator(n) for n in ffts]
        )

    def forward(self, x):
        return [d(x) for d in self.discs]

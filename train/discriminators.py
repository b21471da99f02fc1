"""The discriminators (HiFi-GAN's multi-period, UnivNet's multi-resolution spectrogram)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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

"""The causal generators: `Generator(config)` builds the one a `GeneratorConfig` (train/config.py) names,
the spectral one here (the shipped kind) or the waveform one (train/waveform.py); the discriminators
are in train/discriminators.py, the streaming layers in train/layers.py.

One set of weights, one code path: ``Generator.stream(x, cutoff, states)`` processes a block and
returns the new states; ``Generator.forward(x, cutoff)`` is the same call with zero states, so a signal
processed whole equals it processed block by block (tests/test_model.py). Causality comes from left
padding only (the cached context of each conv); the transposed decoder conv is trimmed on the right and
its overlap carried to the next block (encodec's SConv1d/SConvTranspose1d, GTCRN's stream modules).

Both generators are positively homogeneous, G(a*x) = a*G(x) for a > 0, so loudness never changes
what they do: the waveform one has no biases and only leaky-ReLU/multiplicative conditioning; the
spectral one (biases included) sees log spectra relative to each frame's passband level and writes
magnitudes relative to that level.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bandlift.train.config import GeneratorConfig
from bandlift.train.eval.baselines import RAYLEIGH_DB
from bandlift.train.layers import ResBlock
from bandlift.train.waveform import WaveformGenerator


ENVELOPE_LOW_HZ = 1500.0  # the lowest band centre of an envelope_bands model
PRIOR_FIT = (0.5, 0.9)  # prior: the top octave's level is measured over these fractions of the cutoff ...
PRIOR_TILT_DB = -12.0  # ... and falls this many dB per octave above its centre
# prior_tilt_s: noise_fill's envelope model (train/eval/baselines.py), causal: the slope is clipped
# to PRIOR_TILT_RANGE_DB (dB/octave) and bends down PRIOR_CURVE_DB per octave^2 above the cutoff;
# frames whose top octave is quieter than the config's prior_active_db (re a full-scale sine's bin power)
# do not move the slope, and PRIOR_TILT_FRAMES frames' worth of PRIOR_TILT_DB start it.
PRIOR_TILT_RANGE_DB = (-24.0, -3.0)
PRIOR_CURVE_DB = 3.0
PRIOR_TILT_FRAMES = 16.0
PRIOR_LEVEL_FRAMES = 8  # the level: mean top-octave power over the last 8 frames (256 samples, 5 ms)
PRIOR_FAST_RANGE = (0.01, 100.0)  # prior_fast_level: the short frames move the long window's level +-20 dB at most
PRIOR_FFT_EVERY = 4  # prior_fft: the long window is read every 4th frame of the noise's clock (128 samples
# at 48 kHz, 1/8 of a 1024 window; the frames between hold it): a quarter of its DFTs
NOISE_TABLES = (251, 257)  # noise excitation: frames per table (coprime: the phasors repeat after their product)
NOISE_SEED = 20261203
NOISE_GAIN = 2.0  # random-phase frames add up in power, not amplitude: 4x overlap loses 6 dB (measured)
# each row (a channel of a stream) reads the tables this many frames further on (the golden section of
# their period): the channels' noises are independent, as the offline noise-fill draws one per channel
NOISE_ROW_OFFSET = 24640


def noise_row_offsets(batch: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Each row's start in the noise tables [B]: NOISE_ROW_OFFSET frames per row, modulo their period."""
    return torch.remainder(torch.arange(batch, device=device) * NOISE_ROW_OFFSET,
                           NOISE_TABLES[0] * NOISE_TABLES[1]).to(dtype)
# A GRU's memory, and the prior's running tilt, have no end: what they still hold of the past fades. Their
# reach is taken as RECURRENT_REACH_S on top of the convolutional reach: half the shortest hold of the
# engine (0.5 s), so its warm-up after a hold still fits inside every hold (the default recipe: 106 ms +
# 0.25 s); longer would lengthen the holds and run the model longer while the machine is overloaded.
# Measured on the default recipe's architecture, untrained: warmed up for its convolutions' reach + 0.1 s
# after a hold, it plays what an uninterrupted run plays to 1e-7; a trained GRU may remember longer.
RECURRENT_REACH_S = 0.25


def envelope_basis(bands: int, bins: int, rate: int) -> torch.Tensor:
    """[bands, bins]: linear interpolation in log frequency from band centres (equal in octaves from
    ENVELOPE_LOW_HZ to Nyquist) to the bins of an rfft with `bins` bins; flat beyond the end centres."""
    centres = torch.log2(torch.logspace(math.log10(ENVELOPE_LOW_HZ), math.log10(rate / 2), bands, dtype=torch.float64))
    freqs = torch.arange(bins, dtype=torch.float64) * (rate / 2) / (bins - 1)
    position = torch.log2(freqs.clamp_min(ENVELOPE_LOW_HZ)).clamp(centres[0], centres[-1])
    if bands == 1:
        return torch.ones(1, bins)
    idx = torch.searchsorted(centres, position, right=True).clamp(1, bands - 1)
    left, right = centres[idx - 1], centres[idx]
    frac = (position - left) / (right - left)
    basis = torch.zeros(bands, bins, dtype=torch.float64)
    cols = torch.arange(bins)
    basis[idx - 1, cols] = 1.0 - frac
    basis[idx, cols] += frac
    return basis.float()


def Generator(config: GeneratorConfig | None = None) -> nn.Module:
    """The generator the config names: x (band-limited, 48 kHz) and cutoff (bandwidth / Nyquist) -> full band."""
    config = config or GeneratorConfig()
    return {"spectral": SpectralGenerator, "waveform": WaveformGenerator}[config.arch](config)


class SpectralGenerator(nn.Module):
    """Log-spectral envelope prediction x spectral band replication (HE-AAC's SBR, learned).

    A causal STFT (sqrt-Hann, n_fft 128, hop 32, as matrix products so that the ONNX graph is plain
    MatMuls) gives log power per frame; dilated causal convs over frames, a long causal analysis of
    the past (context_fft) and a GRU predict the log magnitude of every bin above the cutoff, relative
    to the frame's passband level (so loudness never changes what it does). The phase comes from a
    per-bin mix of two excitations: the top band below the cutoff copied upwards (band replication)
    and the spectrum of |x| (harmonics continued above the cutoff). The passband is never touched:
    output = x delayed by n_fft - frame samples, with the bins above the cutoff replaced by the
    generated ones (the STFT reconstructs perfectly).
    """

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        n, h, c = config.n_fft, config.frame, config.channels
        self.bins = n // 2 + 1
        window = torch.hann_window(n, periodic=True).sqrt()
        k = torch.arange(self.bins, dtype=torch.float64)[None, :]
        t = torch.arange(n, dtype=torch.float64)[:, None]
        angle = 2 * math.pi * t * k / n
        self.register_buffer("analysis_cos", (window[:, None] * torch.cos(angle)).float(), persistent=False)
        self.register_buffer("analysis_sin", (-window[:, None] * torch.sin(angle)).float(), persistent=False)
        # inverse real DFT with the synthesis window; sqrt-Hann squared at hop n/4 sums to 2
        weight = torch.full((self.bins, 1), 2.0, dtype=torch.float64)
        weight[0, 0] = weight[-1, 0] = 1.0
        norm = weight / n / (n / (2 * h))
        self.register_buffer("synthesis_cos", (norm * torch.cos(angle.T) * window[None, :]).float(), persistent=False)
        self.register_buffer("synthesis_sin", (-norm * torch.sin(angle.T) * window[None, :]).float(), persistent=False)
        self.register_buffer("bin_index", torch.arange(self.bins, dtype=torch.float32), persistent=False)
        features = self.bins + 1
        self.prior_fft = config.prior_fft
        if self.prior_fft:  # the prior's long analysis: Hann, the bins up to PRIOR_FIT[1] x Nyquist
            P = self.prior_fft
            pk = torch.arange(int(PRIOR_FIT[1] * P / 2) + 1, dtype=torch.float64)[None, :]
            pt = torch.arange(P, dtype=torch.float64)[:, None]
            pwin = torch.hann_window(P, periodic=True, dtype=torch.float64)[:, None]
            # Gaussian noise reads the same power per bin here as through the model's sqrt-Hann frames
            scale = math.sqrt((n / 2) / float((pwin ** 2).sum()))
            # one row per bin [K, P]: the rows a cutoff reads are gathered whole (columns: 30x slower in ORT)
            self.register_buffer("prior_cos", (scale * pwin * torch.cos(2 * math.pi * pt * pk / P)).T.float().contiguous(),
                                 persistent=False)
            self.register_buffer("prior_sin", (-scale * pwin * torch.sin(2 * math.pi * pt * pk / P)).T.float().contiguous(),
                                 persistent=False)
            self.register_buffer("prior_freq", (2.0 * pk[0] / P).float(), persistent=False)  # fraction of Nyquist
            # prior_fast_level: how the long window weights each of its short frames' power (Hann^2 at their
            # hops' centres, summing to 1; symmetric, so oldest first or last alike)
            hop_weights = torch.hann_window(P, periodic=True, dtype=torch.float64)[config.frame // 2::config.frame] ** 2
            self.register_buffer("prior_short_weights", (hop_weights / hop_weights.sum()).float(), persistent=False)
        self.context = config.context_fft if config.context_fft else 0
        if self.context:
            L, kb = self.context, config.context_bins
            if L < n or L % h or not 0 < kb <= L // 2 + 1:
                raise ValueError(f"context_fft {L} must be a multiple of frame {h}, >= n_fft {n}, "
                                 f"and context_bins in 1..{L // 2 + 1}")
            cwin = torch.hann_window(L, periodic=True, dtype=torch.float64)
            ck = torch.arange(kb, dtype=torch.float64)[None, :]
            ct = torch.arange(L, dtype=torch.float64)[:, None]
            cangle = 2 * math.pi * ct * ck / L
            # scaled so a sinusoid reads the same power in both analyses (level-relative features)
            scale = window.double().sum() / cwin.sum()
            self.register_buffer("context_cos", (scale * cwin[:, None] * torch.cos(cangle)).float(), persistent=False)
            self.register_buffer("context_sin", (-scale * cwin[:, None] * torch.sin(cangle)).float(), persistent=False)
            # bin k of the long analysis is in the passband when k / L < cutoff / 2
            self.register_buffer("context_freq", (2.0 * torch.arange(kb, dtype=torch.float32) / L), persistent=False)
            features += kb
        self.inp = nn.Conv1d(features, c, 1)
        self.blocks = nn.ModuleList(
            ResBlock(c, config.kernel, d, config.negative_slope) for d in config.dilations
        )
        self.film = nn.Sequential(nn.Linear(1, 32), nn.SiLU(), nn.Linear(32, c * len(config.dilations)))
        self.gru = nn.GRU(c, config.gru, batch_first=True) if config.gru else None
        self.gru_out = nn.Conv1d(config.gru, c, 1, bias=False) if config.gru else None
        outputs = config.envelope_bands or self.bins
        if config.envelope_bands:
            self.register_buffer("envelope_basis", envelope_basis(config.envelope_bands, self.bins, config.sample_rate),
                                 persistent=False)
        self.out = nn.Conv1d(c, outputs * (1 + int(config.exciter) + int(config.noise)), 1)
        if config.prior:  # start as the prior: zero correction, excited by band replication (mix 0.95)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
            if config.exciter:
                nn.init.constant_(self.out.bias[outputs:2 * outputs], 3.0)
            if config.noise:  # ... or by the noise (mix 0.9975): an untrained model is the causal noise-fill
                nn.init.constant_(self.out.bias[-outputs:], 6.0)
        if config.noise:
            rng = np.random.default_rng(NOISE_SEED)
            for i, frames in enumerate(NOISE_TABLES):
                phase = torch.from_numpy(rng.uniform(0, 2 * math.pi, (frames, self.bins)))
                self.register_buffer(f"noise_re{i}", torch.cos(phase).float(), persistent=False)
                self.register_buffer(f"noise_im{i}", torch.sin(phase).float(), persistent=False)
        self.slope = config.negative_slope
        # The DFT matrices are derived from the config, not learned: checkpoints do not carry them
        # (older ones did; their copies are dropped on load).
        self._register_load_state_dict_pre_hook(self._drop_derived_buffers)

    _DERIVED = ("analysis_cos", "analysis_sin", "synthesis_cos", "synthesis_sin", "bin_index",
                "context_cos", "context_sin", "context_freq", "envelope_basis",
                "noise_re0", "noise_im0", "noise_re1", "noise_im1", "prior_cos", "prior_sin", "prior_freq",
                "prior_short_weights")

    def _drop_derived_buffers(self, state_dict, prefix, *args):
        for name in self._DERIVED:
            state_dict.pop(prefix + name, None)

    @property
    def delay(self) -> int:
        return self.config.n_fft - self.config.frame

    @property
    def reach(self) -> int:
        """Input samples before an output sample that can change it (its receptive field, walked layer
        by layer as DAC's `get_delay` does): the frames whose overlap-add reaches the sample start
        n_fft - frame - 1 samples before it at most; the convolutions reach their frames further back,
        each frame its analysis window (or the long context) back, less the window's first sample
        (weight 0); the recurrent parts add RECURRENT_REACH_S. The stream's output sample t depends on
        input samples t - reach .. t."""
        c = self.config
        n, h = c.n_fft, c.frame
        frames = h * (c.kernel - 1) * sum(c.dilations) + max(n, self.context)
        if self.prior_fft:  # ... and the prior's long window, read up to PRIOR_FFT_EVERY - 1 frames back
            frames = max(frames, h * (PRIOR_LEVEL_FRAMES + PRIOR_FFT_EVERY - 2) + self.prior_fft)
        if c.prior_tilt_s:  # the prior's level: the last PRIOR_LEVEL_FRAMES frames
            frames = max(frames, h * (PRIOR_LEVEL_FRAMES - 1) + n)
        recurrent = self.gru is not None or bool(c.prior_tilt_s)
        return n - h - 2 + frames + (round(RECURRENT_REACH_S * c.sample_rate) if recurrent else 0)

    @property
    def history(self) -> int:
        """Input samples kept from earlier blocks: the synthesis delay or the long analysis window."""
        h = self.config.frame
        long_prior = self.prior_fft + (PRIOR_FFT_EVERY - 1) * h if self.prior_fft else 0
        return max(self.context, long_prior, self.config.n_fft) - h

    def state_shapes(self) -> list[tuple[str, tuple[int, int]]]:
        shapes = [("input_cache", (1, self.history))]
        shapes += [(f"block{i}_cache", b.conv.state_shape()) for i, b in enumerate(self.blocks)]
        if self.gru is not None:
            shapes.append(("gru_state", (1, self.config.gru)))
        if self.config.prior_tilt_s:
            shapes.append(("prior_level", (1, PRIOR_LEVEL_FRAMES - 1)))
            shapes.append(("prior_tilt", (1, 2)))  # activity-weighted slope sum, weight sum
        if self.config.noise:
            shapes.append(("noise_clock", (1, 1)))  # frames since the start, modulo the noise's period
        if self.config.prior_fast_level:  # the short frames' top-octave power over the long window's span
            shapes.append(("prior_short", (1, self.prior_fft // self.config.frame - 1)))
        shapes.append(("ola_cache", (1, self.delay)))
        return shapes

    def initial_states(self, batch: int, device=None) -> list[torch.Tensor]:
        return [torch.zeros(batch, *shape, device=device) for _, shape in self.state_shapes()]

    def _replication_source(self, cutoff):
        """For each bin, the bin whose phase it borrows: the top band below the cutoff, repeated."""
        c = cutoff.reshape(-1, 1)
        kc = torch.clamp(torch.floor(c * (self.bins - 1)), 4.0, self.bins - 1.0)
        kc = torch.where(c >= 0.999, torch.full_like(kc, float(self.bins)), kc)  # full band: nothing to do
        width = torch.floor(torch.clamp(kc, max=self.bins - 1.0) / 2)
        if self.config.envelope_bands:
            # Shift by whole turns of phase per hop (a multiple of n_fft / frame bins): otherwise the
            # overlapping frames of a copied bin interfere, and its level depends on the bin's shift,
            # which per-bin gains can learn to undo but a smooth band envelope cannot.
            turn = float(self.config.n_fft // self.config.frame)
            width = torch.clamp(torch.floor(width / turn) * turn, min=turn)
        k = self.bin_index[None, :]
        src = kc - width + torch.remainder(k - kc, width)
        src = torch.where(k >= kc, src, k)
        return src.long(), (k >= kc).float()

    def _prior(self, power, cutoff):
        """[B, F, bins] log magnitude of the noise-fill envelope: the mean power of the bins in
        PRIOR_FIT x cutoff, falling PRIOR_TILT_DB per octave above the middle of that range."""
        kc = cutoff.reshape(-1, 1) * (self.bins - 1)  # [B, 1] cutoff in bins
        k = self.bin_index[None, :]
        fit = ((k >= PRIOR_FIT[0] * kc) & (k <= PRIOR_FIT[1] * kc)).float()  # [B, bins]
        top = (power * fit[:, None, :]).sum(-1, keepdim=True) / fit.sum(-1).clamp_min(1.0)[:, None, None]
        octaves = torch.log2(k.clamp_min(1.0) / (0.5 * (PRIOR_FIT[0] + PRIOR_FIT[1]) * kc).clamp_min(1.0))
        tilt = PRIOR_TILT_DB * math.log(10.0) / 20.0  # dB/octave of power -> ln of magnitude
        return 0.5 * torch.log(top + 1e-12) + tilt * octaves[:, None, :]

    def _long_prior_bands(self, long_power, freq, held, cutoff):
        """The top octave's mean power (its mean dB + RAYLEIGH_DB) and least-squares slope (dB/octave)
        per frame [B, F], read through the prior's long window: its power [B, R, K] at R readings in the
        bins of frequencies `freq` [K] (fractions of Nyquist), each frame holding reading `held` [F]."""
        f = freq[None, :]
        c = cutoff.reshape(-1, 1)
        fit = ((f >= PRIOR_FIT[0] * c) & (f <= PRIOR_FIT[1] * c)).float()  # [B, K]
        count = fit.sum(-1, keepdim=True).clamp_min(1.0)
        mean_p = (long_power * fit[:, None, :]).sum(-1, keepdim=True) / count[:, None]
        log_p = torch.log(long_power + 1e-6 * mean_p + 1e-30)  # a floor 60 dB under the octave: scale-free
        top = torch.exp((log_p * fit[:, None, :]).sum(-1) / count + RAYLEIGH_DB * math.log(10.0) / 10.0)
        x = torch.log2(f.clamp_min(1e-6) / c.clamp_min(1e-6))
        x = (x - (x * fit).sum(-1, keepdim=True) / count) * fit  # centred octaves, 0 outside the fit
        slope = (10.0 / math.log(10.0)) * (log_p * x[:, None, :]).sum(-1) / (x * x).sum(-1).clamp_min(1e-9)[:, None]
        return top[:, held], slope[:, held]

    def _causal_prior(self, power, cutoff, level_cache, tilt_state, long_power=None, short_cache=None):
        """noise_fill's envelope, causal: [B, F, bins] log magnitude, and the new states. The level is
        the top octave's (PRIOR_FIT x cutoff) mean power over the last PRIOR_LEVEL_FRAMES frames; the
        slope (dB/octave) is that octave's upper half against its lower half, averaged over active
        frames with an exponential time constant of prior_tilt_s; above the cutoff the envelope bends
        down PRIOR_CURVE_DB per octave^2. With `long_power` (the long window's power [B, F, K] and its
        bins' frequencies [K]; prior_fft) the octave's mean dB and least-squares slope there instead; with
        `short_cache` (prior_fast_level) that level moved as the short frames say the octave moved since the
        long window's middle. Returns the envelope and the new level, slope and short-frame states."""
        batch, frames, _ = power.shape
        kc = cutoff.reshape(-1, 1) * (self.bins - 1)
        k = self.bin_index[None, :]
        middle = 0.5 * (PRIOR_FIT[0] + PRIOR_FIT[1])
        lower = ((k >= PRIOR_FIT[0] * kc) & (k < middle * kc)).float()
        upper = ((k >= middle * kc) & (k <= PRIOR_FIT[1] * kc)).float()

        def band_mean(mask):
            return (power * mask[:, None, :]).sum(-1) / mask.sum(-1).clamp_min(1.0)[:, None]  # [B, F]

        if long_power is None:
            low_p, up_p = band_mean(lower), band_mean(upper)
            top = 0.5 * (low_p + up_p)
        else:
            top, long_slope = self._long_prior_bands(*long_power, cutoff)
        new_short = None
        if short_cache is not None:
            span = torch.cat([short_cache.reshape(batch, -1), band_mean(lower + upper)], dim=-1)  # [B, W - 1 + F]
            as_long = F.conv1d(span.unsqueeze(1), self.prior_short_weights.reshape(1, 1, -1)).squeeze(1)  # [B, F]
            recent = F.avg_pool1d(span[:, -(frames + PRIOR_LEVEL_FRAMES - 1):].unsqueeze(1), PRIOR_LEVEL_FRAMES,
                                  stride=1).squeeze(1)
            top = top * ((recent + 1e-30) / (as_long + 1e-30)).clamp(*PRIOR_FAST_RANGE)
            new_short = span[:, frames:].reshape(batch, 1, -1)
        history = torch.cat([level_cache.reshape(batch, -1), top], dim=-1)
        level = F.avg_pool1d(history.unsqueeze(1), PRIOR_LEVEL_FRAMES, stride=1).squeeze(1)  # [B, F]
        new_level = history[:, frames:].reshape(batch, 1, -1)
        db = 10.0 / math.log(10.0)
        span = math.log2((middle + PRIOR_FIT[1]) / (middle + PRIOR_FIT[0]))  # octaves between the halves' centres
        slope = db * (torch.log(up_p + 1e-12) - torch.log(low_p + 1e-12)) / span if long_power is None else long_slope
        # a full-scale sine's bin power with the sqrt-Hann window (plain numbers: nothing for the tracer)
        full_scale = (sum(math.sqrt(0.5 - 0.5 * math.cos(2 * math.pi * i / self.config.n_fft))
                          for i in range(self.config.n_fft)) / 2) ** 2
        active = (db * torch.log(top + 1e-30) > self.config.prior_active_db + db * math.log(full_scale)).float()
        decay = math.exp(-self.config.frame / (self.config.prior_tilt_s * self.config.sample_rate))
        state = tilt_state.reshape(batch, 2)
        sums, weights = [], []
        # a^-j must stay finite: torch runs long signals in chunks of 1024 frames; an export traces one
        # chunk, and its blocks are at most 2048 frames (prior_tilt_s >= MIN_TILT_S: a^-2048 < 1e12)
        for start in range(0, frames, 1024):
            w = active[:, start:start + 1024]
            s = slope[:, start:start + 1024] * w
            steps = torch.arange(1, w.shape[1] + 1, device=power.device, dtype=power.dtype)
            grow, shrink = decay ** -steps, decay ** steps
            sum_s = shrink * (state[:, :1] + torch.cumsum(s * grow, -1))
            sum_w = shrink * (state[:, 1:] + torch.cumsum(w * grow, -1))
            sums.append(sum_s)
            weights.append(sum_w)
            state = torch.stack([sum_s[:, -1], sum_w[:, -1]], dim=-1)
        sum_s, sum_w = torch.cat(sums, -1), torch.cat(weights, -1)
        tilt = (sum_s + PRIOR_TILT_FRAMES * PRIOR_TILT_DB) / (sum_w + PRIOR_TILT_FRAMES)
        tilt = tilt.clamp(*PRIOR_TILT_RANGE_DB)  # [B, F] dB/octave
        octaves = torch.log2(k.clamp_min(1.0) / kc.clamp_min(1.0))  # [B, bins] re the cutoff
        centre = math.log2(middle)
        shape_db = (tilt[:, :, None] * (octaves[:, None, :] - centre)
                    - PRIOR_CURVE_DB * octaves.clamp_min(0.0)[:, None, :] ** 2)
        log_mag = 0.5 * (torch.log(level + 1e-12)[:, :, None] + shape_db / db)
        return log_mag, new_level, state.reshape(batch, 1, 2), new_short

    def _noise(self, clock, frames):
        """Unit phasors [B, F, bins] x2 of the noise excitation from each channel's frame clock (row r
        NOISE_ROW_OFFSET x r frames further on), and the advanced clock: the product of two tables'
        rows, each read modulo its length."""
        batch = clock.shape[0]
        rows = noise_row_offsets(batch, clock.device, clock.dtype)[:, None]
        n = clock.reshape(batch, 1) + rows + torch.arange(frames, device=clock.device, dtype=clock.dtype)[None, :]
        i0 = torch.remainder(n, NOISE_TABLES[0]).long()
        i1 = torch.remainder(n, NOISE_TABLES[1]).long()
        a_re, a_im, b_re, b_im = self.noise_re0[i0], self.noise_im0[i0], self.noise_re1[i1], self.noise_im1[i1]
        period = NOISE_TABLES[0] * NOISE_TABLES[1]
        return a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re, torch.remainder(clock + frames, period)

    def stream(self, x, cutoff, states):
        n, h = self.config.n_fft, self.config.frame
        batch, length = x.shape
        frames = length // h
        history = torch.cat([states[0].reshape(batch, -1), x], dim=-1)  # [B, history + T]
        new_states = [history[:, length:].reshape(batch, 1, -1)]
        xc = history[:, self.history - self.delay:]  # [B, delay + T]
        # frame j covers xc[j*h : j*h + n]
        idx = (torch.arange(frames, device=x.device) * h)[:, None] + torch.arange(n, device=x.device)[None, :]
        segments = xc[:, idx]  # [B, F, n]
        re, im = segments @ self.analysis_cos, segments @ self.analysis_sin  # [B, F, bins]
        power = re * re + im * im
        src, above = self._replication_source(cutoff)
        logp = torch.log(power + 1e-12)
        passband = 1.0 - above
        level = torch.log((power * passband[:, None, :]).sum(-1, keepdim=True)
                          / passband.sum(-1, keepdim=True)[:, None, :] + 1e-12)  # [B, F, 1]
        feats = [(logp - level) * passband[:, None, :], cutoff.reshape(-1, 1, 1).expand(batch, frames, 1)]
        if self.context:
            # the long window ends where frame j ends: history[j*h : j*h + context]
            L = self.context
            lidx = (torch.arange(frames, device=x.device) * h)[:, None] + torch.arange(L, device=x.device)[None, :]
            long_seg = history[:, lidx]  # [B, F, L]
            cre, cim = long_seg @ self.context_cos, long_seg @ self.context_sin
            inside = (self.context_freq[None, :] < cutoff.reshape(-1, 1)).float()[:, None, :]  # [B, 1, K]
            feats.append((torch.log(cre * cre + cim * cim + 1e-12) - level) * inside)
        hid = self.inp(torch.cat(feats, dim=-1).transpose(1, 2))  # [B, C, F]
        gates = (1.0 + self.film(cutoff.reshape(-1, 1) * 2.0 - 1.0)).reshape(batch, len(self.blocks), -1, 1)
        for i, block in enumerate(self.blocks):
            hid, cache = block(hid, gates[:, i], states[1 + i])
            new_states.append(cache)
        if self.gru is not None:
            h0 = states[1 + len(self.blocks)].reshape(batch, 1, -1).transpose(0, 1).contiguous()  # [1, B, H]
            seq, h_n = self.gru(F.leaky_relu(hid, self.slope).transpose(1, 2), h0)
            hid = hid + self.gru_out(seq.transpose(1, 2))
            new_states.append(h_n.transpose(0, 1).reshape(batch, 1, -1))
        extra = 1 + len(self.blocks) + int(self.gru is not None)  # index of the prior/noise states
        pred = self.out(F.leaky_relu(hid, self.slope)).transpose(1, 2)  # [B, F, bins (x1-3)]
        outputs = self.config.envelope_bands or self.bins
        gains, mixes = pred[..., :outputs], pred[..., outputs:outputs * (1 + int(self.config.exciter))]
        noise_mix = pred[..., -outputs:]
        if self.config.correction_db:
            bound = self.config.correction_db * math.log(10.0) / 20.0
            gains = bound * torch.tanh(gains / bound)
        if self.training and self.config.envelope_bands and self.config.prior:
            # for the loss's correction_bias term: the correction in dB [B, F, bands] and each band's
            # share of its weight above the cutoff [B, bands] (the part the output hears)
            reach = above @ self.envelope_basis.T / self.envelope_basis.sum(-1).clamp_min(1e-9)
            self.last_correction = (gains * (20.0 / math.log(10.0)), reach)
        if self.config.envelope_bands:
            gains = gains @ self.envelope_basis
            mixes = mixes @ self.envelope_basis if self.config.exciter else mixes
            noise_mix = noise_mix @ self.envelope_basis
        if self.config.prior_tilt_s:
            long_power = None
            if self.prior_fft:
                # read at the frames where the noise's clock is a multiple of PRIOR_FFT_EVERY (the block's
                # first may lie up to PRIOR_FFT_EVERY - 1 frames before it; the channels share one clock);
                # the window of frame j ends where frame j ends: history[j*h + history + h - P ...]
                P, every = self.prior_fft, PRIOR_FFT_EVERY
                phase = torch.fmod(states[extra + 2].reshape(-1)[:1], float(every))  # [1] frames since a reading
                reads = torch.floor((frames - 1 + phase) / every).long() + 1
                read_frames = torch.arange(reads[0], device=x.device) * every - phase.long()  # [R], from -phase
                pidx = (read_frames * h + self.history + h - P)[:, None] + torch.arange(P, device=x.device)[None, :]
                long_seg = history[:, pidx]  # [B, R, P]
                held = torch.floor((torch.arange(frames, device=x.device) + phase) / every).long()  # [F] -> reading
                # only the bins of the octave the batch's cutoffs read (a Range and a Gather once exported)
                half = P / 2
                first = torch.clamp(torch.floor(cutoff.min() * PRIOR_FIT[0] * half).long() - 1, min=0)
                last = torch.clamp(torch.ceil(cutoff.max() * PRIOR_FIT[1] * half).long() + 2,
                                   max=self.prior_freq.shape[0])
                used = torch.arange(first, torch.maximum(last, first + 1), device=x.device)
                frames_last = long_seg.transpose(1, 2)  # [B, P, F]
                pre = (torch.index_select(self.prior_cos, 0, used) @ frames_last).transpose(1, 2)  # [B, F, K]
                pim = (torch.index_select(self.prior_sin, 0, used) @ frames_last).transpose(1, 2)
                long_power = (pre * pre + pim * pim, torch.index_select(self.prior_freq, 0, used), held)
            short_cache = states[extra + 3] if self.config.prior_fast_level else None  # (after the noise clock)
            prior, level_cache, tilt_state, new_short = self._causal_prior(power, cutoff, states[extra], states[extra + 1],
                                                                           long_power, short_cache)
            new_states += [level_cache, tilt_state]
            extra += 2
            log_mag = gains + prior
        elif self.config.prior:
            log_mag = gains + self._prior(power, cutoff)
        else:
            log_mag = gains + 0.5 * level  # [B, F, bins]
        gather = src[:, None, :].expand(batch, frames, self.bins)
        src_re, src_im = torch.gather(re, 2, gather), torch.gather(im, 2, gather)
        inv = torch.rsqrt(src_re * src_re + src_im * src_im + 1e-20)
        exc_re, exc_im = src_re * inv, src_im * inv  # unit phasors of the replicated band
        if self.config.exciter:
            ab = segments.abs()
            nl_re, nl_im = ab @ self.analysis_cos, ab @ self.analysis_sin
            nl_inv = torch.rsqrt(nl_re * nl_re + nl_im * nl_im + 1e-20)
            mix = torch.sigmoid(mixes)
            exc_re = mix * exc_re + (1.0 - mix) * nl_re * nl_inv
            exc_im = mix * exc_im + (1.0 - mix) * nl_im * nl_inv
        if self.config.noise:
            noise_re, noise_im, clock = self._noise(states[extra], frames)
            new_states.append(clock)
            if self.config.prior_fast_level:
                new_states.append(new_short)
            mix = torch.sigmoid(noise_mix)
            exc_re = (1.0 - mix) * exc_re + mix * NOISE_GAIN * noise_re
            exc_im = (1.0 - mix) * exc_im + mix * NOISE_GAIN * noise_im
        gain = torch.exp(torch.clamp(log_mag, max=20.0))
        mask = above[:, None, :]  # above the cutoff the input's own bins (transition, images) are replaced
        out_re, out_im = mask * (exc_re * gain - re), mask * (exc_im * gain - im)
        seg = out_re @ self.synthesis_cos + out_im @ self.synthesis_sin  # [B, F, n] windowed
        # overlap-add: frame j lands on xc[j*h : j*h + n], i.e. on hop-chunks j .. j + n/h - 1
        parts = n // h
        chunks = seg.reshape(batch, frames, parts, h)
        ola = sum(F.pad(chunks[:, :, q, :], (0, 0, q, parts - 1 - q)) for q in range(parts))
        ola = ola.reshape(batch, (frames + parts - 1) * h)
        ola = ola + F.pad(states[-1].reshape(batch, -1), (0, length))
        new_states.append(ola[:, length:].reshape(batch, 1, -1))
        y = xc[:, :length] + ola[:, :length]
        return y, new_states

    def forward(self, x, cutoff):
        """Whole signal, zero initial state, output aligned with x (the delay is compensated)."""
        length = x.shape[-1]
        pad = (-(length + self.delay)) % self.config.frame
        y, _ = self.stream(F.pad(x, (0, self.delay + pad)), cutoff, self.initial_states(x.shape[0], x.device))
        return y[..., self.delay: self.delay + length]



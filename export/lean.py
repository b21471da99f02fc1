"""The lean streaming graph of a spectral generator: the same weights and audio (within float
rounding) in a graph ONNX Runtime runs in about half the time of the model's own `stream` on a live
block, where the cost is per node and per small kernel, not arithmetic.

`LeanSpectralStream(gen)` computes `gen.stream` as:
- frames time-major ([B, frames, channels]), every layer a MatMul with a constant weight (a dilated
  conv: its taps in one Gather, then one MatMul): ONNX Runtime's Conv kernel takes ~3x as long on 4
  frames;
- the STFT as one MatMul on the frames (gathered as hops), its inverse with the overlap-add as one
  MatMul on the frames each hop overlaps (no per-hop pads and adds; ConvTranspose took twice as long);
- everything the cutoff decides (which bins are replaced, where their phase comes from, the passband
  weights) as rows of tables built from the model's own `_replication_source`, picked by one index (how
  many bins lie above the cutoff); the FiLM gates one Gemm chain, split once;
- one packed state: the block caches as one [sum of contexts, channels] array split once and gathered
  back in one Gather, and the overlap-add carry kept summed with the input history it is added to.

The prior's long window (a two-stage DFT: two MatMuls with constant weights), the long context (its window as
hops, one MatMul), the GRU (one ONNX GRU node), the exciter (|x|'s
spectrum, one more MatMul), the band envelope (one MatMul from bands to bins), the bounded correction,
the noise excitation (two table Gathers per block) and the causal noise-fill prior (its band means one
MatMul, its running slope one CumSum per block) follow the same forms. `supports(gen)` says whether a
generator is one it reproduces (spectral, no config key it does not know, and its output matching `gen`
block by block); the export falls back to `gen.stream` with its states packed otherwise.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bandlift.train import model as spectral

SUPPORTED = {"arch": "spectral"}  # every feature of the spectral generator, each either way


KNOWN_KEYS = {"arch", "sample_rate", "frame", "n_fft", "channels", "kernel", "dilations", "negative_slope",
              "context_fft", "context_bins", "gru", "exciter", "envelope_bands", "prior", "noise",
              "prior_tilt_s", "correction_db", "prior_fft", "prior_active_db", "prior_fast_level",
              *SUPPORTED}  # a config key added later may change the model: not lean until listed


def supports(gen) -> bool:
    """Whether `gen` is a generator this lean graph reproduces: its config (only keys it knows, the
    features it covers), its replication rule, and its output on a short signal (torch, block by
    block against `gen` whole, silence included)."""
    config = gen.config.to_dict()
    if set(config) - KNOWN_KEYS or any(config.get(key, value) != value for key, value in SUPPORTED.items()):
        return False
    if type(gen).__name__ != "SpectralGenerator" or gen.history % gen.config.frame:
        return False
    try:
        stream = LeanSpectralStream(gen).eval()
    except ValueError:  # the replication rule is not one the tables express
        return False
    return _same_output(gen, stream)


def _same_output(gen, stream, tolerance: float = 1e-4) -> bool:
    frame, n = gen.config.frame, 16 * gen.config.frame
    x = torch.randn(2, n, generator=torch.Generator().manual_seed(0)) * 0.1
    x[:, : n // 4] = 0.0
    cutoff = torch.tensor([0.3, 0.999])
    with torch.no_grad():
        reference = gen(x, cutoff)
        state = torch.zeros(2, sum(math.prod(shape) for _, shape in stream.parts()))
        blocks = []
        for start in range(0, n, 4 * frame):
            y, state = stream(x[:, start:start + 4 * frame], cutoff, state)
            blocks.append(y)
        streamed = torch.cat(blocks, dim=1)[:, gen.delay:]
    return bool((streamed - reference[:, : n - gen.delay]).abs().max() <= tolerance)


def _count_above(cutoff: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """[B, 1] cutoff -> [B] int64: how many bins lie above it (the table row)."""
    return (cutoff < thresholds).long().sum(-1)


def _cutoff_tables(gen):
    """Thresholds [bins] (bin k is replaced iff cutoff < thresholds[k]) and, per count of replaced bins,
    the model's replication source and mask; checked against `gen._replication_source` on a sweep of
    cutoffs (every bin edge and the full-band switch, a few float steps either side)."""
    bins = gen.bins
    k = torch.arange(bins, dtype=torch.float32)
    full = torch.tensor(0.999, dtype=torch.float32)  # _replication_source: at or above, full band
    thresholds = torch.where(k >= 4, torch.minimum((k + 1) / (bins - 1), full), torch.tensor(-math.inf))
    rows = bins + 1
    src_table = torch.arange(bins).repeat(rows, 1)
    above_table = torch.zeros(rows, bins)
    edges = torch.cat([k / (bins - 1), full.reshape(1), torch.tensor([0.0, 1.0, 1e-6, 0.5])])
    sweep = [torch.linspace(1e-4, 1.0, 4001)]
    for step in range(-3, 4):
        sweep.append(torch.nextafter(edges, torch.full_like(edges, math.copysign(math.inf, step)))
                     if step else edges)
        if abs(step) > 1:
            sweep[-1] = torch.nextafter(sweep[-1], torch.full_like(edges, math.copysign(math.inf, step)))
    cutoffs = torch.cat(sweep).clamp(1e-6, 1.0)
    with torch.no_grad():
        src, above = gen._replication_source(cutoffs)
    count = _count_above(cutoffs[:, None], thresholds)
    if not torch.equal(count, above.sum(-1).long()):
        raise ValueError("the replication rule is not a threshold per bin")
    for row in count.unique():
        pick = count == row
        if not (torch.equal(src[pick], src[pick][:1].expand_as(src[pick]))
                and torch.equal(above[pick], above[pick][:1].expand_as(above[pick]))):
            raise ValueError("the replication source is not a function of the replaced-bin count")
        src_table[row], above_table[row] = src[pick][0], above[pick][0]
    return thresholds, src_table, above_table


class LeanSpectralStream(nn.Module):
    """forward(audio [B, T], cutoff [B], state [B, S]) -> (audio_out [B, T], state_out [B, S]).

    Frames run time-major ([B, frames, channels]): every layer is then a MatMul with a constant weight
    that ONNX Runtime prepacks (a dilated conv is its three taps gathered in one Gather, then one
    MatMul), measured 3x faster than its Conv kernel on a live block's 4 frames."""

    def __init__(self, gen):
        super().__init__()
        config = gen.config
        n, h, bins, channels = config.n_fft, config.frame, gen.bins, config.channels
        self.hop, self.parts_per_frame, self.delay, self.bins, self.channels = h, n // h, gen.delay, bins, channels
        self.slope = config.negative_slope
        self.history, self.context = gen.history, gen.context  # input samples kept; long window (0: none)
        self.short_offset = (gen.history - gen.delay) // h  # the short frames' first hop in the history
        self.gru = gen.gru  # (nn.GRU: one ONNX GRU node)
        self.exciter = config.exciter
        self.envelope, self.outputs = bool(config.envelope_bands), config.envelope_bands or bins
        self.noise, self.prior, self.tilt_s = config.noise, config.prior, config.prior_tilt_s
        self.fast_level = config.prior_fast_level
        if self.fast_level:
            self.register_buffer("prior_short_weights", gen.prior_short_weights.clone())
        self.bound = config.correction_db * math.log(10.0) / 20.0  # 0: no bound
        if self.tilt_s:  # the running slope's decay per frame, and a full-scale sine's bin power
            self.decay = math.exp(-h / (self.tilt_s * config.sample_rate))
            full_scale = (sum(math.sqrt(0.5 - 0.5 * math.cos(2 * math.pi * i / n)) for i in range(n)) / 2) ** 2
            self.active_db = config.prior_active_db + 10.0 * math.log10(full_scale)
        thresholds, src, above = _cutoff_tables(gen)
        passband = 1.0 - above
        with torch.no_grad():
            self.register_buffer("analysis", torch.cat([gen.analysis_cos, gen.analysis_sin], 1).clone())  # [n, 2 bins]
            # inverse STFT and overlap-add as one MatMul per hop: hop m sums frames m - q (q < n/h), each
            # through its q-th hop of the synthesis window: [frame m, m - 1, ...] @ [syn_0; syn_1; ...]
            synthesis = torch.cat([gen.synthesis_cos, gen.synthesis_sin])  # [2 bins, n]
            self.register_buffer("synthesis", torch.cat(synthesis.split(h, dim=1), dim=0).contiguous())
            pair = torch.zeros(2 * bins, bins)  # re^2 + im^2 as one MatMul
            pair[torch.arange(bins), torch.arange(bins)] = 1.0
            pair[torch.arange(bins) + bins, torch.arange(bins)] = 1.0
            self.register_buffer("pair_sum", pair)
            self.register_buffer("pair_sum_twice", torch.cat([pair, pair], 1))  # the same, in the re and im slots
            self.register_buffer("thresholds", thresholds.reshape(1, bins))
            self.register_buffer("src_table", torch.cat([src, src + bins], 1)[:, None, :].contiguous())  # [rows, 1, 2 bins]
            self.register_buffer("above_table", torch.cat([above, above], 1)[:, None, :].contiguous())
            self.register_buffer("passband_table", passband[:, None, :].contiguous())  # [rows, 1, bins]
            self.register_buffer("mean_table", (passband / passband.sum(-1, keepdim=True).clamp_min(1.0))[:, :, None]
                                 .contiguous())  # [rows, bins, 1]: the passband mean
            # FiLM: gates = 1 + film(2 c - 1), with the affine maps folded into its two layers
            w1, b1 = gen.film[0].weight, gen.film[0].bias
            self.film1 = nn.Linear(1, w1.shape[0])
            self.film1.weight.copy_(2.0 * w1)
            self.film1.bias.copy_(b1 - w1[:, 0])
            self.film2 = nn.Linear(w1.shape[0], gen.film[2].out_features)
            self.film2.weight.copy_(gen.film[2].weight)
            self.film2.bias.copy_(gen.film[2].bias + 1.0)
            # input layer: the cutoff channel becomes a per-stream bias
            weight = gen.inp.weight[:, :, 0]
            self.register_buffer("inp_weight", weight[:, :bins].T.contiguous())
            if self.context:  # the long analysis: its own MatMul, its own slice of the input layer
                bins_long = config.context_bins
                self.register_buffer("context_analysis", torch.cat([gen.context_cos, gen.context_sin], 1).clone())
                pair_long = torch.zeros(2 * bins_long, bins_long)
                pair_long[torch.arange(bins_long), torch.arange(bins_long)] = 1.0
                pair_long[torch.arange(bins_long) + bins_long, torch.arange(bins_long)] = 1.0
                self.register_buffer("context_pair_sum", pair_long)
                self.register_buffer("context_freq", gen.context_freq.reshape(1, bins_long).clone())
                self.register_buffer("context_weight", weight[:, bins + 1:].T.contiguous())
            if self.gru is not None:
                self.register_buffer("gru_out_weight", gen.gru_out.weight[:, :, 0].T.contiguous())
            self.cutoff_in = nn.Linear(1, channels)
            self.cutoff_in.weight.copy_(weight[:, bins:bins + 1])
            self.cutoff_in.bias.copy_(gen.inp.bias)
            # dilated conv [out, in, k] -> [k * in, out] over the gathered taps; 1x1 convs -> [in, out]
            self.block_weights = [b.conv.conv.weight.permute(2, 1, 0).reshape(-1, channels).contiguous()
                                  for b in gen.blocks]
            self.mix_weights = [b.mix.weight[:, :, 0].T.contiguous() for b in gen.blocks]
            for i, (w, m) in enumerate(zip(self.block_weights, self.mix_weights)):
                self.register_buffer(f"block{i}_weight", w)
                self.register_buffer(f"mix{i}_weight", m)
            out_weight, out_bias = gen.out.weight[:, :, 0].T, gen.out.bias
            # an output layer whose weights are all zero (a prior recipe at its start) writes its bias whatever
            # the network computes: the graph leaves the network, and its caches, out
            self.fixed_correction = not bool(out_weight.any())
            if self.envelope:  # band values, spread to the bins (each twice: its re and im slot) by one MatMul
                self.register_buffer("out_weight", out_weight.contiguous())
                self.register_buffer("out_bias", out_bias.clone())
                self.register_buffer("envelope_basis", torch.cat([gen.envelope_basis] * 2, 1).contiguous())
            else:  # the output layer with each bin twice (its re and its im slot): log magnitudes [, mixes]
                self.register_buffer("out_weight", torch.cat([w.repeat(1, 2) for w in out_weight.split(bins, 1)], 1)
                                     .contiguous())
                self.register_buffer("out_bias", torch.cat([b.repeat(2) for b in out_bias.split(bins)]))
            if self.prior:
                self.register_buffer("bin_index", gen.bin_index.reshape(1, bins).clone())
                self.register_buffer("prior_edges", torch.tensor([spectral.PRIOR_FIT[0], 0.5 * sum(spectral.PRIOR_FIT)]))
                # log2 of each bin (from 1), in the re and the im slot: the prior's octaves are this less log2(kc)
                self.register_buffer("bin_octaves", torch.log2(gen.bin_index.clamp_min(1.0)).repeat(2).reshape(1, 1, -1))
            self.prior_fft = gen.prior_fft
            if self.prior_fft:  # the prior's long window: its whole power spectrum by a two-stage DFT
                self._prior_fft_tables(gen)
                self.prior_offset = (gen.history + h - self.prior_fft) // h  # its first hop in the history
            if self.noise:  # the product of two tables' phasors a * b as a * [b_re | b_re] + [a_im | a_re] * [-b_im | b_im]
                re0, im0, re1, im1 = gen.noise_re0, gen.noise_im0, gen.noise_re1, gen.noise_im1
                self.register_buffer("noise0", torch.cat([re0, im0, im0, re0], 1).contiguous())
                self.register_buffer("noise1", torch.cat([re1, re1, -im1, im1], 1).contiguous())
        self.kernel = config.kernel
        self.dilations = [block.conv.conv.dilation[0] for block in gen.blocks]
        self.contexts = [block.conv.context for block in gen.blocks]
        self.cache_values = channels * sum(self.contexts)
        # block i's cache is the end of its window: rows sum(contexts[:i]) + (i + 1) * F + [0, context)
        offsets = [sum(self.contexts[:i]) for i in range(len(self.contexts))]
        self.register_buffer("tail_base", torch.cat([o + torch.arange(c) for o, c in zip(offsets, self.contexts)]))
        self.register_buffer("tail_blocks", torch.cat([torch.full((c,), i + 1) for i, c in enumerate(self.contexts)]))

    def parts(self) -> list[tuple[str, tuple[int, ...]]]:
        """What the packed state holds, in order (the contract metadata's parts)."""
        gru = [("gru_state", (self.gru.hidden_size,))] if self.gru is not None and not self.fixed_correction else []
        prior = [("prior_level", (spectral.PRIOR_LEVEL_FRAMES - 1,)), ("prior_tilt", (2,))] if self.tilt_s else []
        noise = [("noise_clock", (1,))] if self.noise else []
        short = [("prior_short", (self.prior_fft // self.hop - 1,))] if self.fast_level else []
        caches = [] if self.fixed_correction else [("block_caches", (sum(self.contexts), self.channels))]
        return [*caches, *gru, *prior, *noise, *short,
                ("input_cache", (self.history,)), ("input_tail_plus_ola_cache", (self.delay,))]

    def forward(self, audio, cutoff, state):
        batch, length = audio.shape
        frames = length // self.hop
        *recurrent, history, carry = state.split([math.prod(shape) for _, shape in self.parts()], dim=1)
        if not self.fixed_correction:
            caches, *recurrent = recurrent
            caches = caches.reshape(batch, -1, self.channels).split(self.contexts, dim=1)
        gru_state = recurrent[:1] if self.gru is not None and not self.fixed_correction else []
        prior_state = recurrent[len(gru_state):len(gru_state) + 2] if self.tilt_s else []
        short_cache = recurrent[-1:] if self.fast_level else []
        noise_clock = recurrent[-1 - len(short_cache)] if self.noise else None
        xh = torch.cat([history, audio], dim=1)  # [B, history + T]
        steps = torch.arange(frames)[:, None]
        hops = xh.reshape(batch, -1, self.hop)
        frame_hops = hops[:, steps + self.short_offset + torch.arange(self.parts_per_frame)]  # [B, F, n/h, h]
        segments = frame_hops.reshape(batch, frames, -1)
        spec = segments @ self.analysis  # [B, F, 2 bins]: re, im
        if self.prior:
            raw_power = (spec * spec) @ self.pair_sum
            power = raw_power + 1e-12
        else:
            power = (spec * spec) @ self.pair_sum + 1e-12
        c = cutoff.reshape(batch, 1)
        row = _count_above(c, self.thresholds)
        level = torch.log(power @ self.mean_table[row])  # [B, F, 1]
        new_gru, windows = [], []
        if self.fixed_correction:  # the output layer writes its bias: no network to run, its values are constants
            pred = self.out_bias.reshape(1, 1, -1)
        else:
            feats = (torch.log(power) - level) * self.passband_table[row]
            hid = feats @ self.inp_weight + self.cutoff_in(c).unsqueeze(1)  # [B, F, C]
            if self.context:  # the long window ends where frame j ends: hops j .. j + context/h - 1
                long = hops[:, steps + torch.arange(self.context // self.hop)].reshape(batch, frames, -1) @ self.context_analysis
                long_power = (long * long) @ self.context_pair_sum + 1e-12
                inside = (self.context_freq < c).float().unsqueeze(1)  # [B, 1, bins_long]
                hid = hid + ((torch.log(long_power) - level) * inside) @ self.context_weight
            gates = self.film2(F.silu(self.film1(c))).reshape(batch, 1, -1).split(self.channels, dim=2)
            windows = []
            for i, cache in enumerate(caches):
                window = torch.cat([cache, F.leaky_relu(hid, self.slope)], dim=1)  # [B, context + F, C]
                windows.append(window)
                taps = window[:, steps + torch.arange(self.kernel) * self.dilations[i]].reshape(batch, frames, -1)
                y = taps @ getattr(self, f"block{i}_weight")
                hid = hid + F.leaky_relu(y * gates[i], self.slope) @ getattr(self, f"mix{i}_weight")
            if self.gru is not None:
                seq, h_n = self.gru(F.leaky_relu(hid, self.slope), gru_state[0].unsqueeze(0))
                hid = hid + seq @ self.gru_out_weight
                new_gru = [h_n[0]]
            pred = F.leaky_relu(hid, self.slope) @ self.out_weight + self.out_bias  # [B, F, (2) outputs (x1-3)]
        width = self.outputs if self.envelope else 2 * self.bins
        log_mag, mixes, noise_mix = pred[..., :width], pred[..., width:2 * width], pred[..., -width:]
        if self.bound:
            log_mag = self.bound * torch.tanh(log_mag / self.bound)
        if self.envelope:
            log_mag = log_mag @ self.envelope_basis
            mixes = mixes @ self.envelope_basis if self.exciter else mixes
            noise_mix = noise_mix @ self.envelope_basis if self.noise else noise_mix
        new_prior = []
        if self.tilt_s:
            long_segments = None
            if self.prior_fft:  # read every PRIOR_FFT_EVERY frames of the noise's clock; the window ends where its frame ends
                every = spectral.PRIOR_FFT_EVERY
                phase = torch.fmod(noise_clock.reshape(-1)[:1], float(every))  # [1]
                reads = torch.floor((frames - 1 + phase) / every).long() + 1
                read_frames = torch.arange(reads[0]) * every - phase.long()  # [R], from -phase
                long_segments = hops[:, (read_frames + self.prior_offset)[:, None] + torch.arange(self.prior_fft // self.hop)]
                long_segments = (long_segments.reshape(-1, *self.prior_split),  # [B R, a, b]: shapes with no Shape ops
                                 torch.floor((torch.arange(frames) + phase) / every).long())  # and each frame's reading
            envelope, *new_prior, new_short = self._causal_prior(raw_power, c, *prior_state, long_segments, *short_cache)
            log_mag = log_mag + envelope
        elif self.prior:
            log_mag = log_mag + self._prior(raw_power, c)
        else:
            log_mag = log_mag + 0.5 * level
        source = torch.gather(spec, 2, self.src_table[row].expand(batch, frames, 2 * self.bins))
        magnitude = (source * source) @ self.pair_sum_twice + 1e-20
        gain = torch.exp(torch.clamp(log_mag, max=20.0))
        new_clock = []
        if self.exciter or self.noise:  # unit phasors: the replicated band's, mixed per bin with |x|'s spectrum's
            excitation = source / torch.sqrt(magnitude)
            if self.exciter:
                harmonics = segments.abs() @ self.analysis
                harmonics = harmonics / torch.sqrt((harmonics * harmonics) @ self.pair_sum_twice + 1e-20)
                mix = torch.sigmoid(mixes)
                excitation = mix * excitation + (1.0 - mix) * harmonics
            if self.noise:  # ... and with the noise
                noise, clock = self._noise(noise_clock, frames)
                new_clock = [clock]
                mix = torch.sigmoid(noise_mix)
                excitation = (1.0 - mix) * excitation + mix * spectral.NOISE_GAIN * noise
            replaced = (excitation * gain - spec) * self.above_table[row]
        else:
            replaced = (source * (gain / torch.sqrt(magnitude)) - spec) * self.above_table[row]
        # inverse STFT and overlap-add: hop m of the output gathers frames m, m - 1, ... (zero beyond the ends)
        parts = self.parts_per_frame
        padded = F.pad(replaced, (0, 0, parts - 1, parts - 1))  # [B, F + 2 (parts - 1), 2 bins]
        lagged = padded[:, torch.arange(frames + parts - 1)[:, None] + parts - 1 - torch.arange(parts)]
        wet = (lagged.reshape(batch, frames + parts - 1, -1) @ self.synthesis).reshape(batch, -1)  # [B, T + delay]
        out = wet + torch.cat([carry, audio], dim=1)  # the dry input and the previous overlap-add carry
        # state: each block's last `context` window rows, the GRU's state, the input history, the new carry
        rows = self.tail_base + self.tail_blocks * frames
        tails = [torch.cat(windows, dim=1)[:, rows].reshape(batch, -1)] if windows else []
        new_short = [new_short] if self.tilt_s and self.fast_level else []
        return out[:, :length], torch.cat([*tails, *new_gru, *new_prior, *new_clock, *new_short, xh[:, length:],
                                           out[:, length:]], dim=1)

    def _prior(self, power, c):
        """The generator's `_prior` (noise_fill's envelope, a fixed slope): [B, F, 2 bins] log magnitude."""
        kc = c * (self.bins - 1)
        k = self.bin_index
        fit = ((k >= spectral.PRIOR_FIT[0] * kc) & (k <= spectral.PRIOR_FIT[1] * kc)).float()  # [B, bins]
        top = power @ (fit / fit.sum(-1, keepdim=True).clamp_min(1.0)).unsqueeze(2)  # [B, F, 1]
        middle = 0.5 * (spectral.PRIOR_FIT[0] + spectral.PRIOR_FIT[1])
        octaves = self.bin_octaves - torch.log2((middle * kc).clamp_min(1.0)).unsqueeze(2)  # [B, 1, 2 bins]
        tilt = spectral.PRIOR_TILT_DB * math.log(10.0) / 20.0
        return 0.5 * torch.log(top + 1e-12) + tilt * octaves

    def _prior_fft_tables(self, gen):
        """The long window's DFT (size P = a b, a power of two) as two MatMuls with constant weights, in
        place of gathering the rows of the bins a cutoff reads (their copy cost more than the whole
        transform). The windowed samples y[b n1 + n2] as [a, b]; stage one, the a-point DFTs over n1
        ([4a, a] @ y: re, im, im, re); the twiddles, one Mul ([a, 4b]: cos, cos, sin, -sin); stage two, the
        b-point DFTs over n2 ([4b, 2b]: the same matrix twice sums the twiddle's two halves). Bin
        k1 + a k2 lands at k1 b + k2; the fit's frequency table follows that order (the mirror half reads
        2: never inside a fit)."""
        size = self.prior_fft
        a = 1 << (size.bit_length() - 1) // 2
        b = size // a
        if size & (size - 1) or a * b != size:
            raise ValueError("the prior's long window is not a power of two")
        window = gen.prior_cos[0].double()  # bin 0's row: the scaled window
        if not torch.allclose(gen.prior_cos[1].double(), window * torch.cos(2 * math.pi * torch.arange(size) / size),
                              atol=1e-6):
            raise ValueError("the prior's long analysis is not a windowed DFT")
        f64 = dict(dtype=torch.float64)
        phi = 2 * math.pi * torch.arange(a, **f64)[:, None] * torch.arange(a, **f64)[None, :] / a  # [k1, n1]
        stage1 = torch.cat([torch.cos(phi), -torch.sin(phi), -torch.sin(phi), torch.cos(phi)])  # [4a, a]
        twiddle = 2 * math.pi * torch.arange(a, **f64)[:, None] * torch.arange(b, **f64)[None, :] / size  # [k1, n2]
        twiddles = torch.cat([torch.cos(twiddle), torch.cos(twiddle), torch.sin(twiddle), -torch.sin(twiddle)], 1)
        psi = 2 * math.pi * torch.arange(b, **f64)[:, None] * torch.arange(b, **f64)[None, :] / b  # [n2, k2]
        stage2 = torch.cat([torch.cat([torch.cos(psi), -torch.sin(psi)], 1), torch.cat([torch.sin(psi), torch.cos(psi)], 1)])
        bins = (torch.arange(a)[:, None] + a * torch.arange(b)[None, :]).reshape(-1).double()
        freq = torch.where(bins <= size // 2, 2.0 * bins / size, torch.tensor(2.0, **f64))
        self.prior_split = (a, b)
        self.register_buffer("prior_window", window.float())
        self.register_buffer("prior_stage1", stage1.float().contiguous())
        self.register_buffer("prior_twiddles", twiddles.float().contiguous())
        self.register_buffer("prior_stage2", torch.cat([stage2, stage2]).float().contiguous())  # [4b, 2b]
        self.register_buffer("prior_freq", freq.float())
        self.register_buffer("prior_octaves", torch.log2(freq.clamp_min(1e-6)).float())  # log2 of each bin's frequency

    def _long_prior_bands(self, segments, held, c):
        """The generator's `_long_prior_bands` from the long window's samples at its readings [B R, a, b]
        (`_prior_fft_tables`' y), each frame holding reading `held` [F]: the power of every bin, the
        fit's means as MatMuls."""
        low, high = spectral.PRIOR_FIT
        a, b = self.prior_split
        y = segments * self.prior_window.reshape(a, b)
        z = (self.prior_stage1 @ y).reshape(-1, 4, a, b).transpose(1, 2).reshape(-1, a, 4 * b)
        spectrum = (z * self.prior_twiddles) @ self.prior_stage2  # [B R, a, 2b]: re | im
        power = (spectrum * spectrum).reshape(-1, a, 2, b).sum(2).reshape(c.shape[0], -1, a * b)  # [B, R, P]
        f = self.prior_freq.unsqueeze(0)  # [1, P]
        fit = ((f >= low * c) & (f <= high * c)).float()  # [B, P]
        count = fit.sum(-1, keepdim=True).clamp_min(1.0)
        weights = (fit / count).unsqueeze(2)  # [B, P, 1]
        floor = 1e-6 * (power @ weights) + 1e-30  # 60 dB under the octave's mean power
        log_p = torch.log(power + floor)
        top = torch.exp((log_p @ weights).squeeze(2) + spectral.RAYLEIGH_DB * math.log(10.0) / 10.0)  # [B, F]
        x = self.prior_octaves.unsqueeze(0) - torch.log2(c.clamp_min(1e-6))
        x = (x - (x * fit).sum(-1, keepdim=True) / count) * fit  # centred octaves, 0 outside the fit
        slope = (10.0 / math.log(10.0)) * (log_p @ (x / (x * x).sum(-1, keepdim=True).clamp_min(1e-9)).unsqueeze(2))
        return top[:, held], slope.squeeze(2)[:, held]

    def _causal_prior(self, power, c, level_cache, tilt_state, long_segments=None, short_cache=None):
        """The generator's `_causal_prior`: [B, F, 2 bins] log magnitude, the new level cache, slope state and
        short-frame state (None without prior_fast_level). Both halves of the top octave in one MatMul; the
        running slope in one CumSum per block."""
        frames = power.shape[1]
        kc = c * (self.bins - 1)
        k = self.bin_index
        low, high = spectral.PRIOR_FIT
        middle = 0.5 * (low + high)
        if long_segments is None:
            # lower half = [k >= low kc] - [k >= middle kc], upper = [k >= middle kc] - [k > high kc]
            edges = torch.cat([k.unsqueeze(2) >= kc.unsqueeze(2) * self.prior_edges,
                               k.unsqueeze(2) > high * kc.unsqueeze(2)], dim=2).float()  # [B, bins, 3]
            halves = edges[:, :, :2] - edges[:, :, 1:]  # [B, bins, 2]
            halves = halves / halves.sum(1, keepdim=True).clamp_min(1.0)
            low_p, up_p = (power @ halves).unbind(2)  # [B, F]
            top = 0.5 * (low_p + up_p)
        else:
            top, long_slope = self._long_prior_bands(*long_segments, c)
        new_short = None
        if short_cache is not None:  # the level moved as the short frames say (the generator's prior_fast_level)
            fit = ((k >= low * kc) & (k <= high * kc)).float()  # [B, bins]
            span = torch.cat([short_cache, (power @ (fit / fit.sum(-1, keepdim=True).clamp_min(1.0)).unsqueeze(2))
                              .squeeze(2)], dim=1)  # [B, W - 1 + F]
            weights = self.prior_short_weights
            as_long = span[:, torch.arange(frames)[:, None] + torch.arange(weights.shape[0])] @ weights  # [B, F]
            recent = span[:, torch.arange(frames)[:, None] + weights.shape[0] - spectral.PRIOR_LEVEL_FRAMES
                          + torch.arange(spectral.PRIOR_LEVEL_FRAMES)].mean(-1)
            top = top * ((recent + 1e-30) / (as_long + 1e-30)).clamp(*spectral.PRIOR_FAST_RANGE)
            new_short = span[:, frames:]
        history = torch.cat([level_cache, top], dim=1)  # [B, PRIOR_LEVEL_FRAMES - 1 + F]
        window = torch.arange(frames)[:, None] + torch.arange(spectral.PRIOR_LEVEL_FRAMES)
        level = history[:, window].mean(-1, keepdim=True)  # [B, F, 1]
        db = 10.0 / math.log(10.0)
        span = math.log2((middle + high) / (middle + low))
        slope = db * (torch.log(up_p + 1e-12) - torch.log(low_p + 1e-12)) / span if long_segments is None else long_slope
        active = (db * torch.log(top + 1e-30) > self.active_db).float()
        steps = torch.arange(1, frames + 1, dtype=power.dtype)
        grow, shrink = self.decay ** -steps, self.decay ** steps
        sums = shrink * (tilt_state.unsqueeze(2) + torch.cumsum(torch.stack([slope * active, active], 1) * grow, -1))
        tilt = ((sums[:, 0] + spectral.PRIOR_TILT_FRAMES * spectral.PRIOR_TILT_DB)
                / (sums[:, 1] + spectral.PRIOR_TILT_FRAMES)).clamp(*spectral.PRIOR_TILT_RANGE_DB)  # [B, F]
        # log magnitude = 0.5 ln(level) + (tilt (octaves - log2 middle) - curve max(octaves, 0)^2) / (2 db)
        octaves = self.bin_octaves - torch.log2(kc.clamp_min(1.0)).unsqueeze(2)  # [B, 1, 2 bins] re the cutoff
        above = octaves.clamp_min(0.0)
        bend = (-spectral.PRIOR_CURVE_DB / (2 * db)) * above * above
        log_mag = 0.5 * torch.log(level + 1e-12) + tilt.unsqueeze(2) * ((octaves - math.log2(middle)) / (2 * db)) + bend
        return log_mag, history[:, frames:], sums[:, :, -1], new_short

    def _noise(self, clock, frames):
        """The noise excitation's unit phasors [B, F, 2 bins] (re | im) from the frame clock (a count of
        frames, never negative: fmod is the remainder), and the new clock."""
        rows = spectral.noise_row_offsets(clock.shape[0], dtype=clock.dtype)
        n = clock + rows[:, None] + torch.arange(frames, dtype=clock.dtype)  # [B, F]: each row its own noise
        a, a_swapped = self.noise0[torch.fmod(n, spectral.NOISE_TABLES[0]).long()].split(2 * self.bins, dim=2)
        b_re, b_im = self.noise1[torch.fmod(n, spectral.NOISE_TABLES[1]).long()].split(2 * self.bins, dim=2)
        return a * b_re + a_swapped * b_im, torch.fmod(clock + frames, float(np.prod(spectral.NOISE_TABLES)))

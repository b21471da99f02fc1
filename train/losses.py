"""Losses as small free functions (HiFi-GAN style) and a multi-resolution STFT loss (auraloss style)."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


def discriminator_loss(real_outputs, fake_outputs):
    """Least-squares GAN loss, summed over the discriminators (HiFi-GAN)."""
    loss = 0.0
    for (real, _), (fake, _) in zip(real_outputs, fake_outputs):
        loss = loss + torch.mean((1 - real) ** 2) + torch.mean(fake**2)
    return loss


def generator_loss(fake_outputs):
    """Least-squares adversarial loss of the generator, summed over the discriminators."""
    return sum(torch.mean((1 - fake) ** 2) for fake, _ in fake_outputs)


def feature_loss(real_outputs, fake_outputs):
    """L1 between real and fake feature maps, summed over discriminators and layers (HiFi-GAN)."""
    loss = 0.0
    for (_, real_feats), (_, fake_feats) in zip(real_outputs, fake_outputs):
        for r, f in zip(real_feats, fake_feats):
            loss = loss + torch.mean(torch.abs(r.detach() - f))
    return loss


def stft_magnitude(x, n_fft, hop):
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.view_as_real(torch.stft(x, n_fft, hop, window=window, return_complex=True))
    # sqrt of a clamped power: |z| has a NaN gradient at z = 0 (digital silence in, silence out)
    return spec.pow(2).sum(-1).clamp_min(1e-14).sqrt()


def multi_resolution_stft_loss(y, target, ffts=(256, 512, 1024, 2048), w_sc=1.0, w_log=1.0):
    """Spectral convergence + log-magnitude L1 at several resolutions (the log term tracks LSD)."""
    loss = 0.0
    for n_fft in ffts:
        mag_y, mag_t = stft_magnitude(y, n_fft, n_fft // 4), stft_magnitude(target, n_fft, n_fft // 4)
        sc = torch.linalg.norm(mag_t - mag_y) / torch.linalg.norm(mag_t).clamp_min(1e-7)
        log = F.l1_loss(torch.log10(mag_y), torch.log10(mag_t))
        loss = loss + w_sc * sc + w_log * log
    return loss / len(ffts)


def lsd_torch(y, target, n_fft=2048, hop=512, eps=0.0):
    """LSD as NU-Wave 2/AP-BWE compute it (power floored at 1e-8, log10), per clip [B].

    eps > 0 keeps the square root differentiable where a frame matches exactly (as a loss).
    """
    window = torch.hann_window(n_fft, device=y.device)
    py = torch.view_as_real(torch.stft(y, n_fft, hop, window=window, return_complex=True)).pow(2).sum(-1)
    pt = torch.view_as_real(torch.stft(target, n_fft, hop, window=window, return_complex=True)).pow(2).sum(-1)
    d = (torch.log10(pt.clamp_min(1e-8)) - torch.log10(py.clamp_min(1e-8))) ** 2
    return (d.mean(dim=-2) + eps).sqrt().mean(dim=-1)


def band_energies(y, target, cutoff_hz, ceiling_hz, rate, n_fft=1024, bands_per_octave=3, low_hz=1000.0,
                  range_db=50.0):
    """Band energies in dB of y and target above each clip's cutoff (and below its ceiling): bands equal
    in octaves from low_hz, one value per ~21 ms frame at 48 kHz, as the oracle envelope's. A floor
    `range_db` below the reference clip's loudest band is added to both sides (as ViSQOL's spectrogram
    has a floor): a band the reference leaves quiet is matched by leaving it quiet, not by filling it
    to a level that only a log distance without a floor rewards. -> (dB_y, dB_t [B, bands, T], valid
    [B, bands, 1]). The band losses below take this tuple as `energies` (one computation per step)."""
    py, pt = stft_magnitude(y, n_fft, n_fft // 4) ** 2, stft_magnitude(target, n_fft, n_fft // 4) ** 2  # [B, K, T]
    freqs = torch.fft.rfftfreq(n_fft, 1.0 / rate).to(y.device)
    edges = torch.tensor([low_hz * 2 ** (i / bands_per_octave) for i in range(64)], device=y.device)
    edges = edges[edges < rate / 2]
    member = ((freqs[:, None] >= edges[None, :]) & (freqs[:, None] < torch.cat([edges[1:], edges.new_tensor([rate])])[None, :])).float()
    inside = ((freqs[None, :] >= cutoff_hz[:, None]) & (freqs[None, :] <= ceiling_hz[:, None])).float()  # [B, K]
    weights = inside[:, :, None] * member[None]  # [B, K, bands]
    count = weights.sum(1)  # [B, bands]
    ey = torch.einsum("bkt,bkn->bnt", py, weights) / count.clamp_min(1)[:, :, None]
    et = torch.einsum("bkt,bkn->bnt", pt, weights) / count.clamp_min(1)[:, :, None]
    floor = et.amax(dim=(1, 2), keepdim=True) * 10 ** (-range_db / 10) + 1e-12  # [B, 1, 1]
    return 10 * torch.log10(ey + floor), 10 * torch.log10(et + floor), (count > 0).float()[:, :, None]


def band_envelope_loss(y, target, cutoff_hz, ceiling_hz, rate, energies=None, **kwargs):
    """Mean |dB| between the band energies of y and target (`band_energies`)."""
    db_y, db_t, valid = energies or band_energies(y, target, cutoff_hz, ceiling_hz, rate, **kwargs)
    valid = valid.expand_as(db_y)
    return ((db_y - db_t).abs() * valid).sum() / valid.sum().clamp_min(1)


def band_shape_loss(y, target, cutoff_hz, ceiling_hz, rate, energies=None, **kwargs):
    """Mean |dB| between how y and target spread each frame's energy over the bands above the cutoff
    (`band_energies`, each frame's mean over its bands removed): the part of the envelope that ViSQOL
    rewards most (`eval --oracle`: the reference's shape at noise-fill's level scores far above its
    level with noise-fill's shape), free of the frame's overall level."""
    db_y, db_t, valid = energies or band_energies(y, target, cutoff_hz, ceiling_hz, rate, **kwargs)
    count = valid.sum(1, keepdim=True).clamp_min(1)  # [B, 1, 1]
    shape_y = db_y - (db_y * valid).sum(1, keepdim=True) / count
    shape_t = db_t - (db_t * valid).sum(1, keepdim=True) / count
    valid = valid.expand_as(db_y)
    return ((shape_y - shape_t).abs() * valid).sum() / valid.sum().clamp_min(1)


def band_dynamics_loss(y, target, cutoff_hz, ceiling_hz, rate, min_std_db=1.0, energies=None, **kwargs):
    """1 - the correlation over time of each band's dB energy in y and target (`band_energies`), over
    the bands where the reference moves by at least `min_std_db`: the structure term of ViSQOL's
    similarity, which a level that hedges (fills the quiet frames, misses the onsets) loses."""
    db_y, db_t, valid = energies or band_energies(y, target, cutoff_hz, ceiling_hz, rate, **kwargs)
    dy, dt = db_y - db_y.mean(-1, keepdim=True), db_t - db_t.mean(-1, keepdim=True)
    # sqrt(var + eps): a band whose level never moves (outside the cutoff..ceiling, or held at the floor)
    # has var 0, where sqrt's gradient is infinite; masked out below, it still made every gradient NaN
    std_y, std_t = ((dy * dy).mean(-1) + 1e-6).sqrt(), ((dt * dt).mean(-1) + 1e-6).sqrt()
    corr = (dy * dt).mean(-1) / (std_y * std_t)  # [B, bands]
    moving = valid[..., 0] * ((dt * dt).mean(-1).sqrt() >= min_std_db).float()
    return ((1.0 - corr) * moving).sum() / moving.sum().clamp_min(1)


# ViSQOL v3's audio mode, made differentiable: a gammatone-like spectrogram (32 ERB bands from 50 Hz,
# 80 ms Hann frames every 20 ms, 10*log10 of each band's RMS), its floors, and the 3x3 neurogram
# similarity (NSIM: intensity x structure) that ViSQOL maps to a MOS per band. The band centres,
# window and constants are visqol-python's own.
NSIM_BANDS, NSIM_LOW_HZ, NSIM_WINDOW_S, NSIM_HOP_S = 32, 50.0, 0.08, 0.02
NSIM_FLOOR_DB, NSIM_RANGE_DB = -45.0, 45.0  # absolute floor; per-frame floor below the frame's peak


@functools.lru_cache(maxsize=8)
def gammatone_weights(n_fft, rate, bands=NSIM_BANDS, low_hz=NSIM_LOW_HZ):
    """[n_fft // 2 + 1, bands]: each bin's power gain through a 4th-order gammatone filter (unit gain at
    its centre, bandwidth 1.019 ERB), normalised so a band's RMS is that of the filtered frame."""
    from visqol.gammatone import EAR_Q, MIN_BW, calc_center_freqs

    freqs = torch.fft.rfftfreq(n_fft, 1.0 / rate, dtype=torch.float64)
    centers = torch.from_numpy(calc_center_freqs(low_hz, rate / 2, bands).copy()).flip(0)  # lowest first
    erb = centers / EAR_Q + MIN_BW
    gain = (1 + ((freqs[:, None] - centers[None]) / (1.019 * erb[None])) ** 2) ** -4
    return gain.float(), centers.float()


def neurogram(y, rate, weights):
    """[B, bands, frames] of 10*log10(band RMS) with ViSQOL's absolute floor."""
    win = round(NSIM_WINDOW_S * rate)
    n_fft = 2 * (weights.shape[0] - 1)
    spec = torch.stft(y, n_fft, round(NSIM_HOP_S * rate), win_length=win, window=torch.hann_window(win, device=y.device),
                      center=False, return_complex=True)
    power = torch.view_as_real(spec).pow(2).sum(-1)  # [B, K, T]
    mean_square = torch.einsum("bkt,kn->bnt", power, weights) * (2.0 / (win * n_fft))
    return (5 * torch.log10(mean_square.clamp_min(1e-18))).clamp_min(NSIM_FLOOR_DB)


def nsim_map(ref, deg):
    """ViSQOL's similarity map of two [B, bands, frames] neurograms (replicated edges, 3x3 Gaussian)."""
    from visqol.nsim import C1, C3, GAUSSIAN_WINDOW

    kernel = ref.new_tensor(GAUSSIAN_WINDOW)[None, None]

    def smooth(a):
        return F.conv2d(F.pad(a[:, None], (1, 1, 1, 1), mode="replicate"), kernel)[:, 0]

    mu_r, mu_d = smooth(ref), smooth(deg)
    var_r = smooth(ref * ref) - mu_r * mu_r
    var_d = smooth(deg * deg) - mu_d * mu_d
    cov = smooth(ref * deg) - mu_r * mu_d
    intensity = (2 * mu_r * mu_d + C1) / (mu_r * mu_r + mu_d * mu_d + C1)
    structure = (cov + C3) / ((var_r * var_d).clamp_min(0) + 1e-8).sqrt().add(C3)
    return intensity * structure


def neurogram_similarity_loss(y, target, cutoff_hz, rate):
    """1 - ViSQOL's NSIM between y and target, over the bands centred above each clip's cutoff (the
    passband is the input's own): per-frame floors (the louder side's peak - 45), global minimum at 0."""
    weights, centers = gammatone_weights(2 ** math.ceil(math.log2(NSIM_WINDOW_S * rate)), rate)
    weights, centers = weights.to(y.device), centers.to(y.device)
    ref, deg = neurogram(target, rate, weights), neurogram(y, rate, weights)
    floor = (torch.maximum(ref.amax(1, keepdim=True), deg.amax(1, keepdim=True)) - NSIM_RANGE_DB).detach()
    ref, deg = torch.maximum(ref, floor), torch.maximum(deg, floor)
    lowest = torch.minimum(ref.amin((1, 2), keepdim=True), deg.amin((1, 2), keepdim=True)).detach()
    sim = nsim_map(ref - lowest, deg - lowest)  # [B, bands, T]
    above = (centers[None, :] >= cutoff_hz[:, None]).float()[:, :, None]  # [B, bands, 1]
    return ((1 - sim) * above).sum() / (above.sum() * sim.shape[-1]).clamp_min(1)


def correction_bias_loss(correction) -> torch.Tensor:
    """The learned correction's mean over the batch and its frames, per envelope band, squared (dB^2), each
    band weighted by its share above each clip's cutoff: a correction may move with the content, but a
    shift of the whole band that the training sources share is what does not carry over to other sources
    (issue 21, session 14). `correction`: (dB [B, F, bands], weight [B, bands]) or None (no such model)."""
    if correction is None:
        return torch.zeros(())
    db, reach = correction
    weight = reach[:, None, :].expand_as(db)
    total = weight.sum((0, 1))
    mean = (db * weight).sum((0, 1)) / total.clamp_min(1e-9)
    heard = (total > 0).float()
    return (mean * mean * heard).sum() / heard.sum().clamp_min(1.0)


def lowpass_at(y, ceiling_hz, rate: int, keep_full: bool = True):
    """Zero each clip's spectrum above its ceiling (clips with a ceiling near Nyquist pass unchanged).

    A lossy file's target is empty above its measured bandwidth; comparing the generator's output there
    would teach it to leave that band empty for every input. Cutting both sides at the ceiling leaves
    the generator free above it, so only the band the reference really has teaches it.
    """
    spec = torch.fft.rfft(y, dim=-1)
    freqs = torch.fft.rfftfreq(y.shape[-1], 1.0 / rate).to(y.device)
    keep = freqs[None, :] <= ceiling_hz[:, None]
    if keep_full:
        keep = keep | (ceiling_hz[:, None] >= 0.98 * rate / 2)
    return torch.fft.irfft(spec * keep, n=y.shape[-1], dim=-1)


def high_band(x, cutoff, rate: int):
    """x minus its spectrum below each clip's cutoff (Hz): the band the generator writes."""
    return x - lowpass_at(x, cutoff, rate, keep_full=False)


# ------------------------------------------------------------------ the generator's loss terms
@dataclass
class Judged:
    """What the generator's loss terms compare: its output and the target [B, T], the clips' cutoff and
    ceiling (Hz), and, from the GAN's start, the discriminators' outputs on the fake and real crops
    (computed once, on first use, as the band energies are)."""

    y: torch.Tensor
    target: torch.Tensor
    cutoff_hz: torch.Tensor
    ceiling_hz: torch.Tensor
    rate: int
    ffts: list
    judge_fake: Callable | None = None
    judge_real: Callable | None = None
    correction: tuple | None = None  # the generator's correction of its prior (dB, band weights), if it has one

    @functools.cached_property
    def energies(self):
        return band_energies(self.y, self.target, self.cutoff_hz, self.ceiling_hz, self.rate)

    @functools.cached_property
    def fake(self):
        return self.judge_fake()

    @functools.cached_property
    def real(self):
        with torch.no_grad():
            return self.judge_real()

    def bands(self):
        return self.y, self.target, self.cutoff_hz, self.ceiling_hz, self.rate


@dataclass(frozen=True)
class LossTerm:
    name: str  # its weight's key in a recipe's `loss` section
    column: str  # its column in metrics.csv (and key in the training step's logs)
    default: float  # its weight when no recipe names one
    compute: Callable[[Judged], torch.Tensor]
    gan: bool = False  # schedule: from train.gan_start on (with the discriminators); else every step
    always: bool = False  # computed and logged even at weight 0


# The generator's loss: sum(weight x term), in this order. A new term is one row here (and its weight in
# the recipes that use it).
LOSS_TERMS = (
    LossTerm("stft", "loss_stft", 10.0, lambda j: multi_resolution_stft_loss(j.y, j.target, ffts=j.ffts), always=True),
    # the evaluation's own metric (log10 power, 1e-8 floor)
    LossTerm("lsd", "loss_lsd", 0.0, lambda j: lsd_torch(j.y, j.target, eps=1e-6).mean()),
    # band energies above the cutoff in dB: what the oracle envelope gets right
    LossTerm("envelope", "loss_env", 0.0, lambda j: band_envelope_loss(*j.bands(), energies=j.energies)),
    # each frame's energy spread over the bands as the reference's, whatever its level
    LossTerm("shape", "loss_shape", 0.0, lambda j: band_shape_loss(*j.bands(), energies=j.energies)),
    # each band's level follows the reference's moves over time
    LossTerm("dynamics", "loss_dyn", 0.0, lambda j: band_dynamics_loss(*j.bands(), energies=j.energies)),
    # ViSQOL's own similarity of the gammatone spectrograms, above the cutoff
    LossTerm("nsim", "loss_nsim", 0.0, lambda j: neurogram_similarity_loss(j.y, j.target, j.cutoff_hz, j.rate)),
    # the correction's mean shift per band over the batch: content-dependent moves only
    LossTerm("correction_bias", "loss_bias", 0.0, lambda j: correction_bias_loss(j.correction)),
    # summed over discriminators and layers as HiFi-GAN does
    LossTerm("adversarial", "loss_adv", 1.0, lambda j: generator_loss(j.fake), gan=True, always=True),
    LossTerm("feature", "loss_fm", 2.0, lambda j: feature_loss(j.real, j.fake), gan=True, always=True),
)

"""Losses as small free functions (HiFi-GAN style) and a multi-resolution STFT loss (auraloss style)."""
from __future__ import annotations

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
    [B, bands, 1])."""
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


def band_envelope_loss(y, target, cutoff_hz, ceiling_hz, rate, **kwargs):
    """Mean |dB| between the band energies of y and target (`band_energies`)."""
    db_y, db_t, valid = band_energies(y, target, cutoff_hz, ceiling_hz, rate, **kwargs)
    valid = valid.expand_as(db_y)
    return ((db_y - db_t).abs() * valid).sum() / valid.sum().clamp_min(1)


def band_dynamics_loss(y, target, cutoff_hz, ceiling_hz, rate, min_std_db=1.0, **kwargs):
    """1 - the correlation over time of each band's dB energy in y and target (`band_energies`), over
    the bands where the reference moves by at least `min_std_db`: the structure term of ViSQOL's
    similarity, which a level that hedges (fills the quiet frames, misses the onsets) loses."""
    db_y, db_t, valid = band_energies(y, target, cutoff_hz, ceiling_hz, rate, **kwargs)
    dy, dt = db_y - db_y.mean(-1, keepdim=True), db_t - db_t.mean(-1, keepdim=True)
    corr = (dy * dt).mean(-1) / ((dy * dy).mean(-1).sqrt() * (dt * dt).mean(-1).sqrt() + 1e-6)  # [B, bands]
    moving = valid[..., 0] * ((dt * dt).mean(-1).sqrt() >= min_std_db).float()
    return ((1.0 - corr) * moving).sum() / moving.sum().clamp_min(1)

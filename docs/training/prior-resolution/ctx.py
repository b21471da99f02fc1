import math, os
import numpy as np
import torch
import torch.nn.functional as F
from bandlift.train.model import PRIOR_FIT, PRIOR_LEVEL_FRAMES, PRIOR_ACTIVE_DB, PRIOR_TILT_FRAMES, PRIOR_TILT_DB, PRIOR_TILT_RANGE_DB, PRIOR_CURVE_DB
LONG = int(os.environ.get("LONG", 1024))
LONGP = [None]
RAY = float(os.environ.get("RAY", 0.0))
def before_item(it):
    x = it["input"].numpy().astype(np.float64)
    h, n = gen.config.frame, gen.config.n_fft
    pad = (-(len(x) + gen.delay)) % h
    xp = np.concatenate([np.zeros(gen.history), x, np.zeros(gen.delay + pad)])
    frames = (len(xp) - gen.history) // h
    base = gen.history - gen.delay
    xp = np.concatenate([np.zeros(LONG), xp])
    ends = LONG + base + np.arange(frames) * h + n
    idx = ends[:, None] - LONG + np.arange(LONG)[None, :]
    seg = xp[idx] * np.hanning(LONG + 1)[:-1]
    P = np.abs(np.fft.rfft(seg, axis=-1)) ** 2  # [F, LONG/2+1]
    # scale so a sinusoid reads the same power as in the model's sqrt-Hann n_fft analysis
    if os.environ.get("SCALE", "noise") == "noise":  # noise reads the same power per bin in both analyses
        P *= (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).sum() / (np.hanning(LONG + 1)[:-1] ** 2).sum()
    else:
        w_model = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).sum()
        P *= (w_model / np.hanning(LONG + 1)[:-1].sum()) ** 2
    LONGP[0] = torch.from_numpy(P[None]).float()
def _causal_prior(self, power, cutoff, level_cache, tilt_state):
    """noise_fill's envelope, causal: [B, F, bins] log magnitude, and the new states. The level is
    the top octave's (PRIOR_FIT x cutoff) mean power over the last PRIOR_LEVEL_FRAMES frames; the
    slope (dB/octave) is that octave's upper half against its lower half, averaged over active
    frames with an exponential time constant of prior_tilt_s; above the cutoff the envelope bends
    down PRIOR_CURVE_DB per octave^2."""
    batch, frames, _ = power.shape
    kc = cutoff.reshape(-1, 1) * (self.bins - 1)
    k = self.bin_index[None, :]
    middle = 0.5 * (PRIOR_FIT[0] + PRIOR_FIT[1])
    lower = ((k >= PRIOR_FIT[0] * kc) & (k < middle * kc)).float()
    upper = ((k >= middle * kc) & (k <= PRIOR_FIT[1] * kc)).float()

    def band_mean(mask):
        return (power * mask[:, None, :]).sum(-1) / mask.sum(-1).clamp_min(1.0)[:, None]  # [B, F]

    P = LONGP[0]
    K = P.shape[-1]
    kl = torch.arange(K, dtype=torch.float32)[None, :] * (self.bins - 1) * 2 / (2 * (K - 1))  # long bins in model-bin units
    lower_l = ((kl >= PRIOR_FIT[0] * kc) & (kl < middle * kc)).float()
    upper_l = ((kl >= middle * kc) & (kl <= PRIOR_FIT[1] * kc)).float()
    lp = torch.log(P + 1e-12)
    def lmean(mask):
        return torch.exp((lp * mask[:, None, :]).sum(-1) / mask.sum(-1).clamp_min(1.0)[:, None]) * 10 ** (RAY / 10)
    low_p, up_p = lmean(lower_l), lmean(upper_l)
    top = 0.5 * (low_p + up_p)
    history = torch.cat([level_cache.reshape(batch, -1), top], dim=-1)
    level = F.avg_pool1d(history.unsqueeze(1), PRIOR_LEVEL_FRAMES, stride=1).squeeze(1)  # [B, F]
    new_level = history[:, frames:].reshape(batch, 1, -1)
    db = 10.0 / math.log(10.0)
    span = math.log2((middle + PRIOR_FIT[1]) / (middle + PRIOR_FIT[0]))  # octaves between the halves' centres
    w = lower_l + upper_l
    x = torch.log2(kl.clamp_min(1e-3) / kc.clamp_min(1.0))
    xm = (w * x).sum(-1, keepdim=True) / w.sum(-1, keepdim=True).clamp_min(1.0)
    xc = (x - xm) * w
    slope = db * (lp * xc[:, None, :]).sum(-1) / (xc * xc).sum(-1).clamp_min(1e-9)[:, None]
    # a full-scale sine's bin power with the sqrt-Hann window (plain numbers: nothing for the tracer)
    full_scale = (sum(math.sqrt(0.5 - 0.5 * math.cos(2 * math.pi * i / self.config.n_fft))
                      for i in range(self.config.n_fft)) / 2) ** 2
    active = (db * torch.log(top + 1e-30) > PRIOR_ACTIVE_DB + db * math.log(full_scale)).float()
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
    return log_mag, new_level, state.reshape(batch, 1, 2)


M.SpectralGenerator._causal_prior = _causal_prior

# A measurement, not product code (docs/training/robust.md, session 14): what a late level costs the offline noise-fill.
# usage: python lag.py EVAL.json [INPUT_RATE]   (EVAL.json: a `bandlift eval --json` run, for its file list)
import sys, json, numpy as np
from bandlift.train.eval.evaluate import EvalConfig, load_reference, make_input, score
import bandlift.train.eval.baselines as B
cfg = EvalConfig(input_rate=int(sys.argv[2]) if len(sys.argv) > 2 else 16000, seconds=5)
files = [f['path'] for f in json.load(open(sys.argv[1]))['files']]
orig = B._Spectra._fit_envelope
def lagged(lag):
    def fit(self):
        tilt, level = orig(self)
        if lag > 0:
            level = np.concatenate([np.full((level.shape[0], lag), -300.0), level[:, :-lag]], axis=1)
        elif lag < 0:  # smoothed: mean of the frame and the LAG before (a longer causal window, centred)
            k = -lag
            p = 10 ** (level / 10)
            level = 10 * np.log10(np.stack([np.convolve(c, np.ones(k) / k, mode="same") for c in p]) + 1e-30)
        return tilt, level
    return fit
res = {}
for path in files:
    ref, rate = load_reference(path, None, 5)
    x_low, cutoff = make_input(ref, rate, cfg)
    for lag in (0, 1, 2, -3):
        B._Spectra._fit_envelope = lagged(lag)
        y = B.noise_fill(x_low, cfg.input_rate, rate, cutoff_hz=cutoff)
        s = score(ref, y, rate, cutoff or cfg.input_rate / 2)
        res.setdefault(lag, []).append((s["visqol"], s["lsd"]))
for lag, v in res.items():
    v = np.array(v)
    print(f"lag {lag}: ViSQOL {np.nanmean(v[:, 0]):.3f} LSD {v[:, 1].mean():.3f}")

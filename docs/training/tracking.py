# A measurement, not product code (docs/training/robust.md, session 13): what training changes band by band.
# usage: python tracking.py CATEGORY STEP0.onnx A.onnx B.onnx EVAL.json   (EVAL.json: a `bandlift eval --json` of the
# held-out test at 16 kHz, for its file list)
# per band: mean level re the reference (dB) and the correlation of its frame-by-frame dB with the reference's
import sys, json, numpy as np
from bandlift.train.eval.evaluate import EvalConfig, load_reference, make_input, model_method
from bandlift.train.eval.baselines import noise_fill
cfg = EvalConfig(input_rate=16000, seconds=5)
models = {k: model_method(v) for k, v in (("step0", sys.argv[2]), ("v2-2000", sys.argv[3]), ("gan3000", sys.argv[4]))}
files = [f['path'] for f in json.load(open(sys.argv[5]))['files'] if f['category'] == sys.argv[1]]
bands = [(8000, 12000), (12000, 16000), (16000, 20000)]
acc = {}
for path in files:
    ref, rate = load_reference(path, None, 5)
    x_low, cutoff = make_input(ref, rate, cfg)
    outs = {"ref": ref, "nf": noise_fill(x_low, 16000, rate, cutoff_hz=cutoff), **{k: m(x_low, 16000, rate, cutoff) for k, m in models.items()}}
    n = min(len(v) for v in outs.values())
    spec = {}
    for k, v in outs.items():
        v = np.asarray(v).reshape(len(v), -1)[:n].mean(axis=1)
        frames = np.lib.stride_tricks.sliding_window_view(v, 1024)[::256] * np.hanning(1024)
        p = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        f = np.fft.rfftfreq(1024, 1 / rate)
        spec[k] = np.stack([10 * np.log10(p[:, (f >= a) & (f < b)].mean(axis=1) + 1e-20) for a, b in bands])  # [3, T]
    for k in outs:
        if k == "ref":
            continue
        for i in range(3):
            r, e = spec["ref"][i], spec[k][i]
            on = r > r.max() - 40
            if on.sum() > 5:
                acc.setdefault(k, {}).setdefault(i, []).append((np.mean(e[on] - r[on]), np.corrcoef(e[on], r[on])[0, 1]))
for k, d in acc.items():
    print(f"{k:8s}", "  ".join(f"{bands[i][0]//1000}-{bands[i][1]//1000}k level {np.mean([a for a, _ in v]):+.1f} track {np.mean([b for _, b in v]):.2f}" for i, v in sorted(d.items())))

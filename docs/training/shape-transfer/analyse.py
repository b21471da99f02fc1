"""Does a band shape learned from some sources transfer to others? (issue 21)

On every full-band lossless reference of the manifest (band >= 90 % of Nyquist; up to PER_SOURCE files
per source, CROP_S seconds each), 16 kHz input: the error, in dB per frame over ENVELOPE_BANDS bands
above 0.9 x cutoff, between the reference's own band levels and the noise-fill's envelope model, and
what corrections to that model leave of it, each fitted on all OTHER sources (leave one source out):
- bias: the other sources' mean correction per band;
- ridge (four strengths): a linear map from the passband's shape (its band levels relative to the top octave's, this
  frame and their causal 0.5 s mean) and the noise-fill's tilt to the correction;
- file-shape oracle: the held-out file's own mean correction (a bound: what a perfect per-file guess gets).
Prints one line per source and writes results.json beside this script.
    python docs/training/shape-transfer/analyse.py MANIFEST
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import soxr

from bandlift.rt.dsp.resample import fit_length
from bandlift.train.data.sources import is_lossy, load_audio
from bandlift.train.eval.baselines import ENVELOPE_BANDS, FILL_FROM, _Spectra, sinc

PER_SOURCE, CROP_S, IN_RATE, CUTOFF = 24, 8.0, 16000, 8000.0
PASS_EDGES = np.geomspace(150.0, FILL_FROM * CUTOFF, 13)  # 12 passband bands
ACTIVE_DB = 50.0  # frames whose high band is within this of the file's loudest
RIDGE = (1e-2, 1.0, 10.0, 100.0)  # ridge strengths, per frame (features standardised)


def bands_db(power, freqs, edges):
    """Mean power in each band [len(edges)-1, T], dB."""
    out = [power[(freqs >= lo) & (freqs < hi)].mean(axis=0) for lo, hi in zip(edges[:-1], edges[1:])]
    return 10 * np.log10(np.array(out) + 1e-20)


def causal_mean(x, frames):
    """Exponential causal mean along the last axis (time constant `frames`)."""
    a = 1.0 / frames
    out = np.empty_like(x)
    acc = x[..., 0]
    for t in range(x.shape[-1]):
        acc = (1 - a) * acc + a * x[..., t]
        out[..., t] = acc
    return out


def file_frames(path):
    x, rate = load_audio(path)  # [C, n]
    x = x.mean(axis=0)
    n = int(CROP_S * rate)
    start = max(0, (len(x) - n) // 2)
    ref = x[start:start + n].astype(np.float64)
    low = soxr.resample(ref, rate, IN_RATE, quality="VHQ")
    y = sinc(low, IN_RATE, rate)[None, :]
    sp = _Spectra(y, rate, CUTOFF)
    ref_power = np.abs(sp.stft(fit_length(ref[None], y.shape[1])))[0] ** 2
    target = sp.target_power()[0]
    high_edges = np.geomspace(FILL_FROM * CUTOFF, rate / 2, ENVELOPE_BANDS + 1)
    high_edges[-1] += 1.0
    ref_db = bands_db(ref_power, sp.freqs, high_edges)
    nf_db = bands_db(target, sp.freqs, high_edges)
    pass_db = bands_db(sp.power[0], sp.freqs, PASS_EDGES)
    level = sp.level_db[0]
    total = 10 * np.log10(ref_power[sp.freqs >= FILL_FROM * CUTOFF].sum(axis=0) + 1e-20)
    active = (~sp.silent()[0]) & (total > total.max() - ACTIVE_DB)
    shape = pass_db - level[None, :]
    feats = np.concatenate([shape, causal_mean(shape, 0.5 * rate / sp.hop),
                            np.full((1, len(level)), sp.tilt_db[0]), np.ones((1, len(level)))])
    return feats[:, active].T, (ref_db - nf_db)[:, active].T


def main(manifest):
    rows = [json.loads(line) for line in open(manifest)]
    by_source = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["path"]):
        if (not is_lossy(r) and r["bandwidth"] >= 0.9 * r["sample_rate"] / 2 and r["duration"] >= 2.0
                and len(by_source[r["source"]]) < PER_SOURCE):
            by_source[r["source"]].append(r)
    data = {}
    for source, files in sorted(by_source.items()):
        got = [file_frames(r["path"]) for r in files]
        got = [(f, d) for f, d in got if len(f) > 20]
        if len(got) >= 3:
            data[source] = got
            print(f"{source}: {len(got)} files, {sum(len(f) for f, _ in got)} frames", flush=True)
    results = {}
    for held in data:
        train_f = np.concatenate([f for s in data if s != held for f, _ in data[s]])
        train_d = np.concatenate([d for s in data if s != held for _, d in data[s]])
        bias = train_d.mean(axis=0)
        mu, sd = train_f[:, :-1].mean(0), train_f[:, :-1].std(0) + 1e-6
        z = np.hstack([(train_f[:, :-1] - mu) / sd, train_f[:, -1:]])
        weights = {lam: np.linalg.solve(z.T @ z + lam * len(z) * np.eye(z.shape[1]), z.T @ train_d) for lam in RIDGE}
        err = defaultdict(list)
        for f, d in data[held]:
            zf = np.hstack([(f[:, :-1] - mu) / sd, f[:, -1:]])
            preds = [("noise_fill", 0.0), ("bias", bias)] + [(f"ridge {lam:g}", zf @ w) for lam, w in weights.items()]
            for name, pred in preds + [("file_shape_oracle", d.mean(0))]:
                err[name].append(float(np.sqrt(np.mean((d - pred) ** 2))))
        results[held] = {k: float(np.mean(v)) for k, v in err.items()} | {"files": len(data[held])}
        print(held, " ".join(f"{k} {v:.2f}" for k, v in results[held].items()), flush=True)
    names = [k for k in results[next(iter(data))] if k != "files"]
    results["mean over sources"] = {k: float(np.mean([results[s][k] for s in data])) for k in names}
    print("mean over sources:", " ".join(f"{k} {v:.2f}" for k, v in results["mean over sources"].items()))
    Path(__file__).with_name("results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, names)


def plot(results, names):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(results)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ax.bar(np.arange(len(rows)) + i * width, [results[r][name] for r in rows], width, label=name)
    ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2)
    ax.set_xticklabels([r.replace("debian:", "") for r in rows], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("high-band envelope error, dB RMS")
    ax.set_title("16 kHz in: each source's error with corrections fitted on the other sources")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(Path(__file__).with_name("transfer.png"), dpi=110)


if __name__ == "__main__":
    main(sys.argv[1])

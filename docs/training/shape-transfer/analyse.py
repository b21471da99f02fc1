"""Does a band shape learned from some sources transfer to others? (issue 21)

On every full-band lossless reference of the manifest (>= 44.1 kHz, band >= 90 % of Nyquist; up to
PER_SOURCE files per source, from as many of its groups as it has, CROP_S seconds each; judged at 48 kHz
at most), 16 kHz input: the error, in dB per frame over ENVELOPE_BANDS bands above 0.9 x cutoff,
between the reference's own band levels and the noise-fill's envelope model, and what corrections to
that model leave of it, each fitted on all OTHER sources (leave one source out):
- bias: the other sources' mean correction per band;
- ridge (four strengths): a linear map from the passband's shape (its band levels relative to the top
  octave's, this frame and their causal 0.5 s mean) and the noise-fill's tilt to the correction;
- file-shape oracle: the held-out file's own mean correction (a bound: what a perfect per-file guess gets).
Prints one line per source and writes results.json beside this script.
With --lossy, Vorbis references that reach 90 % of Nyquist count too (more sources, four of them
speech), and the bands end at LOSSY_TOP_HZ for every reference (above it lies the encoder's lowpass):
results-lossy.json, transfer-lossy.png, the same within each category (fitted on the other sources
of the held-out one's category only), and a scaling curve: the held-out error of ridge fits on k
randomly drawn other sources, k = 1 ... all (scaling-lossy.png).
    python docs/training/shape-transfer/analyse.py MANIFEST [--lossy]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import soxr

from bandlift.rt.dsp.resample import fit_length
from bandlift.train.data.sources import interleave, is_lossy, load_audio
from bandlift.train.eval.baselines import ENVELOPE_BANDS, FILL_FROM, _Spectra, sinc
from bandlift.train.eval.references import MAX_RATE

PER_SOURCE, CROP_S, IN_RATE, CUTOFF = 24, 8.0, 16000, 8000.0
PASS_EDGES = np.geomspace(150.0, FILL_FROM * CUTOFF, 13)  # 12 passband bands
ACTIVE_DB = 50.0  # frames whose high band is within this of the file's loudest
RIDGE = (1e-2, 1.0, 10.0, 100.0)  # ridge strengths, per frame (features standardised)
LOSSY_TOP_HZ = 0.9 * 22050  # with --lossy the bands end where every reference still has content
SCALING_DRAWS = 6  # random subsets of fitting sources per held-out source and size
NEEDED_RATIO = 0.84  # the envelope error over the noise-fill's that LSD <= 0.9x its LSD asks (robust.md)


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


def file_frames(path, top_hz=None):
    x, rate = load_audio(path)  # [C, n]
    x = x.mean(axis=0)
    if rate > MAX_RATE:  # judged as eval judges it: at the model's rate
        x, rate = soxr.resample(x, rate, MAX_RATE, quality="VHQ"), MAX_RATE
    n = int(CROP_S * rate)
    start = max(0, (len(x) - n) // 2)
    ref = x[start:start + n].astype(np.float64)
    low = soxr.resample(ref, rate, IN_RATE, quality="VHQ")
    y = sinc(low, IN_RATE, rate)[None, :]
    sp = _Spectra(y, rate, CUTOFF)
    ref_power = np.abs(sp.stft(fit_length(ref[None], y.shape[1])))[0] ** 2
    target = sp.target_power()[0]
    high_edges = np.geomspace(FILL_FROM * CUTOFF, top_hz or rate / 2, ENVELOPE_BANDS + 1)
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


def main(manifest, lossy=False):
    suffix = "-lossy" if lossy else ""
    rows = [json.loads(line) for line in open(manifest)]
    by_source = defaultdict(list)
    for _, r in interleave(rows, lambda r: (r["source"], r["group"])):  # files from as many groups as there are
        if ((lossy or not is_lossy(r)) and r["sample_rate"] >= 44100
                and r["bandwidth"] >= 0.9 * r["sample_rate"] / 2 and r["duration"] >= 2.0
                and len(by_source[r["source"]]) < PER_SOURCE):
            by_source[r["source"]].append(r)
    data = {}
    for source, files in sorted(by_source.items()):
        got = [file_frames(r["path"], LOSSY_TOP_HZ if lossy else None) for r in files]
        got = [(f, d) for f, d in got if len(f) > 20]
        if len(got) >= 3:
            data[source] = got
            print(f"{source}: {len(got)} files, {sum(len(f) for f, _ in got)} frames", flush=True)
    results = {}
    for held in data:
        err = held_out_errors(data, held, [s for s in data if s != held])
        results[held] = {k: float(np.mean(v)) for k, v in err.items()} | {"files": len(data[held])}
        print(held, " ".join(f"{k} {v:.2f}" for k, v in results[held].items()), flush=True)
    names = [k for k in results[next(iter(data))] if k != "files"]
    results["mean over sources"] = {k: float(np.mean([results[s][k] for s in data])) for k in names}
    print("mean over sources:", " ".join(f"{k} {v:.2f}" for k, v in results["mean over sources"].items()))
    if lossy:
        category = {r["source"]: r["category"] for r in rows}
        results["within category"] = within_category(data, category)
        results["scaling"] = scaling(data)
    Path(__file__).with_name(f"results{suffix}.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, names, suffix)


def held_out_errors(data, held, fit_on):
    """Per held-out file: envelope error, dB RMS, of the noise-fill and of corrections fitted on `fit_on`."""
    train_f = np.concatenate([f for s in fit_on for f, _ in data[s]])
    train_d = np.concatenate([d for s in fit_on for _, d in data[s]])
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
    return err


def within_category(data, category):
    """Leave one source out, fitting only on the other sources of its category (speech, music, ...)."""
    out = {}
    for cat in sorted({category[s] for s in data}):
        sources = [s for s in data if category[s] == cat]
        if len(sources) < 3:
            continue
        per_source = []
        for held in sources:
            err = held_out_errors(data, held, [s for s in sources if s != held])
            per_source.append({k: float(np.mean(v)) for k, v in err.items()})
        out[cat] = {k: float(np.mean([e[k] for e in per_source])) for k in per_source[0]} | {"sources": len(sources)}
        print(f"within {cat} ({len(sources)} sources):", " ".join(f"{k} {v:.2f}" for k, v in out[cat].items()),
              flush=True)
    return out


def scaling(data, draws=SCALING_DRAWS, seed=0):
    """Mean over held-out sources of (ridge error / noise-fill error), fitting on k random other sources."""
    rng = np.random.default_rng(seed)
    sources = list(data)
    curve = {}
    for k in range(1, len(sources)):
        ratios = defaultdict(list)
        for held in sources:
            others = [s for s in sources if s != held]
            for _ in range(draws if k < len(others) else 1):
                fit_on = list(rng.choice(others, size=k, replace=False))
                err = held_out_errors(data, held, fit_on)
                base = np.mean(err["noise_fill"])
                for lam in RIDGE:
                    ratios[f"ridge {lam:g}"].append(np.mean(err[f"ridge {lam:g}"]) / base)
                ratios["best strength, picked on the held-out source"].append(min(np.mean(err[f"ridge {lam:g}"]) for lam in RIDGE) / base)
        curve[k] = {name: float(np.mean(v)) for name, v in ratios.items()}
        print(f"fit on {k} sources:", " ".join(f"{n} {v:.3f}" for n, v in curve[k].items()), flush=True)
    return curve


def plot(results, names, suffix=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r not in ("scaling", "within category")]
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
    fig.savefig(Path(__file__).with_name(f"transfer{suffix}.png"), dpi=110)
    if "scaling" in results:
        curve = results["scaling"]
        ks = sorted(curve, key=int)
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for name in curve[ks[0]]:
            ax.plot([int(k) for k in ks], [curve[k][name] for k in ks], marker="o", label=name)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(NEEDED_RATIO, color="r", ls="--", lw=0.8, label="what the Must's LSD needs")
        ax.set_xlabel("sources the correction is fitted on")
        ax.set_ylabel("held-out envelope error / noise-fill's")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(Path(__file__).with_name(f"scaling{suffix}.png"), dpi=110)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest")
    parser.add_argument("--lossy", action="store_true", help="count Vorbis references that reach 90 %% of Nyquist")
    args = parser.parse_args()
    main(args.manifest, args.lossy)

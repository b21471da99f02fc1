# A measurement, not product code: see docs/training/robust.md, "The causal prior at the noise-fill's resolution".
# usage: MANIFEST=manifest.jsonl [SPLIT=train PER=5 CUT=8000 PRIOR_FFT=1024 TILT_S=0.5] python prior_exp.py nf|prior
"""Untrained robust-memory generator (the causal prior) vs the offline noise-fill on the trainer's
validation ViSQOL items, per source (`nf`: the offline noise-fill; `prior`: the untrained generator)."""
import math, sys, json, time, os
import numpy as np, torch
torch.set_num_threads(1)
from bandlift.train.trainer import load_config, SUBSET_MIN_SECONDS
from bandlift.train.data.dataset import ClipDataset
from bandlift.train.model import Generator
from bandlift.train.config import GeneratorConfig
from bandlift.train.eval.metrics import visqol
from bandlift.train.eval.baselines import noise_fill

cfg = load_config(os.path.join(os.path.dirname(__file__), "../../../train/robust-memory.yaml"), {})
d = cfg["data"]
ds = ClipDataset(os.environ["MANIFEST"], os.environ.get("SPLIT", "valid"), seconds=d["visqol_seconds"], seed=int(sys.argv[2]) if len(sys.argv) > 2 else 1235,
                 length=d["visqol_clips"], progress=False, fixed_cutoff_hz=float(os.environ.get("CUT", d["visqol_cutoff_hz"])),
                 per_source=int(os.environ.get("PER", d["visqol_per_source"])), min_seconds=SUBSET_MIN_SECONDS)
rows = ds.rows
items = [ds[i] for i in range(len(ds))]
srcs = [r.get("source", "?") for r in rows][:len(items)]
variant = sys.argv[1]
mc = {k: v for k, v in cfg["model"].items()}
import os
if os.environ.get("TILT_S"): mc["prior_tilt_s"] = float(os.environ["TILT_S"])
if os.environ.get("PRIOR_FFT"): mc["prior_fft"] = int(os.environ["PRIOR_FFT"])
gen = Generator(GeneratorConfig(**mc)).eval()

def run(fn):
    out = []
    for it in items:
        x = it["input"][None]
        if fn is None:
            y = noise_fill(it["input"].numpy(), 48000, 48000, cutoff_hz=float(it["cutoff"]))
        else:
            with torch.no_grad():
                y = gen(x, (it["cutoff"] / 24000).reshape(1))[0].numpy()
        out.append(visqol(it["target"].numpy(), y, 48000))
    return np.array(out)

s = run(None if variant == "nf" else gen)
res = {}
for src, v in zip(srcs, s):
    res.setdefault(src, []).append(v)
print(variant, f"overall {s.mean():.3f}", " ".join(f"{k}:{np.mean(v):.2f}(n{len(v)})" for k, v in sorted(res.items())), flush=True)

# A measurement, not product code (docs/training/robust.md, session 14).
# usage: MANIFEST=manifest.jsonl [SPLIT=valid PER=8 CUT=8000 FULL=0|1 CKPT=best.pt] python items.py nf|prior [KEY=VALUE ...] [M.CONSTANT=VALUE ...]
# The untrained train/robust-fft1024.yaml generator (model keys overridden by KEY=VALUE, e.g.
# prior_fast_level=false; M.NAME=VALUE sets a constant of bandlift.train.model, e.g. M.PRIOR_LEVEL_FRAMES=4) or
# the offline noise-fill on the trainer's ViSQOL items: ViSQOL and LSD, per source.
import os, sys, numpy as np, torch, yaml
torch.set_num_threads(1)
from bandlift.train.trainer import load_config, SUBSET_MIN_SECONDS
from bandlift.train.data.dataset import ClipDataset
from bandlift.train.model import Generator
from bandlift.train.config import GeneratorConfig
from bandlift.train.eval.metrics import visqol, lsd
from bandlift.train.eval.baselines import noise_fill

cfg = load_config(os.path.join(os.path.dirname(__file__), "../../../train/robust-fft1024.yaml"), {})
d = cfg["data"]
ds = ClipDataset(os.environ["MANIFEST"], os.environ.get("SPLIT", "valid"), seconds=d["visqol_seconds"], seed=1235,
                 length=d["visqol_clips"], progress=False, fixed_cutoff_hz=float(os.environ.get("CUT", d["visqol_cutoff_hz"])),
                 per_source=int(os.environ.get("PER", d["visqol_per_source"])), min_seconds=SUBSET_MIN_SECONDS,
                 full_band=bool(int(os.environ.get("FULL", d["visqol_full_band"]))))
items = [ds[i] for i in range(len(ds))]
sources = [r.get("source", "?") for r in ds.rows][:len(items)]
import bandlift.train.model as M
pairs = [a.split("=", 1) for a in sys.argv[2:]]
for k, v in pairs:
    if k.startswith("M."):
        setattr(M, k[2:], yaml.safe_load(v))
model = {**cfg["model"], **{k: yaml.safe_load(v) for k, v in pairs if not k.startswith("M.")}}
gen = Generator(GeneratorConfig.from_dict(model)).eval()
if os.environ.get("CKPT"):  # a trained checkpoint instead of the untrained recipe
    from bandlift.train.checkpoints import load_generator
    gen = load_generator(os.environ["CKPT"]).eval()
scores = []
for it in items:
    if sys.argv[1] == "nf":
        y = noise_fill(it["input"].numpy(), 48000, 48000, cutoff_hz=float(it["cutoff"]))
    else:
        with torch.no_grad():
            y = gen(it["input"][None], (it["cutoff"] / 24000).reshape(1))[0].numpy()
    target = it["target"].numpy()
    scores.append((visqol(target, y, 48000), lsd(target, y, 48000)))
s = np.array(scores)
per = {}
for src, v in zip(sources, s[:, 0]):
    per.setdefault(src, []).append(v)
print(" ".join(sys.argv[1:]), f"ViSQOL {s[:, 0].mean():.3f} LSD {s[:, 1].mean():.3f}",
      " ".join(f"{k}:{np.mean(v):.2f}" for k, v in sorted(per.items())))

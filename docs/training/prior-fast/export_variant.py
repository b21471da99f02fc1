# A measurement, not product code (docs/training/robust.md, session 15).
# usage: python export_variant.py CKPT OUT.onnx NAME=VALUE ...  (patches train.model constants, then exports)
import sys, argparse
import bandlift.train.model as M
for kv in sys.argv[3:]:
    k, v = kv.split("="); setattr(M, k, float(v)); print("set", k, v)
from bandlift.export.cli import export as E
p = argparse.ArgumentParser(); E.configure(p)
sys.exit(E.run(p.parse_args([sys.argv[1], "-o", sys.argv[2], "--no-check"])))

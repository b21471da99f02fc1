# A measurement, not product code (docs/training/robust.md, session 14): `bandlift eval` with the engine's downsampler's pass edge moved.
# usage: python eval_sharp.py EDGE EVAL-ARGS...
import sys
import bandlift.rt.dsp.resample as R
edge = float(sys.argv[1])
orig = R.design_filter
def design(in_rate, out_rate, attenuation_db=R.ATTENUATION_DB, pass_edge=R.PASS_EDGE, stop_edge=None):
    up, down = R.ratio(in_rate, out_rate)
    if up < down:
        pass_edge = edge
    return orig(in_rate, out_rate, attenuation_db, pass_edge, stop_edge)
R.design_filter = design
from bandlift.rt.cli import main
sys.exit(main(["eval", *sys.argv[2:]]))

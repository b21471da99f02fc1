# A measurement, not product code (docs/speed-lean-graph.md, "What the cutoff decides, once"): each model
# as exported, and the same graph with its cutoff input made a constant (ONNX Runtime then folds every node
# that hangs on the cutoff alone), block CPU time per call at fixed shapes, rounds interleaved.
#   python cutoff_fold.py BLOCK BASE.onnx OTHER.onnx ...   (ratios are to BASE as exported)
import sys, time, numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper
from bandlift.rt.model.session import session_options

block, paths = int(sys.argv[1]), sys.argv[2:]

def folded(path, cutoff=1 / 3):
    model = onnx.load(path)
    model.graph.input.remove(next(i for i in model.graph.input if i.name == "cutoff"))
    model.graph.initializer.append(numpy_helper.from_array(np.full(1, cutoff, np.float32), "cutoff"))
    return model.SerializeToString()

def session(model):
    probe = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    options = session_options(1)
    for dim, value in zip(probe.get_inputs()[0].shape, (1, block)):
        if isinstance(dim, str):
            options.add_free_dimension_override_by_name(dim, value)
    s = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros([1 if isinstance(d, str) else d for d in i.shape], np.float32) for i in s.get_inputs()}
    feeds["audio"] = (np.random.default_rng(0).standard_normal((1, block)) * 0.1).astype(np.float32)
    if "cutoff" in feeds:
        feeds["cutoff"][:] = 1 / 3
    return s, feeds

runs = {}
for p in paths:
    runs[p] = session(p)
    runs[p + " (cutoff folded)"] = session(folded(p))
times = {name: [] for name in runs}
for _ in range(5):
    for name, (s, feeds) in runs.items():
        for _ in range(200):
            s.run(None, feeds)
        t = time.thread_time()
        for _ in range(2000):
            s.run(None, feeds)
        times[name].append((time.thread_time() - t) / 2000 * 1e3)
base = np.median(times[paths[0]])
for name, t in times.items():
    print(f"{name}: {np.median(t):.3f} ms, x{np.median(t) / base:.2f}")

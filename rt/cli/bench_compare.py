"""`bandlift bench --compare OTHER ...`: models timed in one run, interleaved, as ratios to the first.

A shared machine's speed drifts by tens of percent within minutes, so two benchmarks run one after the
other do not compare. Here every round times each model in turn, for each block size, with the same
engine `bench` times, and a model's ratio is the median over rounds of its block CPU p50 over the first
model's in the same round.
"""
from __future__ import annotations

import sys

import numpy as np

ROUNDS = 8


def compare_models(sessions: list, args, time_engine) -> dict:
    """{block: [{"model": path, "block_cpu_ms_p50": median over rounds, "ratio": median ratio to the first,
    "ratio_min", "ratio_max", "graph_nodes": nodes per call}, ...]} for the given ONNX sessions, in order
    (the first is the reference)."""
    from bandlift.rt.engine import StreamEngine

    nodes = [sum(s.node_profile(128).values()) if s.device == "cpu" else None for s in sessions]
    seconds = max(args.seconds / ROUNDS, 0.05)
    out = {}
    for block in args.block:
        engines = [StreamEngine(s, args.input_rate, args.rate, args.channels, block) for s in sessions]
        p50 = np.zeros((ROUNDS, len(engines)))
        for r in range(ROUNDS):
            for i, engine in enumerate(engines):
                _, cpu = time_engine(engine, seconds, seed=r)
                p50[r, i] = 1e3 * np.percentile(cpu, 50)
        per_round = p50 / p50[:, :1]  # each round's ratio to the first model
        out[str(block)] = [{"model": s.info.path, "block_cpu_ms_p50": float(np.median(p50[:, i])),
                            "ratio": float(np.median(per_round[:, i])), "ratio_min": float(per_round[:, i].min()),
                            "ratio_max": float(per_round[:, i].max()), "graph_nodes": nodes[i]}
                           for i, s in enumerate(sessions)]
        for row in out[str(block)]:
            print(f"block {block:4d}: {row['model']}: cpu p50 {row['block_cpu_ms_p50']:.3f} ms, "
                  f"x{row['ratio']:.2f} of the first (rounds {row['ratio_min']:.2f}-{row['ratio_max']:.2f})"
                  + (f", {row['graph_nodes']} nodes" if row["graph_nodes"] is not None else ""), file=sys.stderr)
    return out

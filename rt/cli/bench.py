"""`bandlift bench`: latency, per-block compute time, real-time factor; offline and on a live device.

Offline, each block size runs the real engine (resamplers + model + crossfade logic) one model block of
input at a time on noise, timing every call: p50/p99/max in ms, RTF = compute time / audio time, deadline
misses = calls slower than the block's duration. The bypass path (what overload falls back to) is
measured in the same run. Beside wall-clock times, each call's CPU time (of this thread: what a shared
machine's other load does not inflate) and the model's own share; the model's MFLOP per second of
audio (its metadata) over the model time gives the achieved GFLOP/s. `--streams N` batches N
independent streams into one model call per block (the server case; real-time streams served = N /
RTF). `--live` runs the engine on an audio device with a click train as input, records what comes back
through a loopback connection (cable, or JACK's loopback port) and measures the round trip click-in ->
click-out, against the declared latency, and counts xruns.

`--gpu-check` is the whole GPU check in one call (a few minutes): the CUDA provider found (else one
"no GPU" line and exit 0), parity with the CPU within 1e-4, per-block p50/p99 at blocks 64-512 with
and without CUDA graphs, streams/s at N = 1, 64, 1024. `--gpu-check --provider cpu` runs the same code
on the CPU (how CI tests it).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time

import numpy as np

from bandlift.rt.cli.errors import CLIError, in_range, missing_extra, write_json
from bandlift.rt.cli.options import add_model_options, add_output_rate_option


def configure(p) -> None:
    p.add_argument("--block", type=int, nargs="+", default=[64, 128, 256, 512], help="block sizes")
    p.add_argument("--seconds", type=float, default=10.0, help="audio per block size (or live run length)")
    p.add_argument("--input-rate", type=int, default=48000, help="input rate (resampled to the model's 48 kHz)")
    add_output_rate_option(p)
    p.add_argument("--channels", type=int, choices=[1, 2], default=1, help="channels processed (default 1)")
    add_model_options(p, provider_default=None,
                      provider_help="ONNX Runtime execution provider (default: cpu, cuda for --gpu-check; auto: "
                                    "CUDA when onnxruntime-gpu sees a GPU, the CPU with --live, as for `bandlift "
                                    "live`)")
    p.add_argument("--compare", nargs="+", metavar="MODEL",
                   help="also time these models, interleaved with --model in rounds, as ratios to it")
    p.add_argument("--json", help="write results here")
    p.add_argument("--png", help="write a histogram of block times here")
    gpu = p.add_argument_group("batches and GPU")
    gpu.add_argument("--streams", type=int, nargs="+", default=[1],
                     help="independent streams batched into one model call per block (e.g. 1 64 1024)")
    gpu.add_argument("--cuda-graph", action="store_true", help="CUDA provider: replay captured CUDA graphs")
    gpu.add_argument("--gpu-check", action="store_true",
                     help="the whole GPU check (a few minutes): the CUDA provider (else one 'no GPU' line, exit 0), "
                          "parity with the CPU within 1e-4, block p50/p99 at blocks 64-512 with and without CUDA "
                          "graphs, streams/s at 1, 64, 1024 (with --provider cpu: the same on the CPU)")
    live = p.add_argument_group("a live device (--live)")
    live.add_argument("--live", action="store_true", help="run on an audio device and measure the round trip")
    live.add_argument("--input", help="input device (index or name substring)")
    live.add_argument("--output", help="output device (index or name substring)")
    live.add_argument("--margin", type=int, default=0, help="extra buffering in samples")
    live.add_argument("--stress", action="store_true",
                      help="keep every CPU core busy from 20 %% to 60 %% of the run (one busy process per core) "
                           "and report xruns, late blocks, bypass events, the longest bypass and whether the model "
                           "is back at the end")

def _stats(times: np.ndarray, budget: float, cpu: np.ndarray | None = None) -> dict:
    """Per-call wall (and CPU) times (s) against the audio duration of one call (s)."""
    ms = times * 1e3
    out = {"block_ms_p50": float(np.percentile(ms, 50)), "block_ms_p99": float(np.percentile(ms, 99)),
           "block_ms_max": float(ms.max()), "block_ms_mean": float(ms.mean()),
           "rtf": float(times.sum() / (len(times) * budget)), "deadline_misses": int((times > budget).sum()),
           "blocks": int(len(times)), "budget_ms": 1e3 * budget}
    if cpu is not None:
        out.update({"block_cpu_ms_p50": float(np.percentile(cpu, 50) * 1e3),
                    "block_cpu_ms_p99": float(np.percentile(cpu, 99) * 1e3),
                    "rtf_cpu": float(cpu.sum() / (len(cpu) * budget))})
    return out


def _model_stats(engine, mflops: float | None) -> dict:
    """The model call's own time (engine.stats) and, from the model's MFLOP per second of audio and
    channel, the achieved GFLOP/s."""
    t50 = float(np.percentile(engine.stats.compute_times(), 50))
    t99 = float(np.percentile(engine.stats.compute_times(), 99))
    gflops = mflops * engine.channels * engine.block_seconds / t50 / 1e3 if mflops else None
    return {"model_ms_p50": 1e3 * t50, "model_ms_p99": 1e3 * t99, "model_mflops_per_second": mflops,
            "achieved_gflops": gflops}


def time_engine(engine, seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Feed noise one model block at a time -> wall and CPU seconds per call (each makes one model block)."""
    rate_in, rate_model, block = engine.in_rate, engine.model_rate, engine.block
    calls = max(1, int(seconds * rate_model / block))
    n_total = int(np.ceil((calls + 2) * block * rate_in / rate_model)) + 1
    x = (np.random.default_rng(seed).standard_normal((engine.channels, n_total)) * 0.1).astype(np.float32)
    # warm up (jit, allocator), then start from a clean state
    engine.process(x[:, : 4 * block])
    engine.reset()
    times, cpu = np.zeros(calls), np.zeros(calls)
    pos = 0
    for i in range(calls):
        end = ((i + 1) * block * rate_in) // rate_model
        c0 = time.thread_time()
        t0 = time.perf_counter()
        engine.process(x[:, pos:end])
        times[i] = time.perf_counter() - t0
        cpu[i] = time.thread_time() - c0
        pos = end
    return times, cpu


def bench_block(session, args, block: int, streams: int = 1) -> dict:
    """One block size (and number of batched streams): the model engine and the bypass engine."""
    from bandlift.rt.engine import StreamEngine

    channels = args.channels * streams
    try:
        # batched streams are independent: a pair of them is not one stereo stream
        eng = StreamEngine(session, args.input_rate, args.rate, channels, block, stereo_pair=streams == 1)
        byp = StreamEngine(None, args.input_rate, args.rate, channels, block, model_rate=session.sample_rate)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    model_t, model_cpu = time_engine(eng, args.seconds)
    bypass_t, bypass_cpu = time_engine(byp, args.seconds)
    r = {"block": block, "streams": streams, "latency_samples": eng.latency,
         "latency_ms": 1e3 * eng.latency / args.rate, "delay_samples": eng.delay,
         **_stats(model_t, eng.block_seconds, model_cpu), **_model_stats(eng, session.info.mflops_per_second),
         "bypass": {"latency_ms": 1e3 * byp.latency / args.rate, **_stats(bypass_t, byp.block_seconds, bypass_cpu)}}
    r["realtime_streams"] = streams / r["rtf"]  # streams one such call loop serves in real time
    r["_times"] = (model_t, bypass_t)
    gflops = f", {r['achieved_gflops']:.2f} GFLOP/s" if r["achieved_gflops"] else ""
    many = f" x {streams} streams ({r['realtime_streams']:.0f} real-time)" if streams > 1 else ""
    print(f"block {block:4d}{many}: latency {r['latency_ms']:.2f} ms | p50 {r['block_ms_p50']:.3f} "
          f"p99 {r['block_ms_p99']:.3f} max {r['block_ms_max']:.3f} ms (cpu p50 {r['block_cpu_ms_p50']:.3f} "
          f"p99 {r['block_cpu_ms_p99']:.3f}; model p50 {r['model_ms_p50']:.3f}{gflops}), RTF {r['rtf']:.3f}, "
          f"misses {r['deadline_misses']} | bypass p50 {r['bypass']['block_ms_p50']:.3f} p99 "
          f"{r['bypass']['block_ms_p99']:.3f} ms, RTF {r['bypass']['rtf']:.4f}", file=sys.stderr)
    return r


def bench_offline(session, args) -> dict:
    return {(block, streams): bench_block(session, args, block, streams)
            for streams in args.streams for block in args.block}


def call_cost(session, per_block: dict[int, dict]) -> dict:
    """Where a model call's time goes: a line through model p50 against block size (fixed ms per call
    + us per sample, least squares) and the nodes ONNX Runtime runs per call, by operator type. A
    large fixed part is the runtime's per-node dispatch, which no block size or thread count removes."""
    blocks = np.array(sorted(per_block), float)
    p50 = np.array([per_block[int(b)]["model_ms_p50"] for b in blocks])
    slope, fixed = np.polyfit(blocks, p50, 1) if len(blocks) > 1 else (0.0, p50[0])
    nodes = session.node_profile(128 if 128 in per_block else int(blocks[0])) if session.device == "cpu" else {}
    out = {"model_call_fixed_ms": float(fixed), "model_call_us_per_sample": float(1e3 * slope),
           "graph_nodes": int(sum(nodes.values())), "graph_nodes_by_op": nodes}
    top = ", ".join(f"{op} {n}" for op, n in list(nodes.items())[:6])
    print(f"model call = {fixed:.3f} ms per call + {1e3 * slope:.3f} us per sample"
          + (f"; {out['graph_nodes']} nodes per call after optimisation ({top}, ...)" if nodes else ""),
          file=sys.stderr)
    return out


def click_train(n: int, rate: int, channels: int, every_s: float = 0.25, first: int | None = None,
                amplitude: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """A source with single-sample clicks: (signal (n, channels), click positions)."""
    x = np.zeros((n, channels), np.float32)
    start = int(0.1 * rate) if first is None else first
    pos = np.arange(start, n, int(every_s * rate))
    x[pos] = amplitude
    return x, pos


def bench_live(session, args, block: int) -> dict:
    import sounddevice as sd

    from bandlift.rt.engine import StreamEngine
    from bandlift.rt.io.devices import LiveError, find_device
    from bandlift.rt.io.runner import LiveRunner

    rate = args.rate
    try:
        eng = StreamEngine(session, rate, rate, args.channels, block, realtime=True)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    n = int(args.seconds * rate)
    every = 0.25
    source, clicks = click_train(n, rate, args.channels, every_s=every)
    try:
        runner = LiveRunner(eng, find_device(args.input, "input"), find_device(args.output, "output"),
                            frames=block, margin=args.margin, source=source, record_seconds=args.seconds + 1)
        stress = CpuStress() if args.stress else None
        if stress is not None:
            timers = stress.during(0.2 * args.seconds, 0.6 * args.seconds)
        try:
            summary = runner.run(args.seconds)
        finally:
            if stress is not None:
                for t in timers:
                    t.cancel()
                stress.stop()
    except (LiveError, sd.PortAudioError) as exc:
        raise CLIError(str(exc)) from None
    rec = runner.recorded()[:, 0]
    offsets = []
    for c in clicks:
        window = np.abs(rec[c: c + int(every * rate * 0.8)])
        if len(window) == int(every * rate * 0.8) and window.max() > 0.25:
            offsets.append(int(np.argmax(window)))
    offsets = np.array(offsets)
    declared = runner.total_latency
    rt = float(np.median(offsets)) if len(offsets) else float("nan")
    result = {"block": block, "roundtrip_samples": rt, "roundtrip_ms": 1e3 * rt / rate,
              "roundtrip_exact_fraction": float((offsets == declared).mean()) if len(offsets) else 0.0,
              "clicks_detected": int(len(offsets)), "clicks_sent": int(len(clicks)),
              "declared_latency_samples": declared, "declared_latency_ms": 1e3 * declared / rate,
              "buffering_samples": runner.buffering, "device_latency_samples": runner.device_latency,
              "xruns": summary.xruns, "late_blocks": summary.late_blocks, "seconds": summary.seconds,
              "worker_priority": runner.worker_priority, **summary.engine,
              "stress": f"{stress.cores} busy processes from 20 % to 60 % of the run" if args.stress else None,
              "longest_bypass_s": summary.engine["longest_bypass_blocks"] * eng.block_seconds,
              "model_at_end": eng.active == 1.0, "bypasses": eng.event_lines()}
    print(f"live block {block}: round trip {result['roundtrip_ms']:.2f} ms measured "
          f"({result['clicks_detected']}/{len(clicks)} clicks, {100 * result['roundtrip_exact_fraction']:.0f}% "
          f"exactly the declared {result['declared_latency_ms']:.2f} ms), xruns {summary.xruns}, late blocks "
          f"{summary.late_blocks}, block p99 {summary.engine['block_ms_p99']:.3f} ms, "
          f"bypass events {summary.engine['bypass_events']} (longest {result['longest_bypass_s']:.2f} s), model "
          f"{'back' if result['model_at_end'] else 'NOT back'} at the end", file=sys.stderr)
    return result


class CpuStress:
    """One busy-looping process per CPU core (normal priority) between `start()` and `stop()`."""

    def __init__(self, cores: int | None = None):
        self.cores = cores or os.cpu_count() or 1
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.cores)]

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.procs = []

    def during(self, begin_s: float, end_s: float) -> list[threading.Timer]:
        timers = [threading.Timer(begin_s, self.start), threading.Timer(end_s, self.stop)]
        for t in timers:
            t.daemon = True
            t.start()
        return timers


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(7, 2.2 * len(results)), squeeze=False)
    for ax, ((block, streams), r) in zip(axes[:, 0], results.items()):
        model_t, bypass_t = r["_times"]
        bins = np.logspace(np.log10(max(min(model_t.min(), bypass_t.min()) * 1e3, 1e-4)),
                           np.log10(max(model_t.max(), bypass_t.max()) * 1e3 * 1.05), 60)
        ax.hist(model_t * 1e3, bins=bins, alpha=0.7, label="model")
        ax.hist(bypass_t * 1e3, bins=bins, alpha=0.7, label="bypass")
        ax.axvline(r["budget_ms"], color="k", linestyle="--", label="block duration")
        ax.set_xscale("log")
        ax.set_yscale("log")
        many = f" x {streams} streams" if streams > 1 else ""
        ax.set_title(f"block {block}{many}: p99 {r['block_ms_p99']:.3f} ms, RTF {r['rtf']:.3f}", fontsize=9)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("compute time per block (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _public(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "_times"}


def gpu_check(args) -> dict:
    """The GPU check (module docstring); with --provider cpu the same steps on the CPU."""
    import onnxruntime as ort

    from bandlift.rt.engine import StreamEngine
    from bandlift.rt.model.session import ModelSession

    provider = "cuda" if args.provider in (None, "auto") else args.provider
    available = ort.get_available_providers()
    if provider == "cuda" and "CUDAExecutionProvider" not in available:
        print(f"no GPU: this onnxruntime has no CUDAExecutionProvider (available: {', '.join(available)}); "
              "nothing to check (install bandlift[gpu] on a machine with an NVIDIA GPU)")
        return {"gpu": False, "available_providers": available}
    try:
        device = ModelSession(args.model, provider=provider, threads=args.threads)
    except RuntimeError as exc:  # onnxruntime-gpu installed, no usable GPU
        print(f"no GPU: {exc}; nothing to check")
        return {"gpu": False, "available_providers": available}
    cpu = ModelSession(args.model, provider="cpu", threads=args.threads)
    out = {"gpu": device.device == "cuda", "provider": device.device, "providers": device.providers}
    print(f"provider: {', '.join(device.providers)}", file=sys.stderr)
    # parity: 1 s of noise, stereo, block 128, through both
    x = (np.random.default_rng(1).standard_normal((2, 48000)) * 0.1).astype(np.float32)
    y_dev = StreamEngine(device, 48000, 48000, 2, 128).process(x)
    y_cpu = StreamEngine(cpu, 48000, 48000, 2, 128).process(x)
    out["parity_max_abs"] = float(np.abs(y_dev - y_cpu).max())
    out["parity_ok"] = out["parity_max_abs"] <= 1e-4
    print(f"parity with CPU: max |diff| {out['parity_max_abs']:.2e} ({'ok' if out['parity_ok'] else 'FAILED'}, "
          "limit 1e-4)", file=sys.stderr)
    out["blocks"] = {str(b): _public(bench_block(device, args, b)) for b in args.block}
    if device.device == "cuda":
        graphs = ModelSession(args.model, provider="cuda", threads=args.threads, cuda_graph=True)
        out["blocks_cuda_graph"] = {str(b): _public(bench_block(graphs, args, b)) for b in args.block}
    out["streams"] = {str(n): _public(bench_block(device, args, 128, n)) for n in args.streams}
    return out


def run(args) -> int:
    from bandlift.rt.model.contract import MAX_RATE
    from bandlift.rt.model.session import ModelError, ModelSession, live_provider

    in_range(args.seconds, "--seconds", 0.01, 3600)
    in_range(args.input_rate, "--input-rate", 1, MAX_RATE)
    in_range(args.rate, "--rate", 1, MAX_RATE)
    in_range(args.threads, "--threads", 1, 256)
    in_range(args.margin, "--margin", 0, 1 << 16)
    for streams in args.streams:
        in_range(streams, "--streams", 1, 4096)
    if args.png and importlib.util.find_spec("matplotlib") is None:
        raise missing_extra("bench --png", "eval")
    if args.gpu_check:
        if args.streams == [1]:
            args.streams = [1, 64, 1024]
        try:
            out = gpu_check(args)
        except (ModelError, ValueError, RuntimeError) as exc:
            raise CLIError(str(exc)) from None
        if args.json:
            write_json(args.json, out)
            print(f"results -> {args.json}", file=sys.stderr)
        return 0 if out.get("parity_ok", True) else 1
    try:
        provider = live_provider(args.provider or "cpu") if args.live else args.provider or "cpu"
        session = ModelSession(args.model, provider=provider, threads=args.threads, cuda_graph=args.cuda_graph)
    except (ModelError, ValueError, RuntimeError) as exc:
        raise CLIError(str(exc)) from None
    mflops = session.info.mflops_per_second
    print(f"model: {session.describe()}, {args.threads} thread(s), "
          f"{args.rate if args.live else args.input_rate} -> {args.rate} Hz, {args.channels} ch"
          + (f", {mflops:.0f} MFLOP per second of audio" if mflops else ""), file=sys.stderr)
    out = {"model": session.info.path, "provider": session.device, "threads": args.threads,
           "input_rate": args.rate if args.live else args.input_rate, "rate": args.rate,
           "channels": args.channels, "seconds": args.seconds, "model_mflops_per_second": mflops}
    if args.live:
        block = args.block[0] if len(args.block) == 1 else 128
        out.update(bench_live(session, args, block))
    else:
        results = bench_offline(session, args)  # a model may break the contract on some block size
        first = args.streams[0]
        primary = (128 if 128 in args.block else args.block[0], first)
        out.update(_public(results[primary]))
        out["per_block"] = {str(b): _public(r) for (b, n), r in results.items() if n == first}
        out.update(call_cost(session, {b: r for (b, n), r in results.items() if n == first}))
        if args.streams != [1]:
            out["per_streams"] = {str(n): {str(b): _public(r) for (b, m), r in results.items() if m == n}
                                  for n in args.streams}
        if args.compare:
            from bandlift.rt.cli.bench_compare import compare_models

            try:
                others = [ModelSession(m, provider=provider, threads=args.threads) for m in args.compare]
            except (ModelError, ValueError, RuntimeError) as exc:
                raise CLIError(str(exc)) from None
            out["compare"] = compare_models([session, *others], args, time_engine)
        if args.png:
            plot(results, args.png)
            print(f"histogram -> {args.png}", file=sys.stderr)
    if args.json:
        write_json(args.json, out)
        print(f"results -> {args.json}", file=sys.stderr)
    return 0

"""`bandlift demo`: the main job on the embedded default, with its quality measured.

Takes the bundled full-band clip (a real recording the shipped model never trained on), makes a 16 kHz
copy of it, upsamples that back to 48 kHz with the shipped model, and reports where the files went, the
latency, the speed and the log-spectral distance against plain sinc resampling.
"""
from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from bandlift.rt.cli.errors import write_json

EXAMPLE = "example.flac"


def example_path() -> Path:
    return Path(str(resources.files("bandlift.rt.assets").joinpath(EXAMPLE)))


def configure(parser):
    parser.add_argument("-o", "--output-dir", default="bandlift-demo", help="where to write the clips")
    parser.add_argument("--input-rate", type=int, default=16000, help="rate of the band-limited copy")
    parser.add_argument("--model", help="ONNX model (default: the shipped one)")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")


def run(args) -> int:
    from bandlift.rt.api import Upsampler
    from bandlift.rt.io.files import open_read
    from bandlift.rt.io.writer import staged_writer
    from bandlift.train.eval.baselines import noise_fill
    from bandlift.train.eval.metrics import lsd

    reference, ref_rate = sf.read(example_path(), dtype="float32")
    out_rate = 48000
    reference = soxr.resample(reference, ref_rate, out_rate).astype(np.float32)
    low = soxr.resample(reference, out_rate, args.input_rate).astype(np.float32)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    low_path = out_dir / f"example_{args.input_rate // 1000}k.wav"
    out_path = out_dir / "example_48k_bandlift.wav"
    reference_path = out_dir / "example_48k_reference.wav"
    earlier = [str(p) for p in (low_path, out_path, reference_path) if p.exists()]
    sf.write(low_path, low, args.input_rate)

    up = Upsampler(model=args.model, out_rate=out_rate)
    up.process(low[: args.input_rate // 10], args.input_rate)  # warm-up: JIT compile, session init
    started = time.perf_counter()
    y, rate = up.process(low, args.input_rate)
    seconds = time.perf_counter() - started
    frames = y.reshape(len(y), -1)
    with open_read(low_path) as low_file, staged_writer(out_path, rate, frames.shape[1], source=low_file,
                                                        overwrite=True) as out:
        out.write(frames)  # as `bandlift upsample` writes it: the input's 16-bit format, dithered, never clipped
    sf.write(reference_path, reference, out_rate)

    sinc = soxr.resample(low, args.input_rate, out_rate)
    n = min(len(reference), len(y), len(sinc))
    cutoff = args.input_rate / 2
    figures = {
        "input": str(low_path), "output": str(out_path),
        "latency_samples": up.latency_at(args.input_rate),
        "latency_ms": round(1000 * up.latency_at(args.input_rate) / rate, 3),
        "rtf": round(seconds / (len(low) / args.input_rate), 4),
        "lsd": {
            "bandlift": round(lsd(reference[:n], y[:n], out_rate), 3),
            "sinc": round(lsd(reference[:n], sinc[:n], out_rate), 3),
        },
        "lsd_hf": {
            "bandlift": round(lsd(reference[:n], y[:n], out_rate, hf_from=cutoff), 3),
            "sinc": round(lsd(reference[:n], sinc[:n], out_rate, hf_from=cutoff), 3),
        },
    }
    try:  # the noise-fill baseline's STFT is librosa's (the [eval] extra); the rest runs without it
        filled = noise_fill(low, args.input_rate, out_rate)
        figures["lsd"]["noise_fill"] = round(lsd(reference[:n], filled[:n], out_rate), 3)
    except ModuleNotFoundError as exc:
        if exc.name != "librosa":
            raise
        print("(the noise-fill baseline needs the [eval] extra: pip install 'bandlift[eval]')")
    if earlier:
        print(f"replaced the earlier demo's files: {', '.join(earlier)}")
    print(f"input  ({args.input_rate} Hz): {low_path}")
    print(f"output ({rate} Hz): {out_path}")
    print(f"latency: {figures['latency_samples']} samples = {figures['latency_ms']} ms; "
          f"real-time factor {figures['rtf']}")
    print("log-spectral distance to the full-band original (lower is better): "
          + ", ".join(f"{k} {v}" for k, v in figures["lsd"].items()))
    if args.json:
        write_json(args.json, figures)
    return 0

"""`bandlift upsample IN OUT`: upsample a file (or a folder of files) to 48 kHz (or --rate, e.g. 44100)
with the streaming model.

Files are streamed through the same engine as `bandlift live` in blocks (memory stays flat for any
length); with the same --block, the file result equals the live output sample for sample. The delay of
the resampler and the model is removed unless --no-delay-compensation is given (then the file keeps the
raw stream timing: the output lags by the printed delay).
"""
from __future__ import annotations

import json
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from bandlift.rt.cli.errors import CLIError

READ_FRAMES = 1 << 16


def configure(p) -> None:
    p.add_argument("input", help="audio file (wav/flac/ogg/mp3), or a folder processed recursively")
    p.add_argument("output", nargs="?", help="output file (.wav or .flac); for a folder use -o")
    p.add_argument("-o", "--output-dir", help="output folder (folder mode); the input tree is mirrored")
    p.add_argument("--format", choices=["wav", "flac"], default="wav", help="output format in folder mode")
    p.add_argument("--rate", type=int, default=48000,
                   help="output rate in Hz (default 48000, the model's rate; e.g. 44100: the model's output "
                        "is resampled)")
    p.add_argument("--input-cutoff", default="auto",
                   help="bandwidth of the input in Hz, or 'auto' to measure it per file (default), "
                        "or 'nyquist' for half the input rate")
    p.add_argument("--model", help="streaming ONNX model (default: the shipped model)")
    p.add_argument("--block", type=int, help="model block in samples at the model rate, 48 kHz (as in `live`: "
                                             "the same output sample for sample); default: large blocks, equal "
                                             "to block 128 within float rounding")
    p.add_argument("--no-delay-compensation", action="store_true",
                   help="keep the raw stream timing (output lags by the engine delay)")
    p.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per job")
    p.add_argument("--jobs", type=int, default=1, help="files processed in parallel (folder mode)")
    p.add_argument("--json", help="write a JSON summary here")


def _cutoff(arg: str, path, rate: int):
    if arg == "nyquist":
        return None
    if arg == "auto":
        from bandlift.rt.io.files import analysis_excerpt
        from bandlift.rt.dsp.bandwidth import effective_bandwidth

        excerpt, _ = analysis_excerpt(path)
        hz = effective_bandwidth(excerpt, rate) if len(excerpt) else 0.0
        return float(hz) if hz > 0 else None
    return float(arg)


def upsample_file(up, src, dst, input_cutoff="auto", delay_compensation=True, progress=False) -> dict:
    """Stream `src` through `up` (an Upsampler) into `dst`; returns a summary dict."""
    from bandlift.rt.io.files import AudioFileError, atomic_writer, blocks, open_read, output_format, same_file

    if same_file(src, dst):
        raise AudioFileError(f"refusing to overwrite the input {src}")
    output_format(dst)
    with open_read(src) as f:
        rate, channels, frames = f.samplerate, f.channels, f.frames
        try:
            up.check_rate(rate)
        except ValueError as exc:
            raise AudioFileError(f"{src}: {exc}") from exc
        cutoff = _cutoff(input_cutoff, src, rate)
        try:
            stream = up.stream(rate, channels, cutoff, delay_compensation)
        except ValueError as exc:
            raise AudioFileError(f"{src}: {exc}") from exc
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=frames if frames > 0 else None, unit="frame", unit_scale=True,
                       desc=Path(src).name, leave=False, file=sys.stderr)
        peak = 0.0
        try:
            with atomic_writer(dst, up.out_rate, channels) as out:
                for data in blocks(f, READ_FRAMES):
                    try:
                        y = stream.process(data)
                    except ValueError as exc:  # NaN/inf in the file
                        raise AudioFileError(f"{src}: {exc}") from exc
                    peak = max(peak, float(np.abs(y).max(initial=0.0)))
                    out.write(y)
                    if bar is not None:
                        bar.update(len(data))
                y = stream.flush()
                peak = max(peak, float(np.abs(y).max(initial=0.0)))
                out.write(y)
        finally:
            if bar is not None:
                bar.close()
    eng = stream.engine
    return {"input": str(src), "output": str(dst), "input_rate": rate, "output_rate": up.out_rate,
            "channels": channels, "input_frames": stream.n_in, "output_frames": stream.n_out,
            "input_cutoff_hz": eng.input_cutoff_hz, "delay_samples": eng.delay,
            "latency_samples": up.latency, "latency_ms": 1000 * up.latency / eng.out_rate,
            "delay_compensated": delay_compensation, "peak": peak,
            "bypass_events": eng.stats.bypass_events, "bypasses": eng.event_lines()}


# -- folder mode (worker processes hold one Upsampler each) -------------------------------------------
_worker_up = None


def _init_worker(model, rate, block, provider, threads):
    global _worker_up
    from bandlift.rt.api import Upsampler

    _worker_up = Upsampler(model, out_rate=rate, block=block, provider=provider, threads=threads)


def _job(src, dst, cutoff, delay_compensation):
    from bandlift.rt.io.files import AudioFileError

    try:
        return upsample_file(_worker_up, src, dst, cutoff, delay_compensation)
    except (AudioFileError, ValueError) as exc:
        return {"input": str(src), "error": str(exc)}


def _describe(info: dict) -> str:
    comp = "delay compensated" if info["delay_compensated"] else f"output lags by {info['delay_samples']} samples"
    clip = " (peak above 0 dBFS: kept in float WAV, clipped in FLAC)" if info["peak"] > 1.0 else ""
    return (f"{info['input']} -> {info['output']}: {info['input_rate']} -> {info['output_rate']} Hz, "
            f"{info['channels']} ch, {info['output_frames'] / info['output_rate']:.2f} s, input band "
            f"{info['input_cutoff_hz']:.0f} Hz, latency {info['latency_ms']:.2f} ms ({comp}){clip}"
            + "".join(f"\n  {line}" for line in info.get("bypasses", [])))


def run(args) -> int:
    from bandlift.rt.api import Upsampler
    from bandlift.rt.io.files import AudioFileError, find_audio
    from bandlift.rt.model.session import ModelError

    if args.input_cutoff not in ("auto", "nyquist"):
        try:
            if float(args.input_cutoff) <= 0:
                raise ValueError
        except ValueError:
            raise CLIError(f"--input-cutoff must be 'auto', 'nyquist' or a positive number of Hz, "
                           f"got {args.input_cutoff!r}") from None
    src = Path(args.input)
    if not src.exists():
        raise CLIError(f"input not found: {src}")
    delay_comp = not args.no_delay_compensation
    folder = src.is_dir()
    if folder:
        out_dir = Path(args.output_dir or args.output or "")
        if not (args.output_dir or args.output):
            raise CLIError("a folder input needs an output folder: -o OUTDIR")
        files = find_audio(src, exclude=out_dir)
        if not files:
            raise CLIError(f"no audio files ({', '.join(('wav', 'flac', 'ogg', 'mp3'))}) under {src}")
        jobs = [(f, out_dir / f.relative_to(src).with_suffix("." + args.format)) for f in files]
    else:
        if not args.output:
            raise CLIError("give an output file (OUT.wav or OUT.flac)")
        jobs = [(src, Path(args.output))]
    try:
        up = Upsampler(args.model, out_rate=args.rate, block=args.block, provider=args.provider,
                       threads=args.threads)
    except (ModelError, ValueError, RuntimeError) as exc:
        raise CLIError(str(exc)) from None
    print(f"model: {up.session.describe()}, block {up.block or 'large (files)'}", file=sys.stderr)

    results = []
    if not folder:
        try:
            info = upsample_file(up, src, jobs[0][1], args.input_cutoff, delay_comp, progress=True)
        except (AudioFileError, ValueError) as exc:
            raise CLIError(str(exc)) from None
        print(_describe(info))
        results.append(info)
    else:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="file", desc="upsample", file=sys.stderr)
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs, initializer=_init_worker,
                                     initargs=(args.model, args.rate, args.block, args.provider, args.threads)) as pool:
                futures = [pool.submit(_job, s, d, args.input_cutoff, delay_comp) for s, d in jobs]
                for fut in as_completed(futures):
                    results.append(fut.result())
                    bar.update()
        else:
            for s, d in jobs:
                try:
                    results.append(upsample_file(up, s, d, args.input_cutoff, delay_comp))
                except (AudioFileError, ValueError) as exc:
                    results.append({"input": str(s), "error": str(exc)})
                bar.update()
        bar.close()
        for info in sorted(results, key=lambda r: r["input"]):
            if "error" in info:
                print(f"FAILED {info['error']}", file=sys.stderr)
            else:
                print(_describe(info))
        failed = sum("error" in r for r in results)
        print(f"{len(results) - failed} of {len(results)} files upsampled into {out_dir}"
              + (f"; {failed} failed (listed above)" if failed else ""), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"files": results}, indent=2))
    return 1 if any("error" in r for r in results) else 0

"""`bandlift upsample IN OUT`: upsample a file (or a folder of files) to 48 kHz (or --rate, e.g. 44100)
with the streaming model.

Files are streamed through the same engine as `bandlift live` in blocks (memory stays flat for any
length); with the same --block, the file result equals the live output sample for sample. The delay of
the resampler and the model is removed unless --no-delay-compensation is given (then the file keeps the
raw stream timing: the output lags by the printed delay).
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import numpy as np

from bandlift.rt.cli.errors import CLIError, printable, write_json
from bandlift.rt.cli.options import add_model_options, add_output_rate_option

READ_FRAMES = 1 << 16


def configure(p) -> None:
    from bandlift.rt.io.files import CONTAINERS

    p.add_argument("input", help="audio file (wav/flac/ogg/mp3/...; m4a/aac through ffmpeg), or a folder "
                                 "processed recursively")
    p.add_argument("output", nargs="?", help="output file; its extension picks the container "
                                             "(" + " ".join(CONTAINERS) + "); for a folder use -o")
    p.add_argument("-o", "--output-dir", help="output folder (folder mode); the input tree is mirrored")
    p.add_argument("--format", choices=sorted({e[1:] for e in CONTAINERS}),
                   help="output container in folder mode (default: each input's own; formats libsndfile "
                        "cannot write become wav)")
    p.add_argument("--subtype", help="output sample format, e.g. PCM_16, PCM_24, FLOAT, VORBIS (default: the "
                                     "input's where the container takes it; 16-bit outputs are TPDF-dithered)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (default: refuse)")
    p.add_argument("--no-limit", action="store_true",
                   help="keep the output's level even if it goes above the ceiling (default: one constant gain "
                        "keeps the true peak at or below -0.1 dBTP, -1 dBTP for lossy formats; integer "
                        "formats then clip)")
    add_output_rate_option(p)
    p.add_argument("--input-cutoff", default="auto",
                   help="bandwidth of the input in Hz, or 'auto' to measure it per file (default), "
                        "or 'nyquist' for half the input rate")
    p.add_argument("--block", type=int, help="model block in samples at the model rate, 48 kHz (as in `live`: "
                                             "the same output sample for sample); default: large blocks, equal "
                                             "to block 128 within float rounding")
    p.add_argument("--no-delay-compensation", action="store_true",
                   help="keep the raw stream timing (output lags by the engine delay)")
    add_model_options(p, provider_default="auto",
                      provider_help="ONNX Runtime execution provider (auto: CUDA when onnxruntime-gpu sees a GPU, "
                                    "else CPU)",
                      threads_help="ONNX Runtime intra-op threads per job (default 1)")
    p.add_argument("--jobs", type=int, default=1, help="files processed in parallel (folder mode)")
    p.add_argument("--json", help="write a JSON summary here")


def _cutoff(arg: str, path, rate: int) -> tuple[float | None, str | None]:
    """(Hz or None for the input's Nyquist, a note when "auto" measured no band the model serves)."""
    if arg == "nyquist":
        return None, None
    if arg == "auto":
        from bandlift.rt.api import measured_cutoff
        from bandlift.rt.io.files import analysis_excerpt

        excerpt, _ = analysis_excerpt(path)
        return measured_cutoff(excerpt, rate)
    return float(arg), None


def upsample_file(up, src, dst, input_cutoff="auto", delay_compensation=True, progress=False, *,
                  subtype=None, overwrite=False, limit=True) -> dict:
    """Stream `src` through `up` (an Upsampler) into `dst`; returns a summary dict."""
    import soundfile as sf

    from bandlift.rt.io.files import AudioFileError, open_read, same_file

    if same_file(src, dst):
        raise AudioFileError(f"refusing to overwrite the input {src}")
    try:
        with open_read(src) as f:
            return _upsample_open(up, f, src, dst, input_cutoff, delay_compensation, progress,
                                  subtype=subtype, overwrite=overwrite, limit=limit)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioFileError(f"{src}: {exc}") from exc
    except OSError as exc:  # e.g. a full disk or a read-only folder
        raise AudioFileError(f"{dst}: {exc.strerror or exc}") from exc


def _upsample_open(up, f, src, dst, input_cutoff, delay_compensation, progress, *, subtype, overwrite, limit):
    from bandlift.rt.io.files import AudioFileError, blocks
    from bandlift.rt.io.writer import staged_writer

    rate, channels, frames = f.samplerate, f.channels, f.frames
    try:
        up.check_rate(rate)
    except ValueError as exc:
        raise AudioFileError(f"{src}: {exc}") from exc
    cutoff, note = _cutoff(input_cutoff, src, rate)
    try:
        stream = up.stream(rate, channels, cutoff, delay_compensation)
    except ValueError as exc:
        raise AudioFileError(f"{src}: {exc}") from exc
    bar = None
    if progress:
        from bandlift.rt.cli.progress import progress_bar

        bar = progress_bar(total=frames if frames > 0 else None, unit="frame", unit_scale=True,
                           desc=printable(Path(src).name), leave=False)
    try:
        with staged_writer(dst, up.out_rate, channels, source=f, subtype=subtype, overwrite=overwrite,
                           limit=limit) as out:
            for data in blocks(f, READ_FRAMES):
                try:
                    y = stream.process(data)
                except ValueError as exc:  # NaN/inf in the file
                    raise AudioFileError(f"{src}: {exc}") from exc
                out.write(y)
                if bar is not None:
                    bar.update(len(data))
            out.write(stream.flush())
    finally:
        if bar is not None:
            bar.close()
    eng = stream.engine
    if not note and eng.model_cutoff_hz > eng.input_cutoff_hz:
        note = (f"the input band ({eng.input_cutoff_hz:.0f} Hz) is below the lowest the model was trained on "
                f"({eng.model_cutoff_hz:.0f} Hz): it generates from there up")
    latency = up.latency_at(rate)  # at the live block (or --block): the file's own block only adds buffering
    return {"input": str(src), "output": str(dst), "input_rate": rate, "output_rate": up.out_rate,
            "channels": channels, "input_frames": stream.n_in, "output_frames": stream.n_out,
            "format": out.format, "subtype": out.subtype,
            "input_cutoff_hz": eng.input_cutoff_hz, "model_cutoff_hz": eng.model_cutoff_hz, "delay_samples": eng.delay,
            "latency_samples": latency, "latency_ms": 1000 * latency / eng.out_rate,
            "delay_compensated": delay_compensation, "true_peak_dbtp": _db(out.true_peak),
            "gain_reduction_db": round(out.gain_db, 3), "clipped_samples": out.clipped,
            "bypass_events": eng.stats.bypass_events, "bypasses": eng.event_lines(),
            **({"input_cutoff_note": note} if note else {}),
            **({"channel_layout_note": out.layout_note} if out.layout_note else {})}


def _db(value: float) -> float:
    return round(20 * float(np.log10(value)), 3) if value > 0 else float("-inf")


def _describe(info: dict) -> str:
    comp = "delay compensated" if info["delay_compensated"] else f"output lags by {info['delay_samples']} samples"
    level = f"true peak {info['true_peak_dbtp']:.1f} dBTP"
    if info["gain_reduction_db"] > 0:
        level += f", gain reduced by {info['gain_reduction_db']:.2f} dB to stay below the ceiling"
    if info["clipped_samples"]:
        level += f", {info['clipped_samples']} samples clipped (--no-limit)"
    return (f"{info['input']} -> {info['output']}: {info['input_rate']} -> {info['output_rate']} Hz, "
            f"{info['channels']} ch, {info['format']} {info['subtype']}, "
            f"{info['output_frames'] / info['output_rate']:.2f} s, input band "
            f"{info['input_cutoff_hz']:.0f} Hz, latency {info['latency_ms']:.2f} ms ({comp}), {level}"
            + "".join(f"\n  {line}" for line in info.get("bypasses", [])) + _band_note(info)
            + (f"\n  note: {info['input_cutoff_note']}" if "input_cutoff_note" in info else "")
            + (f"\n  note: {info['channel_layout_note']}" if "channel_layout_note" in info else ""))


def _band_note(info: dict) -> str:
    """A low --rate can keep nothing of what the model generates (above the input band): say so."""
    if info["output_rate"] / 2 > info["input_cutoff_hz"] or info["output_rate"] >= info["input_rate"]:
        return ""  # (a full-band input at its own rate has no band to generate: nothing thrown away)
    return (f"\n  note: the output rate {info['output_rate']} Hz keeps nothing above the input band "
            f"({info['input_cutoff_hz']:.0f} Hz): the band the model generates is thrown away (a plain "
            f"resample; use a higher --rate, e.g. 48000, to keep it)")


def folder_outputs(files: list[Path], src: Path, out_dir: Path, fmt: str | None) -> list[Path]:
    """One distinct output per input: each input's own container (or `fmt`; wav for formats libsndfile
    cannot write); names that would collide (a.wav + a.flac -> a.wav) keep the input's extension in
    the name (a.flac.wav)."""
    from bandlift.rt.io.files import CONTAINERS

    def ext(f: Path) -> str:
        if fmt:
            return "." + fmt
        return f.suffix if f.suffix.lower() in CONTAINERS else ".wav"

    outs = [out_dir / f.relative_to(src).with_suffix(ext(f)) for f in files]
    seen: dict[str, int] = {}
    for o in outs:
        seen[str(o)] = seen.get(str(o), 0) + 1
    outs = [o if seen[str(o)] == 1 or f.name == o.name else o.with_name(f.name + ext(f))
            for f, o in zip(files, outs)]
    if len(set(map(str, outs))) != len(outs):
        dup = next(o for o in outs if sum(str(p) == str(o) for p in outs) > 1)
        raise CLIError(f"two inputs would both be written to {dup}; rename one of them")
    return outs


def run(args) -> int:
    from bandlift.rt.api import Upsampler
    from bandlift.rt.io.files import find_audio, same_file
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
        if out_dir.is_symlink() and not out_dir.exists() or out_dir.exists() and not out_dir.is_dir():
            raise CLIError(f"output folder {out_dir} is not a folder (a file, or a dangling or looping link)")
        files = find_audio(src, exclude=out_dir)
        if not files:
            raise CLIError(f"no audio files ({', '.join(('wav', 'flac', 'ogg', 'mp3'))}) under {src}")
        jobs = list(zip(files, folder_outputs(files, src, out_dir, args.format)))
    else:
        if not args.output:
            raise CLIError("give an output file (e.g. OUT.wav or OUT.flac)")
        jobs = [(src, Path(args.output))]
    for s, d in jobs:
        if same_file(s, d):
            raise CLIError(f"refusing to overwrite the input {s}")
    if not args.overwrite:
        existing = [d for _, d in jobs if d.exists() or d.is_symlink()]
        if existing:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise CLIError(f"output {existing[0]}{more} exists; use --overwrite to replace")
    try:
        up = Upsampler(args.model, out_rate=args.rate, block=args.block, provider=args.provider,
                       threads=args.threads)
    except (ModelError, ValueError, RuntimeError) as exc:
        raise CLIError(str(exc)) from None
    print(f"model: {up.session.describe()}, block {up.block or 'large (files)'}", file=sys.stderr)
    options = {"input_cutoff": args.input_cutoff, "delay_compensation": delay_comp, "subtype": args.subtype,
               "overwrite": args.overwrite, "limit": not args.no_limit}

    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        results = _run_jobs(args, up, jobs, options, folder)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if folder:
        for info in sorted(results, key=lambda r: r["input"]):
            if "error" in info:
                print(f"FAILED {printable(info['error'])}", file=sys.stderr)
            else:
                print(printable(_describe(info)))
        failed = sum("error" in r for r in results)
        print(f"{len(results) - failed} of {len(results)} files upsampled into {out_dir}"
              + (f"; {failed} failed (listed above)" if failed else ""), file=sys.stderr)
    if args.json:
        write_json(args.json, {"files": results})
    return 1 if any("error" in r for r in results) else 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # main() prints "interrupted"; hidden files are removed on the way out


def _run_jobs(args, up, jobs, options, folder) -> list[dict]:
    from bandlift.rt.io.files import AudioFileError

    if not folder:
        try:
            info = upsample_file(up, *jobs[0], progress=True, **options)
        except (AudioFileError, ValueError) as exc:
            raise CLIError(str(exc)) from None
        print(printable(_describe(info)))
        return [info]
    from bandlift.rt.cli.progress import progress_bar

    results = []
    with progress_bar(total=len(jobs), unit="file", desc="upsample") as bar:
        if args.jobs > 1:
            from bandlift.rt.cli.workers import run_in_workers

            results = run_in_workers(upsample_file, args, jobs, options, bar)
        else:
            for s, d in jobs:
                try:
                    results.append(upsample_file(up, s, d, **options))
                except (AudioFileError, ValueError) as exc:
                    results.append({"input": str(s), "error": str(exc)})
                bar.update()
    return results

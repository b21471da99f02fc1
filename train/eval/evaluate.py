"""Objective evaluation: full-band references -> low-band inputs -> every method -> LSD/SNR/SI-SDR.

The library behind ``bandlift eval`` (numpy/scipy/soxr/librosa; no torch). A *method* is any
callable ``fn(x_low, in_rate, out_rate, cutoff_hz) -> y`` at out_rate, aligned with x_low: the
baselines of `bandlift.train.eval.baselines` and `model_method(path)` (the streaming model through
``bandlift.rt.api.Upsampler``) alike.

References are audio files, folders (searched recursively) or .jsonl manifests (rows with a
"path", optionally filtered by their "split"). For each reference file: read (optionally the first `seconds`), resample to the output rate (refused
when the file's rate is lower: it has no band to compare against), make the low-band input (soxr down
to `input_rate`; then a brick-wall low-pass at `input_cutoff` when given), run every method, and
score it against the reference at the output rate (`bandlift.train.eval.metrics`). Files that cannot be
used are skipped with the reason; per-file results, means over files and LSD ratios are returned as
a JSON-ready dict.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bandlift.rt.io.files import AUDIO_EXTENSIONS
from bandlift.train.eval import metrics

Method = Callable[..., np.ndarray]
METRICS = ("lsd", "lsd_hf", "snr", "si_sdr")
MIN_SECONDS = 0.1
REFERENCE_BAND_WARN = 0.9  # warn when a reference's measured bandwidth is below this x rate/2


class EvalError(Exception):
    """A problem with the evaluation as a whole (no usable file, bad settings)."""


class SkipFile(Exception):
    """A reference file that cannot be used; the message says why."""


@dataclass
class EvalConfig:
    input_rate: int
    input_cutoff: float | str | None = None  # Hz, "auto" (measured on the input) or None (= Nyquist)
    rate: int = 48000
    seconds: float | None = None
    max_files: int | None = None
    split: str | None = None  # rows of .jsonl manifests to use (e.g. "test")

    def check(self) -> None:
        if self.input_rate <= 0 or self.rate <= 0:
            raise EvalError(f"rates must be positive (input {self.input_rate} Hz, output {self.rate} Hz)")
        if self.input_rate > self.rate:
            raise EvalError(f"input rate {self.input_rate} Hz is above the output rate {self.rate} Hz")
        cutoff = self.input_cutoff
        if isinstance(cutoff, (int, float)):
            if not 0 < cutoff <= self.input_rate / 2:
                raise EvalError(f"input cutoff {cutoff} Hz must be in (0, {self.input_rate / 2:g}] Hz "
                                f"for a {self.input_rate} Hz input")
        elif cutoff not in (None, "auto"):
            raise EvalError(f"input cutoff must be Hz or 'auto', got {cutoff!r}")
        if self.input_rate == self.rate and not isinstance(cutoff, (int, float)):
            raise EvalError(f"input rate = output rate ({self.rate} Hz): give the band limit with an "
                            "input cutoff in Hz, otherwise there is nothing to extend")
        if self.seconds is not None and self.seconds < MIN_SECONDS:
            raise EvalError(f"seconds must be at least {MIN_SECONDS}, got {self.seconds}")


# --- files ----------------------------------------------------------------------------------------

def manifest_files(path: Path, split: str | None = None) -> list[Path]:
    """Audio paths listed in a JSON-lines manifest (one {"path": ..., "split": ...} per line), relative
    paths taken from the manifest's folder; read by the dataset's own reader."""
    from bandlift.train.data_sources import read_manifest

    try:
        rows = read_manifest(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EvalError(f"cannot read manifest {path}: {exc}") from exc
    files = []
    for number, row in enumerate(rows, 1):
        try:
            file = Path(row["path"])
        except (KeyError, TypeError) as exc:
            raise EvalError(f"{path}: row {number}: not a manifest row with a 'path' ({exc})") from exc
        if split is None or row.get("split") == split:
            files.append(file if file.is_absolute() else path.parent / file)
    return files


def find_audio_files(paths, warn: Callable[[str], None] = print, split: str | None = None) -> list[Path]:
    """Files given directly, audio files found recursively in folders (sorted per folder), and
    the files of .jsonl manifests (only those of `split` when given).

    Missing paths and folders without audio are warned about; EvalError if nothing is left.
    """
    found: list[Path] = []
    paths = [Path(p) for p in paths]
    if split is not None and not any(p.suffix == ".jsonl" for p in paths):
        raise EvalError(f"split {split!r} selects rows of a .jsonl manifest, and none was given")
    for p in paths:
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
            if not files:
                warn(f"warning: {p}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
            found += files
        elif p.suffix == ".jsonl" and p.is_file():
            files = manifest_files(p, split)
            if not files:
                warn(f"warning: {p}: no files" + (f" in split {split!r}" if split else ""))
            found += files
        elif p.exists():
            found.append(p)
        else:
            warn(f"warning: {p}: no such file or folder")
    if not found:
        raise EvalError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {', '.join(map(str, paths))}")
    return found


def load_reference(path: Path, rate: int, seconds: float | None = None) -> tuple[np.ndarray, int]:
    """(n, channels) float64 at `rate` and the file's own rate; SkipFile says why a file is unusable."""
    import soundfile as sf
    import soxr

    try:
        info = sf.info(str(path))
        frames = -1 if seconds is None else int(round(seconds * info.samplerate))
        x, file_rate = sf.read(str(path), frames=frames, dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise SkipFile(f"unreadable ({exc})") from exc
    if file_rate < rate:
        raise SkipFile(f"its rate {file_rate} Hz is below the output rate {rate} Hz, so it has no "
                       f"reference for the band above {file_rate / 2:g} Hz (use --rate {file_rate})")
    if len(x) < MIN_SECONDS * file_rate:
        raise SkipFile(f"too short ({len(x)} samples; at least {MIN_SECONDS} s needed)")
    if not np.isfinite(x).all():
        raise SkipFile("contains NaN or inf samples")
    x = x[:, np.any(x, axis=0)]  # a silent channel has no SNR or SI-SDR: judge the others
    if x.shape[1] == 0:
        raise SkipFile("digital silence (SNR and SI-SDR are undefined)")
    if file_rate != rate:
        x = soxr.resample(x, file_rate, rate, quality="VHQ")
    return x, file_rate


# --- low-band input -------------------------------------------------------------------------------

def band_limit(x: np.ndarray, sr: float, cutoff_hz: float) -> np.ndarray:
    """Brick-wall low-pass of (n, channels) `x` at `cutoff_hz`, zero-phase, same length.

    Uses the training data's `bandlift.train.degrade.band_limit` (kind "brickwall"), so that evaluation
    inputs look like training inputs.
    """
    from bandlift.train.degrade import band_limit as limit_1d

    if cutoff_hz >= sr / 2:
        return x.copy()
    return np.stack([limit_1d(x[:, c], sr, cutoff_hz) for c in range(x.shape[1])], axis=1)


def make_input(ref: np.ndarray, cfg: EvalConfig) -> tuple[np.ndarray, float | None]:
    """Low-band input at cfg.input_rate from a reference at cfg.rate, and the cutoff methods get."""
    import soxr

    x = ref if cfg.input_rate == cfg.rate else soxr.resample(ref, cfg.rate, cfg.input_rate, quality="VHQ")
    if cfg.input_cutoff is None:
        return x, None
    if cfg.input_cutoff == "auto":
        from bandlift.rt.dsp.bandwidth import effective_bandwidth

        measured = effective_bandwidth(x, cfg.input_rate)
        return x, (float(measured) if measured > 0 else None)  # 0: nothing measurable -> Nyquist
    cutoff = float(cfg.input_cutoff)
    if cutoff < cfg.input_rate / 2:
        x = band_limit(x, cfg.input_rate, cutoff)
    return x, cutoff


# --- the model as a method ------------------------------------------------------------------------

def model_method(model=None, rate: int = 48000) -> Method:
    """The streaming model (path, or None for the shipped default) as a method, via Upsampler."""
    from bandlift.rt.api import Upsampler

    upsampler = Upsampler(model=model, out_rate=rate)  # the engine's own output resampler when rate != 48 kHz

    def run_model(x_low, in_rate, out_rate, cutoff_hz=None):
        y, y_rate = upsampler.process(x_low, in_rate, input_cutoff=cutoff_hz)
        if y_rate != out_rate:
            raise RuntimeError(f"model produced {y_rate} Hz, expected {out_rate} Hz")
        return y

    return run_model


# --- evaluation -----------------------------------------------------------------------------------

def score(ref: np.ndarray, est: np.ndarray, rate: int, hf_from: float) -> dict:
    est = np.asarray(est, dtype=np.float64)
    est = est[:, None] if est.ndim == 1 else est
    if not np.isfinite(est).all():
        raise ValueError("output contains NaN or inf")
    return {
        "lsd": metrics.lsd(ref, est, rate),
        "lsd_hf": metrics.lsd(ref, est, rate, hf_from=hf_from),
        "snr": metrics.snr(ref, est),
        "si_sdr": metrics.si_sdr(ref, est),
    }


def evaluate_file(path: Path, methods: dict[str, Method], cfg: EvalConfig) -> tuple[dict, dict]:
    """Metrics of every method on one reference -> (JSON record, signals for plotting)."""
    from bandlift.rt.dsp.bandwidth import effective_bandwidth

    ref, file_rate = load_reference(path, cfg.rate, cfg.seconds)
    x_low, cutoff = make_input(ref, cfg)
    hf_from = cutoff if cutoff is not None else cfg.input_rate / 2
    record = {
        "path": str(path),
        "file_rate": int(file_rate),
        "channels": int(ref.shape[1]),
        "seconds": round(len(ref) / cfg.rate, 3),
        "input_cutoff_hz": hf_from,
        "reference_bandwidth_hz": float(effective_bandwidth(ref, cfg.rate)),
        "metrics": {},
    }
    outputs = {}
    for name, method in methods.items():
        try:
            extra = {"reference": ref} if getattr(method, "needs_reference", False) else {}
            y = method(x_low.astype(np.float32), cfg.input_rate, cfg.rate, cutoff, **extra)
            record["metrics"][name] = score(ref, y, cfg.rate, hf_from)
        except Exception as exc:
            raise EvalError(f"method {name!r} failed on {path}: {type(exc).__name__}: {exc}") from exc
        outputs[name] = y
    return record, {"reference": ref, "input": x_low, "outputs": outputs, "hf_from": hf_from}


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def summarize(records: list[dict], names: list[str]) -> dict:
    """Means over files per method, and LSD ratios (method / sinc, method / noise_fill)."""
    means = {name: {key: _mean([r["metrics"][name][key] for r in records]) for key in METRICS}
             for name in names}
    summary: dict = {"files": len(records), "mean": means, "lsd_ratio": {}}
    for base in ("sinc", "noise_fill"):
        if base in means:
            summary["lsd_ratio"][f"over_{base}"] = {
                name: means[name]["lsd"] / means[base]["lsd"] if means[base]["lsd"] > 0 else float("nan")
                for name in names}
    if "model" in means:
        for base in ("sinc", "noise_fill"):
            if base in means:
                summary[f"model_over_{base}_lsd"] = summary["lsd_ratio"][f"over_{base}"]["model"]
    return summary


def evaluate(paths, methods: dict[str, Method], cfg: EvalConfig, png_dir=None, progress: bool = True,
             warn: Callable[[str], None] | None = None) -> dict:
    """Evaluate every method on every usable reference in `paths` -> JSON-ready results.

    Unusable files are skipped with a warning (and listed under "skipped"); EvalError when none is
    usable. `png_dir`: one spectrogram comparison per file.
    """
    from tqdm import tqdm

    cfg.check()
    if not methods:
        raise EvalError("no methods to evaluate")
    warn = warn or (lambda msg: tqdm.write(msg, file=sys.stderr))
    files = find_audio_files(paths, warn, cfg.split)
    if cfg.max_files is not None:
        files = files[: cfg.max_files]
    if png_dir is not None:
        os.makedirs(png_dir, exist_ok=True)
    records, skipped = [], []
    for i, path in enumerate(tqdm(files, desc="eval", unit="file", disable=not progress)):
        try:
            record, signals = evaluate_file(path, methods, cfg)
        except SkipFile as exc:
            skipped.append({"path": str(path), "reason": str(exc)})
            warn(f"warning: skipping {path}: {exc}")
            continue
        if record["reference_bandwidth_hz"] < REFERENCE_BAND_WARN * cfg.rate / 2:
            warn(f"warning: {path}: the reference itself stops at about "
                 f"{record['reference_bandwidth_hz']:.0f} Hz; high-band scores reward methods "
                 "that leave the band above it empty")
        if png_dir is not None:
            png = Path(png_dir) / f"{i:03d}_{path.stem}.png"
            plot_comparison(png, signals, record, cfg)
            record["png"] = str(png)
        records.append(record)
    if not records:
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
        raise EvalError(f"no usable reference file ({len(skipped)} skipped: {reasons})")
    names = list(methods)
    return {
        "config": {
            "input_rate": cfg.input_rate, "input_cutoff": cfg.input_cutoff, "rate": cfg.rate,
            "seconds": cfg.seconds, "split": cfg.split, "methods": names,
            "lsd": f"NU-Wave 2/AERO/AP-BWE: STFT n_fft {metrics.N_FFT}, hop {metrics.HOP}, Hann, centred; "
                   f"log10 power floored at {metrics.POWER_FLOOR:g}; LSD-HF from bin int(1025*cutoff/nyquist)",
        },
        "files": records,
        "skipped": skipped,
        "summary": summarize(records, names),
    }


# --- reporting ------------------------------------------------------------------------------------

def _fmt(value: float, width: int, digits: int) -> str:
    return f"{value:{width}.{digits}f}" if math.isfinite(value) else f"{value!s:>{width}}"


def format_table(results: dict) -> str:
    """Plain-text report: LSD per file and method, then means of every metric per method."""
    names = results["config"]["methods"]
    summary = results["summary"]
    width = max(10, *(len(n) + 1 for n in names))
    files = [Path(r["path"]).name for r in results["files"]]
    fw = min(max(len("file"), *map(len, files)), 40)
    lines = ["LSD per file (lower is better)",
             "file".ljust(fw) + "".join(n.rjust(width) for n in names)]
    for name, record in zip(files, results["files"]):
        lines.append(name[:fw].ljust(fw) + "".join(
            _fmt(record["metrics"][n]["lsd"], width, 3) for n in names))
    lines += ["", f"Mean over {summary['files']} file(s)"]
    ratios = summary["lsd_ratio"]
    columns = [("LSD", "lsd", 3), ("LSD-HF", "lsd_hf", 3), ("SNR dB", "snr", 2), ("SI-SDR dB", "si_sdr", 2)]
    header = "method".ljust(width) + "".join(t.rjust(11) for t, _, _ in columns)
    header += "".join(f"LSD/{b[5:]}".rjust(16) for b in ratios)
    lines.append(header)
    for n in names:
        row = n.ljust(width) + "".join(_fmt(summary["mean"][n][k], 11, d) for _, k, d in columns)
        row += "".join(_fmt(ratios[b][n], 16, 3) for b in ratios)
        lines.append(row)
    for key in ("model_over_sinc_lsd", "model_over_noise_fill_lsd"):
        if key in summary:
            lines.append(f"{key}: {summary[key]:.3f}")
    if results["skipped"]:
        lines.append(f"{len(results['skipped'])} file(s) skipped (see warnings)")
    return "\n".join(lines)


def to_json(results: dict) -> dict:
    """Copy with non-finite floats (e.g. SNR of a perfect estimate) as null: strict JSON."""
    if isinstance(results, dict):
        return {k: to_json(v) for k, v in results.items()}
    if isinstance(results, (list, tuple)):
        return [to_json(v) for v in results]
    if isinstance(results, float) and not math.isfinite(results):
        return None
    return results


def plot_comparison(png: Path, signals: dict, record: dict, cfg: EvalConfig) -> None:
    """Spectrograms (first channel): input, each method, reference; frequency axis to rate/2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"input ({cfg.input_rate} Hz, cutoff {signals['hf_from']:.0f} Hz)", signals["input"],
             cfg.input_rate)]
    rows += [(f"{name}  LSD {record['metrics'][name]['lsd']:.2f}  LSD-HF "
              f"{record['metrics'][name]['lsd_hf']:.2f}", y, cfg.rate)
             for name, y in signals["outputs"].items()]
    rows.append(("reference", signals["reference"], cfg.rate))
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 1.9 * len(rows)), sharex=True, squeeze=False)
    for ax, (title, y, sr) in zip(axes[:, 0], rows):
        y = np.asarray(y, dtype=np.float64)
        y = y[:, 0] if y.ndim == 2 else y
        db = 10 * metrics.log_power_spectrogram(y)[0]
        extent = (0.0, len(y) / sr, 0.0, sr / 2000.0)
        ax.imshow(db, origin="lower", aspect="auto", extent=extent, cmap="magma",
                  vmin=-80, vmax=max(float(db.max()), -40.0))
        ax.set_ylim(0, cfg.rate / 2000.0)
        ax.set_ylabel("kHz")
        ax.set_title(title, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("s")
    fig.suptitle(Path(record["path"]).name, fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)

"""Objective evaluation: full-band references -> low-band inputs -> every method -> ViSQOL/LSD/SNR.

The library behind ``bandlift eval`` (numpy/scipy/soxr/librosa; no torch). A *method* is any
callable ``fn(x_low, in_rate, out_rate, cutoff_hz) -> y`` at out_rate, aligned with x_low: the
baselines of `bandlift.train.eval.baselines` and `model_method(path)` (the streaming model through
``bandlift.rt.api.Upsampler``) alike.

References are audio files, folders (searched recursively) or .jsonl manifests (rows with a
"path", optionally filtered by their "split"); a manifest row's category (speech / music / instruments,
`references.row_category`) groups the results, other files get `EvalConfig.category`.
For each reference file: read (optionally the first `seconds`), resample to the judged rate (by default
the file's own rate, at most 48 kHz; a fixed `rate` refuses files below it: they have no band to
compare against), make the low-band input (soxr down to `input_rate`; then a brick-wall low-pass at
`input_cutoff` when given), run every method, and score it against the reference at the judged rate
(`bandlift.train.eval.metrics`). Files that cannot be used are skipped with the reason; per-file
results, means over files (per category and overall) and LSD ratios are returned as a JSON-ready dict.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bandlift.train.eval import metrics
from bandlift.train.eval.references import (MAX_RATE, MIN_SECONDS, REFERENCE_BAND_WARN, EvalError, SkipFile,
                                             find_audio_files, judged_rate, load_reference)
from bandlift.train.eval.results import plot_comparison

Method = Callable[..., np.ndarray]
METRICS = ("visqol", "lsd", "lsd_hf", "snr", "si_sdr", "band_db", "peak_db")


@dataclass
class EvalConfig:
    input_rate: int | None  # None with a condition: the chain's own rate
    input_cutoff: float | str | None = None  # Hz, "auto" (measured on the input) or None (= Nyquist)
    rate: int | None = None  # output and scoring rate; None: each reference's own, at most MAX_RATE
    seconds: float | None = None
    max_files: int | None = None
    split: str | None = None  # rows of .jsonl manifests to use (e.g. "test")
    per_source: int | None = None  # of those, the first N per source by path that ViSQOL can score
    visqol: bool = True
    category: str = "other"  # of references that are not manifest rows
    condition: str | None = None  # a user chain (train/conditions.py) makes the input instead

    def in_rate(self, rate: int) -> int:
        """The input's rate for a reference judged at `rate`."""
        if self.condition is not None:
            from bandlift.train.conditions import chain_rate

            return chain_rate(self.condition, rate)
        return self.input_rate

    def check(self) -> None:
        if self.condition is not None:
            from bandlift.train.conditions import ConditionError, check_name

            try:
                check_name(self.condition)
            except ConditionError as exc:
                raise EvalError(str(exc)) from None
            if self.input_rate is not None or self.input_cutoff is not None:
                raise EvalError(f"condition {self.condition!r} sets the input's rate and band: "
                                "drop the input rate and cutoff")
            self._check_common()
            return
        if self.input_rate is None:
            raise EvalError("give an input rate or a condition")
        if self.input_rate <= 0 or (self.rate is not None and self.rate <= 0):
            raise EvalError(f"rates must be positive (input {self.input_rate} Hz, output {self.rate} Hz)")
        top = self.rate or MAX_RATE
        if self.input_rate > top:
            raise EvalError(f"input rate {self.input_rate} Hz is above the output rate {top} Hz")
        cutoff = self.input_cutoff
        if isinstance(cutoff, (int, float)):
            if not 0 < cutoff <= self.input_rate / 2:
                raise EvalError(f"input cutoff {cutoff} Hz must be in (0, {self.input_rate / 2:g}] Hz "
                                f"for a {self.input_rate} Hz input")
        elif cutoff not in (None, "auto"):
            raise EvalError(f"input cutoff must be Hz or 'auto', got {cutoff!r}")
        if self.input_rate == top and not isinstance(cutoff, (int, float)):
            raise EvalError(f"input rate = output rate ({top} Hz): give the band limit with an "
                            "input cutoff in Hz, otherwise there is nothing to extend")
        self._check_common()

    def _check_common(self) -> None:
        if self.rate is not None and self.rate <= 0:
            raise EvalError(f"the output rate must be positive, not {self.rate} Hz")
        if self.per_source is not None and self.per_source < 1:
            raise EvalError(f"per source must be at least 1 file, got {self.per_source}")
        if self.seconds is not None and self.seconds < MIN_SECONDS:
            raise EvalError(f"seconds must be at least {MIN_SECONDS}, got {self.seconds}")


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


def make_input(ref: np.ndarray, rate: int, cfg: EvalConfig) -> tuple[np.ndarray, float | None]:
    """Low-band input at cfg.in_rate(rate) from a reference at `rate`, and the cutoff methods get."""
    import soxr

    if cfg.condition is not None:
        from bandlift.train.conditions import apply

        return apply(cfg.condition, ref, rate)

    x = ref if cfg.input_rate == rate else soxr.resample(ref, rate, cfg.input_rate, quality="VHQ")
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

def model_method(model=None) -> Method:
    """The streaming model (path, or None for the shipped default) as a method, via Upsampler: one
    per output rate (the engine's own output resampler when it is not 48 kHz)."""
    from bandlift.rt.api import Upsampler

    upsamplers = {MAX_RATE: Upsampler(model=model, out_rate=MAX_RATE)}  # loads (and checks) the model now

    def run_model(x_low, in_rate, out_rate, cutoff_hz=None):
        if out_rate not in upsamplers:
            upsamplers[out_rate] = Upsampler(model=model, out_rate=out_rate)
        y, y_rate = upsamplers[out_rate].process(x_low, in_rate, input_cutoff=cutoff_hz)
        if y_rate != out_rate:
            raise RuntimeError(f"model produced {y_rate} Hz, expected {out_rate} Hz")
        return y

    return run_model


# --- evaluation -----------------------------------------------------------------------------------

def score(ref: np.ndarray, est: np.ndarray, rate: int, hf_from: float, visqol: bool = True,
          plain: np.ndarray | None = None) -> dict:
    """Every metric of `est` against `ref`; ViSQOL is NaN when off or the clip is too short for it, the
    peak (over `plain`, the input upsampled by sinc) NaN without `plain`."""
    est = np.asarray(est, dtype=np.float64)
    est = est[:, None] if est.ndim == 1 else est
    if not np.isfinite(est).all():
        raise ValueError("output contains NaN or inf")
    long_enough = len(ref) >= metrics.VISQOL_MIN_SECONDS * rate
    return {
        "visqol": metrics.visqol(ref, est, rate) if visqol and long_enough else float("nan"),
        "lsd": metrics.lsd(ref, est, rate),
        "lsd_hf": metrics.lsd(ref, est, rate, hf_from=hf_from),
        "snr": metrics.snr(ref, est),
        "si_sdr": metrics.si_sdr(ref, est),
        "band_db": metrics.band_level_db(ref, est, rate, hf_from),
        "peak_db": metrics.peak_db(est, plain) if plain is not None else float("nan"),
    }


def evaluate_file(path: Path, methods: dict[str, Method], cfg: EvalConfig,
                  category: str = "other") -> tuple[dict, dict]:
    """Metrics of every method on one reference -> (JSON record, signals for plotting)."""
    from bandlift.rt.dsp.bandwidth import effective_bandwidth

    ref, file_rate = load_reference(path, cfg.rate, cfg.seconds)
    rate = judged_rate(cfg.rate, file_rate)
    in_rate = cfg.in_rate(rate)
    band_given = isinstance(cfg.input_cutoff, (int, float)) or cfg.condition is not None
    if in_rate > rate or (in_rate == rate and not band_given):
        raise SkipFile(f"judged at its own rate {rate} Hz, it has no band above a {in_rate} Hz "
                       "input" + ("" if in_rate > rate else " without --input-cutoff"))
    x_low, cutoff = make_input(ref, rate, cfg)
    if cutoff is not None and cutoff >= 0.99 * rate / 2:
        raise SkipFile(f"judged at {rate} Hz, it has no band above the {cutoff:.0f} Hz this input keeps")
    hf_from = cutoff if cutoff is not None else in_rate / 2
    record = {
        "path": str(path),
        "category": category,
        "file_rate": int(file_rate),
        "rate": rate,
        "channels": int(ref.shape[1]),
        "seconds": round(len(ref) / rate, 3),
        "input_rate": in_rate,
        "input_cutoff_hz": hf_from,
        "reference_bandwidth_hz": float(effective_bandwidth(ref, rate)),
        "metrics": {},
    }
    outputs = {}
    from bandlift.train.eval.baselines import sinc

    plain = sinc(x_low.astype(np.float32), in_rate, rate)
    for name, method in methods.items():
        try:
            extra = {"reference": ref} if getattr(method, "needs_reference", False) else {}
            y = method(x_low.astype(np.float32), in_rate, rate, cutoff, **extra)
            record["metrics"][name] = score(ref, y, rate, hf_from, cfg.visqol, plain)
        except Exception as exc:
            raise EvalError(f"method {name!r} failed on {path}: {type(exc).__name__}: {exc}") from exc
        outputs[name] = y
    return record, {"reference": ref, "input": x_low, "outputs": outputs, "hf_from": hf_from,
                    "input_rate": in_rate}


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]  # NaN: ViSQOL off or the clip too short
    return float(np.mean(values)) if values else float("nan")


def means(records: list[dict], names: list[str]) -> dict:
    """{"files": n, "visqol_files": n scored by ViSQOL, "mean": {method: {metric: mean over files}}}."""
    scored = [r for r in records if names and not math.isnan(r["metrics"][names[0]]["visqol"])]
    return {"files": len(records), "visqol_files": len(scored),
            "mean": {name: {key: _mean([r["metrics"][name][key] for r in records]) for key in METRICS}
                     for name in names}}


def summarize(records: list[dict], names: list[str]) -> dict:
    """Means over files per method, overall and per category, and LSD ratios (method / sinc, method /
    noise_fill)."""
    from bandlift.train.data.sources import CATEGORIES

    summary: dict = means(records, names)
    present = {r["category"] for r in records}
    summary["by_category"] = {
        cat: means([r for r in records if r["category"] == cat], names)
        for cat in [*CATEGORIES, *sorted(present - set(CATEGORIES))] if cat in present}
    # a band-limited reference rewards an empty band above its own limit: the two kinds apart, when mixed
    full, limited = [], []
    for r in records:
        (full if r["reference_bandwidth_hz"] >= REFERENCE_BAND_WARN * r["rate"] / 2 else limited).append(r)
    if full and limited:
        summary["by_reference_band"] = {"full band": means(full, names), "band-limited": means(limited, names)}
    sources = sorted({r.get("source", "") for r in records})
    if len(sources) > 1:
        summary["by_source"] = {src: means([r for r in records if r.get("source", "") == src], names)
                                for src in sources}
    overall = summary["mean"]
    summary["lsd_ratio"] = {}
    for base in ("sinc", "noise_fill"):
        if base in overall:
            summary["lsd_ratio"][f"over_{base}"] = {
                name: overall[name]["lsd"] / overall[base]["lsd"] if overall[base]["lsd"] > 0 else float("nan")
                for name in names}
    if "model" in overall:
        for base in ("sinc", "noise_fill"):
            if base in overall:
                summary[f"model_over_{base}_lsd"] = summary["lsd_ratio"][f"over_{base}"]["model"]
    return summary


def evaluate(paths, methods: dict[str, Method], cfg: EvalConfig, png_dir=None, progress: bool = True,
             warn: Callable[[str], None] | None = None,
             on_file: Callable[[int, dict, dict], None] | None = None) -> dict:
    """Evaluate every method on every usable reference in `paths` -> JSON-ready results.

    Unusable files are skipped with a warning (and listed under "skipped"); EvalError when none is
    usable. `png_dir`: one spectrogram comparison per file. `on_file(index, record, signals)` is
    called for every evaluated file (e.g. `bandlift.train.eval.report.ListeningReport.add`).
    """
    from tqdm import tqdm

    from bandlift.rt.cli.progress import progress_bar

    cfg.check()
    if not methods:
        raise EvalError("no methods to evaluate")
    from bandlift.rt.cli.errors import printable

    warn = warn or (lambda msg: tqdm.write(printable(msg), file=sys.stderr))
    files = find_audio_files(paths, warn, cfg.split, cfg.category, cfg.per_source)
    if cfg.max_files is not None:
        files = files[: cfg.max_files]
    if png_dir is not None:
        os.makedirs(png_dir, exist_ok=True)
    records, skipped = [], []
    for i, (path, category, source) in enumerate(progress_bar(files, desc="eval", unit="file", disable=not progress)):
        try:
            record, signals = evaluate_file(path, methods, cfg, category)
            record["source"] = source
        except SkipFile as exc:
            skipped.append({"path": str(path), "reason": str(exc)})
            warn(f"warning: skipping {path}: {exc}")
            continue
        if record["reference_bandwidth_hz"] < REFERENCE_BAND_WARN * record["rate"] / 2:
            warn(f"warning: {path}: the reference itself stops at about "
                 f"{record['reference_bandwidth_hz']:.0f} Hz; high-band scores reward methods "
                 "that leave the band above it empty")
        if png_dir is not None:
            png = Path(png_dir) / f"{i:03d}_{path.stem}.png"
            plot_comparison(png, signals, record)
            record["png"] = str(png)
        if on_file is not None:
            on_file(i, record, signals)
        records.append(record)
    if not records:
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
        raise EvalError(f"no usable reference file ({len(skipped)} skipped: {reasons})")
    names = list(methods)
    return {
        "config": {
            "input_rate": cfg.input_rate, "input_cutoff": cfg.input_cutoff, "condition": cfg.condition,
            "rate": cfg.rate or f"each reference's own, at most {MAX_RATE}",
            "seconds": cfg.seconds, "split": cfg.split, "per_source": cfg.per_source, "methods": names,
            "lsd": f"NU-Wave 2/AERO/AP-BWE: STFT n_fft {metrics.N_FFT}, hop {metrics.HOP}, Hann, centred; "
                   f"log10 power floored at {metrics.POWER_FLOOR:g}; LSD-HF from bin int(1025*cutoff/nyquist)",
            "visqol": (f"ViSQOL v3 audio mode (visqol-python) at {metrics.VISQOL_RATE} Hz, mono; clips under "
                       f"{metrics.VISQOL_MIN_SECONDS:g} s unscored" if cfg.visqol else "off"),
        },
        "files": records,
        "skipped": skipped,
        "summary": summarize(records, names),
    }



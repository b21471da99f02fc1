"""Objective evaluation: full-band references -> low-band inputs -> every method -> ViSQOL/LSD/SNR.

The library behind ``bandlift eval`` (numpy/scipy/soxr/librosa; no torch). A *method* is any
callable ``fn(x_low, in_rate, out_rate, cutoff_hz) -> y`` at out_rate, aligned with x_low: the
baselines of `bandlift.train.eval.baselines` and `model_method(path)` (the streaming model through
``bandlift.rt.api.Upsampler``) alike.

References are audio files, folders (searched recursively) or .jsonl manifests (rows with a
"path", optionally filtered by their "split"); a manifest row's category (speech / music / instruments,
`row_category`) groups the results, other files get `EvalConfig.category`.
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

from bandlift.rt.errors import BandliftError
from bandlift.rt.io.files import AUDIO_EXTENSIONS
from bandlift.train.eval import metrics

Method = Callable[..., np.ndarray]
METRICS = ("visqol", "lsd", "lsd_hf", "snr", "si_sdr", "band_db", "peak_db")
MIN_SECONDS = 0.1
MAX_RATE = 48000  # the model's rate: references above it are judged here
REFERENCE_BAND_WARN = 0.9  # warn when a reference's measured bandwidth is below this x rate/2


class EvalError(BandliftError):
    """A problem with the evaluation as a whole (no usable file, bad settings)."""


class SkipFile(Exception):
    """A reference file that cannot be used; the message says why."""


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


def judged_rate(rate: int | None, file_rate: int) -> int:
    """The rate a reference of `file_rate` is scored at: `rate`, or None: its own, at most MAX_RATE."""
    return rate or min(int(file_rate), MAX_RATE)


# --- files ----------------------------------------------------------------------------------------

def manifest_files(path: Path, split: str | None = None, per_source: int | None = None) -> list[tuple[Path, str, str]]:
    """(audio path, category) of the rows of a JSON-lines manifest (one {"path": ..., "split": ...} per
    line), relative paths taken from the manifest's folder; read by the dataset's own reader.
    `per_source`: only the first N rows of each source by path among those at least
    SUBSET_MIN_SECONDS long (interleaved by source: `data.sources.first_per_source`)."""
    from bandlift.train.data.sources import SUBSET_MIN_SECONDS, first_per_source, read_manifest

    try:
        rows = read_manifest(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EvalError(f"cannot read manifest {path}: {exc}") from exc
    chosen = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row.get("path"), str):
            raise EvalError(f"{path}: row {number}: not a manifest row with a 'path'")
        if split is None or row.get("split") == split:
            chosen.append(row)
    if per_source is not None:  # read_manifest has checked each duration is a number
        chosen = first_per_source([r for r in chosen if r.get("duration", 0.0) >= SUBSET_MIN_SECONDS], per_source)
    # an absolute path stays itself
    return [(path.parent / r["path"], row_category(r), str(r.get("source", path.name))) for r in chosen]


def row_category(row: dict) -> str:
    """A manifest row's category; rows written before rows had one go by their source."""
    from bandlift.train.data.debian import PACKAGES

    if row.get("category"):
        return row["category"]
    source = str(row.get("source", ""))
    package = PACKAGES.get(source.removeprefix("debian:")) if source.startswith("debian:") else None
    return package.category if package else "music" if source == "spotify" else "other"


def find_audio_files(paths, warn: Callable[[str], None] = print, split: str | None = None,
                     category: str = "other", per_source: int | None = None) -> list[tuple[Path, str, str]]:
    """(path, category, source) of files given directly, audio files found recursively in folders
    (sorted per folder), and the files of .jsonl manifests (only those of `split` when given). Manifest
    rows carry their category and source, other files get `category` and their folder as the source.

    Missing paths and folders without audio are warned about; EvalError if nothing is left.
    """
    found: list[Path] = []
    paths = [Path(p) for p in paths]
    if split is not None and not any(p.suffix == ".jsonl" for p in paths):
        raise EvalError(f"split {split!r} selects rows of a .jsonl manifest, and none was given")
    if per_source is not None and not any(p.suffix == ".jsonl" for p in paths):
        raise EvalError("per source selects rows of a .jsonl manifest by their source, and none was given")
    for p in paths:
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
            if not files:
                warn(f"warning: {p}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
            found += [(f, category, str(p)) for f in files]
        elif p.suffix == ".jsonl" and p.is_file():
            files = manifest_files(p, split, per_source)
            if not files:
                warn(f"warning: {p}: no files" + (f" in split {split!r}" if split else ""))
            found += files
        elif p.exists():
            found.append((p, category, str(p.parent)))
        else:
            warn(f"warning: {p}: no such file or folder")
    if not found:
        raise EvalError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {', '.join(map(str, paths))}")
    return found


def load_reference(path: Path, rate: int | None, seconds: float | None = None) -> tuple[np.ndarray, int]:
    """(n, channels) float64 at `rate` (None: the file's own, at most MAX_RATE) and the file's own
    rate; SkipFile says why a file is unusable."""
    import soundfile as sf
    import soxr

    from bandlift.rt.io.files import AudioFileError, check_regular

    try:
        check_regular(path)  # a FIFO would block the read forever
        info = sf.info(str(path))
        frames = -1 if seconds is None else int(round(seconds * info.samplerate))
        x, file_rate = sf.read(str(path), frames=frames, dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, AudioFileError) as exc:
        raise SkipFile(f"unreadable ({exc})") from exc
    rate = judged_rate(rate, file_rate)
    if file_rate < rate:
        raise SkipFile(f"its rate {file_rate} Hz is below the output rate {rate} Hz, so it has no "
                       f"reference for the band above {file_rate / 2:g} Hz (without --rate, each file "
                       "is judged at its own rate)")
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
            plot_comparison(png, signals, record, cfg)
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


# --- reporting ------------------------------------------------------------------------------------

def _fmt(value: float, width: int, digits: int) -> str:
    return f"{value:{width}.{digits}f}" if math.isfinite(value) else f"{value!s:>{width}}"


COLUMNS = [("ViSQOL", "visqol", 2), ("LSD", "lsd", 3), ("LSD-HF", "lsd_hf", 3), ("SNR dB", "snr", 2),
           ("SI-SDR dB", "si_sdr", 2), ("band dB", "band_db", 1), ("peak dB", "peak_db", 2)]


def group_title(name: str, group: dict) -> str:
    """"speech: 4 file(s), ViSQOL on 3"; the ViSQOL count only where it differs."""
    title = f"{name}: {group['files']} file(s)"
    if 0 < group["visqol_files"] < group["files"]:
        title += f", ViSQOL on {group['visqol_files']} (the others are under {metrics.VISQOL_MIN_SECONDS:g} s)"
    return title


def summary_groups(summary: dict) -> list[tuple[str, dict]]:
    """(title, means) of every group a report shows: the categories, both kinds of reference band when
    mixed, and all files."""
    bands = [(f"{kind} references" + (f" (measured >= {REFERENCE_BAND_WARN:.0%} of Nyquist)" if kind == "full band" else ""),
              group) for kind, group in summary.get("by_reference_band", {}).items()]
    return [*summary["by_category"].items(), *bands, ("overall", summary)]


def format_table(results: dict) -> str:
    """Plain-text report: LSD per file and method, then the means of every metric per method, per
    category and overall."""
    names = results["config"]["methods"]
    summary = results["summary"]
    width = max(10, *(len(n) + 1 for n in names))
    from bandlift.rt.cli.errors import printable

    files = [printable(Path(r["path"]).name) for r in results["files"]]
    fw = min(max(len("file"), *map(len, files)), 40)
    lines = ["LSD per file (lower is better)",
             "file".ljust(fw) + "".join(n.rjust(width) for n in names)]
    for name, record in zip(files, results["files"]):
        lines.append(name[:fw].ljust(fw) + "".join(
            _fmt(record["metrics"][n]["lsd"], width, 3) for n in names))
    columns = [c for c in COLUMNS if summary["visqol_files"] or c[1] != "visqol"]
    for title, group in summary_groups(summary):
        ratios = summary["lsd_ratio"] if group is summary else {}
        lines += ["", "Mean, " + group_title(title, group)]
        header = "method".ljust(width) + "".join(t.rjust(11) for t, _, _ in columns)
        lines.append(header + "".join(f"LSD/{b[5:]}".rjust(16) for b in ratios))
        for n in names:
            row = n.ljust(width) + "".join(_fmt(group["mean"][n][k], 11, d) for _, k, d in columns)
            lines.append(row + "".join(_fmt(ratios[b][n], 16, 3) for b in ratios))
    if "by_source" in summary:  # one line per source: ViSQOL (or LSD when ViSQOL is off) of each method
        key, label = ("visqol", "ViSQOL") if summary["visqol_files"] else ("lsd", "LSD")
        sw = min(max(len("source"), *(len(s) for s in summary["by_source"])), 44)
        lines += ["", f"{label} per source (held-out sources are what the test split judges)",
                  "source".ljust(sw) + "files".rjust(6) + "".join(n.rjust(width) for n in names)]
        for src, group in summary["by_source"].items():
            lines.append(src[-sw:].ljust(sw) + str(group["files"]).rjust(6)
                         + "".join(_fmt(group["mean"][n][key], width, 2 if key == "visqol" else 3) for n in names))
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


def spectrogram_db(y) -> np.ndarray:
    """The LSD's log-power spectrogram of `y` (first channel) in dB, [bins, frames]."""
    y = np.asarray(y, dtype=np.float64)
    return 10 * metrics.log_power_spectrogram(y[:, 0] if y.ndim == 2 else y)[0]


def draw_spectrogram(ax, y, sr: float, top_hz: float, vmax_db: float | None = None) -> None:
    """`spectrogram_db(y)` on `ax`, 0 to top_hz, colours from the LSD's floor (-80 dB) to vmax_db
    (default: its own peak)."""
    db = spectrogram_db(y)
    extent = (0.0, len(y) / sr, 0.0, sr / 2000.0)
    vmax = max(float(db.max()) if vmax_db is None else vmax_db, -40.0)
    ax.imshow(db, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=-80, vmax=vmax)
    ax.set_ylim(0, top_hz / 1000.0)
    ax.set_facecolor("black")  # above a low-rate input's Nyquist: nothing
    ax.set_ylabel("kHz")


def plot_comparison(png: Path, signals: dict, record: dict, cfg: EvalConfig) -> None:
    """Spectrograms (first channel): input, each method, reference; frequency axis to rate/2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate = record["rate"]
    rows = [(f"input ({signals['input_rate']} Hz, cutoff {signals['hf_from']:.0f} Hz)", signals["input"],
             signals["input_rate"])]
    rows += [(f"{name}  LSD {record['metrics'][name]['lsd']:.2f}  LSD-HF "
              f"{record['metrics'][name]['lsd_hf']:.2f}", y, rate)
             for name, y in signals["outputs"].items()]
    rows.append(("reference", signals["reference"], rate))
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 1.9 * len(rows)), sharex=True, squeeze=False)
    for ax, (title, y, sr) in zip(axes[:, 0], rows):
        draw_spectrogram(ax, y, sr, rate / 2)
        ax.set_title(title, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("s")
    fig.suptitle(Path(record["path"]).name, fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)

"""How `eval`'s results are shown: the console table (per category, then overall), the JSON, and the
spectrogram plots of each file's input, methods and reference."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bandlift.train.eval import metrics
from bandlift.train.eval.references import REFERENCE_BAND_WARN


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


def plot_comparison(png: Path, signals: dict, record: dict) -> None:
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

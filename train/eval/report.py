"""The listening report of `bandlift eval --html DIR`: one static page, relative links only.

DIR/index.html holds the summary table (per category and overall) and, per reference file, a player
and a spectrogram for the reference, the input and every method; DIR/audio/ the 16-bit FLAC excerpts
that were scored (one gain per file, so that none clips and levels stay comparable), DIR/spectrograms/
the PNGs. Blind: each file's methods appear under letters in a shuffled order of their own, without
their scores; the key (file -> letter -> method) goes into the eval's JSON.
"""
from __future__ import annotations

import html
import math
import string
from pathlib import Path

import numpy as np

from bandlift.rt.io.files import replacing
from bandlift.train.eval.results import COLUMNS, draw_spectrogram, group_title, spectrogram_db, summary_groups

PEAK = 0.99  # highest sample of a file's excerpts after its gain


class ListeningReport:
    def __init__(self, folder, blind: bool = False, seed: int = 0):
        self.folder = Path(folder)
        for sub in ("audio", "spectrograms"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.blind = blind
        self.rng = np.random.default_rng(seed)
        self.sections: list[str] = []
        self.key: dict[str, dict[str, str]] = {}

    def add(self, index: int, record: dict, signals: dict) -> None:
        """Write one reference file's excerpts and spectrograms, and its section of the page."""
        rate = record["rate"]
        names = list(signals["outputs"])
        labels = dict(zip(names, names))
        if self.blind:
            order = self.rng.permutation(len(names))
            names = [names[i] for i in order]
            labels = dict(zip(names, string.ascii_uppercase))
            self.key[record["path"]] = {labels[n]: n for n in names}
        rows = [("reference", signals["reference"], rate, None),
                ("input", signals["input"], signals["input_rate"], None)]
        rows += [(labels[n], signals["outputs"][n], rate, record["metrics"][n]) for n in names]
        peak = max(float(np.max(np.abs(y))) if np.size(y) else 0.0 for _, y, _, _ in rows)
        gain = min(1.0, PEAK / peak) if peak > 0 else 1.0
        vmax_db = float(spectrogram_db(signals["reference"]).max())  # one colour scale per file
        cells = []
        for label, y, sr, scores in rows:
            stem = f"{index:03d}_{label}"
            _write_audio(self.folder / "audio" / f"{stem}.flac", np.asarray(y) * gain, sr)
            _write_png(self.folder / "spectrograms" / f"{stem}.png", y, sr, rate / 2, vmax_db)
            shown = "" if scores is None or self.blind else _scores(scores)
            cells.append(f'<tr><th>{html.escape(label)}</th><td><audio controls preload="metadata" '
                         f'src="audio/{stem}.flac"></audio>{shown}</td><td><img src="spectrograms/{stem}.png" '
                         f'alt="spectrogram of {html.escape(label)}"></td></tr>')
        name = html.escape(Path(record["path"]).name)
        about = (f'{html.escape(record["category"])}, {record["seconds"]:g} s at {rate} Hz, input cut at '
                 f'{record["input_cutoff_hz"]:.0f} Hz')
        if gain < 1:
            about += f", played {20 * math.log10(gain):.1f} dB down (none clips)"
        self.sections.append(f'<section><h2>{name}</h2><p>{about}</p><table class="file">{"".join(cells)}'
                             '</table></section>')

    def write(self, results: dict) -> dict:
        """Write index.html -> what the eval JSON records about the report."""
        page = self.folder / "index.html"
        with replacing(page) as tmp:
            tmp.write_text(_PAGE.format(title="bandlift listening report",
                                        config=html.escape(_config_line(results["config"])),
                                        summary=_summary_tables(results),
                                        blind=" Blind: methods are lettered per file, in a random order; the "
                                              "key is in the eval JSON." if self.blind else "",
                                        sections="\n".join(self.sections)), encoding="utf-8")
        out = {"html": str(page), "blind": self.blind}
        if self.blind:
            out["key"] = self.key
        return out


def _write_audio(path: Path, y: np.ndarray, rate: int) -> None:
    import soundfile as sf

    with replacing(path) as tmp:
        sf.write(str(tmp), np.clip(y, -1.0, 1.0).astype(np.float32), int(rate), format="FLAC", subtype="PCM_16")


def _write_png(path: Path, y, sr: float, top_hz: float, vmax_db: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 1.6))
    draw_spectrogram(ax, y, sr, top_hz, vmax_db)
    ax.set_xlabel("s", labelpad=0)
    fig.tight_layout(pad=0.3)
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=72, format="png")
    plt.close(fig)


def _fmt(value, digits: int) -> str:
    return f"{value:.{digits}f}" if value is not None and math.isfinite(value) else "–"


def _scores(scores: dict) -> str:
    shown = ", ".join(f"{title} {_fmt(scores[key], d)}" for title, key, d in COLUMNS[:4])
    return f"<br><small>{shown}</small>"


def _config_line(config: dict) -> str:
    cutoff = config["input_cutoff"]
    source = (f"condition {config['condition']}" if config.get("condition")
              else f"input {config['input_rate']} Hz" + (f", cut at {cutoff} Hz" if cutoff else ""))
    return (source
            + f"; judged at {config['rate']} Hz"
            + (f"; first {config['seconds']:g} s" if config["seconds"] else "") + f"; ViSQOL: {config['visqol']}")


def _summary_tables(results: dict) -> str:
    summary, names = results["summary"], results["config"]["methods"]
    columns = [c for c in COLUMNS[:4] if summary["visqol_files"] or c[1] != "visqol"]
    out = []
    for title, group in summary_groups(summary):
        head = "".join(f"<th>{t}</th>" for t, _, _ in columns)
        body = "".join(f"<tr><th>{html.escape(n)}</th>"
                       + "".join(f"<td>{_fmt(group['mean'][n][k], d)}</td>" for _, k, d in columns) + "</tr>"
                       for n in names)
        out.append(f"<h3>{html.escape(group_title(title, group))}</h3>"
                   f'<table class="summary"><tr><th>method</th>{head}</tr>{body}</table>')
    return "\n".join(out)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
.summary td, .summary th {{ padding: 2px 10px; text-align: right; border-bottom: 1px solid #ddd; }}
.file th {{ text-align: left; padding-right: 1em; }}
.file td {{ padding: 2px 6px; vertical-align: middle; }}
</style></head><body>
<h1>{title}</h1>
<p>{config}. Means over files (ViSQOL: higher is better; LSD, LSD-HF: lower; SNR: higher).{blind}</p>
{summary}
{sections}
</body></html>
"""

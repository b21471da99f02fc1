"""The references `eval` judges against: audio files, folders and .jsonl manifest rows (by split, by
source, by category), each read at the rate it is judged at; files that cannot be used are skipped
with the reason (`SkipFile`), an evaluation left with none is an `EvalError`."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from bandlift.rt.errors import BandliftError
from bandlift.rt.io.files import AUDIO_EXTENSIONS

MIN_SECONDS = 0.1
MAX_RATE = 48000  # the model's rate: references above it are judged here
REFERENCE_BAND_WARN = 0.9  # warn when a reference's measured bandwidth is below this x rate/2


class EvalError(BandliftError):
    """A problem with the evaluation as a whole (no usable file, bad settings)."""


class SkipFile(Exception):
    """A reference file that cannot be used; the message says why."""


def judged_rate(rate: int | None, file_rate: int) -> int:
    """The rate a reference of `file_rate` is scored at: `rate`, or None: its own, at most MAX_RATE."""
    return rate or min(int(file_rate), MAX_RATE)


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

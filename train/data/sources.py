"""Shared pieces of the data side: audio probing, file indexing, splits, the JSONL manifest.

No torch here (the `dataset` subcommands import this). A manifest row describes one audio file:

    {"path": absolute path, "source": "debian:sonic-pi-samples" | "folder" | "spotify",
     "licence": short note, "duration": seconds, "sample_rate": Hz, "channels": int,
     "codec": "FLAC/PCM_16" | "OGG/VORBIS" | "MP3/MPEG_LAYER_III" | ..., "bandwidth": Hz (measured),
     "split": "train" | "valid" | "test", "group": split key, "category": see CATEGORIES,
     "size": bytes, "mtime": float, ...}

Splits are assigned by a hash of the row's group (by default the file's path relative to its source
root, optionally a folder such as one drum kit), so no recording ever feeds two splits, and the
assignment does not change when the data folder moves.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from bandlift.rt.dsp.bandwidth import effective_bandwidth
from bandlift.rt.errors import BandliftError
from bandlift.rt.io.files import AUDIO_EXTENSIONS  # noqa: F401 (re-exported for the data sources)

SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.90, 0.05, 0.05)
MAX_LINE = 1 << 20  # bytes per manifest row: a longer line is a broken file, never read whole
# The types of the fields a row may have; every row has a path, training and `dataset info` need more
FIELDS = {"path": str, "source": str, "duration": float, "bandwidth": float, "sample_rate": int,
          "channels": int, "size": int, "mtime": float, "split": str, "category": str}
# each number's range (the manifest's schema with FIELDS and SPLITS)
FIELD_RANGES = {"duration": (0.0, 1e7), "bandwidth": (0.0, 1e6), "sample_rate": (1, 2**31 - 1),
                "channels": (1, 1024), "size": (0, 2**63 - 1), "mtime": (-1e12, 1e12)}
TRAINING_FIELDS = ("path", "source", "duration", "bandwidth")


class DataError(BandliftError, ValueError):
    """A manifest or dataset that cannot be used (the message names the file, line and field)."""


def default_data_dir() -> Path:
    """$BANDLIFT_DATA, else ~/.cache/bandlift/data."""
    env = os.environ.get("BANDLIFT_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bandlift" / "data"


def default_manifest(dest: Path) -> Path:
    return Path(dest) / "manifest.jsonl"


def assign_split(key: str, fractions=SPLIT_FRACTIONS) -> str:
    """Deterministic split from a stable key (sha1 -> uniform in [0, 1))."""
    u = split_key(key)
    edge = 0.0
    for name, frac in zip(SPLITS, fractions):
        edge += frac
        if u < edge:
            return name
    return SPLITS[-1]


def split_key(key: str) -> float:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64


def fill_splits(rows: list[dict]) -> list[dict]:
    """A small set (a few recordings) can hash every group into `train`; when it has at least one group
    per split, each empty split takes the train group that hashed nearest to it (deterministic: the
    same files always give the same splits; a set that fills every split on its own is unchanged)."""
    groups = sorted({r["group"] for r in rows}, key=split_key)
    if len(groups) < len(SPLITS):
        return rows
    split_of = {g: assign_split(g) for g in groups}
    for name in SPLITS[1:]:
        if name not in split_of.values():
            movable = [g for g in groups if split_of[g] == SPLITS[0]]
            if len(movable) > 1:
                split_of[movable[-1]] = name  # the highest key: closest to the held-out range
    for r in rows:
        r["split"] = split_of[r["group"]]
    return rows


def load_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a file to float32 [channels, n]; soundfile first, librosa (audioread) as fallback."""
    from bandlift.rt.io.files import check_regular

    check_regular(path)  # a manifest row naming a FIFO would block the decoders forever
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T), int(sr)
    except Exception as sf_error:  # noqa: BLE001 - any decoder failure falls through to librosa
        try:
            import warnings

            import librosa

            with warnings.catch_warnings():  # its soundfile->audioread fallback notices
                warnings.simplefilter("ignore")
                data, sr = librosa.load(str(path), sr=None, mono=False)
        except Exception:  # noqa: BLE001
            raise sf_error from None
        data = np.atleast_2d(np.asarray(data, dtype=np.float32))
        return data, int(sr)


PCM_CODECS = ("PCM_", "FLOAT", "DOUBLE", "ALAC")  # soundfile subtypes that lose nothing


def is_lossy(row: dict) -> bool:
    """Whether a manifest row's file went through a lossy codec (Vorbis, Opus, MP3, ...): its band
    just below the encoder's lowpass is thinned out, so it cannot teach a natural top octave."""
    codec = str(row.get("codec", ""))
    return bool(codec) and not any(part in codec.split("/")[-1] for part in PCM_CODECS)


SUBSET_MIN_SECONDS = 1.0  # `eval --per-source` and training's ViSQOL set: files ViSQOL can score (0.96 s patches)


def interleave(rows: list[dict], key) -> list[tuple[int, dict]]:
    """(i, row) for every row, each key's rows by path, interleaved: every key's first (i = 1), then
    every key's second, ... (key: a row -> its source, say)."""
    count: dict = {}
    ranked = []
    for r in sorted(rows, key=lambda r: r["path"]):
        count[key(r)] = count.get(key(r), 0) + 1
        ranked.append((count[key(r)], r["path"], r))
    return [(i, r) for i, _, r in sorted(ranked, key=lambda t: t[:2])]


def first_per_source(rows: list[dict], per_source: int) -> list[dict]:
    """The first `per_source` rows of each source by path, sources interleaved (each source's first,
    then each one's second, ...), so that any further cap keeps them balanced: `eval --per-source` and
    training's ViSQOL validation pick their files so."""
    return [r for i, r in interleave(rows, lambda r: r.get("source", "")) if i <= per_source]


def _codec(path: str) -> str:
    try:
        info = sf.info(path)
        return f"{info.format}/{info.subtype}"
    except Exception:  # noqa: BLE001
        return Path(path).suffix.lstrip(".").upper() or "unknown"


def probe_file(path: str) -> dict:
    """Decode one file and measure it. Raises on unreadable, empty or non-finite audio."""
    data, sr = load_audio(path)
    if data.size == 0 or data.shape[1] == 0:
        raise ValueError("no audio frames")
    if not np.isfinite(data).all():
        raise ValueError("contains NaN or inf samples")
    st = os.stat(path)
    return {
        "path": str(path),
        "duration": round(data.shape[1] / sr, 4),
        "sample_rate": sr,
        "channels": int(data.shape[0]),
        "codec": _codec(path),
        "bandwidth": round(effective_bandwidth(data.T, sr), 1),
        "peak": round(float(np.abs(data).max()), 5),
        "size": st.st_size,
        "mtime": st.st_mtime,
    }


def _probe_safe(path: str):
    try:
        return probe_file(path), None
    except Exception as exc:  # noqa: BLE001 - reported and skipped, never a crash
        return None, f"{type(exc).__name__}: {exc}".strip()


CATEGORIES = ("speech", "music", "instruments", "other")  # a row's "category": what `bandlift eval` reports per


@dataclass
class Candidate:
    """A file to index: where it is, and the manifest fields that do not need decoding."""
    path: str
    source: str
    licence: str
    group: str  # split key
    extra: dict | None = None


@dataclass
class IndexResult:
    rows: list
    errors: list  # (path, message)
    reused: int
    seconds: float
    decoded_audio_seconds: float


def index_files(candidates: list[Candidate], previous: dict | None = None, jobs: int = 1,
                progress: bool = True, desc: str = "indexing") -> IndexResult:
    """Probe each candidate (in `jobs` processes), reusing rows of `previous` (path -> row) whose
    size and mtime have not changed. Unreadable files are collected in `errors`, never raised."""
    from bandlift.rt.cli.progress import progress_bar

    previous = previous or {}
    rows, errors, todo = [], [], []
    reused = 0
    for cand in candidates:
        old = previous.get(cand.path)
        try:
            st = os.stat(cand.path)
        except OSError as exc:
            errors.append((cand.path, f"{type(exc).__name__}: {exc}"))
            continue
        if old and old.get("size") == st.st_size and old.get("mtime") == st.st_mtime:
            rows.append(_finish_row(dict(old), cand))
            reused += 1
        else:
            todo.append(cand)
    start = time.perf_counter()
    decoded = 0.0
    bar = progress_bar(total=len(todo), desc=desc, unit="file", disable=not progress)
    if jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = pool.map(_probe_safe, [c.path for c in todo], chunksize=4)
            for cand, (row, err) in zip(todo, results):
                decoded += _collect(cand, row, err, rows, errors)
                bar.update()
    else:
        for cand in todo:
            row, err = _probe_safe(cand.path)
            decoded += _collect(cand, row, err, rows, errors)
            bar.update()
    bar.close()
    rows.sort(key=lambda r: r["path"])
    return IndexResult(rows, errors, reused, time.perf_counter() - start, decoded)


def _collect(cand, row, err, rows, errors) -> float:
    if err is not None:
        errors.append((cand.path, err))
        return 0.0
    rows.append(_finish_row(row, cand))
    return row["duration"]


def _finish_row(row: dict, cand: Candidate) -> dict:
    row.update(source=cand.source, licence=cand.licence, group=cand.group,
               split=assign_split(cand.group))
    if cand.extra:
        row.update(cand.extra)
    return row


def row_problem(row, required=("path",)) -> str | None:
    """What is wrong with one manifest row (None: nothing)."""
    if not isinstance(row, dict):
        return f"a row must be a JSON object, got {type(row).__name__}"
    missing = [key for key in required if key not in row]
    if missing:
        return f"row lacks {missing[0]!r}"
    for key, kind in FIELDS.items():
        if key not in row:
            continue
        value = row[key]
        number = kind in (int, float) and type(value) in ((int,) if kind is int else (int, float))
        if not (number or kind is str and isinstance(value, str)):
            return f"{key!r} must be {'a number' if kind is float else kind.__name__}, got {value!r:.60}"
        lo, hi = FIELD_RANGES.get(key, (None, None))
        if number and not lo <= value <= hi:  # NaN fails too; a 400-digit int compares exactly
            return f"{key!r} out of range [{lo:g}, {hi:g}]: {value!r:.60}"
    if row.get("split", "train") not in SPLITS:
        return f"'split' must be one of {', '.join(SPLITS)}, got {row['split']!r:.60}"
    return None


def read_manifest(path: str | os.PathLike, required=("path",)) -> list[dict]:
    """Rows of a JSONL manifest ([] if it does not exist), each with the `required` fields and every
    known field of its type. A bad line raises DataError naming its number."""
    path = Path(path)
    if not path.exists():
        return []
    if not path.is_file():  # a folder, or a FIFO that would block the read forever
        raise DataError(f"{path}: not a regular file")
    rows = []
    try:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(iter(lambda: fh.readline(MAX_LINE + 1), ""), 1):
                if len(line) > MAX_LINE:
                    raise DataError(f"{path}:{number}: line longer than {MAX_LINE} characters")
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as exc:
                    reason = getattr(exc, "msg", "nested too deep")
                    raise DataError(f"{path}:{number}: not a JSON line ({reason})") from None
                problem = row_problem(row, required)
                if problem:
                    raise DataError(f"{path}:{number}: {problem}")
                rows.append(row)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable manifest ({type(exc).__name__})") from None
    return rows


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> None:
    """Atomic write (exclusive temp file + rename): an interrupted write never loses the old manifest."""
    from bandlift.rt.io.files import replacing

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def merge_manifest(path: str | os.PathLike, rows: list[dict], replace_sources: set[str]) -> list[dict]:
    """Replace the rows of `replace_sources` in the manifest at `path` by `rows`; keep the others."""
    kept = [r for r in read_manifest(path) if r.get("source") not in replace_sources]
    merged = kept + rows
    write_manifest(path, merged)
    return merged


def previous_rows(path: str | os.PathLike) -> dict:
    """path -> row of an existing manifest (for incremental re-indexing)."""
    return {r["path"]: r for r in read_manifest(path) if "path" in r}


def summarize(rows: list[dict]) -> dict:
    """Hours per source per split, and bandwidth statistics per source."""
    out: dict = {}
    for row in rows:
        src = out.setdefault(row["source"], {"files": 0, "hours": {s: 0.0 for s in SPLITS},
                                             "bandwidths": []})
        src["files"] += 1
        src["hours"][row.get("split", "train")] += row["duration"] / 3600.0
        src["bandwidths"].append(row["bandwidth"])
    for src in out.values():
        bw = np.array(src.pop("bandwidths"))
        src["hours"] = {k: round(v, 4) for k, v in src["hours"].items()}
        src["hours_total"] = round(sum(src["hours"].values()), 4)
        src["bandwidth_hz"] = {
            "median": float(np.median(bw)), "p10": float(np.percentile(bw, 10)),
            "p90": float(np.percentile(bw, 90)), "min": float(bw.min()), "max": float(bw.max()),
            "files_below_16k": int((bw < 16000).sum()), "files_below_8k": int((bw < 8000).sum()),
        }
    return out


def report_errors(errors: list, stream=None, limit: int = 20) -> None:
    if not errors:
        return
    stream = stream or sys.stderr
    print(f"skipped {len(errors)} unreadable file(s):", file=stream)
    for path, message in errors[:limit]:
        print(f"  {path}: {message}", file=stream)
    if len(errors) > limit:
        print(f"  ... and {len(errors) - limit} more", file=stream)

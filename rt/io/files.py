"""Audio file helpers for the engine's file paths: block-wise reading/writing with soundfile.

Files are streamed in blocks so memory stays flat for any length; outputs are written to a temporary
file next to the destination and renamed at the end, so a failed run never leaves a truncated file
under the final name and never touches the input.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

# The one list of audio file extensions (folders for `upsample`, `eval` and `dataset` are searched for
# these). soundfile reads most; m4a/aac/wma need the dataset indexer's librosa fallback.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64",
                    ".caf", ".m4a", ".aac", ".wma")
OUTPUT_FORMATS = {".wav": ("WAV", "FLOAT"), ".flac": ("FLAC", "PCM_24")}  # float WAV never clips


class AudioFileError(Exception):
    """A file that cannot be read or written (message names the file and the reason)."""


def open_read(path: str | os.PathLike) -> sf.SoundFile:
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioFileError(f"cannot read {path}: {exc}") from exc
    if f.samplerate <= 0 or f.channels <= 0:
        f.close()
        raise AudioFileError(f"cannot read {path}: no audio (rate {f.samplerate}, {f.channels} channels)")
    return f


def blocks(f: sf.SoundFile, frames: int):
    """Yield float32 (n, channels) blocks; read errors name the file and position."""
    while True:
        try:
            data = f.read(frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioFileError(f"read error in {f.name} at frame {f.tell()}: {exc}") from exc
        if not len(data):
            return
        yield data


def analysis_excerpt(path, seconds_each: float = 10.0, pieces: int = 6) -> tuple[np.ndarray, int]:
    """Up to `pieces` excerpts spread over the file, as extra channels (n, pieces * channels), for
    the bandwidth estimate (concatenating them would put clicks at the joins)."""
    with open_read(path) as f:
        rate, total = f.samplerate, f.frames
        each = int(seconds_each * rate)
        if not f.seekable() or total <= each * pieces:
            data = f.read(each * pieces, dtype="float32", always_2d=True)
            return data, rate
        parts = []
        for start in np.linspace(0, total - each, pieces).astype(np.int64):
            f.seek(int(start))
            parts.append(f.read(each, dtype="float32", always_2d=True))
        return np.concatenate(parts, axis=1), rate


def output_format(path: str | os.PathLike) -> tuple[str, str]:
    ext = Path(path).suffix.lower()
    if ext not in OUTPUT_FORMATS:
        raise AudioFileError(f"output {path}: unsupported extension {ext or '(none)'}; use "
                             + " or ".join(OUTPUT_FORMATS))
    return OUTPUT_FORMATS[ext]


def same_file(a, b) -> bool:
    a, b = Path(a), Path(b)
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


@contextmanager
def atomic_writer(path: str | os.PathLike, rate: int, channels: int):
    """A SoundFile open on a temporary name; renamed to `path` only if the block exits cleanly."""
    path = Path(path)
    fmt, subtype = output_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        with sf.SoundFile(tmp, "w", samplerate=rate, channels=channels, format=fmt, subtype=subtype) as out:
            yield out
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def find_audio(folder: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[Path]:
    """Audio files under `folder` (recursive, sorted), skipping anything under `exclude`."""
    folder = Path(folder)
    skip = Path(exclude).resolve() if exclude else None
    found = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith("."):
            if skip is not None and skip in p.resolve().parents:
                continue
            found.append(p)
    return found

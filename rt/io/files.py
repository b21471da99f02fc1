"""Audio file helpers for the engine's file paths: reading, output formats, destinations, folders.

Files are read in blocks so memory stays flat for any length; formats libsndfile cannot read (m4a/AAC,
WMA) are decoded with ffmpeg when it is installed. A new file is written to a hidden temporary next to
its destination and moved onto it when complete (`replacing`; `writer.staged_writer` for the engine's
output), so a failed or interrupted run never leaves a truncated file under the final name.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import threading
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

from bandlift.rt.errors import BandliftError

# The one list of audio file extensions (folders for `upsample`, `eval` and `dataset` are searched for
# these). soundfile reads most; m4a/aac/wma are decoded with ffmpeg.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64",
                    ".caf", ".m4a", ".aac", ".wma")
FFMPEG_ONLY = (".m4a", ".aac", ".wma", ".mp4")
# Output containers by extension (libsndfile writes these).
CONTAINERS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".opus": "OGG", ".mp3": "MP3",
              ".aif": "AIFF", ".aiff": "AIFF", ".au": "AU", ".w64": "W64", ".caf": "CAF"}
# Sample format when the input's does not fit the output container (e.g. float WAV -> FLAC).
DEFAULT_SUBTYPES = {"FLAC": "PCM_24", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}
FALLBACK_SUBTYPE = "PCM_24"
LOSSY = ("VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III")
SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "ULAW": 1, "ALAW": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4,
                "FLOAT": 4, "DOUBLE": 8}
WAV_LIMIT = 0xFFFFFFFF  # a RIFF size field is 32 bits: larger WAV outputs are written as RF64
SFC_GET_CHANNEL_MAP_INFO, SFC_SET_CHANNEL_MAP_INFO = 0x1100, 0x1101
READ_ERRORS = (sf.LibsndfileError, RuntimeError, OSError)


class AudioFileError(BandliftError):
    """A file that cannot be read or written (message names the file and the reason)."""


def _decode_with_ffmpeg(path: Path) -> sf.SoundFile:
    """Decode with ffmpeg into an unlinked temporary WAV (tags and channel layout kept) and open it."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioFileError(f"cannot read {path}: libsndfile does not read {path.suffix or 'this format'}; "
                             "install ffmpeg to read it (e.g. apt-get install ffmpeg)")
    fd, tmp = tempfile.mkstemp(prefix=".bandlift-decode.", suffix=".wav")
    os.close(fd)
    try:
        done = subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-y", "-i", f"file:{path}", "-vn",
                               "-c:a", "pcm_f32le", "-rf64", "auto", "-f", "wav", tmp],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode:
            reason = (done.stderr.strip().splitlines() or ["ffmpeg failed"])[-1]
            raise AudioFileError(f"cannot read {path}: {reason}")
        return sf.SoundFile(tmp)
    except READ_ERRORS as exc:
        raise AudioFileError(f"cannot read {path}: {exc}") from exc
    finally:
        os.unlink(tmp)  # the open file stays readable; nothing is left behind


def check_regular(path: str | os.PathLike) -> None:
    """Refuse what exists but is no regular file: a FIFO or device would block or never end."""
    if os.path.exists(path) and not os.path.isfile(path):
        raise AudioFileError(f"cannot read {path}: not a regular file")


def open_read(path: str | os.PathLike) -> sf.SoundFile:
    path = Path(path)
    check_regular(path)
    try:
        f = sf.SoundFile(str(path))
    except READ_ERRORS as exc:
        if path.suffix.lower() not in FFMPEG_ONLY:
            raise AudioFileError(f"cannot read {path}: {exc}") from exc
        f = _decode_with_ffmpeg(path)
    if f.samplerate <= 0 or f.channels <= 0:
        f.close()
        raise AudioFileError(f"cannot read {path}: no audio (rate {f.samplerate}, {f.channels} channels)")
    return f


def blocks(f: sf.SoundFile, frames: int):
    """Yield float32 (n, channels) blocks; read errors name the file and position."""
    while True:
        try:
            data = f.read(frames, dtype="float32", always_2d=True)
        except READ_ERRORS as exc:
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
        try:
            if not f.seekable() or total <= each * pieces:
                return f.read(each * pieces, dtype="float32", always_2d=True), rate
            parts = []
            for start in np.linspace(0, total - each, pieces).astype(np.int64):
                f.seek(int(start))
                parts.append(f.read(each, dtype="float32", always_2d=True))
        except READ_ERRORS as exc:
            raise AudioFileError(f"read error in {path}: {exc}") from exc
        return np.concatenate(parts, axis=1), rate


# -- output formats -------------------------------------------------------------------------------------
def container_of(path: str | os.PathLike) -> str:
    ext = Path(path).suffix.lower()
    if ext not in CONTAINERS:
        raise AudioFileError(f"output {path}: unsupported extension {ext or '(none)'}; use one of "
                             + " ".join(CONTAINERS))
    return CONTAINERS[ext]


def output_format(path, source: sf.SoundFile | None = None, subtype: str | None = None) -> tuple[str, str]:
    """(container, subtype) of an output: the container from the extension (a WAVEX input keeps WAVEX),
    the input's sample format where the container takes it (16 -> 16 bit, float -> float), else the
    container's default; `subtype` overrides."""
    fmt = container_of(path)
    if fmt == "WAV" and source is not None and source.format == "WAVEX":
        fmt = "WAVEX"
    if subtype is not None:
        subtype = subtype.upper()
        if not sf.check_format(fmt, subtype):
            raise AudioFileError(f"output {path}: {fmt} cannot hold {subtype}; choose from "
                                 + " ".join(sf.available_subtypes(fmt)))
        return fmt, subtype
    if Path(path).suffix.lower() == ".opus":
        return fmt, "OPUS"
    if source is not None and sf.check_format(fmt, source.subtype) and (
            source.subtype not in LOSSY or source.format == fmt):  # libsndfile writes MP3 only as .mp3
        return fmt, source.subtype
    return fmt, DEFAULT_SUBTYPES.get(fmt, FALLBACK_SUBTYPE)


def wav_format_for(fmt: str, subtype: str, frames: int, channels: int) -> str:
    """WAV/WAVEX outputs whose data would pass the 4 GiB RIFF limit are written as RF64."""
    if fmt in ("WAV", "WAVEX") and frames * channels * SAMPLE_BYTES.get(subtype, 4) + (1 << 16) > WAV_LIMIT:
        return "RF64"
    return fmt


def same_file(a, b) -> bool:
    a, b = Path(a), Path(b)
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (check_destination names it)
        return False


def check_destination(path: str | os.PathLike, overwrite: bool) -> None:
    path = Path(path)
    if path.is_dir():
        raise AudioFileError(f"output {path} is a folder")
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AudioFileError(f"output {path} is a symlink loop") from None
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise AudioFileError(f"output {path} exists; use --overwrite to replace it")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _commit(tmp: Path, path: Path) -> None:
    """Move the finished `tmp` onto `path` (its real target when `path` is a symlink). An existing file
    keeps its mode, and its inode when it has other hard links; a new file gets 0666 less the umask."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        return
    if st.st_nlink > 1:
        _copy_in_place(tmp, path)  # every hard link sees the new content
        os.unlink(tmp)
        return
    os.chmod(tmp, stat.S_IMODE(st.st_mode))
    os.replace(tmp, path)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _stops_deferred():
    """A stop signal that arrives inside the block is delivered when it ends (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending, previous = [], {}
    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(pending):
            signal.raise_signal(sig)


def _copy_in_place(tmp: Path, path: Path) -> None:
    """Copy the finished `tmp` over `path`'s own inode (its hard links stay linked). The new size is
    reserved first, so a full disk fails before the old content is touched; stop signals wait for the
    copy. Only a SIGKILL or a crash during the copy itself can leave it half done."""
    size = tmp.stat().st_size
    with open(path, "r+b") as dst:
        fd = dst.fileno()
        old = os.fstat(fd).st_size
        try:
            if size > old:
                os.posix_fallocate(fd, old, size - old)
        except OSError as exc:
            os.ftruncate(fd, old)  # drop what a partial reservation added; the content is untouched
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            if size - old > shutil.disk_usage(path.parent).free:  # no reservation here: check instead
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from None
        with _stops_deferred(), open(tmp, "rb") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.truncate(size)
            dst.flush()
            os.fsync(fd)


def _hidden(path: Path, suffix: str) -> Path:
    """A new empty file next to `path`, created exclusively under a random name (O_EXCL: nothing
    planted there is followed)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def remove_hidden(path: str | os.PathLike) -> None:
    """Remove the hidden files `writer.staged_writer` makes for `path` (what a killed worker leaves)."""
    import re

    path = Path(path)
    name = re.compile(rf"\.{re.escape(path.stem)}\.[a-z0-9_]{{8}}(\.w64|{re.escape(path.suffix)})")
    for p in path.parent.glob(f".{glob_escape(path.stem)}.*"):
        if name.fullmatch(p.name):
            p.unlink(missing_ok=True)


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


@contextmanager
def replacing(path: str | os.PathLike):
    """Yield a hidden temporary (`_hidden`) to write `path`'s new content to; on a clean exit it gets
    0666 less the umask and replaces `path` atomically (a symlink planted at `path` is replaced, never
    followed); on failure it is removed and `path` is untouched."""
    path = Path(path)
    tmp = _hidden(path, path.suffix)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _channel_map(f: sf.SoundFile) -> list[int] | None:
    buf = sf._ffi.new("int[]", f.channels)
    if sf._snd.sf_command(f._file, SFC_GET_CHANNEL_MAP_INFO, buf, sf._ffi.sizeof(buf)) != 1:
        return None
    return list(buf)


def source_properties(f: sf.SoundFile) -> dict:
    """What an output carries over from its input: tags and the channel layout."""
    return {"metadata": f.copy_metadata(), "channel_map": _channel_map(f)}


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

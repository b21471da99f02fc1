"""The engine's file output, written in two passes (`staged_writer`).

The engine's float output goes to a hidden scratch file next to the destination while its true peak is
measured; the second pass applies one constant gain if the peak would clip (transparent: no limiter
distortion), dithers for 16/8-bit PCM, encodes to the chosen format and renames the result onto the
destination. A failed or interrupted run never leaves a truncated file under the final name, never
touches the input, and removes its hidden files.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

from bandlift.rt.io.files import (LOSSY, SFC_SET_CHANNEL_MAP_INFO, AudioFileError, _channel_map, _commit, _hidden, blocks,
                                  check_destination, output_format, source_properties, wav_format_for)
from bandlift.rt.io.id3 import prepend_id3v2

DITHERED = {"PCM_16": 2.0 ** -15, "PCM_S8": 2.0 ** -7, "PCM_U8": 2.0 ** -7}  # subtype -> one LSB
CEILING_DBTP = -0.1  # true-peak ceiling of PCM/float outputs
LOSSY_CEILING_DBTP = -1.0  # lossy encoders overshoot: more room (EBU R128 practice)
LOSSY_TRIES = 3  # a lossy output whose decoded true peak still passes the ceiling is encoded again, quieter


class PeakTracker:
    """Streaming true peak (BS.1770: the peak after 4x oversampling, at least the sample peak), one
    continuous soxr stream: where the blocks start and end changes nothing."""
    PIECE = 8192  # oversampled in pieces: memory stays small for any block

    def __init__(self, channels: int):
        import soxr

        self.channels = channels
        self._stream = soxr.ResampleStream(48000, 4 * 48000, channels, dtype="float32", quality="HQ")
        self.peak = 0.0

    def add(self, y: np.ndarray) -> None:
        for start in range(0, len(y), self.PIECE):
            piece = np.ascontiguousarray(y[start:start + self.PIECE], dtype=np.float32)
            self._take(piece, self._stream.resample_chunk(piece))

    def _take(self, samples: np.ndarray, oversampled: np.ndarray) -> None:
        self.peak = max(self.peak, float(np.abs(oversampled).max(initial=0.0)),
                        float(np.abs(samples).max(initial=0.0)))

    def close(self) -> float:
        empty = np.zeros((0, self.channels), np.float32)
        self._take(empty, self._stream.resample_chunk(empty, last=True))
        return self.peak


class StagedOutput:
    """The first pass's sink: float scratch file + true-peak meter. `gain_db` is set by `finish`."""

    def __init__(self, sink: sf.SoundFile, channels: int):
        self.sink = sink
        self.meter = PeakTracker(channels)
        self.frames = 0
        self.true_peak = 0.0
        self.gain_db = 0.0
        self.clipped = 0
        self.format = self.subtype = ""
        self.layout_note = ""  # set when the output's container dropped the input's channel layout

    def write(self, y: np.ndarray) -> None:
        self.meter.add(y)
        self.sink.write(y)
        self.frames += len(y)


@contextmanager
def staged_writer(path, rate: int, channels: int, *, source: sf.SoundFile | None = None,
                  subtype: str | None = None, overwrite: bool = False, limit: bool = True,
                  read_frames: int = 1 << 16):
    """Yield a `StagedOutput` to write float blocks to; on a clean exit the output is made (peak gain,
    dither, format, tags and channel layout of `source`) and moved onto `path`."""
    path = Path(path)
    fmt, subtype = output_format(path, source, subtype)
    check_destination(path, overwrite)
    carried = source_properties(source) if source is not None else {"metadata": {}, "channel_map": None}
    target = path.resolve() if path.is_symlink() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch, final = _hidden(target, ".w64"), None
    try:
        with sf.SoundFile(scratch, "w", samplerate=rate, channels=channels, format="W64", subtype="FLOAT") as sink:
            staged = StagedOutput(sink, channels)
            yield staged
        staged.true_peak = staged.meter.close()
        ceiling = 10 ** ((LOSSY_CEILING_DBTP if subtype in LOSSY else CEILING_DBTP) / 20)
        gain = ceiling / staged.true_peak if limit and staged.true_peak > ceiling else 1.0
        staged.gain_db = -20 * float(np.log10(gain))
        fmt = wav_format_for(fmt, subtype, staged.frames, channels)
        staged.format, staged.subtype = fmt, subtype
        final = _hidden(target, target.suffix)
        _encode(scratch, final, path, rate, channels, fmt, subtype, gain, carried, staged, read_frames)
        for _ in range(LOSSY_TRIES if limit and subtype in LOSSY else 0):  # the codec overshoots: measure
            decoded = decoded_true_peak(final, channels, read_frames)  # what a player will decode
            if decoded <= ceiling:
                break
            gain *= ceiling / decoded
            staged.clipped = 0
            _encode(scratch, final, path, rate, channels, fmt, subtype, gain, carried, staged, read_frames)
        staged.gain_db = -20 * float(np.log10(gain))
        os.unlink(scratch)  # its space is free before the output is moved into place
        _commit(final, target)
    finally:
        for tmp in (scratch, final):
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


def decoded_true_peak(path, channels: int, read_frames: int = 1 << 16) -> float:
    meter = PeakTracker(channels)
    with sf.SoundFile(str(path)) as f:
        for y in blocks(f, read_frames):
            meter.add(y)
    return meter.close()


def _encode(scratch, final, path, rate, channels, fmt, subtype, gain, carried, staged, read_frames) -> None:
    lsb = DITHERED.get(subtype)
    integer = subtype.startswith("PCM") or subtype in ("ULAW", "ALAW")
    rng = np.random.default_rng(0)  # fixed seed: the same input gives the same file
    try:
        with sf.SoundFile(final, "w", samplerate=rate, channels=channels, format=fmt, subtype=subtype) as out:
            for key, value in carried["metadata"].items() if fmt != "MP3" else ():  # MP3: id3.py's tag
                try:
                    setattr(out, key, value)
                except (sf.LibsndfileError, RuntimeError):
                    pass  # the container has no field for it
            if carried["channel_map"] is not None:
                buf = sf._ffi.new("int[]", carried["channel_map"])
                sf._snd.sf_command(out._file, SFC_SET_CHANNEL_MAP_INFO, buf, sf._ffi.sizeof(buf))
            with sf.SoundFile(scratch) as src:
                for y in blocks(src, read_frames):
                    if gain != 1.0:
                        y = y * np.float32(gain)
                    if lsb is not None:  # TPDF dither: two uniform LSB-wide noises summed
                        y = y + (lsb * (rng.random(y.shape) - rng.random(y.shape))).astype(np.float32)
                    if integer:
                        over = np.abs(y) > 1.0
                        if over.any():
                            staged.clipped += int(over.sum())
                            y = np.clip(y, -1.0, 1.0)
                    out.write(y)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioFileError(f"cannot write {path} as {fmt} {subtype} at {rate} Hz, {channels} ch: {exc}") from exc
    if fmt == "MP3":
        prepend_id3v2(final, carried["metadata"])
    if carried["channel_map"] is not None:
        with sf.SoundFile(final) as written:
            kept = _channel_map(written) == carried["channel_map"]
        staged.layout_note = "" if kept else (
            f"{fmt} (through libsndfile) keeps no {channels}-channel layout: players will assume the format's "
            "default order; WAV, W64 or RF64 keep the input's")

"""`live --record`: the device input, which the callback writes into a ring (`callbacks.input_side`),
read back in order and streamed to a file as it comes: any length, nothing held in memory."""
from __future__ import annotations

import contextlib

import numpy as np

from bandlift.rt.io.files import AudioFileError


def ring_contents(ring: np.ndarray, end: int) -> np.ndarray:
    """A recording ring's frames, oldest first, after `end` frames were written (all of them while it
    has not wrapped)."""
    return ring[:end] if end <= len(ring) else np.roll(ring, -(end % len(ring)), 0)


class RingReader:
    """Reads what a ring received since the last read."""

    def __init__(self):
        self.position = 0

    def drain(self, ring: np.ndarray, end: int, write) -> int:
        """Hand the frames up to `end` not read yet to `write` (oldest first, copies); returns how many
        the ring overwrote before they were read (the reader fell a whole ring behind)."""
        size = len(ring)
        lost = max(0, end - self.position - size)
        start = self.position + lost
        while start < end:
            k = start % size
            n = min(end - start, size - k)
            write(ring[k:k + n].copy())
            start += n
        self.position = end
        return lost


class StreamedRecording:
    """A float recording written to a hidden file beside `path` as it comes, renamed onto `path` at
    the end; a run that fails leaves nothing. A disk error does not stop the run: `close` reports it."""

    def __init__(self, path: str, rate: int, channels: int):
        import soundfile as sf

        from bandlift.rt.io.files import container_of, replacing

        self.path, self.error, self.lost, self.frames, self.closed = path, None, 0, 0, False
        self._reader = RingReader()
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(replacing(path))
        self._file = self._stack.enter_context(sf.SoundFile(str(tmp), "w", rate, channels, subtype="FLOAT",
                                                            format=container_of(path)))

    def drain(self, ring: np.ndarray, end: int) -> None:
        if self.error is None:
            try:
                self.lost += self._reader.drain(ring, end, self._write)
            except (OSError, RuntimeError) as exc:  # a full disk: the run goes on, the end says so
                self.error = f"cannot write the recording {self.path}: {exc}"

    def _write(self, frames: np.ndarray) -> None:
        self._file.write(frames)
        self.frames += len(frames)

    def close(self) -> None:
        """The file renamed onto its destination (AudioFileError, and nothing left, if writing failed)."""
        try:
            self._file.close()
        except (OSError, RuntimeError) as exc:
            self.error = self.error or f"cannot write the recording {self.path}: {exc}"
        if self.error is not None:
            self.abandon()
            raise AudioFileError(self.error)
        self._stack.close()
        self.closed = True

    def abandon(self) -> None:
        """The hidden file removed, the destination untouched (a run that failed before its end)."""
        self.closed = True
        self._stack.__exit__(AudioFileError, AudioFileError("abandoned"), None)

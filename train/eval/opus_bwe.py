"""Opus 1.6's neural bandwidth extension as an evaluation baseline (`eval --opus-bwe PROGRAM`)."""
from __future__ import annotations

import numpy as np

from bandlift.rt.dsp.resample import fit_length
from bandlift.train.eval.baselines import _channels, _check_rates, _restore, out_length
from bandlift.train.eval.references import EvalError


class OpusBWE:
    """Opus 1.6's neural bandwidth extension (BBWENet) as a method, through its `bwe_demo` program (raw
    16 kHz s16le mono in, 48 kHz out; built by Debian's opus >= 1.6 source with --enable-osce): each
    channel goes through it at 16 kHz (resampled there when the input is at another rate), and its
    output is aligned with the input by cross-correlation and resampled to the output rate. An
    evaluation baseline only, never a dependency."""

    TIMEOUT_S = 600

    def __init__(self, program: str):
        import os
        import shutil

        found = shutil.which(program) or (program if os.path.isfile(program) else None)
        if found is None or not os.access(found, os.X_OK):
            raise EvalError(f"Opus BWE program not found or not executable: {program} "
                             "(build it with Debian's opus >= 1.6 source: ./configure --enable-osce && make bwe_demo)")
        self.program = found

    def __call__(self, x_low, in_rate, out_rate, cutoff_hz=None):
        import soxr

        from bandlift.train.conditions import delay_of

        _check_rates(in_rate, out_rate)
        a, was_1d = _channels(x_low)
        m = out_length(a.shape[1], in_rate, out_rate)
        wide = a if in_rate == 16000 else soxr.resample(a.T, in_rate, 16000, quality="VHQ").T
        out = []
        for channel in wide:
            y = self._run(channel)
            plain = soxr.resample(channel, 16000, 48000, quality="VHQ")
            y = y[delay_of(plain, y, max_lag=4800):]
            if out_rate != 48000:
                y = soxr.resample(y, 48000, out_rate, quality="VHQ")
            out.append(fit_length(y[None, :], m)[0])
        return _restore(np.stack(out), was_1d)

    def _run(self, x16: np.ndarray) -> np.ndarray:
        import subprocess
        import tempfile
        from pathlib import Path

        pcm = (np.clip(x16, -1.0, 32767 / 32768) * 32768).round().astype("<i2")
        pcm = np.concatenate([pcm, np.zeros(1600, "<i2")])  # flush its delay
        with tempfile.TemporaryDirectory(prefix="bandlift-opus-bwe-") as tmp:
            src, dst = Path(tmp) / "in.pcm", Path(tmp) / "out.pcm"
            src.write_bytes(pcm.tobytes())
            done = subprocess.run([self.program, str(src), str(dst)], capture_output=True, text=True,
                                  timeout=self.TIMEOUT_S)
            if done.returncode != 0 or not dst.exists():
                raise RuntimeError(f"{self.program} failed ({done.returncode}): {done.stderr.strip()[-200:]}")
            return np.frombuffer(dst.read_bytes(), "<i2").astype(np.float64) / 32768.0

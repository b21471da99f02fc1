"""The engine's numpy-only DSP helpers equal the scipy.signal functions they stand in for (scipy.signal
is not imported by the engine: it costs ~0.9 s of every command's startup)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

signal = pytest.importorskip("scipy.signal")

from bandlift.rt.dsp.bandwidth import median_filter, welch  # noqa: E402
from bandlift.rt.dsp.resample import kaiser_lowpass, kaiser_order  # noqa: E402
from bandlift.rt.io.writer import PeakTracker  # noqa: E402


@pytest.mark.parametrize("attenuation, width", [(72, 0.003), (72, 0.05), (40, 0.1), (15, 0.2)])
def test_kaiser_order_equals_scipy(attenuation, width):
    assert kaiser_order(attenuation, width) == signal.kaiserord(attenuation, width)


@pytest.mark.parametrize("numtaps, cutoff, beta", [(101, 0.3, 7.0), (1537, 0.1234, 6.98), (24, 0.5, 3.0)])
def test_kaiser_lowpass_equals_firwin(numtaps, cutoff, beta):
    ours = kaiser_lowpass(numtaps, cutoff, beta)
    assert np.abs(ours - signal.firwin(numtaps, cutoff, window=("kaiser", beta))).max() < 1e-15


@pytest.mark.parametrize("channels, length, nperseg", [(1, 48000, 2048), (2, 5000, 2048), (3, 100, 64), (1, 17, 16)])
def test_welch_equals_scipy(channels, length, nperseg):
    x = np.random.default_rng(channels).standard_normal((channels, length))
    freqs, power = welch(x, 48000, nperseg, 14.0)
    ref_freqs, ref = signal.welch(x, fs=48000, window=("kaiser", 14.0), nperseg=nperseg, axis=-1, scaling="density")
    assert np.array_equal(freqs, ref_freqs)
    assert np.allclose(power, ref.mean(axis=0), rtol=1e-12, atol=0)


@pytest.mark.filterwarnings("ignore:kernel_size exceeds")
@pytest.mark.parametrize("width", [3, 13, 301])
def test_median_filter_equals_medfilt(width):
    level = np.random.default_rng(width).standard_normal(300) - 100.0  # dB levels: the zero edges matter
    assert np.array_equal(median_filter(level, width), signal.medfilt(level, width))


def test_true_peak_finds_the_peak_between_samples_whatever_the_blocks():
    n = np.arange(48000)
    x = (0.5 * np.sin(2 * np.pi * 12000 * n / 48000 + np.pi / 4)).astype(np.float32)[:, None]
    x *= np.minimum(1.0, np.minimum(n, n[::-1]) / 4800.0)[:, None].astype(np.float32)  # fades: no edge ringing
    assert np.abs(x).max() < 0.36  # every sample lands 3 dB below the crest
    peaks = []
    for block in (x.shape[0], 1000, 37):
        tracker = PeakTracker(1)
        for start in range(0, len(x), block):
            tracker.add(x[start:start + block])
        peaks.append(tracker.close())
    assert abs(peaks[0] - 0.5) < 0.005
    assert max(peaks) - min(peaks) < 1e-6


def test_upsample_does_not_import_scipy_signal():
    code = ("import sys, runpy; sys.argv = ['bandlift', 'upsample', '--help']\n"
            "try: runpy.run_module('bandlift.rt.cli', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "import bandlift.rt.dsp.bandwidth, bandlift.rt.dsp.resample, bandlift.rt.io.files, bandlift.rt.io.writer, bandlift.rt.engine\n"
            "print('scipy.signal' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"

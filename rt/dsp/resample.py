"""Streaming polyphase resampler (rational L/M, numba), exact across block boundaries.

The rate ratio out/in reduces to L/M (16000 -> 48000 is 3/1, 48000 -> 44100 is 147/160). One
linear-phase windowed-sinc FIR (Kaiser window, scipy.signal.firwin's design) runs at the virtual rate L*in;
output sample j is ``L * sum_i h[jM - mL] x[m]``. Its length is ``2*D*M + 1`` so the group delay is
exactly D samples at the output rate (`delay`). The state between calls is the last input samples and
two counters, so feeding a signal in blocks of any size gives bit-identical output to feeding it whole.

Filter, upsampling: transition band from 0.9 to 1.1 of the input Nyquist frequency, >= 70 dB stopband:
a short filter (67 output samples of delay from 16 kHz: 1.4 ms; 0.5 ms from 44.1 kHz; 2.8 ms from
8 kHz) that suits a real-time path; the model regenerates the top band anyway.
Downsampling (e.g. the model's 48 kHz output to 44.1 kHz): transition band from 0.9 to 1.0 of the
OUTPUT Nyquist frequency, so everything that would alias (above the output Nyquist) is >= 70 dB down
(45 output samples of delay, 1 ms, for 48 -> 44.1 kHz).

A signal that already lags by `prior_delay` input samples (earlier stages of a chain) would lag by a
fraction of an output sample after resampling when L/M is not an integer; the filter is then delayed
by the missing fraction (leading zero taps at the virtual rate), so the chain's total delay, `delay`,
is a whole number of output samples and can be removed exactly.
"""
from __future__ import annotations

from math import gcd

import numpy as np
from numba import njit

PASS_EDGE = 0.9  # fraction of the lower Nyquist frequency (input's when upsampling, output's when down)
STOP_EDGE = 1.1  # upsampling: images from 1.1 x input Nyquist on are removed
DOWN_STOP_EDGE = 1.0  # downsampling: nothing above the output Nyquist may alias
ATTENUATION_DB = 72.0  # Kaiser design target; measured stopband >= 70 dB


def fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """`y` cut or zero-padded to `n` samples along its last axis."""
    if y.shape[-1] >= n:
        return y[..., :n]
    return np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, n - y.shape[-1])])


def ratio(in_rate: int, out_rate: int) -> tuple[int, int]:
    g = gcd(int(in_rate), int(out_rate))
    return int(out_rate) // g, int(in_rate) // g


def design_filter(in_rate: int, out_rate: int, attenuation_db: float = ATTENUATION_DB,
                  pass_edge: float = PASS_EDGE, stop_edge: float | None = None) -> tuple[np.ndarray, int]:
    """Lowpass FIR at the virtual rate L*in_rate: (taps, delay in output samples).

    The edges are fractions of the lower of the two Nyquist frequencies; `stop_edge` defaults to
    STOP_EDGE when upsampling and DOWN_STOP_EDGE when downsampling."""
    up, down = ratio(in_rate, out_rate)
    if up == down:
        return np.ones(1), 0
    if stop_edge is None:
        stop_edge = STOP_EDGE if up > down else DOWN_STOP_EDGE
    nyquist = min(in_rate, out_rate) / 2.0
    high_nyquist = up * in_rate / 2.0
    width = (stop_edge - pass_edge) * nyquist / high_nyquist
    numtaps, beta = kaiser_order(attenuation_db, width)
    delay = -(-(numtaps - 1) // 2 // down)  # ceil, output samples
    delay = max(delay, 1)
    taps = kaiser_lowpass(2 * delay * down + 1, (pass_edge + stop_edge) / 2 * nyquist / high_nyquist, beta)
    return taps * up, delay


# Kaiser's design formulas, as scipy.signal.kaiserord/firwin compute them (numpy only: importing
# scipy.signal costs ~0.9 s of every command's startup); tests compare the taps with scipy's.
def kaiser_order(attenuation_db: float, width: float) -> tuple[int, float]:
    """(numtaps, beta) for a stopband of `attenuation_db` and a transition `width` (fraction of Nyquist)."""
    a = abs(attenuation_db)
    if a > 50:
        beta = 0.1102 * (a - 8.7)
    elif a > 21:
        beta = 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    else:
        beta = 0.0
    return int(np.ceil((a - 7.95) / 2.285 / (np.pi * width) + 1)), beta


def kaiser_lowpass(numtaps: int, cutoff: float, beta: float) -> np.ndarray:
    """Linear-phase windowed-sinc lowpass, `cutoff` a fraction of Nyquist, unit gain at DC."""
    m = np.arange(numtaps) - (numtaps - 1) / 2.0
    taps = cutoff * np.sinc(cutoff * m) * np.kaiser(numtaps, beta)
    return taps / taps.sum()


class StreamingResampler:
    """Resample [C, n] float32 blocks from in_rate to out_rate (up, down or same rate).

    `delay`: the output lags the signal by exactly this many output samples (`prior_delay` input
    samples of earlier stages included; without them it is the filter's own group delay)."""

    def __init__(self, in_rate: int, out_rate: int, channels: int = 1, prior_delay: int = 0):
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"rates must be positive, got {in_rate} -> {out_rate}")
        if prior_delay < 0:
            raise ValueError(f"prior_delay must be >= 0, got {prior_delay}")
        self.in_rate, self.out_rate, self.channels = int(in_rate), int(out_rate), int(channels)
        self.up, self.down = ratio(in_rate, out_rate)
        taps, own_delay = design_filter(in_rate, out_rate)
        # prior_delay input samples = prior_delay * L virtual samples; pad up to a multiple of M
        shift = -int(prior_delay) * self.up % self.down
        if shift:
            taps = np.concatenate([np.zeros(shift), taps])
        self.delay = own_delay + (int(prior_delay) * self.up + shift) // self.down
        self.taps = taps
        per_phase = -(-len(taps) // self.up)
        padded = np.zeros(per_phase * self.up)
        padded[: len(taps)] = taps
        # phase p, tap i -> h[p + i*L]
        self.polyphase = np.ascontiguousarray(padded.reshape(per_phase, self.up).T)
        self.history_len = per_phase - 1
        self._buf = np.zeros(0, np.float32)  # history + input, joined for the filter loop
        self.reset()

    @property
    def passthrough(self) -> bool:
        return self.up == self.down

    def reset(self) -> None:
        self.history = np.zeros((self.channels, max(self.history_len, 0)), np.float32)
        self.consumed = 0  # input samples seen
        self.produced = 0  # output samples emitted

    def output_count(self, n_in: int) -> int:
        """Outputs available after `n_in` more input samples."""
        total = self.consumed + n_in
        return -(-total * self.up // self.down) - self.produced

    def process(self, x: np.ndarray) -> np.ndarray:
        """x [C, n] -> y [C, m]; m follows from the running counts (sum of m = ceil(total*L/M))."""
        x = np.ascontiguousarray(x, np.float32)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"expected [{self.channels}, n] input, got {x.shape}")
        if self.passthrough:
            self.consumed += x.shape[1]
            self.produced += x.shape[1]
            return x.copy()
        m = self.output_count(x.shape[1])
        out = np.empty((self.channels, m), np.float32)
        if len(self._buf) < self.history_len + x.shape[1]:
            self._buf = np.zeros(2 * (self.history_len + x.shape[1]), np.float32)
        _polyphase(self.history, x, self.polyphase, self.up, self.down, self.consumed, self.produced, out, self._buf)
        hl = self.history_len
        if hl:
            if x.shape[1] >= hl:
                self.history[:] = x[:, x.shape[1] - hl:]
            else:
                self.history[:] = np.concatenate([self.history[:, x.shape[1]:], x], axis=1)
        self.consumed += x.shape[1]
        self.produced += m
        return out


@njit(cache=True, nogil=True)
def _polyphase(history, x, poly, up, down, consumed, produced, out, buf):
    """out[c, k] = sum_i poly[phase, i] * signal[m0 - i] over history + x (joined in buf, no branch
    per tap)."""
    channels, hl = history.shape
    n_taps = poly.shape[1]
    n = x.shape[1]
    base = consumed - hl  # absolute index of history[:, 0]
    for c in range(channels):
        buf[:hl] = history[c]
        buf[hl:hl + n] = x[c]
        for k in range(out.shape[1]):
            t = (produced + k) * down
            m0 = t // up
            phase = t - m0 * up
            j0 = m0 - base
            acc = 0.0
            for i in range(min(n_taps, m0 + 1)):  # m0 - i >= 0: nothing before the first sample
                acc += poly[phase, i] * buf[j0 - i]
            out[c, k] = acc


class HighBand:
    """The part of the input that a path through a lower rate cannot carry: for input and output rates
    above `mid_rate` (e.g. 96 kHz through a 48 kHz model), the input at out_rate minus the input sent
    through that path's own resamplers (in -> mid, `mid_delay` samples there, mid -> out). Added to the
    path's output it restores everything above the mid rate's band, aligned to the path's `delay`."""

    def __init__(self, in_rate: int, mid_rate: int, out_rate: int, channels: int, mid_delay: int, delay: int):
        self.channels = channels
        self.down = StreamingResampler(in_rate, mid_rate, channels)
        self.up = StreamingResampler(mid_rate, out_rate, channels, prior_delay=self.down.delay + mid_delay)
        self.direct = StreamingResampler(in_rate, out_rate, channels)
        if self.up.delay != delay or self.direct.delay > delay:
            raise ValueError(f"high-band path delay {self.up.delay}/{self.direct.delay} does not match {delay}")
        self.mid_delay, self.lag = mid_delay, delay - self.direct.delay
        self.reset()

    def reset(self) -> None:
        for r in (self.down, self.up, self.direct):
            r.reset()
        self._through = self.up.process(np.zeros((self.channels, self.mid_delay), np.float32))
        self._direct = np.zeros((self.channels, self.lag), np.float32)

    def process(self, x: np.ndarray) -> None:
        """Feed x [C, n] at the input rate."""
        self._through = np.concatenate([self._through, self.up.process(self.down.process(x))], axis=1)
        self._direct = np.concatenate([self._direct, self.direct.process(x)], axis=1)

    def take(self, n: int) -> np.ndarray:
        """The next n output samples of the high band [C, n] (n at most what has been fed)."""
        if n > min(self._through.shape[1], self._direct.shape[1]):
            raise ValueError(f"high band: {n} samples asked, fewer fed")
        high = self._direct[:, :n] - self._through[:, :n]
        self._direct, self._through = self._direct[:, n:], self._through[:, n:]
        return high

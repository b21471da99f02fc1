"""The engine's per-block array work (numba: no temporaries, no Python per sample): the dry path's
delay line, the finite check, the crossfading mix, the de-click ramp, the pending buffer's shift."""
import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def delay_line(x, history, dry):
    """dry = x delayed by history.shape[1] samples (history: the last input samples, updated)."""
    channels, n = x.shape
    d = history.shape[1]
    for c in range(channels):
        for i in range(n):
            dry[c, i] = history[c, i] if i < d else x[c, i - d]
        if d <= n:
            for j in range(d):
                history[c, j] = x[c, n - d + j]
        else:
            for j in range(d - n):
                history[c, j] = history[c, j + n]
            for j in range(n):
                history[c, d - n + j] = x[c, j]


@njit(cache=True, nogil=True)
def finite(a):
    for v in a.flat:
        if not np.isfinite(v):
            return False
    return True


@njit(cache=True, nogil=True)
def mix_block(dry, wet, out, start, target, fade, mix0, mix1, gain0, gain1, ramp):
    """out = gain * (dry + weight * (dry + mix * (wet - dry) - dry)): the model weight moves from
    `start` to `target` along `fade`, mix and gain ramp linearly; weight 1 and mix 1 give wet itself."""
    for c in range(dry.shape[0]):
        for i in range(dry.shape[1]):
            d = dry[c, i]
            mix = mix0 + (mix1 - mix0) * ramp[i]
            wm = wet[c, i] if mix == 1.0 else d + mix * (wet[c, i] - d)
            weight = start if start == target else start + (target - start) * fade[i]
            v = wm if weight == 1.0 else (d if weight == 0.0 else d + weight * (wm - d))
            out[c, i] = v * (gain0 + (gain1 - gain0) * ramp[i])


@njit(cache=True, nogil=True)
def declick(out, last, ramp):
    """Remove the step from `last` (the previous block's last samples) to out[:, 0] along `ramp` (1 -> 0)."""
    for c in range(out.shape[0]):
        step = last[c] - out[c, 0]
        for i in range(out.shape[1]):
            out[c, i] += step * ramp[i]


@njit(cache=True, nogil=True)
def shift_left(buf, start, end):
    """Move buf[:, start:end] to the front."""
    for c in range(buf.shape[0]):
        for i in range(end - start):
            buf[c, i] = buf[c, start + i]

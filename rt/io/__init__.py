"""Audio in and out: files (`files`: reading, formats, atomic writes, folders; `writer`: the two-pass
peak-safe output) and live devices (`devices`: lookup and PortAudio streams; `callbacks`: the numba C
audio callbacks; `runner`: the live run, its buffering and inference worker)."""

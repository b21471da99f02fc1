"""Audio in and out: files (`files`: reading, formats, atomic writes, folders) and live devices (`devices`:
lookup; `callbacks`: the numba C audio callbacks; `runner`: sounddevice streams and the inference worker)."""

"""Audio in and out: files (`files`: reading, formats, atomic writes, folders) and live devices (`live`:
sounddevice streams with numba C callbacks and the inference worker)."""

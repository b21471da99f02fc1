"""Signal processing for the engine: the streaming polyphase resampler, lock-free ring buffers, the
linear-phase low-pass, and bandwidth detection (numpy, scipy, numba)."""

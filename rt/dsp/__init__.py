"""Signal processing for the engine: the streaming polyphase resampler (`resample`), lock-free ring
buffers (`ringbuffer`) and bandwidth detection (`bandwidth`); numpy and numba."""

"""Signal processing for the engine: the streaming polyphase resampler (`resample`), lock-free ring
buffers (`ringbuffer`), bandwidth detection (`bandwidth`) and the engine's per-block kernels
(`blocks`); numpy and numba."""

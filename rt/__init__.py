"""bandlift.rt: the deployable real-time engine (numpy, numba, onnxruntime, sounddevice; never torch)."""
__version__ = "0.1.0"

from bandlift.rt.api import Upsampler  # noqa: E402

__all__ = ["Upsampler", "__version__"]

"""bandlift.rt: the deployable real-time engine (numpy, numba, onnxruntime, sounddevice; never torch)."""
__version__ = "0.1.0"
__all__ = ["Upsampler", "__version__"]


def __getattr__(name):  # lazy: `import bandlift.rt` stays cheap for the CLI
    if name == "Upsampler":
        from bandlift.rt.api import Upsampler

        return Upsampler
    raise AttributeError(name)

"""bandlift.rt: the deployable real-time engine (numpy, numba, onnxruntime, sounddevice; never torch)."""
import os
import sys

import platformdirs

__version__ = "0.1.0"
__all__ = ["Upsampler", "__version__"]

# numba's on-disk JIT cache goes to the user's cache dir, never into the installed package (a
# `__pycache__` left in site-packages shadows a later editable install). Every numba user in bandlift
# is reached through this package, so this runs before numba compiles anything of ours.
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(platformdirs.user_cache_dir("bandlift"), "numba"))
if "numba" in sys.modules:  # imported earlier (by librosa, say): make it read the variable now
    sys.modules["numba"].core.config.reload_config()


def __getattr__(name):  # lazy: `import bandlift.rt` stays cheap for the CLI
    if name == "Upsampler":
        from bandlift.rt.api import Upsampler

        return Upsampler
    raise AttributeError(name)

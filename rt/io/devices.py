"""Audio devices for live runs (PortAudio through sounddevice): lookup by index or name, a JACK server's
period (and whether it still answers), streams whose callback is a C function, calls bounded in time,
and streams that will not stop."""
from __future__ import annotations

import ctypes
import threading

_ABANDONED: list = []  # streams PortAudio could not stop (kept referenced, never touched again)


class LiveError(RuntimeError):
    """The audio device or stream failed; the message says what to check."""


def is_jack(device, kind: str = "output") -> bool:
    """Is `device` (index, or None: the default `kind` device) on PortAudio's JACK host API?"""
    import sounddevice as sd

    try:
        info = sd.query_devices(device, kind if device is None else None)
        return "JACK" in sd.query_hostapis(info["hostapi"])["name"]
    except (ValueError, sd.PortAudioError):
        return False


def jack_answers(device, kind: str = "output") -> bool:
    """False when `device` is a JACK device whose server no longer answers (no client can connect)."""
    return not is_jack(device, kind) or jack_period(device, kind) is not None


def jack_period(device, kind: str = "output") -> int | None:
    """The JACK server's period in frames when `device` (index or None: the default `kind` device) is a
    JACK device, else None (also when its server does not answer). PortAudio does not tell: ask libjack
    (a short-lived client of the same server)."""
    import ctypes.util

    if not is_jack(device, kind):
        return None
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("jack") or "libjack.so.0")
    except OSError:
        return None
    lib.jack_client_open.restype = ctypes.c_void_p
    lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.jack_get_buffer_size.restype = ctypes.c_uint32
    lib.jack_get_buffer_size.argtypes = lib.jack_client_close.argtypes = [ctypes.c_void_p]
    status = ctypes.c_int(0)
    client = lib.jack_client_open(b"bandlift-probe", 1, ctypes.byref(status))  # 1: JackNoStartServer
    if not client:
        return None
    try:
        return int(lib.jack_get_buffer_size(client))
    finally:
        lib.jack_client_close(client)


def list_devices() -> str:
    import sounddevice as sd

    return str(sd.query_devices())


def find_device(spec, kind: str) -> int | None:
    """Device index from None (default), an index, or a case-insensitive name substring."""
    import sounddevice as sd

    if spec is None or spec == "":
        return None
    devices = sd.query_devices()
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    if isinstance(spec, int) or str(spec).isdigit():
        index = int(spec)
        if not 0 <= index < len(devices) or devices[index][key] < 1:
            raise LiveError(f"no {kind} device with index {index}; see --list-devices")
        return index
    matches = [i for i, d in enumerate(devices) if str(spec).lower() in d["name"].lower() and d[key] > 0]
    exact = [i for i in matches if devices[i]["name"].lower() == str(spec).lower()]
    if len(exact) == 1:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LiveError(f"no {kind} device matches {spec!r}; see --list-devices")
    names = ", ".join(f"{i}: {devices[i]['name']}" for i in matches)
    raise LiveError(f"{spec!r} matches several {kind} devices ({names}); give an index")


def open_stream(kind: str, callback, userdata: int, channels: int, latency, finished, **kwargs):
    """A float32 PortAudio stream whose callback is a numba `cfunc`, given the address `userdata`
    (sounddevice's base class for custom streams)."""
    import sounddevice as sd

    return sd._StreamBase(kind=kind, dtype="float32", channels=channels, latency=latency,
                          callback=callback.address, userdata=sd._ffi.cast("void *", userdata),
                          finished_callback=finished, wrap_callback=None, **kwargs)


class NoAnswer(TimeoutError):
    """`call_within`: the call has not returned in time."""


def call_within(fn, seconds: float):
    """fn() in a helper thread: its result (or its exception, raised here), or TimeoutError when it has
    not returned within `seconds` (it is left running: a PortAudio call that hangs cannot be interrupted)."""
    box = {}

    def call():
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(max(0.0, seconds))
    if t.is_alive():
        raise NoAnswer(f"no answer within {seconds:.1f} s")
    if "error" in box:
        raise box["error"]
    return box.get("result")


def ended_within(fn, seconds: float) -> bool:
    """Run fn (a stream's stop or close) in a helper thread; False if it did not return within `seconds`
    (whatever it raised, it ended)."""
    try:
        call_within(fn, seconds)
    except NoAnswer:
        return False
    except BaseException:  # noqa: B036 - raised in the helper thread, where it only ended the call
        pass
    return True


def abandon(streams: list, *owners) -> None:
    """PortAudio hangs on a stream whose server died: leave the streams (and PortAudio's exit-time
    shutdown, which would hang the same way) alone so the process can still end. Their C callbacks may
    still run until the process ends: the streams and the `owners` of the rings, counters and context
    they use must outlive the interpreter's teardown (else they write into freed memory: a crash at exit)."""
    import sounddevice as sd

    _ABANDONED.extend(streams)
    # and PortAudio's library itself: a stream's thread that still runs its code (a JACK client left
    # behind) crashes the exit if the teardown unloads it
    for keep in (*owners, *streams, sd._lib, sd._ffi):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(keep))
    sd._initialized = 0

"""Virtual devices on the running PulseAudio server (or PipeWire's PulseAudio interface), made with
the server's own `pactl`: what apps see and pick like any microphone or speaker.

- virtual microphone NAME: a null sink `NAME_feed` that bandlift plays the upsampled input into, and
  a source NAME remapped from its monitor (apps record from it), as NoiseTorch and the
  noise-suppression-for-voice README set one up;
- virtual speaker NAME: a null sink NAME that apps play into; bandlift records its monitor, upsamples
  it and plays it on the real output.

Each module carries `bandlift.owner=<pid>` in its properties (how `--list-devices` tells bandlift's own
from the rest) and is unloaded when the context ends, however it ends (the CLI turns SIGTERM into a
normal stop). Only SIGKILL leaves them: the next run with the same name reclaims the modules whose
owner is gone and refuses names that a running bandlift holds. A restarted server has lost them anyway.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from bandlift.rt.errors import BandliftError

OWNER = "bandlift.owner"


class VirtualDeviceError(BandliftError, RuntimeError):
    """The sound server is missing or refused; the message says what to do."""


def _pactl(*args: str) -> str:
    if not shutil.which("pactl"):
        raise VirtualDeviceError("virtual devices need PulseAudio or PipeWire (pactl not found)")
    try:
        done = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        raise VirtualDeviceError("the sound server does not answer (pactl timed out)") from None
    if done.returncode:
        raise VirtualDeviceError(f"pactl {args[0]} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def _names(kind: str) -> set[str]:
    """Names of the server's sinks or sources."""
    return {line.split("\t")[1] for line in _pactl("list", "short", kind).splitlines() if "\t" in line}


def _owner_alive(pid: int) -> bool:
    """Is `pid` a running bandlift (a recycled pid of another program is not)?"""
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return False
    return b"bandlift" in cmdline


def _owner_of(line: str) -> int | None:
    try:
        return int(line.split(f"{OWNER}=")[1].split()[0].strip("\"'"))
    except (IndexError, ValueError):
        return None


def owned_modules() -> list[str]:
    """The server's modules that a bandlift process made: 'index name arguments' lines."""
    try:
        lines = _pactl("list", "short", "modules").splitlines()
    except VirtualDeviceError:
        return []
    return [" ".join(line.split("\t")) for line in lines if f"{OWNER}=" in line]


def server_devices() -> list[str]:
    """The sound server's sinks and sources, bandlift's own marked with the process that made them;
    empty without a server."""
    owners = {}
    for line in owned_modules():
        pid = line.split(f"{OWNER}=")[1].split()[0].strip('"')
        for word in line.split():
            if word.startswith(("sink_name=", "source_name=")):
                name = word.split("=", 1)[1]
                owners.update({name: pid, f"{name}.monitor": pid})
    try:
        found = [(kind[:-1], name) for kind in ("sinks", "sources") for name in sorted(_names(kind))]
    except VirtualDeviceError:
        return []
    return [f"{kind:6} {name}" + (f"   [bandlift's own, pid {owners[name]}]" if name in owners else "")
            for kind, name in found]


class VirtualDevice:
    """`with VirtualDevice("mic", "bandlift_mic", channels, rate) as dev:` - bandlift writes into
    `dev.sink` (mic) or reads `dev.monitor` (speaker) through the ALSA pulse plugin."""

    def __init__(self, kind: str, name: str, channels: int, rate: int):
        if kind not in ("mic", "sink"):
            raise ValueError(kind)
        if not name or any(c in name for c in " \t\"'=/\\"):
            raise VirtualDeviceError(f"bad virtual device name {name!r}: letters, digits, '_', '-' and '.' only")
        self.kind, self.name, self.channels, self.rate = kind, name, int(channels), int(rate)
        self.sink = f"{name}_feed" if kind == "mic" else name
        self.monitor = f"{self.sink}.monitor"
        self.modules: list[str] = []
        self.reclaimed: list[str] = []

    @property
    def description(self) -> str:
        return "bandlift microphone (upsampled)" if self.kind == "mic" else "bandlift speaker (upsampled)"

    def reclaim(self) -> list[str]:
        """Unload the modules of this device's names that a bandlift killed without cleanup left (their
        owner process is gone); returns 'module (pid N)' for each."""
        wanted = {f"sink_name={self.sink}", f"source_name={self.name}", f"sink_name={self.name}"}
        reclaimed = []
        for line in sorted(owned_modules(), key=lambda line: -int(line.split()[0])):  # newest first, as remove()
            pid = _owner_of(line)
            if pid is None or pid == os.getpid() or _owner_alive(pid) or not wanted & set(line.split()):
                continue
            try:
                _pactl("unload-module", line.split()[0])
            except VirtualDeviceError:
                continue  # went with the module it depended on (a remap source with its sink)
            reclaimed.append(f"{line.split()[1]} (pid {pid})")
        return reclaimed

    def __enter__(self) -> "VirtualDevice":
        self.reclaimed = self.reclaim()
        taken = (_names("sinks") | _names("sources")) & {self.sink, self.name, self.monitor}
        if taken:
            raise VirtualDeviceError(f"a sound device named {sorted(taken)[0]!r} already exists (another bandlift "
                                     "with this name?): pick another name, or stop that one")
        props = f"{OWNER}={os.getpid()}"
        feed = "bandlift feed" if self.kind == "mic" else self.description
        try:
            self._load("module-null-sink", f"sink_name={self.sink}", f"rate={self.rate}", "format=float32le",
                       f"channels={self.channels}", f"sink_properties=\"device.description='{feed}' {props}\"")
            if self.kind == "mic":
                # the channel count and map said outright: PipeWire's remap source is otherwise 2ch when
                # fed mono, and a mono capture of it records the level x1.4 (PulseAudio: as played)
                layout = "mono" if self.channels == 1 else "front-left,front-right"
                self._load("module-remap-source", f"master={self.monitor}", f"source_name={self.name}",
                           f"channels={self.channels}", f"channel_map={layout}", f"master_channel_map={layout}",
                           f"source_properties=\"device.description='{self.description}' {props}\"")
        except VirtualDeviceError:
            self.remove()
            raise
        return self

    def _load(self, module: str, *args: str) -> None:
        self.modules.append(_pactl("load-module", module, *args).strip())

    def alive(self) -> bool:
        """Are this device's modules still loaded (False after a server restart)?"""
        mine = {line.split()[0] for line in owned_modules() if f"{OWNER}={os.getpid()}" in line}
        return bool(self.modules) and set(self.modules) <= mine

    def remove(self) -> None:
        """Unload what this made (newest first); a server that restarted has nothing left to unload."""
        while self.modules:
            index = self.modules.pop()
            try:
                _pactl("unload-module", index)
            except VirtualDeviceError:
                pass

    def __exit__(self, *exc) -> None:
        self.remove()


def client_config_without_shm() -> str:
    """A PulseAudio client config for this process's own streams: the one libpulse would read (the
    user's or the system's, with its drop-ins), plus `enable-shm = no`. PulseAudio 16.1 (Debian 12) aborts
    ('memblock_replace_import ... n_imported > 0') in about 1 of 4 runs when a client that played and
    recorded through shared memory disconnects; over the socket nothing is imported. Returns its path,
    written in the user's cache directory, for PULSE_CLIENTCONFIG."""
    import platformdirs

    base = os.environ.get("PULSE_CLIENTCONFIG")
    if not base:
        config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        user = os.path.join(config_home, "pulse", "client.conf")
        base = user if os.path.isfile(user) else "/etc/pulse/client.conf"
    lines = [f".include {path}" for path in [base] if os.path.isfile(path)]
    if os.path.isdir(base + ".d"):
        lines += [f".include {os.path.join(base + '.d', name)}"
                  for name in sorted(os.listdir(base + ".d")) if name.endswith(".conf")]
    lines.append("enable-shm = no")
    folder = platformdirs.user_cache_dir("bandlift")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "pulse-client.conf")
    if base == path:  # a second call in this process: already ours
        return path
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(temp, path)  # whole for a concurrent bandlift
    return path

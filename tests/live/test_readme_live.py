"""The README's "Try live without hardware" commands, run verbatim (each block as one bash script) on
this machine: a JACK dummy server with loopback ports, and a private PulseAudio server with a null sink."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.live


def readme_blocks() -> list[str]:
    """The section's indented command blocks, each as a script."""
    section = (ROOT / "README.md").read_text().split("## Try live without hardware", 1)[1].split("\n## ", 1)[0]
    return ["\n".join(line[4:] for line in block.splitlines())
            for block in re.findall(r"(?:^    \S.*\n)+", section, flags=re.M)]


def run_block(script: str, env: dict) -> str:
    env = dict(env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")  # this venv's bandlift
    proc = subprocess.Popen(["bash", "-e", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the servers it started, whatever happened
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, out[-3000:]
    return out


def test_the_readme_has_a_jack_block_and_a_pulse_block():
    jack, pulse = readme_blocks()
    assert "jackd -L 2 -d dummy" in jack and "module-null-sink" in pulse


@pytest.mark.skipif(not shutil.which("jackd"), reason="jackd2 not installed")
def test_try_live_without_hardware_on_jack():
    name = f"bl{uuid.uuid4().hex[:8]}"  # a server of its own: other tests may run one
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1", JACK_NO_AUDIO_RESERVATION="1")
    try:
        out = run_block(readme_blocks()[0], env)
    finally:
        for leftover in Path("/dev/shm").glob(f"jack*_{name}_*"):
            leftover.unlink(missing_ok=True)
    assert re.search(r"ran 5\.\d s", out) and "round trip" in out, out[-3000:]  # 5 s of blocks, as timed


@pytest.mark.skipif(not (shutil.which("pulseaudio") and shutil.which("pactl")), reason="pulseaudio not installed")
def test_try_the_virtual_devices_without_hardware_on_pulseaudio(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("PULSE_SERVER", "PULSE_SINK", "PULSE_SOURCE")}
    out = run_block(readme_blocks()[1], dict(env, XDG_RUNTIME_DIR=str(runtime), HOME=str(tmp_path)))
    assert "virtual microphone 'bl_mic' ready" in out and re.search(r"ran 5\.\d s", out), out[-3000:]

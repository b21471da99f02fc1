"""Shared test set-up. The fixtures' helpers live in one place, tests/fixtures/: the JACK and PulseAudio
servers and the contract-following test models (`jack_server`), the fake Spotify API
(`fake_spotify_server`), seeded test signals (`signals`) and headless Chromium (`headless_chromium`).
Test modules import them by name (``from jack_server import ...``).

Tests mirror the package layout: rt/ (engine, files, bench), live/ (real JACK/PulseAudio devices),
train/, export/, eval/; test_imports.py walks the import graph.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))

import subprocess  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def warm_jit_cache(tmp_path_factory):
    """Compile numba's on-disk cache once, before any test starts a `bandlift` process: a fresh
    checkout's first run spends seconds in the JIT (4 s here), which timing-bound tests (signals,
    live start-up, bypass at start) would otherwise measure instead of the engine."""
    clip = tmp_path_factory.mktemp("warm") / "warm.wav"
    code = ("import numpy as np, soundfile as sf, sys\n"
            "import bandlift.rt.io.runner\n"
            "from bandlift.rt.cli import main\n"
            f"sf.write({str(clip)!r}, np.zeros(16000, np.float32), 16000)\n"
            f"sys.exit(main(['upsample', {str(clip)!r}, {str(clip.with_name('out.wav'))!r}, '--block', '128']))")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
